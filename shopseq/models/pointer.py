"""A pointer over the history: a score for every earlier event, so that a head can put mass on
the items the user has just seen without relearning "repeat what was seen" for every item.

Two heads use it. The purchase head (most purchases are of an item just carted or viewed), and,
with ``SASRecConfig.pointer``, the next-item head (sessions click the same items again: 20.5% of
Diginetica's test clicks are of an item already in the session, 9% of the item just clicked).

For a query position t and each earlier position k <= t holding item i_k, a score

    s(t, k) = w_type[type_k] + w_gap[min(t - k, MAX_GAP)] + w_bought * [i_k bought in (k, t]]
              + <W q_t, h_k> / sqrt(d)

(event type, how many events ago, whether it has been bought since, and what the sequence says),
and per item the log-sum-exp over its positions. The head's logit of item i is then
``logaddexp(generate_i, copy_i)``: a mixture of "something new" (the tied-embedding scores) and
"one of these" (the pointer), trained by the same cross-entropy. Every term sees only events up
to t, so training stays causal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shopseq.data.schema import EventType
from shopseq.models.features import N_EVENT_TYPES

MAX_GAP = 15  # events ago, the last bucket holds everything older
# the per-position weights act on logits (a strong cue needs ~+5); scaled so that Adam, whose steps
# are ~lr in parameter units, moves them as fast as the embeddings move the generate logits
WEIGHT_SCALE = 10.0


def next_sighting(items: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L): for each position k, the first later position j > k holding the same item (and
    ``where[b, j]`` true, if given); L where there is none.

    Sorted, not compared pairwise: positions ordered by (item, position), each takes the least
    candidate after it in that order; a candidate of a later item is larger than any of its own
    item's (the item id is the high part of the key), so it reads as "none". O(L log L) per row
    instead of an (L, L) matrix: scoring with seen offsets spent 6 ms of 100 on the matrix's amin."""
    width = items.shape[1]
    order = (items.long() * width + torch.arange(width, device=items.device)).argsort(dim=1)
    group = items.long().gather(1, order) * (width + 1)
    candidate = order if where is None else torch.where(where.gather(1, order), order, width)
    # the least key strictly after each sorted position: a reverse running minimum, shifted by one
    after = torch.cat([group[:, 1:] + candidate[:, 1:], torch.full_like(group[:, :1], torch.iinfo(torch.long).max)], 1)
    least = torch.flip(torch.cummin(torch.flip(after, [1]), dim=1).values, [1])
    found = (least - group).clamp(0, width)  # a later item's key lands past width: none
    return torch.empty_like(found).scatter_(1, order, found)


class HistoryPointer(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.type_w = nn.Embedding(N_EVENT_TYPES + 1, 1)
        self.gap_w = nn.Embedding(MAX_GAP + 1, 1)
        self.bought_w = nn.Parameter(torch.zeros(()))
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.scale = 1.0 / math.sqrt(hidden)

    def reset_parameters(self) -> None:
        """Start neutral: every position scores 0, and the pointer learns what matters."""
        for p in (self.type_w.weight, self.gap_w.weight, self.bought_w):
            nn.init.zeros_(p)
        nn.init.normal_(self.query.weight, std=0.02)

    def scores(self, queries: torch.Tensor, states: torch.Tensor, items: torch.Tensor,
               types: torch.Tensor | None) -> torch.Tensor:
        """(B, L, L) scores s[b, t, k] of position k for the query at position t of row b (-inf
        where k > t or padding). ``queries``/``states`` (B, L, d); ``items``/``types`` (B, L); without
        types every event counts as the same type and nothing as bought."""
        width = items.shape[1]
        pos = torch.arange(width, device=items.device)
        seq = torch.bmm(self.query(queries), states.transpose(1, 2)) * self.scale  # (B, t, k)
        gap = (pos[:, None] - pos[None, :]).clamp(0, MAX_GAP)  # (t, k)
        cues = self.gap_w(gap).squeeze(-1)[None]
        if types is not None:
            cues = cues + self.type_w(types.clamp(0, N_EVENT_TYPES)).squeeze(-1)[:, None, :]
            # bought since: the first purchase of item_k after k, at or before t
            first = next_sighting(items, (types == int(EventType.PURCHASE)) & (items != 0))  # (B, k)
            cues = cues + self.bought_w * (first[:, None, :] <= pos[None, :, None])
        s = WEIGHT_SCALE * cues + seq
        valid = (pos[None, :] <= pos[:, None])[None] & (items != 0)[:, None, :]
        return s.masked_fill(~valid, float("-inf"))

    @staticmethod
    def item_logits(scores: torch.Tensor, items: torch.Tensor, n_columns: int) -> torch.Tensor:
        """(N, n_columns): per item the log-sum-exp of its positions' scores, -inf for items absent.
        ``scores`` (N, L) and ``items`` (N, L) are the positions' scores and items."""
        top = scores.max(dim=1, keepdim=True).values.clamp_min(-1e30)  # rows without a valid position
        mass = torch.exp(scores - top)
        out = scores.new_zeros(scores.shape[0], n_columns).scatter_add_(1, items, mass)
        # where no position holds the item: -inf, without a log(0) in the graph (its gradient is NaN)
        return torch.where(out > 0, torch.log(out.clamp_min(1e-30)) + top, float("-inf"))

    def mix(self, generate: torch.Tensor, scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The head's logits: ``logaddexp`` of the generate logits (N, V) and the copy logits."""
        copy = self.item_logits(scores, items, generate.shape[1])
        return torch.logaddexp(generate, copy)

    @staticmethod
    def masses(scores: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) log of the pointer's total mass and (N,) its log-mass on each row's target (-inf
        when the target is not in the history): all that the fused cross-entropy needs of it
        (``training.losses.full_softmax_ce``), without an (N, V) matrix."""
        on_target = (items == targets[:, None]) & torch.isfinite(scores)
        # rows without the target: a finite stand-in, so the masked log-sum-exp's gradient stays 0
        target = torch.logsumexp(torch.where(on_target, scores, scores.new_full((), -1e4)), dim=1)
        target = torch.where(on_target.any(dim=1), target, float("-inf"))
        return torch.logsumexp(scores, dim=1), target


OFFSET_BUCKETS = 16


def recency_bucket(gap: torch.Tensor) -> torch.Tensor:
    """Events ago -> 0..15: exact below 8, then one bucket per doubling (8-15, 16-31, ..., >= 1024)."""
    log = torch.floor(torch.log2(gap.clamp_min(1).float())).long()
    return torch.where(gap < 8, gap, (log + 5).clamp_max(OFFSET_BUCKETS - 1))


class SeenOffset(nn.Module):
    """A learned logit offset for the items already in the history, by how many events ago they
    were last seen. It can be negative, which the pointer's mixture cannot: where users rarely
    repeat (ratings: a movie is rated once) it pushes the seen items down the ranking, where they
    do (sessions) it pulls them up."""

    def __init__(self) -> None:
        super().__init__()
        # a bare parameter, zero: no offset until the data says so (init_weights leaves it alone)
        self.gap_w = nn.Parameter(torch.zeros(OFFSET_BUCKETS))

    def offsets(self, items: torch.Tensor, at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns and offsets for query position t of row b over positions k: item_k with the
        offset of its last sighting up to t (column 0 elsewhere: later positions, padding, and
        earlier sightings of an item seen again since). (B, L, L) for every t, or (B, L) for the
        query positions ``at`` (B,)."""
        width = items.shape[1]
        pos = torch.arange(width, device=items.device)
        t = pos[None, :].expand(len(items), -1) if at is None else at[:, None]  # (B, T) query positions
        next_seen = next_sighting(items)  # (B, k)
        valid = ((pos[None, None, :] <= t[:, :, None]) & (items != 0)[:, None, :]
                 & (next_seen[:, None, :] > t[:, :, None]))
        vals = WEIGHT_SCALE * self.gap_w[recency_bucket((t[:, :, None] - pos[None, None, :]).clamp_min(0))]
        cols = torch.where(valid, items[:, None, :], torch.zeros_like(items[:, None, :]))
        vals = vals * valid
        return (cols, vals) if at is None else (cols[:, 0], vals[:, 0])
