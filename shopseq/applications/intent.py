"""Purchase intent: P(the user buys anything in the next horizon), from the user vector and RFM
features, fitted on the previous window and Platt-calibrated (see ``windowed``)."""

from __future__ import annotations

import numpy as np

from shopseq.applications.data import AppData
from shopseq.applications.features import PURCHASE
from shopseq.applications.windowed import (
    WindowConfig,
    WindowEvaluation,
    WindowModel,
    evaluate_window_task,
    events_in_window,
    fit_window_model,
    rfm_score,
)
from shopseq.models.base import Recommender


def purchase_label(data: AppData, rows: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    return events_in_window(data, rows, start_ms, end_ms, PURCHASE) > 0


def _recent_purchases(act: np.ndarray, names: list[str]) -> np.ndarray:
    return act[:, names.index("purchases_30d")] + 1e-3 * act[:, names.index("events_30d")]


INTENT_BASELINES = {"rfm": rfm_score, "recent_purchases": _recent_purchases}


def fit_intent(model: Recommender, data: AppData, config: WindowConfig | None = None,
               cut_ms: int | None = None) -> WindowModel:
    """The intent model for predictions at ``cut_ms`` (default: the end of the data)."""
    config = config or WindowConfig()
    return fit_window_model(model, data, purchase_label, data.end_ms if cut_ms is None else cut_ms, config)


def evaluate_intent(model: Recommender, data: AppData, config: WindowConfig | None = None) -> WindowEvaluation:
    return evaluate_window_task(model, data, "purchase intent", purchase_label, config or WindowConfig(),
                                INTENT_BASELINES)
