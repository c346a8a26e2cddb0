"""Next-item losses over a tied output layer: full softmax, sampled softmax with logQ, gBCE.

Every loss takes the hidden states of the target positions ``h`` (N, d), the output embedding
matrix ``weight`` (V, d) whose row ``i`` scores item ``i`` (row 0 = padding, never a valid
answer), and the target items ``targets`` (N,), and returns the *sum* over targets: the trainer
divides by a fixed constant (see ``TrainConfig``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "full_softmax_ce",
    "gbce",
    "gbce_beta",
    "item_log_q",
    "reference_full_softmax_ce",
    "sampled_softmax",
    "uniform_negatives",
]


def _mm(a: torch.Tensor, b_t: torch.Tensor, bf16: bool) -> torch.Tensor:
    """``a @ b_t`` in float32, the products optionally done in bfloat16."""
    if bf16:
        return torch.mm(a.bfloat16(), b_t.bfloat16()).float()
    return torch.mm(a, b_t)


class _FusedSoftmaxCE(torch.autograd.Function):
    """Summed softmax cross-entropy over all items that keeps ONE (N, V) buffer: the logits become
    the softmax and then the gradient in place, instead of F.cross_entropy's logits + log-softmax +
    gradient buffers (DESIGN.md: ~25% of an epoch on CPU)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                bf16: bool) -> torch.Tensor:
        buf = _mm(h, weight.t(), bf16)  # (N, V) logits
        rows = torch.arange(len(targets))
        target_logit = buf[rows, targets]
        buf[:, 0] = -torch.inf  # padding is never an answer
        top = buf.max(dim=1, keepdim=True).values
        buf.sub_(top).exp_()
        total = buf.sum(dim=1, keepdim=True)
        buf.div_(total)  # softmax
        loss = (top.squeeze(1) + total.log().squeeze(1) - target_logit).sum()
        buf[rows, targets] -= 1.0  # d loss / d logits = softmax - onehot
        ctx.save_for_backward(h, weight, buf)
        ctx.bf16 = bf16
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        h, weight, grad = ctx.saved_tensors
        if float(grad_out) != 1.0:
            grad = grad * grad_out
        if ctx.bf16:
            g = grad.bfloat16()
            grad_h = torch.mm(g, weight.bfloat16()).float()
            grad_w = torch.mm(g.t(), h.bfloat16()).float()
        else:
            grad_h = torch.mm(grad, weight)
            grad_w = torch.mm(grad.t(), h)
        return grad_h, grad_w, None, None


def full_softmax_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Sum over targets of the cross-entropy of a softmax over all items (padding excluded)."""
    return _FusedSoftmaxCE.apply(h, weight, targets, bf16)


def reference_full_softmax_ce(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain ``F.cross_entropy`` version of :func:`full_softmax_ce` (tests, debugging)."""
    logits = h @ weight.t()
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

