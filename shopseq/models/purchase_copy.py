"""The purchase head's pointer over the history: most purchases are of an item the user has just
carted or viewed, and a softmax over the whole catalogue has to relearn that for every item.

For a query position t and each earlier position k <= t holding item i_k, a copy score

    s(t, k) = w_type[type_k] + w_gap[min(t - k, MAX_GAP)] + w_bought * [i_k bought in (k, t]]
              + <W q_t, h_k> / sqrt(d)

(event type, how many events ago, whether it has been bought since, and what the sequence says),
and per item the log-sum-exp over its positions. The head's logit of item i is then
``logaddexp(generate_i, copy_i)``: a mixture of "buy something new" (the tied-embedding scores)
and "buy one of these" (the pointer), trained by the same cross-entropy. Every term sees only
events up to t, so training stays causal.
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


class PurchaseCopy(nn.Module):
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

    def scores(self, queries: torch.Tensor, states: torch.Tensor, items: torch.Tensor, types: torch.Tensor,
               rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(N, L) copy scores of positions k of row ``rows[n]`` for query position ``t[n]`` (-inf
        where k > t or padding). ``queries`` (N, d); ``states`` (B, L, d); ``items``/``types`` (B, L)."""
        width = items.shape[1]
        k = torch.arange(width, device=items.device)
        it, ty = items[rows], types[rows]  # (N, L)
        seq = torch.einsum("nd,nld->nl", self.query(queries), states[rows]) * self.scale
        gap = (t[:, None] - k[None, :]).clamp(0, MAX_GAP)
        # bought since: a purchase of the same item at a position j with k < j <= t
        bought_at = (ty == int(EventType.PURCHASE)) & (it != 0)  # (N, L) over j
        same = (it[:, :, None] == it[:, None, :]) & bought_at[:, None, :]  # (N, k, j)
        window = (k[None, None, :] > k[None, :, None]) & (k[None, None, :] <= t[:, None, None])
        bought = (same & window).any(dim=2)
        cues = (self.type_w(ty.clamp(0, N_EVENT_TYPES)).squeeze(-1) + self.gap_w(gap).squeeze(-1)
                + self.bought_w * bought)
        s = WEIGHT_SCALE * cues + seq
        valid = (k[None, :] <= t[:, None]) & (it != 0)
        return s.masked_fill(~valid, float("-inf"))

    @staticmethod
    def item_logits(scores: torch.Tensor, items: torch.Tensor, n_columns: int) -> torch.Tensor:
        """(N, n_columns): per item the log-sum-exp of its positions' scores, -inf for items absent.
        ``items`` (N, L) are the positions' items."""
        top = scores.max(dim=1, keepdim=True).values.clamp_min(-1e30)  # rows without a valid position
        mass = torch.exp(scores - top)
        out = scores.new_zeros(scores.shape[0], n_columns).scatter_add_(1, items, mass)
        # where no position holds the item: -inf, without a log(0) in the graph (its gradient is NaN)
        return torch.where(out > 0, torch.log(out.clamp_min(1e-30)) + top, float("-inf"))

    def mix(self, generate: torch.Tensor, scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The head's logits: ``logaddexp`` of the generate logits (N, V) and the copy logits."""
        copy = self.item_logits(scores, items, generate.shape[1])
        return torch.logaddexp(generate, copy)
