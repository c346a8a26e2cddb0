"""What a sequence model may read about each event besides its item: the event type, time
features and item attributes, and the extra prediction heads trained beside next-item.

``EventFeatures`` switches each part on or off; ``EventEmbedding`` turns them into one (B, L, d)
tensor added to the item embedding. Time features come only from the event itself and the one
before it (never from the target), so a causal model sees nothing of the future:

* time gap: seconds since the previous event of the window, in log2 buckets (0 = first event of
  the window, 1 = under 1 s, 2 = 1-2 s, ..., capped at ``GAP_BUCKETS - 1`` ~ 2 years);
* hour of week: UTC, Monday 00:00 = bucket 1 (0 = padding).

Item attributes (category levels, brand, ...) are a fixed (n_items + 1, A) matrix of attribute
token ids per item (0 = none, see ``shopseq.data.attributes``). An item's attribute vector is the
mean of its tokens' embeddings; it is added to the item embedding on the input side and, tied,
on the output side, so items seen rarely borrow strength from their category and brand.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shopseq.data.attributes import ItemAttributes
from shopseq.data.schema import EventType

__all__ = ["GAP_BUCKETS", "N_EVENT_TYPES", "AuxHeads", "EventEmbedding", "EventFeatures", "gap_buckets",
           "hour_of_week", "with_attributes"]

N_EVENT_TYPES = len(EventType)
GAP_BUCKETS = 28  # log2 seconds: bucket 27 starts at 2**25 s ~ 1 year
_MS_PER_HOUR = 3_600_000
_MONDAY_SHIFT_HOURS = 72  # 1970-01-01 was a Thursday: +72 h puts Monday 00:00 at hour 0 of the week


class EventFeatures(BaseModel):
    """Which event features the encoder reads (all off = the classic item-only model)."""

    model_config = ConfigDict(extra="forbid")

    event_types: bool = Field(False, description="add an embedding of the event type (view, cart, ...)")
    time_gaps: bool = Field(False, description="add an embedding of log2 seconds since the previous event")
    hour_of_week: bool = Field(False, description="add an embedding of the event's hour of the week (UTC)")
    attributes: bool = Field(False, description="add the mean embedding of the item's attribute tokens")
    attribute_tokens: int = Field(0, ge=0, description="size of the attribute vocabulary (set from the data)")
    attributes_per_item: int = Field(0, ge=0, description="width of the item -> attributes matrix (from the data)")

    @property
    def any_event_inputs(self) -> bool:
        """Whether the model needs event types / timestamps as inputs, not only items."""
        return self.event_types or self.time_gaps or self.hour_of_week


class AuxHeads(BaseModel):
    """Extra heads trained jointly with next-item; a weight of 0 switches a head off."""

    model_config = ConfigDict(extra="forbid")

    next_type: float = Field(0.0, ge=0, description="loss weight of the next-event-type head")
    next_purchase: float = Field(0.0, ge=0, description="loss weight of the next-purchased-item head")
    purchase_copy: bool = Field(True, description="the purchase head can also point at the history's items, "
                                "scored by event type, recency and whether bought since (models.pointer)")

    @property
    def any(self) -> bool:
        return self.next_type > 0 or self.next_purchase > 0


def gap_buckets(timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) log2-second buckets of the gap to the previous event of left-aligned windows."""
    gap_s = (timestamps[:, 1:] - timestamps[:, :-1]).clamp_min(0).double() / 1000.0
    buckets = (torch.floor(torch.log2(gap_s + 1.0)) + 1).clamp_max(GAP_BUCKETS - 1).long()
    out = torch.cat([torch.zeros_like(timestamps[:, :1]), buckets], dim=1)
    return _zero_padding(out, lengths)


def hour_of_week(timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) hour of the week, 1..168 (Monday 00:00 UTC = 1), 0 on padding."""
    hours = torch.div(timestamps, _MS_PER_HOUR, rounding_mode="floor") + _MONDAY_SHIFT_HOURS
    return _zero_padding(torch.remainder(hours, 168) + 1, lengths)


def _zero_padding(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]
    return torch.where(valid, values, torch.zeros_like(values))


class EventEmbedding(nn.Module):
    """Sum of the enabled feature embeddings of left-aligned events (the item embedding itself
    stays with the model, whose output layer is tied to it)."""

    def __init__(self, n_items: int, hidden: int, f: EventFeatures) -> None:
        super().__init__()
        self.f = f
        self.type_emb = nn.Embedding(N_EVENT_TYPES + 1, hidden, padding_idx=0) if f.event_types else None
        self.gap_emb = nn.Embedding(GAP_BUCKETS, hidden) if f.time_gaps else None
        self.how_emb = nn.Embedding(169, hidden, padding_idx=0) if f.hour_of_week else None
        if f.attributes:
            if f.attribute_tokens < 1 or f.attributes_per_item < 1:
                raise ValueError("attributes are on but the config has no attribute vocabulary; "
                                 "build the config with shopseq.data.attributes.with_attributes()")
            self.attr_emb: nn.Embedding | None = nn.Embedding(f.attribute_tokens + 1, hidden, padding_idx=0)
            # a buffer, so it travels in the safetensors file with the weights
            self.register_buffer("item_attrs", torch.zeros(n_items + 1, f.attributes_per_item, dtype=torch.long))
        else:
            self.attr_emb = None

    def set_item_attributes(self, matrix: torch.Tensor) -> None:
        if self.attr_emb is None:
            raise ValueError("this model was configured without attributes")
        if tuple(matrix.shape) != tuple(self.item_attrs.shape):
            raise ValueError(f"attribute matrix has shape {tuple(matrix.shape)}, the model expects "
                             f"{tuple(self.item_attrs.shape)}")
        self.item_attrs.copy_(matrix.long())

    def attribute_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """Mean attribute embedding of the given items (default: every item row), or None."""
        if self.attr_emb is None:
            return None
        tokens = self.item_attrs if items is None else self.item_attrs[items]
        summed = self.attr_emb(tokens).sum(dim=-2)
        count = (tokens > 0).sum(dim=-1, keepdim=True).clamp_min(1)
        return summed / count

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, types: torch.Tensor | None,
                timestamps: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L, d) feature embedding to add to the item embedding, or None when all are off."""
        parts: list[torch.Tensor] = []
        if self.type_emb is not None:
            if types is None:
                raise ValueError("this model reads event types; pass them with the items")
            parts.append(self.type_emb(_zero_padding(types.long() + 1, lengths)))
        if self.gap_emb is not None or self.how_emb is not None:
            if timestamps is None:
                raise ValueError("this model reads timestamps; pass them with the items")
            if self.gap_emb is not None:
                parts.append(self.gap_emb(gap_buckets(timestamps, lengths)))
            if self.how_emb is not None:
                parts.append(self.how_emb(hour_of_week(timestamps, lengths)))
        attrs = self.attribute_vectors(items)
        if attrs is not None:
            parts.append(attrs)
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def with_attributes(config: ConfigT, attrs: ItemAttributes) -> ConfigT:
    """A copy of a model config (one with ``features``) whose attributes are on and sized for ``attrs``."""
    features = getattr(config, "features", None)
    if not isinstance(features, EventFeatures):
        raise TypeError(f"{type(config).__name__} does not read event features")
    features = features.model_copy(update={"attributes": True, "attribute_tokens": attrs.n_tokens,
                                           "attributes_per_item": attrs.width})
    return config.model_copy(update={"features": features})
