"""BERT4Rec (Sun et al. 2019): a bidirectional Transformer trained by cloze — random items of the
window are replaced by a [MASK] token (index n_items + 1) and predicted from both sides. At
inference a [MASK] is appended after the history and its hidden state scores the next item.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shopseq.models.features import EventEmbedding, EventFeatures
from shopseq.models.neural import (
    Dropout,
    NeuralRecommender,
    SequenceModule,
    TransformerBlock,
    TransformerConfig,
    expected_masked,
    init_weights,
)
from shopseq.models.registry import register
from shopseq.training.batching import Batch

__all__ = ["BERT4Rec", "BERT4RecConfig", "BERT4RecModule"]


class BERT4RecConfig(TransformerConfig):
    model: str = "bert4rec"
    dropout: float = Field(0.2, ge=0, lt=1)
    ffn_mult: int = Field(4, ge=1, description="feed-forward width = ffn_mult x hidden")
    mask_prob: float = Field(0.2, gt=0, le=1, description="share of window items masked in training")
    mask_last_prob: float = Field(
        0.1, ge=0, le=1, description="share of windows where only the last item is masked (the inference case)")
    features: EventFeatures = Field(default_factory=EventFeatures, description="event inputs beside the item")


class BERT4RecModule(SequenceModule):
    def __init__(self, n_items: int, c: BERT4RecConfig) -> None:
        super().__init__(n_items)
        if c.seen_offset:  # its targets are masked positions, whose "history" includes later events
            raise ValueError("BERT4Rec does not support seen_offset (SASRec and GRU4Rec do)")
        self.window = c.max_len
        self.mask_id = n_items + 1
        self.mask_prob, self.mask_last_prob = c.mask_prob, c.mask_last_prob
        self.item_emb = nn.Embedding(n_items + 2, c.hidden, padding_idx=0)  # + [MASK]
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.emb_norm = nn.LayerNorm(c.hidden)
        self.drop = Dropout(c.dropout)
        attn_dropout = c.dropout if c.attn_dropout is None else c.attn_dropout
        self.blocks = nn.ModuleList(
            TransformerBlock(c.hidden, c.heads, c.dropout, attn_dropout, c.norm_first, c.ffn_mult)
            for _ in range(c.layers)
        )
        self.final_norm = nn.LayerNorm(c.hidden) if c.norm_first else nn.Identity()
        self.features = EventEmbedding(n_items, c.hidden, c.features)
        self.reads_event_features = c.features.any_event_inputs
        init_weights(self)

    def hidden_states(self, items: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) bidirectional hidden states; padding (0) keys are masked out. ``extra``: the
        event-feature embedding to add (zero at [MASK] positions)."""
        positions = torch.arange(items.shape[1], device=items.device)
        x = self.item_emb(items) + self.pos_emb(positions)
        if extra is not None:
            x = x + extra
        x = self.drop(self.emb_norm(x))
        # (B, 1, 1, L) True = may attend; every row has >= 1 real key (position 0), so no NaN
        keys = (items != 0)[:, None, None, :]
        keys = keys | (torch.arange(items.shape[1]) == 0)
        for block in self.blocks:
            x = block(x, mask=keys)
        return self.final_norm(x)

    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.batch_user_vectors(Batch(items, lengths, np.zeros(len(items), dtype=np.int64)))

    def batch_user_vectors(self, batch: Batch) -> torch.Tensor:
        # keep the last max_len - 1 events and put [MASK] right after them
        items, lengths = batch.items, batch.lengths
        keep = lengths.clamp(max=self.window - 1)
        shift = lengths - keep
        b, width = items.shape
        cols = torch.arange(max(int(keep.max()) + 1 if b else 1, 1))
        src = (cols[None, :] + shift[:, None]).clamp(max=max(width - 1, 0))
        inside = cols[None, :] < keep[:, None]
        kept = torch.where(inside, items.gather(1, src), 0)
        types = None if batch.types is None else torch.where(inside, batch.types.gather(1, src), 0)
        stamps = None if batch.timestamps is None else torch.where(inside, batch.timestamps.gather(1, src), 0)
        # features of the kept events only: with lengths = keep, the [MASK] column counts as padding
        extra = self.features(kept, keep, types, stamps)
        inp = kept.clone()
        inp[torch.arange(b), keep] = self.mask_id
        return self.hidden_states(inp, extra)[torch.arange(b), keep]

    def training_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        items, lengths = batch.items, batch.lengths
        real = items != 0
        masked = (torch.rand(items.shape) < self.mask_prob) & real
        last = torch.zeros_like(masked)
        last[torch.arange(len(items)), lengths - 1] = True
        # some windows mask only their last item (what inference asks), and every window masks >= 1
        only_last = (torch.rand(len(items)) < self.mask_last_prob) | ~masked.any(1)
        masked = torch.where(only_last[:, None], last, masked)
        inputs = items.masked_fill(masked, self.mask_id)
        extra = self.features(items, lengths, batch.types, batch.timestamps)
        if extra is not None:
            extra = extra.masked_fill(masked[..., None], 0.0)
        return self.hidden_states(inputs, extra)[masked], items[masked]

    def output_weight(self) -> torch.Tensor:
        weight = self.item_emb.weight[: self.n_items + 1]  # [MASK] row cut off
        attrs = self.features.attribute_vectors()  # tied: the same item vector as the input side
        return weight if attrs is None else weight + attrs

    def mean_targets(self, lengths: np.ndarray) -> float:
        return (1 - self.mask_last_prob) * expected_masked(lengths, self.mask_prob) + self.mask_last_prob


@register
class BERT4Rec(NeuralRecommender):
    name = "bert4rec"
    config_class = BERT4RecConfig
    config: BERT4RecConfig

    def build_module(self) -> BERT4RecModule:
        return BERT4RecModule(self.n_items, self.config)
