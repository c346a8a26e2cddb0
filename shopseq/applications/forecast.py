"""Demand forecasting: expected purchases per category (or item) and day over a horizon.

Two components, blended:

* behaviour: for every active user (an event in the last ``active_days``), expected purchases
  over the horizon = events per day (shrunk towards the population) x horizon x the user's
  purchase share x the model's next-item distribution (summed per category at category level).
  Summed over users, then scaled to the time-series total (new and returning users are not in
  the active set), it gives the *mix* across categories as the users' recent behaviour implies;
* time series: per group the level of the last ``level_days`` days x a damped global trend x
  global weekly seasonality (day-of-week factors of the total, shrunk towards 1).

The blend weight is chosen on the window just before the forecast origin (by WAPE), so it is
learned on the past only. Baselines: seasonal naive (same weekday last week) and the moving
average of the last ``level_days`` days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopseq.applications.data import DAY_MS, AppData, floor_day
from shopseq.applications.features import PURCHASE
from shopseq.applications.metrics import mae, wape
from shopseq.applications.vectors import group_distribution, weighted_item_mass
from shopseq.applications.windowed import population
from shopseq.models.base import Recommender

Level = Literal["category", "item"]
BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class ForecastConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    horizon_days: int = Field(7, ge=1)
    level: Level = "category"
    active_days: float = Field(28.0, gt=0, description="users with an event this recently are 'active'")
    level_days: int = Field(28, ge=1, description="days behind the level and the moving-average baseline")
    season_weeks: int = Field(8, ge=1, description="weeks behind the day-of-week factors")
    season_shrink: float = Field(0.5, ge=0, le=1, description="pull of the day-of-week factors towards 1")
    trend_damping: float = Field(0.5, ge=0, le=1, description="share of the fitted trend that is kept")
    blend: float | None = Field(None, ge=0, le=1, description="behaviour weight; None = chosen on the past")
    rate_prior_events: float = Field(5.0, ge=0, description="purchase-share shrinkage towards the population")


def group_of_items(data: AppData, level: Level) -> tuple[np.ndarray, np.ndarray]:
    """(group code per item index, group names): categories, or the items themselves."""
    if level == "category":
        return data.items.category.astype(np.int64), data.items.category_names
    codes = np.arange(-1, data.seqs.n_items, dtype=np.int64)  # item i -> group i - 1, padding -> -1
    return codes, np.asarray(data.seqs.item_vocab.ids.to_pylist(), dtype=object)


def daily_purchases(data: AppData, group: np.ndarray, n_groups: int, start_ms: int, n_days: int) -> np.ndarray:
    """float64 (n_groups, n_days): purchases per group and day from ``start_ms``."""
    ts = np.asarray(data.seqs.timestamps)
    day = (ts - start_ms) // DAY_MS
    g = group[np.asarray(data.seqs.items, dtype=np.int64)]
    keep = (np.asarray(data.seqs.event_types) == PURCHASE) & (day >= 0) & (day < n_days) & (g >= 0)
    counts = np.bincount(g[keep] * n_days + day[keep], minlength=n_groups * n_days)
    return counts.reshape(n_groups, n_days).astype(np.float64)


def weekday(day_start_ms: np.ndarray | int) -> np.ndarray:
    """Monday = 0 (1970-01-01 was a Thursday)."""
    return (np.asarray(day_start_ms) // DAY_MS + 3) % 7


def seasonal_naive(history: np.ndarray, horizon: int) -> np.ndarray:
    """Each future day = the same weekday in the last week of history."""
    last_week = history[:, -7:] if history.shape[1] >= 7 else np.repeat(history.mean(1, keepdims=True), 7, 1)
    return np.tile(last_week, (1, -(-horizon // 7)))[:, :horizon]


def moving_average(history: np.ndarray, horizon: int, window: int) -> np.ndarray:
    return np.repeat(history[:, -window:].mean(1, keepdims=True), horizon, axis=1)


def time_series(history: np.ndarray, origin_ms: int, horizon: int, config: ForecastConfig) -> np.ndarray:
    """Level x damped trend x weekly seasonality, per group and future day."""
    n_days = history.shape[1]
    hist_days = origin_ms - DAY_MS * np.arange(n_days, 0, -1)
    total = history.sum(0)
    # day-of-week factors of the total over the last weeks, shrunk towards 1
    weeks = min(config.season_weeks * 7, n_days)
    wd = weekday(hist_days[-weeks:])
    by_day = np.bincount(wd, weights=total[-weeks:], minlength=7) / np.maximum(np.bincount(wd, minlength=7), 1)
    factors = by_day / by_day.mean() if by_day.mean() > 0 else np.ones(7)
    factors = np.where(np.bincount(wd, minlength=7) > 0, factors, 1.0)
    factors = config.season_shrink + (1 - config.season_shrink) * factors
    # damped linear trend of the deseasonalised total over the level window
    w = min(config.level_days, n_days)
    y = total[-w:] / factors[weekday(hist_days[-w:])]
    t = np.arange(w) - (w - 1) / 2
    slope = (t * (y - y.mean())).sum() / max((t * t).sum(), 1e-9)
    mid = (w - 1) / 2 + (horizon + 1) / 2  # from the window's centre to the horizon's centre
    trend = 1 + config.trend_damping * slope * mid / y.mean() if y.mean() > 0 else 1.0
    trend = float(np.clip(trend, 0.5, 2.0))
    level = history[:, -w:].mean(1, keepdims=True)
    future = weekday(origin_ms + DAY_MS * np.arange(horizon))
    return level * trend * factors[future][None, :]


def behaviour_totals(model: Recommender, data: AppData, origin_ms: int, config: ForecastConfig,
                     group: np.ndarray, n_groups: int) -> np.ndarray:
    """Expected purchases per group over the horizon from the active users' next-behaviour."""
    seqs = data.before(origin_ms)
    rows = population(data, origin_ms)
    ts = np.asarray(seqs.timestamps)
    users = seqs.event_users()
    recent = ts >= origin_ms - config.active_days * DAY_MS
    n_recent = np.bincount(users[recent], minlength=seqs.n_users)[rows].astype(np.float64)
    active = n_recent > 0
    rows, n_recent = rows[active], n_recent[active]
    if len(rows) == 0:
        return np.zeros(n_groups)
    bought = np.asarray(seqs.event_types) == PURCHASE
    n_all = np.bincount(users, minlength=seqs.n_users)[rows].astype(np.float64)
    n_bought = np.bincount(users[bought], minlength=seqs.n_users)[rows].astype(np.float64)
    base_share = n_bought.sum() / max(n_all.sum(), 1)
    share = (n_bought + config.rate_prior_events * base_share) / (n_all + config.rate_prior_events)
    expected = n_recent / config.active_days * config.horizon_days * share  # purchases per user
    if config.level == "category":
        dist = group_distribution(model, seqs, rows, group, n_groups)
        return (expected[:, None] * dist).sum(0)
    return weighted_item_mass(model, seqs, rows, expected)[1:]


@dataclass
class Forecast:
    origin_ms: int
    level: Level
    names: np.ndarray  # group names
    daily: np.ndarray  # (n_groups, horizon) blended forecast
    time_series: np.ndarray  # (n_groups, horizon)
    behaviour: np.ndarray  # (n_groups, horizon), scaled to the time-series total
    blend: float
    history: np.ndarray  # (n_groups, history days) purchases before the origin

    def totals(self) -> np.ndarray:
        return self.daily.sum(1)


def _history_days(data: AppData, origin_ms: int) -> int:
    return max(int((origin_ms - floor_day(data.start_ms)) // DAY_MS), 1)


def _components(model: Recommender, data: AppData, origin_ms: int, config: ForecastConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    group, names = group_of_items(data, config.level)
    n_groups, h = len(names), config.horizon_days
    n_hist = _history_days(data, origin_ms)
    history = daily_purchases(data, group, n_groups, origin_ms - n_hist * DAY_MS, n_hist)
    ts = time_series(history, origin_ms, h, config)
    behav = behaviour_totals(model, data, origin_ms, config, group, n_groups)
    # the active users miss newcomers and returning users: keep their mix, take the level from the series
    scale = ts.sum() / behav.sum() if behav.sum() > 0 else 0.0
    shape = ts / np.maximum(ts.sum(1, keepdims=True), 1e-12)
    day_shape = np.where(ts.sum(1, keepdims=True) > 0, shape, 1.0 / h)
    return history, ts, behav[:, None] * scale * day_shape, names


def forecast(model: Recommender, data: AppData, origin_ms: int | None = None, config: ForecastConfig | None = None
             ) -> Forecast:
    """Forecast from ``origin_ms`` (default: midnight UTC after the last full day of data)."""
    config = config or ForecastConfig()
    origin = floor_day(data.end_ms) if origin_ms is None else int(origin_ms)
    history, ts, behav, names = _components(model, data, origin, config)
    blend = config.blend
    if blend is None:
        blend = choose_blend(model, data, origin - config.horizon_days * DAY_MS, config)
    return Forecast(origin, config.level, names, blend * behav + (1 - blend) * ts, ts, behav, blend, history)


def choose_blend(model: Recommender, data: AppData, origin_ms: int, config: ForecastConfig) -> float:
    """The behaviour weight with the lowest WAPE on the window [origin, origin + horizon)."""
    if origin_ms - DAY_MS * 14 < data.start_ms:
        return 0.5
    _, ts, behav, _ = _components(model, data, origin_ms, config)
    actual = _actual(data, origin_ms, config)
    errors = [wape(actual, w * behav + (1 - w) * ts) for w in BLEND_GRID]
    return float(BLEND_GRID[int(np.nanargmin(errors))]) if not np.all(np.isnan(errors)) else 0.5


def _actual(data: AppData, origin_ms: int, config: ForecastConfig) -> np.ndarray:
    group, names = group_of_items(data, config.level)
    return daily_purchases(data, group, len(names), origin_ms, config.horizon_days)


@dataclass
class Backtest:
    level: Level
    horizon_days: int
    origins: list[int]
    metrics: dict[str, dict[str, float]]  # method -> wape / mae (daily cells) / wape_total (horizon sums)
    per_origin: list[dict[str, float]] = field(default_factory=list)
    plot_days: list[int] = field(default_factory=list)  # day offsets of the plot series
    plot_series: dict[str, list[float]] = field(default_factory=dict)  # all groups summed per day

    def headline(self) -> str:
        m = self.metrics
        parts = [f"{k} WAPE {v['wape']:.3f} (7-day totals {v['wape_total']:.3f})" for k, v in m.items()]
        return f"{self.level} demand, {len(self.origins)} windows of {self.horizon_days} d: " + "; ".join(parts)


def backtest(model: Recommender, data: AppData, config: ForecastConfig | None = None, n_windows: int = 3,
             first_origin_ms: int | None = None) -> Backtest:
    """Rolling-origin back-test over the last ``n_windows`` horizons of the data (or from
    ``first_origin_ms``): every method forecasts each window from the data before it."""
    config = config or ForecastConfig()
    h = config.horizon_days
    last = floor_day(data.end_ms) - h * DAY_MS
    origins = [last - k * h * DAY_MS for k in range(n_windows - 1, -1, -1)]
    if first_origin_ms is not None:
        origins = [o for o in origins if o >= first_origin_ms] or [last]
    sums: dict[str, list[np.ndarray]] = {"model": [], "seasonal_naive": [], "moving_average": []}
    actuals, per_origin = [], []
    for origin in origins:
        f = forecast(model, data, origin, config)
        actual = _actual(data, origin, config)
        preds = {"model": f.daily, "seasonal_naive": seasonal_naive(f.history, h),
                 "moving_average": moving_average(f.history, h, config.level_days)}
        actuals.append(actual)
        for k, v in preds.items():
            sums[k].append(v)
        per_origin.append({"origin_ms": origin, "blend": f.blend, **{f"wape_{k}": wape(actual, v)
                                                                    for k, v in preds.items()}})
    a = np.concatenate(actuals, axis=1)
    metrics = {}
    for k, parts in sums.items():
        p = np.concatenate(parts, axis=1)
        totals_a = np.stack([x.sum(1) for x in actuals])
        totals_p = np.stack([x.sum(1) for x in parts])
        metrics[k] = {"wape": wape(a, p), "mae": mae(a, p), "wape_total": wape(totals_a, totals_p)}
    days = list(range(a.shape[1]))
    series = {"actual": a.sum(0).tolist(), **{k: np.concatenate(v, axis=1).sum(0).tolist() for k, v in sums.items()}}
    return Backtest(config.level, h, origins, metrics, per_origin, days, series)
