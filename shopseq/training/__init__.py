"""Training of the neural sequence models: config, length-aware batching, losses, the loop,
checkpoints. ``shopseq.models.neural`` wires these into the ``Recommender`` contract."""

from shopseq.training.batching import Batch, LengthBatcher
from shopseq.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shopseq.training.config import TrainConfig
from shopseq.training.losses import (
    TrainingTerms,
    full_softmax_ce,
    gbce,
    gbce_beta,
    item_log_q,
    reference_full_softmax_ce,
    sampled_softmax,
    uniform_negatives,
)
from shopseq.training.trainer import Trainable, Trainer, lr_factor, save_log_csv, set_threads

__all__ = [
    "Batch",
    "Checkpoint",
    "LengthBatcher",
    "TrainConfig",
    "Trainable",
    "Trainer",
    "TrainingTerms",
    "full_softmax_ce",
    "gbce",
    "gbce_beta",
    "item_log_q",
    "load_checkpoint",
    "lr_factor",
    "reference_full_softmax_ce",
    "sampled_softmax",
    "save_checkpoint",
    "save_log_csv",
    "set_threads",
    "uniform_negatives",
]
