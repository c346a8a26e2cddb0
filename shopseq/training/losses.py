"""Next-item losses over a tied output layer: full softmax, sampled softmax with logQ, gBCE.

Every loss takes the hidden states of the target positions ``h`` (N, d), the output embedding
matrix ``weight`` (V, d) whose row ``i`` scores item ``i`` (row 0 = padding, never a valid
answer), and the target items ``targets`` (N,), and returns the *sum* over targets: the trainer
divides by a fixed constant (see ``TrainConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "TrainingTerms",
    "full_softmax_ce",
    "gbce",
    "gbce_beta",
    "item_log_q",
    "reference_full_softmax_ce",
    "sampled_softmax",
    "uniform_negatives",
]


@dataclass
class TrainingTerms:
    """What a model hands the trainer for one batch: the hidden states of the target positions
    ``h`` (N, d) and their target items (N,); the weighted summed loss of auxiliary heads (None:
    no heads); for a next-item pointer over the history, its log total mass and log-mass on each
    target (N,); for offsets of the history's items, their (N, K) columns and values (see
    :func:`full_softmax_ce`)."""

    h: torch.Tensor
    targets: torch.Tensor
    aux: torch.Tensor | None = None
    copy_mass: torch.Tensor | None = None
    copy_target: torch.Tensor | None = None
    offset_cols: torch.Tensor | None = None
    offset_vals: torch.Tensor | None = None


class _FusedSoftmaxCE(torch.autograd.Function):
    """Summed softmax cross-entropy over all items, computed with its gradient in ONE pass over
    row chunks: each chunk's logits (small enough to stay in cache) become exp(logit - max) in
    place, and the gradients ``dL/dh = (E W) / s - W[t]`` and ``dL/dW += E^T (h / s) - onehot^T h``
    are accumulated right away, so the (N, V) logit matrix never exists and no separate backward
    pass over it is needed (DESIGN.md: the output layer is ~70% of an epoch on CPU)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                copy_mass: torch.Tensor | None, copy_target: torch.Tensor | None,
                offset_cols: torch.Tensor | None, offset_vals: torch.Tensor | None, bf16: bool,
                chunk: int) -> torch.Tensor:
        h, weight = h.detach(), weight.detach()
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight)
        pointer = copy_mass is not None
        if pointer:
            copy_mass, copy_target = copy_mass.detach().float(), copy_target.detach().float()
            grad_mass, grad_target = torch.empty_like(copy_mass), torch.empty_like(copy_target)
        offsets = offset_cols is not None
        if offsets:
            offset_vals = offset_vals.detach().float()
            grad_offsets = torch.empty_like(offset_vals)
        w_mm = weight.bfloat16() if bf16 else weight
        loss = h.new_zeros((), dtype=torch.float64)
        for lo in range(0, len(targets), chunk):
            hc, tc = h[lo:lo + chunk], targets[lo:lo + chunk]
            h_mm = hc.bfloat16() if bf16 else hc
            buf = torch.mm(h_mm, w_mm.t()).float()  # (chunk, V) logits
            if offsets:  # each row's own items get their offsets (distinct columns; 0 = none)
                cols = offset_cols[lo:lo + chunk]
                buf.scatter_add_(1, cols, offset_vals[lo:lo + chunk])
            target_logit = buf[torch.arange(len(tc)), tc]
            buf[:, 0] = -torch.inf  # padding is never an answer
            top = torch.amax(buf, dim=1, keepdim=True)
            if pointer:
                mass_c = copy_mass[lo:lo + chunk, None]
                top = torch.maximum(top, mass_c)
            # clamp: exp of a gap below -87 is a float32 denormal, which is ~100x slower to produce and
            # to multiply (measured); exp(-80) is as good as zero next to the max's exp(0) = 1
            buf.sub_(top).clamp_(min=-80.0).exp_()
            buf[:, 0] = 0.0  # (the clamp turned padding's -inf into -80)
            total = buf.sum(dim=1, keepdim=True)
            if pointer:  # the pointer's mass joins the denominator; its target score the numerator
                copy_share = torch.exp(mass_c - top)
                total = total + copy_share
                answer = torch.logaddexp(target_logit, copy_target[lo:lo + chunk])
                grad_mass[lo:lo + chunk] = (copy_share / total).squeeze(1)
                grad_target[lo:lo + chunk] = -torch.exp(copy_target[lo:lo + chunk] - answer)
                generated = torch.exp(target_logit - answer)[:, None]  # the catalogue's share of the answer
            else:
                answer = target_logit
                generated = None
            loss += (top + total.log()).sum() - answer.sum()
            inv = 1.0 / total
            if offsets:  # d loss / d offset = p(item) - [item is the target] (the catalogue's share of it)
                hit = (cols == tc[:, None]).float()
                grad_offsets[lo:lo + chunk] = (buf.gather(1, cols) * inv
                                               - (hit if generated is None else hit * generated)) * (cols != 0)
            e = buf.bfloat16() if bf16 else buf
            gh = grad_h[lo:lo + chunk]
            if bf16:
                gh.copy_(torch.mm(e, w_mm))
                grad_w.add_(torch.mm(e.t(), (hc * inv).bfloat16()))
            else:  # out= / addmm_: no temporaries, no extra pass over grad_w per chunk
                torch.mm(e, w_mm, out=gh)
                grad_w.addmm_(e.t(), hc * inv)
            # the target's own term, scaled by the catalogue's share of the answer under a pointer
            gh.mul_(inv).sub_(weight[tc] if generated is None else weight[tc] * generated)
            grad_w.index_add_(0, tc, hc if generated is None else hc * generated, alpha=-1.0)
        ctx.has = (pointer, offsets)
        ctx.save_for_backward(grad_h, grad_w, *((grad_mass, grad_target) if pointer else ()),
                              *((grad_offsets,) if offsets else ()))
        return loss.float()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grads = [g * grad_out for g in ctx.saved_tensors]
        grad_h, grad_w = grads[:2]
        pointer, offsets = ctx.has
        grad_mass, grad_target = grads[2:4] if pointer else (None, None)
        grad_offsets = grads[-1] if offsets else None
        return grad_h, grad_w, None, grad_mass, grad_target, None, grad_offsets, None, None


def full_softmax_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bf16: bool = False,
                    chunk: int | None = None, copy_mass: torch.Tensor | None = None,
                    copy_target: torch.Tensor | None = None, offset_cols: torch.Tensor | None = None,
                    offset_vals: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over targets of the cross-entropy of a softmax over all items (padding excluded).

    ``bf16`` does the three matrix products in bfloat16 (fast only on CPUs with AVX512-BF16 / AMX);
    ``chunk`` rows per step default to a ~6 MB logit buffer.

    With a pointer over the history (``copy_mass`` and ``copy_target``, both (N,)), item ``i``'s
    logit is ``logaddexp(h . w_i, c_i)`` where ``c_i`` is the pointer's log-mass on ``i`` (-inf for
    items not in the history). Only two numbers per row are needed for that: the log of the
    pointer's total mass (``copy_mass``, log-sum-exp of ``c``) joins the denominator, and its
    log-mass on the target (``copy_target``, -inf when absent) the numerator.

    ``offset_cols`` (N, K) and ``offset_vals`` (N, K) add ``offset_vals[n, j]`` to the logit of item
    ``offset_cols[n, j]`` in row n (a learned bias for the items of each row's own history): the
    columns of a row must be distinct, 0 marks an unused slot."""
    if chunk is None:
        chunk = max(16, 6_000_000 // (4 * weight.shape[0]))
    if (copy_mass is None) != (copy_target is None):
        raise ValueError("the pointer needs both copy_mass and copy_target")
    if (offset_cols is None) != (offset_vals is None):
        raise ValueError("offsets need both offset_cols and offset_vals")
    return _FusedSoftmaxCE.apply(h, weight, targets, copy_mass, copy_target, offset_cols, offset_vals, bf16, chunk)


def reference_full_softmax_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                              copy_logits: torch.Tensor | None = None,
                              offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Plain ``F.cross_entropy`` version of :func:`full_softmax_ce` (tests, debugging); the pointer
    comes as the full (N, V) matrix of its per-item log-masses (-inf where absent), the offsets as
    a dense (N, V) matrix."""
    logits = h @ weight.t()
    if offsets is not None:
        logits = logits + offsets
    if copy_logits is not None:
        logits = torch.logaddexp(logits, copy_logits)
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets, reduction="sum")


def uniform_negatives(n_items: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` items drawn uniformly from 1..n_items (with replacement), shared by a batch."""
    return torch.randint(1, n_items + 1, (n,), generator=generator)


def item_log_q(counts: torch.Tensor) -> torch.Tensor:
    """log popularity probability of each item (row 0 and unseen items get a tiny floor)."""
    counts = counts.double().clamp_min(0.5)
    counts[0] = 0.5
    return (counts / counts.sum()).log().float()


def sampled_softmax(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_pop: torch.Tensor | None,
) -> torch.Tensor:
    """Softmax over {own target} + the batch's distinct targets (in-batch negatives) + ``negatives``
    (uniform), summed over targets.

    With ``log_pop`` (log popularity, :func:`item_log_q`) every logit is corrected by
    ``- log Q(item)`` where Q is the expected number of times the item is among the candidates:
    ``N * p_pop(item)`` for in-batch negatives + ``K / n_items`` for uniform ones (logQ correction,
    Yi et al. 2019). Candidates equal to the row's own target are masked (accidental hits).
    """
    n_items = weight.shape[0] - 1
    batch_items = torch.unique(targets)
    cand = torch.cat([batch_items, negatives])
    pos_logit = (h * weight[targets]).sum(1, keepdim=True)  # (N, 1)
    cand_logit = h @ weight[cand].t()  # (N, C)
    if log_pop is not None:
        q = len(targets) * log_pop.exp() + len(negatives) / n_items
        log_q = q.log()
        pos_logit = pos_logit - log_q[targets][:, None]
        cand_logit = cand_logit - log_q[cand][None, :]
    cand_logit = cand_logit.masked_fill(cand[None, :] == targets[:, None], -torch.inf)
    logits = torch.cat([pos_logit, cand_logit], dim=1)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).sum()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = alpha * (t * (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1)."""
    alpha = n_negatives / max(n_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, beta: float
) -> torch.Tensor:
    """Generalised binary cross-entropy (gSASRec, Petrov & Macdonald 2023), summed over targets:
    ``-beta * log sigmoid(s+) - sum_j log(1 - sigmoid(s-_j))`` with ``negatives`` shared by the
    batch; negatives equal to the row's target are ignored."""
    pos = (h * weight[targets]).sum(1)
    neg = h @ weight[negatives].t()  # (N, K)
    neg_loss = F.softplus(neg).masked_fill(negatives[None, :] == targets[:, None], 0.0).sum(1)
    return (beta * F.softplus(-pos) + neg_loss).sum()

