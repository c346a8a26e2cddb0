"""The training loop shared by the neural models: one file, read top to bottom.

``Trainer(module, batcher, config, ...).fit()`` runs epochs of length-bucketed batches, computes
the configured loss on every target position, steps AdamW under a warm-up + cosine schedule,
validates through an injected callable (early stopping, best weights restored), writes a
checkpoint after every epoch when given a folder, and returns the per-epoch log.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shopseq.training.batching import Batch, LengthBatcher
from shopseq.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shopseq.training.config import TrainConfig
from shopseq.training.distributed import DistContext, init_from_env
from shopseq.training.losses import (
    TrainingTerms,
    full_softmax_ce,
    gbce,
    gbce_beta,
    item_log_q,
    sampled_softmax,
    uniform_negatives,
)
from shopseq.training.optim import AdamW

__all__ = ["Trainable", "Trainer", "lr_factor", "save_log_csv", "set_threads"]

Validate = Callable[[], dict[str, float]]


class Trainable(Protocol):
    """What the trainer needs from a model's torch module (besides being an ``nn.Module``)."""

    def training_terms(self, batch: Batch) -> TrainingTerms:
        """Hidden states (N, d) of the target positions of a batch, their target items (N,), the
        weighted summed loss of auxiliary heads, and a next-item pointer's terms, if any."""
        ...

    def output_weight(self) -> torch.Tensor:
        """(n_items + 1, d) output embeddings; row i scores item i."""
        ...

    def mean_targets(self, lengths: np.ndarray) -> float:
        """Expected targets per training window of the given lengths (for the loss constant)."""
        ...


def set_threads(threads: int | None) -> int:
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def lr_factor(step: int, total: int, config: TrainConfig, warmup: int | None = None) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warm-up over ``warmup`` steps
    (default ``config.warmup_steps``), then cosine or flat."""
    warmup = config.warmup_steps if warmup is None else warmup
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _micro_batches(rows: np.ndarray, size: int | None) -> list[np.ndarray]:
    """``rows`` in parts of at most ``size`` (all of it when None); none when empty."""
    if not len(rows):
        return []
    return np.array_split(rows, -(-len(rows) // (size or len(rows))))


def _swap_in(params: list[nn.Parameter], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copy ``values`` into ``params``; returns copies of what the parameters held before."""
    with torch.no_grad():
        before = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, values)
    return before


def _resumable(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint (display and threads may change)."""
    return {k: v for k, v in config.items() if k not in ("quiet", "threads")}


def save_log_csv(log: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write the per-epoch log (columns = union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in log:
        columns += [k for k in row if k not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(log)
    return path


class Trainer:
    def __init__(
        self,
        module: nn.Module,
        batcher: LengthBatcher,
        config: TrainConfig,
        *,
        n_items: int,
        item_counts: np.ndarray | None = None,
        validate: Validate | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        desc: str = "train",
        dist: DistContext | None = None,
    ) -> None:
        self.module = module
        # under torchrun this joins the process group; a plain run is a world of one
        self.dist = dist if dist is not None else init_from_env()
        self.batcher = batcher
        self.config = config
        self.n_items = n_items
        self.validate = validate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume = resume
        self.desc = desc
        self.log: list[dict[str, Any]] = []
        model: Trainable = module  # type: ignore[assignment]
        self.lr = config.lr if config.lr is not None else getattr(module, "default_lr", 1e-3)
        # The loss of a batch = sum over its targets / this constant (batch_size x mean targets per
        # user): every target weighs the same, whatever the length of its batch. Each rank holds
        # 1/world of a global batch, and gradients are averaged over ranks: hence the division.
        if config.batch_targets is not None:  # a batch holds ~batch_targets window targets, of which the
            # model trains on mean_targets / mean window targets (all for next-item models, the masked for BERT4Rec)
            window_targets = float(np.mean(batcher.row_targets)) if batcher.n_users else 1.0
            share = model.mean_targets(batcher.target_lengths) / window_targets
            self.norm = config.batch_targets / self.dist.world_size * max(share, 1e-9)
        else:
            self.norm = config.batch_size / self.dist.world_size * max(model.mean_targets(batcher.target_lengths), 1e-9)
        counts = np.zeros(n_items + 1, dtype=np.float64)
        if item_counts is not None:
            counts[: len(item_counts)] = item_counts
        self.log_pop = item_log_q(torch.from_numpy(counts)) if config.loss == "sampled" and config.logq else None
        self.beta = gbce_beta(config.n_negatives, n_items, config.gbce_t)

    # -- pieces ---------------------------------------------------------------------------
    def _optimizer(self) -> AdamW:
        # no weight decay on biases and LayerNorm gains
        decay = [p for p in self.module.parameters() if p.requires_grad and p.dim() >= 2]
        rest = [p for p in self.module.parameters() if p.requires_grad and p.dim() < 2]
        return AdamW([(decay, self.config.weight_decay), (rest, 0.0)], betas=self.config.betas)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        model: Trainable = self.module  # type: ignore[assignment]
        terms = model.training_terms(batch)
        h, targets, weight = terms.h, terms.targets, model.output_weight()
        c = self.config
        if (terms.copy_mass is not None or terms.offset_cols is not None) and c.loss != "ce":
            raise ValueError(f"the next-item pointer and seen-item offsets train with the full-softmax loss "
                             f"(ce), not {c.loss!r}")
        if c.loss == "ce":
            total = full_softmax_ce(h, weight, targets, bf16=c.bf16, copy_mass=terms.copy_mass,
                                    copy_target=terms.copy_target, offset_cols=terms.offset_cols,
                                    offset_vals=terms.offset_vals)
        elif c.loss == "sampled":
            total = sampled_softmax(h, weight, targets, uniform_negatives(self.n_items, c.n_negatives), self.log_pop)
        else:
            total = gbce(h, weight, targets, uniform_negatives(self.n_items, c.n_negatives), self.beta)
        if terms.aux is not None:
            total = total + terms.aux
        return total, len(targets)

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        c = self.config
        set_threads(c.threads)
        ctx, main = self.dist, self.dist.is_main
        torch.manual_seed(c.seed + ctx.rank)  # dropout differs per rank; the epoch plan (rng) must not
        rng = np.random.default_rng(c.seed)
        ctx.broadcast_parameters(self.module)
        optimizer = self._optimizer()
        steps_per_epoch = max(len(self.batcher), 1)
        total_steps = c.epochs * steps_per_epoch
        warmup = min(c.warmup_steps, steps_per_epoch)
        best_metric, best_epoch, bad_epochs, start = -math.inf, 0, 0, 1
        best_state: dict[str, torch.Tensor] | None = None
        params = [p for p in self.module.parameters() if p.requires_grad]
        # the weight average: every rank applies the same averaged gradients, so all hold the same
        ema = [p.detach().clone() for p in params] if c.ema_epochs else None
        ema_rate = 1.0 / max(1.0, (c.ema_epochs or 1.0) * steps_per_epoch)

        if self.resume and self.checkpoint_dir is not None:
            ckpt = load_checkpoint(self.checkpoint_dir)
            if ckpt is not None:
                m = ckpt.meta
                before, now = (_resumable(x) for x in (m.get("config", {}), c.model_dump(mode="json")))
                if before != now:
                    changed = sorted(k for k in now if before.get(k) != now[k])
                    raise ValueError(f"{self.checkpoint_dir} was written with other training settings ({changed}); "
                                     "resume with the same config or use a new checkpoint folder")
                self.module.load_state_dict({k[6:]: v for k, v in ckpt.tensors.items() if k.startswith("model.")})
                if ema is not None:
                    ema = [ckpt.tensors[f"ema.{i}"].clone() for i in range(len(ema))]
                optimizer.load_state_tensors(ckpt.tensors)  # its step count places the schedule
                torch.set_rng_state(ckpt.tensors["rng.torch"])
                rng.bit_generator.state = m["numpy_rng"]
                best_metric = -math.inf if m["best_metric"] is None else m["best_metric"]
                best_epoch, bad_epochs = m["best_epoch"], m["bad_epochs"]
                best_state = {k[5:]: v for k, v in ckpt.tensors.items() if k.startswith("best.")} or None
                self.log = list(m["log"])
                start = int(m["epoch"]) + 1
                if m.get("stopped"):
                    start = c.epochs + 1  # it had finished: only restore the weights below

        for epoch in range(start, c.epochs + 1):
            self.module.train()
            t0 = time.perf_counter()
            loss_sum, n_targets = 0.0, 0
            lr = self.lr * lr_factor(optimizer.steps, total_steps, c, warmup)
            bar = tqdm(self.batcher.plan(rng), total=steps_per_epoch, desc=f"{self.desc} {epoch}/{c.epochs}",
                       disable=True if c.quiet or not main else None, leave=False, unit="batch")  # None: tty only
            for rows in bar:
                rows = ctx.shard(rows)  # this rank's part of the global batch (all of it in one process)
                optimizer.zero_grad()
                # a rank with no rows (a last batch smaller than the world) only joins the all-reduce
                value, n = 0.0, 0
                for part in _micro_batches(rows, c.micro_batch):
                    total, k = self._loss(self.batcher.make(part))
                    (total / self.norm).backward()  # the loss is a sum over targets: parts add up exactly
                    value, n = value + float(total.detach()), n + k
                ctx.average_gradients(self.module)
                if c.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.module.parameters(), c.grad_clip)
                lr = self.lr * lr_factor(optimizer.steps, total_steps, c, warmup)
                optimizer.step(lr)
                if ema is not None:
                    with torch.no_grad():
                        torch._foreach_lerp_(ema, [p.detach() for p in params], ema_rate)
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} in epoch {epoch}; lower lr or set grad_clip")
                loss_sum += value
                n_targets += n
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_sum / max(n_targets, 1):.4f}", tgt_s=f"{n_targets / elapsed:,.0f}")
            seconds = time.perf_counter() - t0
            loss_sum, n_targets = ctx.sum(loss_sum, n_targets)
            row: dict[str, Any] = {"epoch": epoch, "loss": loss_sum / max(n_targets, 1), "seconds": round(seconds, 3),
                                   "lr": lr, "targets_per_s": round(n_targets / seconds)}

            stop = False
            if self.validate is not None and (epoch % c.eval_every == 0 or epoch == c.epochs):
                self.module.eval()
                tv = time.perf_counter()
                raw = _swap_in(params, ema) if ema is not None else None  # validate (and keep) the average
                # rank 0 validates; every rank takes its numbers, so all make the same stopping decision
                metrics = ctx.broadcast({k: float(v) for k, v in self.validate().items()} if main else None)
                row.update({f"valid_{k}": v for k, v in metrics.items()})
                row["valid_seconds"] = round(time.perf_counter() - tv, 3)
                if c.monitor not in metrics:
                    raise KeyError(f"validation returned {sorted(metrics)}, not the monitored {c.monitor!r}")
                if metrics[c.monitor] > best_metric:
                    best_metric, best_epoch, bad_epochs = metrics[c.monitor], epoch, 0
                    best_state = self._state()
                else:
                    bad_epochs += 1
                    stop = c.patience is not None and bad_epochs >= c.patience
                if raw is not None:
                    _swap_in(params, raw)  # training goes on from the raw weights
            self.log.append(row)
            if not c.quiet and main:
                shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
                tqdm.write(f"{self.desc}: {shown}")
            if self.checkpoint_dir is not None and main:
                meta = {"config": c.model_dump(mode="json"), "epoch": epoch,
                        "best_metric": best_metric if math.isfinite(best_metric) else None,
                        "best_epoch": best_epoch, "bad_epochs": bad_epochs, "stopped": stop,
                        "numpy_rng": rng.bit_generator.state, "log": self.log}
                tensors = {f"model.{k}": v for k, v in self.module.state_dict().items()}
                if best_state is not None:
                    tensors.update({f"best.{k}": v for k, v in best_state.items()})
                tensors.update(optimizer.state_tensors())
                tensors["rng.torch"] = torch.get_rng_state()
                if ema is not None:
                    tensors.update({f"ema.{i}": t for i, t in enumerate(ema)})
                save_checkpoint(self.checkpoint_dir, Checkpoint(tensors, meta), tag=f"{epoch:05d}")
            if stop:
                break

        if best_state is not None:
            self.module.load_state_dict(best_state)
        elif ema is not None:  # no validation: the average is the result
            _swap_in(params, ema)
        self.best_metric, self.best_epoch = best_metric, best_epoch
        self.module.eval()
        return self.log
