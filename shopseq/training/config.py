"""``TrainConfig``: every knob of the training loop, shared by the neural models."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LossName = Literal["ce", "sampled", "gbce"]


class TrainConfig(BaseModel):
    """How a neural sequence model is trained (the model's own config holds the architecture).

    The loss of a batch is the *sum* over its targets divided by a fixed constant
    (``batch_size`` x mean targets per user), so every target weighs the same whatever the
    length of the batch it falls in (see DESIGN.md: a per-batch mean costs ~0.006 NDCG@10).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1, description="length of the cosine schedule; early stopping may end sooner")
    batch_size: int = Field(128, ge=1, description="users (windows with all_windows) per batch")
    batch_targets: int | None = Field(None, ge=1, description="cut batches by next-event targets instead: about "
                                      "this many per batch, however many windows that takes (batch_size unused)")
    micro_batch: int | None = Field(None, ge=1, description="rows per forward/backward pass: a batch's gradients "
                                    "accumulate over its micro-batches (the same update as one pass, up to dropout "
                                    "noise), so peak activation memory falls by about batch / micro_batch")
    all_windows: bool = Field(False, description="train on every event of long histories (tiled windows), "
                                                  "not only the last max_len")
    window_stride: int | None = Field(None, ge=1, description="with all_windows: events between window ends; "
                                      "None = max_len (each target once), smaller = overlapping windows")
    lr: float | None = Field(None, gt=0, description="peak learning rate; None = the model's default "
                             "(1e-3 for the Transformers, 3e-3 for GRU4Rec)")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    # capped at one epoch: on small data (ml-100k: 9 steps per epoch) 100 steps would be 11
    # epochs of low lr, long enough for patience to stop a GRU on its first plateau
    warmup_steps: int = Field(100, ge=0, description="linear warm-up from 0 to lr, at most one epoch long")
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(5.0, description="max global gradient norm; None disables")
    ema_epochs: float | None = Field(None, gt=0, description="validate and keep an exponential moving average "
                                     "of the weights with this time constant in epochs (None: the raw weights)")

    loss: LossName = "ce"
    bf16: bool = Field(False, description="bf16 autocast of the output-layer products (AVX512-BF16 CPUs)")
    n_negatives: int = Field(256, ge=1, description="uniform negatives per batch (sampled / gbce)")
    logq: bool = Field(True, description="sampled softmax: subtract log Q(item) from every logit")
    gbce_t: float = Field(0.75, ge=0, le=1, description="gBCE calibration parameter t")

    # validation NDCG@10 is noisy epoch to epoch: a short patience stops before the cosine tail,
    # where SASRec still gains (best epoch 96 of 100 on Beauty)
    patience: int | None = Field(20, ge=1, description="epochs without validation gain before stopping")
    monitor: str = "ndcg@10"
    eval_every: int = Field(1, ge=1)

    seed: int = 0
    threads: int | None = Field(None, description="torch threads; None = os.cpu_count()")
    quiet: bool = False
