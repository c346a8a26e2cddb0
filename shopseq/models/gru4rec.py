"""GRU4Rec (Hidasi et al. 2016), as a next-item model over whole histories: item embedding
(+ optional event features: type, time gap, hour of week, item attributes) -> GRU -> output layer
(tied to the item embeddings, or its own), trained on every position."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from shopseq.models.features import EventEmbedding, EventFeatures
from shopseq.models.neural import (
    Dropout,
    NeuralConfig,
    NeuralRecommender,
    SequenceModule,
    init_weights,
    last_states,
)
from shopseq.models.registry import register
from shopseq.training.batching import Batch

__all__ = ["GRU4Rec", "GRU4RecConfig", "GRU4RecModule"]


class GRU4RecConfig(NeuralConfig):
    model: str = "gru4rec"
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    tied: bool = Field(True, description="score with the input item embeddings (else a separate output table)")
    features: EventFeatures = Field(default_factory=EventFeatures, description="event inputs beside the item")


class GRU4RecModule(SequenceModule):
    honours_first_target = True
    # at 1e-3 it sat on a popularity plateau on ml-100k, Beauty and YOOCHOOSE (BENCHMARKS.md, peers)
    default_lr = 3e-3

    def __init__(self, n_items: int, c: GRU4RecConfig) -> None:
        super().__init__(n_items, c.seen_offset)
        self.window = c.max_len + 1
        self.item_emb = nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        self.drop = Dropout(c.dropout)
        self.gru = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True,
                          dropout=c.dropout if c.layers > 1 else 0.0)
        self.out_emb = None if c.tied else nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        self.features = EventEmbedding(n_items, c.hidden, c.features)
        self.reads_event_features = c.features.any_event_inputs
        init_weights(self)  # GRU keeps torch's own init

    def hidden_states(self, items: torch.Tensor, lengths: torch.Tensor | None = None,
                      types: torch.Tensor | None = None, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        # left-aligned: padding comes after the real events, so it never feeds a real state
        x = self.item_emb(items)
        extra = self.features(items, (items != 0).sum(dim=1) if lengths is None else lengths, types, timestamps)
        if extra is not None:
            x = x + extra
        out, _ = self.gru(self.drop(x))
        return self.drop(out)

    def batch_user_vectors(self, batch: Batch) -> torch.Tensor:
        return last_states(self.hidden_states(batch.items, batch.lengths, batch.types, batch.timestamps), batch.lengths)

    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.batch_user_vectors(Batch(items, lengths, np.zeros(len(items), dtype=np.int64)))

    def training_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.inputs()
        h = self.hidden_states(x.items, x.lengths, x.types, x.timestamps)
        keep = batch.target_mask()
        return h[keep], batch.items[:, 1:][keep]

    def mean_targets(self, lengths: np.ndarray) -> float:
        return float(np.mean(np.asarray(lengths) - 1)) if len(lengths) else 1.0

    def output_weight(self) -> torch.Tensor:
        if self.out_emb is not None:
            return self.out_emb.weight
        attrs = self.features.attribute_vectors()  # tied: the same item vector as the input side
        return self.item_emb.weight if attrs is None else self.item_emb.weight + attrs


@register
class GRU4Rec(NeuralRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig
    config: GRU4RecConfig

    def build_module(self) -> GRU4RecModule:
        return GRU4RecModule(self.n_items, self.config)
