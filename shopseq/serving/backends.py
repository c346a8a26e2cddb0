"""What turns a batch of histories into scores for every item: eager PyTorch (any model) or the
ONNX encoder on onnxruntime; neural models end in one exact matmul with the item matrix."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import torch

from shopseq.models.base import Histories, Recommender
from shopseq.models.neural import NeuralRecommender, left_align_histories
from shopseq.serving.onnx_export import OnnxEncoder

Head = Literal["next_item", "next_purchase"]


class ScoringBackend(Protocol):
    name: str
    n_items: int
    heads: frozenset[str]  # the heads it can rank by

    def scores(self, histories: Histories, head: Head = "next_item") -> np.ndarray:
        """float32 (B, n_items + 1); column 0 (padding) is never recommended."""
        ...


class TorchBackend:
    """``model.score`` semantics. For neural models the item matrix is taken once (weights are
    frozen while serving) and the module is called directly: ``NeuralRecommender.score`` switches
    the module to eval mode on every call, which cost a third of a small model's request time."""

    name = "torch"

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.n_items = model.n_items
        self.heads = frozenset({"next_item", "next_purchase"} if model.has_purchase_head else {"next_item"})
        self._neural = isinstance(model, NeuralRecommender)
        if self._neural:
            model.module.eval()
            with torch.inference_mode():
                self._matrix_t = model.module.output_weight().detach().float().t().contiguous()

    def scores(self, histories: Histories, head: Head = "next_item") -> np.ndarray:
        with torch.inference_mode():
            if head == "next_purchase":
                return self.model.score_purchase(histories).float().numpy()
            if not self._neural:
                return self.model.score(histories).numpy()
            module = self.model.module
            batch = left_align_histories(histories, self.model.max_len, module.reads_event_features)
            if getattr(module, "scores_each_history", False):  # offsets / pointer over each history's items
                return module.history_scores(batch).float().numpy()
            return (module.batch_user_vectors(batch).float() @ self._matrix_t).numpy()


class OnnxBackend:
    name = "onnx"

    def __init__(self, encoder: OnnxEncoder, model: Recommender) -> None:
        if encoder.n_items != model.n_items or encoder.max_len != model.max_len:
            raise ValueError(
                f"the ONNX export ({encoder.manifest['model']}, {encoder.n_items} items, max_len "
                f"{encoder.max_len}) does not belong to this run ({model.name}, {model.n_items} items, "
                f"max_len {model.max_len}); export this run again"
            )
        self.encoder = encoder
        self.n_items = encoder.n_items
        self.heads = frozenset({"next_item"})  # the export holds the next-item encoder only
        self._matrix_t = np.ascontiguousarray(encoder.item_matrix.T)

    def scores(self, histories: Histories, head: Head = "next_item") -> np.ndarray:
        if head not in self.heads:
            raise ValueError(f"the ONNX backend ranks by the next item only, not {head!r}")
        batch = left_align_histories(histories, self.encoder.max_len, with_features=True)
        vectors = self.encoder.user_vectors(batch.items.numpy(), batch.lengths.numpy(), batch.types.numpy(),
                                            batch.timestamps.numpy())
        return vectors @ self._matrix_t
