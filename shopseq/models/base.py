"""The one contract every next-item model keeps, neural or not.

``fit`` learns from training ``Sequences`` (optionally watching a validation ``EvalSet``);
``score`` maps a batch of histories to a score for every item (column 0 is padding and ignored);
``encode`` maps histories to user vectors; ``recommend`` is top-k over ``score``; ``save`` /
``load`` use only JSON and safetensors (never pickle), so a run directory is safe to load.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from shopseq.atomic import replace_dir, temp_sibling
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.errors import IncompatibleModelError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class ModelConfig(BaseModel):
    """Base of every model's typed config; ``model`` names the class in the registry."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str


@dataclass
class Histories:
    """A batch of histories, right-aligned: the most recent event is in the last column.

    Shorter histories are left-padded with item 0; ``lengths`` holds the true (untruncated up to
    ``max_len``) lengths. Built from jagged arrays without a Python loop over users.
    """

    items: np.ndarray  # int64 (B, L), 0 = padding
    types: np.ndarray  # int64 (B, L)
    timestamps: np.ndarray  # int64 (B, L) ms (or ordinal)
    lengths: np.ndarray  # int64 (B,)

    @property
    def batch_size(self) -> int:
        return self.items.shape[0]

    def take(self, rows: np.ndarray) -> Histories:
        """The selected rows, in the given order (the width stays; left-aligning trims it)."""
        return Histories(self.items[rows], self.types[rows], self.timestamps[rows], self.lengths[rows])

    @classmethod
    def from_jagged(
        cls,
        offsets: np.ndarray,
        items: np.ndarray,
        types: np.ndarray,
        timestamps: np.ndarray,
        max_len: int,
        rows: np.ndarray | None = None,
    ) -> Histories:
        """The last ``max_len`` events of each selected row (default: all rows) of CSR arrays."""
        rows = np.arange(len(offsets) - 1) if rows is None else np.asarray(rows)
        starts, ends = offsets[rows].astype(np.int64), offsets[rows + 1].astype(np.int64)
        lengths = np.minimum(ends - starts, max_len)
        width = max(int(lengths.max()) if len(lengths) else 1, 1)
        # column j of row r holds event ends[r] - width + j when that is inside the row
        src = ends[:, None] - width + np.arange(width)[None, :]
        valid = src >= (ends - lengths)[:, None]
        src = np.where(valid, src, 0)

        def take(values: np.ndarray, fill: int) -> np.ndarray:
            if len(values) == 0:
                return np.full(src.shape, fill, dtype=np.int64)
            return np.where(valid, np.asarray(values)[src].astype(np.int64), fill)

        return cls(take(items, 0), take(types, 0), take(timestamps, 0), lengths)

    @classmethod
    def from_eval_set(cls, eval_set: EvalSet, max_len: int, rows: np.ndarray | None = None) -> Histories:
        return cls.from_jagged(
            eval_set.history_offsets, eval_set.history_items, eval_set.history_types,
            eval_set.history_timestamps, max_len, rows,
        )

    @classmethod
    def from_sequences(cls, seqs: Sequences, max_len: int, rows: np.ndarray | None = None) -> Histories:
        return cls.from_jagged(seqs.offsets, seqs.items, seqs.event_types, seqs.timestamps, max_len, rows)

    @classmethod
    def from_lists(cls, item_lists: list[list[int]], max_len: int) -> Histories:
        """From plain lists of item indices (tests, the API's explicit event lists)."""
        lengths = np.array([len(x) for x in item_lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.array([i for x in item_lists for i in x], dtype=np.int64)
        zeros = np.zeros_like(flat)
        return cls.from_jagged(offsets, flat, zeros, zeros, max_len)


class Recommender(ABC):
    """Base class of every model. Subclasses set ``name`` and ``config_class`` and are registered
    with :func:`shopseq.models.registry.register`."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    # what ``score`` returns: softmax logits, or non-negative weights (counts, votes, probabilities)
    # that a mixture normalises by their sum (models.blend)
    score_kind: ClassVar[Literal["logits", "weights"]] = "logits"

    def __init__(self, config: ModelConfig, n_items: int) -> None:
        self.config = config
        self.n_items = n_items  # real items; scores have n_items + 1 columns (0 = padding)

    # -- learning and scoring -------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        """Learn from the training events; ``valid`` may drive early stopping."""

    @abstractmethod
    def score(self, histories: Histories) -> torch.Tensor:
        """float32 (B, n_items + 1) scores, higher is better; column 0 is ignored by callers. A new
        tensor that the caller owns: evaluation writes -inf into it in place."""

    @abstractmethod
    def encode(self, histories: Histories) -> np.ndarray:
        """float32 (B, d) user vectors in the model's own space."""

    def score_purchase(self, histories: Histories) -> torch.Tensor:
        """Scores of the next PURCHASED item; models without a purchase head use ``score``."""
        return self.score(histories)

    @property
    def has_purchase_head(self) -> bool:
        """Whether ``score_purchase`` has a head of its own (else it is ``score``)."""
        return False

    def next_type_probabilities(self, histories: Histories) -> np.ndarray | None:
        """(B, n_event_types) probabilities of the next event's type, or None without such a head."""
        return None

    @property
    def max_len(self) -> int:
        """How many of the most recent events the model reads."""
        return int(getattr(self.config, "max_len", 50))

    def recommend(
        self, histories: Histories, k: int = 10, filter_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores per row; ``filter_seen`` drops items in the history
        (the part the batch holds: callers with longer histories mask the rest themselves)."""
        with torch.no_grad():
            scores = self.score(histories).clone()
            scores[:, 0] = -torch.inf
            if filter_seen:
                scores.scatter_(1, torch.from_numpy(histories.items), -torch.inf)
                scores[:, 0] = -torch.inf
            top = torch.topk(scores, min(k, self.n_items), dim=1)
        return top.indices.numpy(), top.values.numpy()

    # -- persistence ----------------------------------------------------------------------
    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Everything learned, as named numpy arrays (saved as safetensors)."""

    @abstractmethod
    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""

    def save(self, directory: Path) -> Path:
        """Write config.json + model.safetensors atomically (a temp folder renamed into place)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(directory)
        tmp.mkdir()
        meta = {"format_version": FORMAT_VERSION, "model": self.name, "n_items": self.n_items,
                "config": self.config.model_dump(mode="json")}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        tensors = {k: np.ascontiguousarray(v) for k, v in self.state().items()}
        save_numpy(tensors, str(tmp / WEIGHTS_FILE))
        return replace_dir(tmp, directory)

    @classmethod
    def from_config(cls, config: ModelConfig, n_items: int) -> Self:
        return cls(config, n_items)


def read_model_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a saved shopseq model")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{directory} was saved in model format {meta.get('format_version')!r}; "
            f"this shopseq reads format {FORMAT_VERSION}. Retrain it with this version."
        )
    return meta


def load_weights(directory: Path) -> dict[str, np.ndarray]:
    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_numpy(str(path))
    except SafetensorError as exc:  # e.g. a pickle in place of the weights: refused, never unpickled
        raise IncompatibleModelError(f"{path} is not a valid safetensors file ({exc}); shopseq loads only "
                                     "JSON and safetensors") from exc
