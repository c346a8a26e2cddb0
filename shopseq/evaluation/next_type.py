"""Next-event-type prediction (view / cart / fav / purchase / review): accuracy and macro-F1 of a
model's type head against the majority-class and type-Markov baselines, on the first target
event of every user of an ``EvalSet``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopseq.data.schema import EventType
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.models.base import Histories, Recommender

__all__ = ["TypeScores", "evaluate_next_type", "majority_type", "markov_type_predictions", "type_metrics"]

N_TYPES = len(EventType)


@dataclass
class TypeScores:
    accuracy: float
    macro_f1: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n}


def type_metrics(predicted: np.ndarray, actual: np.ndarray) -> TypeScores:
    """Accuracy and macro-F1 over the classes that occur in ``actual`` (a class never present
    would add an F1 of 0 or be undefined; leaving it out is the usual convention)."""
    predicted, actual = np.asarray(predicted, dtype=np.int64), np.asarray(actual, dtype=np.int64)
    if len(actual) == 0:
        return TypeScores(float("nan"), float("nan"), 0)
    confusion = np.bincount(actual * N_TYPES + predicted, minlength=N_TYPES * N_TYPES).reshape(N_TYPES, N_TYPES)
    tp = np.diag(confusion).astype(np.float64)
    support, called = confusion.sum(axis=1), confusion.sum(axis=0)
    present = support > 0
    f1 = np.where(support + called > 0, 2 * tp / np.maximum(support + called, 1), 0.0)
    return TypeScores(float(tp.sum() / len(actual)), float(f1[present].mean()), len(actual))


def majority_type(train: Sequences) -> int:
    return int(np.bincount(train.event_types.astype(np.int64), minlength=N_TYPES).argmax())


def _last_history_types(eval_set: EvalSet, fallback: int) -> np.ndarray:
    ends = eval_set.history_offsets[1:]
    has = np.diff(eval_set.history_offsets) > 0
    last = np.full(eval_set.n_users, fallback, dtype=np.int64)
    last[has] = eval_set.history_types[ends[has] - 1]
    return last


def markov_type_predictions(train: Sequences, eval_set: EvalSet) -> np.ndarray:
    """The most frequent next type after the user's last history type, counted on training pairs."""
    types = train.event_types.astype(np.int64)
    same_user = np.ones(len(types), dtype=bool)
    same_user[train.offsets[1:-1]] = False  # event i and i+1 belong to one user unless i+1 starts a user
    pair = same_user[1:]
    counts = np.bincount(types[:-1][pair] * N_TYPES + types[1:][pair], minlength=N_TYPES * N_TYPES)
    table = counts.reshape(N_TYPES, N_TYPES)
    fallback = majority_type(train)
    best_next = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), fallback)
    return best_next[_last_history_types(eval_set, fallback)]


def evaluate_next_type(model: Recommender, train: Sequences, eval_set: EvalSet,
                       chunk_users: int = 4096) -> dict[str, dict[str, float]]:
    """Type head vs baselines on the first target event of every evaluated user."""
    actual = eval_set.target_types[eval_set.target_offsets[:-1]].astype(np.int64)
    out = {
        "majority": type_metrics(np.full(len(actual), majority_type(train)), actual).to_dict(),
        "markov": type_metrics(markov_type_predictions(train, eval_set), actual).to_dict(),
    }
    predicted = []
    for start in range(0, eval_set.n_users, chunk_users):
        rows = np.arange(start, min(start + chunk_users, eval_set.n_users))
        probs = model.next_type_probabilities(Histories.from_eval_set(eval_set, model.max_len, rows))
        if probs is None:
            return out
        predicted.append(probs.argmax(axis=1))
    out[model.name] = type_metrics(np.concatenate(predicted) if predicted else np.zeros(0), actual).to_dict()
    return out
