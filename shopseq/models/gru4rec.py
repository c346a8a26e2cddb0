"""GRU4Rec (Hidasi et al. 2016), as a next-item model over whole histories: item embedding ->
GRU -> output layer (tied to the item embeddings, or its own), trained on every position."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shopseq.models.neural import Dropout, NeuralConfig, NeuralRecommender, SequenceModule, init_weights
from shopseq.models.registry import register
from shopseq.training.batching import Batch

__all__ = ["GRU4Rec", "GRU4RecConfig", "GRU4RecModule"]


class GRU4RecConfig(NeuralConfig):
    model: str = "gru4rec"
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    tied: bool = Field(True, description="score with the input item embeddings (else a separate output table)")


class GRU4RecModule(SequenceModule):
    honours_first_target = True

    def __init__(self, n_items: int, c: GRU4RecConfig) -> None:
        super().__init__(n_items)
        self.window = c.max_len + 1
        self.item_emb = nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        self.drop = Dropout(c.dropout)
        self.gru = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True,
                          dropout=c.dropout if c.layers > 1 else 0.0)
        self.out_emb = None if c.tied else nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        init_weights(self)  # GRU keeps torch's own init

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        # left-aligned: padding comes after the real events, so it never feeds a real state
        out, _ = self.gru(self.drop(self.item_emb(items)))
        return self.drop(out)

    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(items)
        return h[torch.arange(len(items)), (lengths - 1).clamp_min(0)]

    def training_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch.items[:, :-1], batch.items[:, 1:]
        keep = batch.target_mask()
        return self.hidden_states(inputs)[keep], targets[keep]

    def mean_targets(self, lengths: np.ndarray) -> float:
        return float(np.mean(np.asarray(lengths) - 1)) if len(lengths) else 1.0

    def output_weight(self) -> torch.Tensor:
        return (self.item_emb if self.out_emb is None else self.out_emb).weight


@register
class GRU4Rec(NeuralRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig
    config: GRU4RecConfig

    def build_module(self) -> GRU4RecModule:
        return GRU4RecModule(self.n_items, self.config)
