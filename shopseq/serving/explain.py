"""Which past events drove a recommendation.

Occlusion (any model, any backend): the score of each explained item with the full history, and
with each event removed in turn; all ``L + 1`` histories go through the model as ONE batch. The
score drop is the event's attribution (positive = the event supported the item).

Attention (SASRec): the last block's attention of the final position over the history, averaged
over heads, recomputed from the block's own input (captured by a forward pre-hook) and its own
``qkv`` weights; the model code stays untouched and runs its fused attention kernel as usual.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from shopseq.models.base import Histories, Recommender
from shopseq.models.neural import TransformerBlock
from shopseq.serving.backends import ScoringBackend


def _leave_one_out(values: np.ndarray) -> np.ndarray:
    """(L + 1, L): row 0 = ``values``; row j + 1 = ``values`` without entry j, left-padded with 0."""
    n = len(values)
    rows = np.zeros((n + 1, n), dtype=np.int64)
    rows[0] = values
    rows[1:, 1:] = np.broadcast_to(values, (n, n))[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return rows


def leave_one_out_histories(history: Histories) -> Histories:
    """Row 0: the (single, full-length) history; row j + 1: it without event j (items, event
    types and timestamps alike, so models that read event features see consistent inputs)."""
    n = int(history.lengths[0])
    items, types, stamps = (np.asarray(a[0, -n:] if n else a[0, :0], dtype=np.int64)
                            for a in (history.items, history.types, history.timestamps))
    lengths = np.array([n] + [n - 1] * n, dtype=np.int64)
    return Histories(_leave_one_out(items), _leave_one_out(types), _leave_one_out(stamps), lengths)


def occlusion(backend: ScoringBackend, history: Histories, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores (T,) of ``targets`` for a one-row ``history`` and the drops (L, T) when each of its
    L events is removed: all L + 1 histories in one batch."""
    scores = backend.scores(leave_one_out_histories(history))[:, targets]
    return scores[0], scores[0][None, :] - scores[1:]


def supports_attention(model: Recommender) -> bool:
    module = getattr(model, "module", None)
    blocks = getattr(module, "blocks", None)
    # causal attention over the plain history: SASRec (BERT4Rec reads an extra [MASK] position)
    return (blocks is not None and len(blocks) > 0 and isinstance(blocks[-1], TransformerBlock)
            and not hasattr(module, "mask_id") and hasattr(module, "hidden_states"))


def attention_probs(block: TransformerBlock, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """(B, heads, L, L) attention weights the block computes for its input ``x`` (eval mode)."""
    h = block.norm1(x) if block.norm_first else x
    b, n, d = h.shape
    q, k, _ = block.qkv(h).view(b, n, 3, block.heads, d // block.heads).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d // block.heads)
    if causal:
        logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -torch.inf)
    return logits.softmax(-1)


def last_position_attention(model: Recommender, history: Histories) -> np.ndarray | None:
    """(L,) weights of the final position over a one-row history's last L <= max_len events (sums
    to 1), or None if the model has no such attention. The model runs its own scoring path (with
    whatever event features it reads); the hook only records the last block's input."""
    n = min(int(history.lengths[0]), model.max_len)
    if not supports_attention(model) or n == 0:
        return None
    block: TransformerBlock = model.module.blocks[-1]  # type: ignore[attr-defined]
    captured: list[torch.Tensor] = []
    me = threading.get_ident()  # the service scores other requests concurrently: keep only our own pass

    def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if threading.get_ident() == me:
            captured.append(args[0])

    handle = block.register_forward_pre_hook(record)
    try:
        model.encode(history)
        with torch.inference_mode():
            probs = attention_probs(block, captured[-1][:, :n])
    finally:
        handle.remove()
    return probs[0, :, -1, :].mean(0).numpy()
