"""Churn: P(no activity at all in the next horizon), from the user vector and activity features,
against the classic recency-only score (see ``windowed`` for the time discipline)."""

from __future__ import annotations

import numpy as np

from shopseq.applications.data import AppData
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


def churn_config(horizon_days: float = 30.0, **overrides: object) -> WindowConfig:
    return WindowConfig(horizon_days=horizon_days, **overrides)  # type: ignore[arg-type]


def inactive_label(data: AppData, rows: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    return events_in_window(data, rows, start_ms, end_ms) == 0


def _recency(act: np.ndarray, names: list[str]) -> np.ndarray:
    return act[:, names.index("recency_days")]


CHURN_BASELINES = {"recency": _recency, "rfm": lambda act, names: -rfm_score(act, names)}


def fit_churn(model: Recommender, data: AppData, config: WindowConfig | None = None,
              cut_ms: int | None = None) -> WindowModel:
    config = config or churn_config()
    return fit_window_model(model, data, inactive_label, data.end_ms if cut_ms is None else cut_ms, config)


def evaluate_churn(model: Recommender, data: AppData, config: WindowConfig | None = None) -> WindowEvaluation:
    return evaluate_window_task(model, data, "churn", inactive_label, config or churn_config(), CHURN_BASELINES)
