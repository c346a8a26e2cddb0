"""Per-user yes/no predictions about a future window (purchase intent, churn), done one way.

Features at a cut time T are the model's user vector of the history before T plus activity
features (recency, frequency, monetary, ...). Labels come from the window [T, T + H). Training
never sees the future it is judged on:

* fit: features at T - H, labels from [T - H, T); a share of these users is held out for Platt
  calibration;
* predict: features at T (the 'now' of the data, or a back-test cut);
* evaluate: fit with T = end - H, predict at end - H, compare with what happened in [end - H, end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopseq.applications.data import DAY_MS, AppData
from shopseq.applications.features import activity_design, activity_features
from shopseq.applications.logistic import LogisticModel
from shopseq.applications.metrics import auc, brier, expected_calibration_error, log_loss, reliability_table
from shopseq.applications.vectors import user_vectors
from shopseq.models.base import Recommender

# label(data, rows, start_ms, end_ms) -> bool per row
LabelFn = Callable[[AppData, np.ndarray, int, int], np.ndarray]
# baseline score from the activity features of the rows at the cut (higher = more likely yes)
BaselineFn = Callable[[np.ndarray, list[str]], np.ndarray]


class WindowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    horizon_days: float = Field(7.0, gt=0)
    l2: float = Field(1e-2, ge=0, description="L2 penalty of the logistic model (standardised inputs)")
    use_vectors: bool = Field(True, description="feed the model's user vectors (else activity features only)")
    calibration_share: float = Field(0.3, gt=0, lt=1, description="users held out to fit Platt scaling")
    min_events: int = Field(1, ge=1, description="users need this many events before the cut to be scored")
    seed: int = 0

    @property
    def horizon_ms(self) -> int:
        return int(self.horizon_days * DAY_MS)


def population(data: AppData, cut_ms: int, min_events: int = 1) -> np.ndarray:
    """Users with at least ``min_events`` events before the cut."""
    before = np.asarray(data.seqs.timestamps) < cut_ms
    counts = np.bincount(data.seqs.event_users()[before], minlength=data.seqs.n_users)
    return np.flatnonzero(counts >= min_events)


def events_in_window(data: AppData, rows: np.ndarray, start_ms: int, end_ms: int,
                     event_type: int | None = None) -> np.ndarray:
    """Count of each row's events in [start, end) (of one type, if given)."""
    ts = np.asarray(data.seqs.timestamps)
    mask = (ts >= start_ms) & (ts < end_ms)
    if event_type is not None:
        mask &= np.asarray(data.seqs.event_types) == event_type
    counts = np.bincount(data.seqs.event_users()[mask], minlength=data.seqs.n_users)
    return counts[rows]


def design(model: Recommender, data: AppData, cut_ms: int, rows: np.ndarray, use_vectors: bool
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(model inputs, raw activity features, activity names) of ``rows`` at the cut."""
    act = activity_features(data, cut_ms).select(rows)
    x = activity_design(act.values)
    if use_vectors:
        x = np.hstack([x, user_vectors(model, data.before(cut_ms), rows).astype(np.float64)])
    return x, act.values, act.names


@dataclass
class WindowModel:
    logistic: LogisticModel
    config: WindowConfig
    fitted_at_ms: int  # the T of the fit: features at T - H, labels [T - H, T)
    train_rate: float  # share of 'yes' in the training window

    def predict(self, model: Recommender, data: AppData, cut_ms: int, rows: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, calibrated probabilities) at ``cut_ms`` for the population (or the given rows)."""
        rows = population(data, cut_ms, self.config.min_events) if rows is None else np.asarray(rows)
        x, _, _ = design(model, data, cut_ms, rows, self.config.use_vectors)
        return rows, self.logistic.predict_proba(x)


def fit_window_model(model: Recommender, data: AppData, label: LabelFn, cut_ms: int, config: WindowConfig
                     ) -> WindowModel:
    h = config.horizon_ms
    rows = population(data, cut_ms - h, config.min_events)
    if len(rows) < 20:
        raise ValueError(f"only {len(rows)} users have history before the training cut; need a longer log")
    x, _, _ = design(model, data, cut_ms - h, rows, config.use_vectors)
    y = label(data, rows, cut_ms - h, cut_ms)
    held = np.random.default_rng(config.seed).random(len(rows)) < config.calibration_share
    logistic = LogisticModel.fit(x[~held], y[~held], config.l2)
    if len(np.unique(y[held])) == 2:
        logistic.calibrate(x[held], y[held])
    return WindowModel(logistic, config, cut_ms, float(y.mean()))


@dataclass
class WindowEvaluation:
    task: str
    cut_ms: int
    horizon_days: float
    users: int
    positive_rate: float
    metrics: dict[str, float]  # auc, brier, ece of the model; auc of each baseline and ablation
    reliability: list[dict[str, float]] = field(default_factory=list)

    def headline(self) -> str:
        m = self.metrics
        others = ", ".join(f"{k.removeprefix('auc_')} {v:.3f}" for k, v in m.items()
                           if k.startswith("auc_") and k != "auc_model")
        return (f"{self.task}: AUC {m['auc_model']:.3f} (baselines: {others}); log loss {m['log_loss']:.4f}, "
                f"Brier {m['brier']:.4f}, "
                f"ECE {m['ece']:.4f}; {self.users:,} users, positive rate {self.positive_rate:.3f}, "
                f"horizon {self.horizon_days:g} d")


def evaluate_window_task(model: Recommender, data: AppData, task: str, label: LabelFn, config: WindowConfig,
                         baselines: dict[str, BaselineFn], cut_ms: int | None = None) -> WindowEvaluation:
    """Back-test at ``cut_ms`` (default: one horizon before the end of the data)."""
    h = config.horizon_ms
    cut = data.end_ms - h if cut_ms is None else int(cut_ms)
    fitted = fit_window_model(model, data, label, cut, config)
    rows = population(data, cut, config.min_events)
    x, act, names = design(model, data, cut, rows, config.use_vectors)
    y = label(data, rows, cut, cut + h)
    p = fitted.logistic.predict_proba(x)
    metrics = {"auc_model": auc(y, p), "log_loss": log_loss(y, p), "brier": brier(y, p),
               "ece": expected_calibration_error(y, p)}
    if config.use_vectors:  # what the user vector adds over activity alone
        ablation = fit_window_model(model, data, label, cut, config.model_copy(update={"use_vectors": False}))
        metrics["auc_activity_only"] = auc(y, ablation.logistic.predict_proba(activity_design(act)))
    for name, fn in baselines.items():
        metrics[f"auc_{name}"] = auc(y, fn(act, names))
    return WindowEvaluation(task, cut, config.horizon_days, len(rows), float(y.mean()), metrics,
                            reliability_table(y, p))


def rfm_score(act: np.ndarray, names: list[str]) -> np.ndarray:
    """Classic RFM: the mean of the percentile ranks of -recency, frequency and monetary."""
    def pct(v: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(v, kind="stable"), kind="stable") / max(len(v) - 1, 1)

    r = pct(-act[:, names.index("recency_days")])
    f = pct(act[:, names.index("events_30d")])
    m = act[:, names.index("monetary")]
    m = pct(m) if np.ptp(m) > 0 else pct(act[:, names.index("purchases")])
    return (r + f + m) / 3.0
