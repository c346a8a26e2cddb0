"""Demand forecasting: expected purchases per category (or item) over a horizon, and per day.

Two components, blended per group:

* behaviour (bottom-up, ``purchase_history``): each known user's own purchase history -- restocks
  of consumables at their due dates, and organic purchases at the user's shrunk rate times the
  user's shrunk category mix. Users unseen before the origin are not in it, so its total is
  scaled to the time-series total: it contributes the *mix* across groups (and the restock timing);
* time series: per group an exponentially weighted level of the deseasonalised daily counts times
  the global weekly profile (day-of-week factors of the total, estimated robustly as medians
  over weeks and shrunk towards 1; flat until two full weeks of history exist).

The blend weight is chosen on the ``blend_windows`` horizons just before the forecast origin (by
WAPE of the horizon totals, each from the data before its own origin), so it never sees the
window it forecasts.

The shop's promotion calendar, when given, is used the way a planner would: the days of past
promotions are left out of the series level, the weekly factors, the behaviour mix and the blend
windows (a campaign's extra purchases are not the baseline), and the days of a promotion inside
the horizon get the uplift the earlier promotions showed: actual purchases on their days over the
series forecast from the data before each one's start, one factor for the promoted items and one
for the others (1 when no earlier promotion can be measured), mixed per group by the promoted
items' share of its level.

Baselines: seasonal naive (same weekday last week) and the moving average of the last
``level_days`` days. The headline metric is the WAPE of the horizon totals per group
(what the forecast is for: expected purchases per group over the horizon); the daily-cell WAPE
and MAE are reported beside it, the same way for the model and the baselines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shopseq.applications.data import DAY_MS, AppData, floor_day
from shopseq.applications.features import PURCHASE
from shopseq.applications.metrics import mae, wape
from shopseq.applications.promotion import Promotion, promoted_mask
from shopseq.applications.purchase_history import PurchaseHistoryConfig, bottom_up
from shopseq.models.base import Recommender

Level = Literal["category", "item"]
BLEND_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


class ForecastConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    horizon_days: int = Field(7, ge=1)
    level: Level = "category"
    level_days: int = Field(28, ge=1, description="days behind the moving-average baseline")
    level_half_life_days: float = Field(28.0, gt=0, description="recency weighting of the series level")
    season_weeks: int = Field(8, ge=2, description="weeks behind the day-of-week factors")
    season_shrink: float = Field(0.3, ge=0, le=1, description="pull of the day-of-week factors towards 1")
    blend: float | None = Field(None, ge=0, le=1, description="behaviour weight; None = chosen on the past")
    blend_windows: int = Field(2, ge=1, description="horizons before the origin the blend is chosen on")
    bottom_up_scale: Literal["series", "raw"] = Field(
        "series", description="scale the behaviour total to the series total, or keep it as is")
    history: PurchaseHistoryConfig = Field(default_factory=PurchaseHistoryConfig)


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


def poisson_median(mean: np.ndarray) -> np.ndarray:
    """The median of a Poisson count with this mean (Choi's formula, exact in practice): the point
    forecast that minimises absolute error, so WAPE / MAE, where the expected count does not --
    for sparse groups (most Taobao categories sell < 1 a day) it is 0."""
    lam = np.asarray(mean, dtype=np.float64)
    with np.errstate(divide="ignore"):
        med = np.floor(lam + 1 / 3 - 0.02 / np.maximum(lam, 1e-12))
    return np.where(lam < np.log(2), 0.0, np.maximum(med, 0.0))


def promotion_days(promotions: Sequence[Promotion], first_day_ms: int, n_days: int) -> np.ndarray:
    """bool (n_days,): which of the days from ``first_day_ms`` overlap a promotion."""
    starts = first_day_ms + DAY_MS * np.arange(n_days)
    out = np.zeros(n_days, dtype=bool)
    for p in promotions:
        out |= (starts < p.end_ms) & (starts + DAY_MS > p.start_ms)
    return out


def weekly_factors(history: np.ndarray, origin_ms: int, config: ForecastConfig,
                   off: np.ndarray | None = None) -> np.ndarray:
    """float64 (7,) day-of-week factors of the total (mean 1): per full week the day's share x 7,
    the median over the last ``season_weeks`` weeks (a campaign week does not skew it; weeks with
    ``off`` days, known promotions, are left out while two others remain), shrunk towards 1. Flat
    with fewer than two full weeks: one week cannot tell weekday from noise."""
    total = history.sum(0)
    n_weeks = min(config.season_weeks, len(total) // 7)
    if n_weeks < 2:
        return np.ones(7)
    block = total[len(total) - 7 * n_weeks:].reshape(n_weeks, 7)
    if off is not None:
        clean = ~off[len(total) - 7 * n_weeks:].reshape(n_weeks, 7).any(1)
        if clean.sum() >= 2:
            block, n_weeks = block[clean], int(clean.sum())
    days = origin_ms - DAY_MS * np.arange(7 * n_weeks, 0, -1)
    wd = weekday(days[:7])  # weekday of each column (every row starts on the same weekday)
    sums = block.sum(1, keepdims=True)
    share = np.divide(block * 7, sums, out=np.ones_like(block), where=sums > 0)
    factors = np.ones(7)
    factors[wd] = np.median(share, axis=0)
    factors /= factors.mean()
    return config.season_shrink + (1 - config.season_shrink) * factors


def time_series(history: np.ndarray, origin_ms: int, horizon: int, config: ForecastConfig,
                factors: np.ndarray | None = None, off: np.ndarray | None = None) -> np.ndarray:
    """Per group an exponentially weighted level of the deseasonalised daily counts (without the
    ``off`` days, known promotions, while any other day remains) x the weekly factors of the
    future days."""
    factors = weekly_factors(history, origin_ms, config, off) if factors is None else factors
    n_days = history.shape[1]
    past = weekday(origin_ms - DAY_MS * np.arange(n_days, 0, -1))
    w = 0.5 ** (np.arange(n_days, 0, -1) / config.level_half_life_days)
    if off is not None and (~off).any():
        w = w * ~off
    level = (history / factors[past][None, :]) @ w / w.sum()
    future = weekday(origin_ms + DAY_MS * np.arange(horizon))
    return level[:, None] * factors[future][None, :]


@dataclass
class Forecast:
    origin_ms: int
    level: Level
    names: np.ndarray  # group names
    daily: np.ndarray  # (n_groups, horizon) blended forecast: expected purchases per group and day
    time_series: np.ndarray  # (n_groups, horizon)
    behaviour: np.ndarray  # (n_groups, horizon), scaled to the time-series total unless bottom_up_scale="raw"
    blend: float
    history: np.ndarray  # (n_groups, history days) purchases before the origin
    # promotion days inside the horizon and the (promoted items, other items) uplift applied on them
    promotion_days: int = 0
    uplift: tuple[float, float] = (1.0, 1.0)

    def totals(self) -> np.ndarray:
        return self.daily.sum(1)


def _history_days(data: AppData, origin_ms: int) -> int:
    return max(int((origin_ms - floor_day(data.start_ms)) // DAY_MS), 1)


def _components(model: Recommender, data: AppData, origin_ms: int, config: ForecastConfig,
                promotions: Sequence[Promotion] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(history, time series, behaviour, group names) at the origin, from the data before it; the
    days of known promotions are left out of the level, the weekly factors and the behaviour mix."""
    group, names = group_of_items(data, config.level)
    n_groups, h = len(names), config.horizon_days
    n_hist = _history_days(data, origin_ms)
    history = daily_purchases(data, group, n_groups, origin_ms - n_hist * DAY_MS, n_hist)
    off = promotion_days(promotions, origin_ms - n_hist * DAY_MS, n_hist) if promotions else None
    factors = weekly_factors(history, origin_ms, config, off)
    ts = time_series(history, origin_ms, h, config, factors, off)
    day_factors = factors[weekday(origin_ms + DAY_MS * np.arange(h))]
    quiet = [(p.start_ms, p.end_ms) for p in promotions]
    behav = bottom_up(model, data, origin_ms, h, group, n_groups, day_factors, config.history, config.level, quiet)
    if config.bottom_up_scale == "series" and behav.sum() > 0:
        # the known users miss newcomers: keep their mix and timing, take the level from the series
        behav = behav * (ts.sum() / behav.sum())
    return history, ts, behav, names


def _split_series(data: AppData, group: np.ndarray, n_groups: int, promotion: Promotion, first_ms: int, n_days: int,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Daily purchases per group from ``first_ms``: (of the promoted items, of the others)."""
    on = promoted_mask(data, promotion)
    promoted = daily_purchases(data, np.where(on, group, -1), n_groups, first_ms, n_days)
    return promoted, daily_purchases(data, np.where(on, -1, group), n_groups, first_ms, n_days)


def promotion_uplift(data: AppData, origin_ms: int, config: ForecastConfig, promotions: Sequence[Promotion],
                     min_history_days: int = 14) -> tuple[float, float]:
    """(promoted items, other items): purchases on the days of the promotions that ended before
    the origin over what the series forecast from the data before each one's start (earlier
    promotion days off); (1, 1) when none has ``min_history_days`` of history before it. Measured
    on the promoted items, not their groups, so item and category campaigns share one factor."""
    first = floor_day(data.start_ms)
    group = np.where(np.arange(data.seqs.n_items + 1) > 0, 0, -1)  # every item in one group
    actual, expected = np.zeros(2), np.zeros(2)
    for p in promotions:
        start = floor_day(p.start_ms)
        n_before = (start - first) // DAY_MS
        n_days = -(-(p.end_ms - start) // DAY_MS)
        if p.end_ms > origin_ms or n_before < min_history_days:
            continue
        off = promotion_days(promotions, first, n_before)
        for k, part in enumerate(_split_series(data, group, 1, p, first, n_before + n_days)):
            base = time_series(part[:, :n_before], start, n_days, config, off=off)
            actual[k] += part[:, n_before:].sum()
            expected[k] += base.sum()
    ok = expected > 0
    return tuple(np.where(ok, actual / np.where(ok, expected, 1.0), 1.0).tolist())  # type: ignore[return-value]


def apply_promotions(daily: np.ndarray, data: AppData, origin_ms: int, config: ForecastConfig,
                     promotions: Sequence[Promotion], uplift: tuple[float, float]) -> tuple[np.ndarray, int]:
    """The forecast on the days of the promotions inside the horizon: per group, the promoted
    items' share of the series level times the promoted uplift plus the rest times the other
    uplift. Also returns how many horizon days have a promotion."""
    group, names = group_of_items(data, config.level)
    h = daily.shape[1]
    n_hist = _history_days(data, origin_ms)
    first = origin_ms - n_hist * DAY_MS
    off = promotion_days([p for p in promotions if p.start_ms < origin_ms], first, n_hist)
    out = daily.copy()
    on_days = np.zeros(h, dtype=bool)
    for p in promotions:
        days = promotion_days([p], origin_ms, h)
        if not days.any():
            continue
        on_days |= days
        promoted, other = (time_series(x, origin_ms, h, config, off=off)
                           for x in _split_series(data, group, len(names), p, first, n_hist))
        share = np.divide(promoted, promoted + other, out=np.zeros_like(promoted), where=promoted + other > 0)
        factor = share * uplift[0] + (1 - share) * uplift[1]
        out[:, days] *= factor[:, days]
    return out, int(on_days.sum())


def forecast(model: Recommender, data: AppData, origin_ms: int | None = None, config: ForecastConfig | None = None,
             promotions: Sequence[Promotion] = ()) -> Forecast:
    """Forecast from ``origin_ms`` (default: midnight UTC after the last full day of data).
    ``promotions``: the shop's promotion calendar, past and planned (see the module doc)."""
    config = config or ForecastConfig()
    origin = floor_day(data.end_ms) if origin_ms is None else int(origin_ms)
    past = [p for p in promotions if p.start_ms < origin]
    history, ts, behav, names = _components(model, data, origin, config, past)
    blend = config.blend
    if blend is None:
        blend = choose_blend(model, data, origin, config, past)
    daily = blend * behav + (1 - blend) * ts
    uplift, n_on = (1.0, 1.0), 0
    if any(p.end_ms > origin and p.start_ms < origin + config.horizon_days * DAY_MS for p in promotions):
        uplift = promotion_uplift(data, origin, config, promotions)
        daily, n_on = apply_promotions(daily, data, origin, config, promotions, uplift)
    return Forecast(origin, config.level, names, daily, ts, behav, blend, history, n_on, uplift)


def choose_blend(model: Recommender, data: AppData, origin_ms: int, config: ForecastConfig,
                 promotions: Sequence[Promotion] = ()) -> float:
    """The behaviour weight with the lowest WAPE of the horizon totals over the ``blend_windows``
    horizons before ``origin_ms`` (skipping those with promotion days), each forecast from the data
    before its own start."""
    h = config.horizon_days
    errors = np.zeros(len(BLEND_GRID))
    total, used = 0.0, 0
    for k in range(1, 4 * config.blend_windows + 1):
        start = origin_ms - k * h * DAY_MS
        if used == config.blend_windows or start - DAY_MS * min(7, 3 * h) < data.start_ms:
            break  # enough windows, or too little history before this one
        if promotion_days(promotions, start, h).any():
            continue
        _, ts, behav, _ = _components(model, data, start, config, promotions)
        actual = _actual(data, start, config).sum(1)
        errors += [np.abs(actual - (w * behav + (1 - w) * ts).sum(1)).sum() for w in BLEND_GRID]
        total += actual.sum()
        used += 1
    return float(BLEND_GRID[int(np.argmin(errors))]) if total > 0 else 0.5


def _actual(data: AppData, origin_ms: int, config: ForecastConfig) -> np.ndarray:
    group, names = group_of_items(data, config.level)
    return daily_purchases(data, group, len(names), origin_ms, config.horizon_days)


@dataclass
class Backtest:
    level: Level
    horizon_days: int
    origins: list[int]
    # method -> wape_total / mae_total (per group, horizon sums: the headline) and wape / mae (daily cells)
    metrics: dict[str, dict[str, float]]
    per_origin: list[dict[str, float]] = field(default_factory=list)
    plot_days: list[int] = field(default_factory=list)  # day offsets of the plot series
    plot_series: dict[str, list[float]] = field(default_factory=dict)  # all groups summed per day

    def headline(self) -> str:
        m = self.metrics
        parts = [f"{k} {v['wape_total']:.3f} (daily {v['wape']:.3f})" for k, v in m.items()]
        return (f"{self.level} demand, {len(self.origins)} windows of {self.horizon_days} d, WAPE of the "
                f"{self.horizon_days}-day totals per {self.level}: " + "; ".join(parts))


def _scores(daily_a: np.ndarray, daily_p: np.ndarray, totals_a: np.ndarray, totals_p: np.ndarray
            ) -> dict[str, float]:
    return {"wape_total": wape(totals_a, totals_p), "mae_total": mae(totals_a, totals_p),
            "wape": wape(daily_a, daily_p), "mae": mae(daily_a, daily_p)}


def backtest_origins(data: AppData, horizon_days: int, n_windows: int) -> list[int]:
    """The starts of the last ``n_windows`` whole horizons of the data, oldest first."""
    last = floor_day(data.end_ms) - horizon_days * DAY_MS
    return [last - k * horizon_days * DAY_MS for k in range(n_windows - 1, -1, -1)]


def backtest(model: Recommender, data: AppData, config: ForecastConfig | None = None, n_windows: int = 3,
             first_origin_ms: int | None = None, promotions: Sequence[Promotion] = (),
             origins: Sequence[int] | None = None) -> Backtest:
    """Rolling-origin back-test over the last ``n_windows`` horizons of the data (or those from
    ``first_origin_ms``, or the given ``origins``): every method forecasts each window from the
    data before it. With a promotion calendar the model uses it, and ``model_without_calendar``
    shows what it adds."""
    config = config or ForecastConfig()
    h = config.horizon_days
    if origins is None:
        origins = backtest_origins(data, h, n_windows)
        if first_origin_ms is not None:
            origins = [o for o in origins if o >= first_origin_ms] or origins[-1:]
    origins = [int(o) for o in origins]
    sums: dict[str, list[np.ndarray]] = {"model": [], "seasonal_naive": [], "moving_average": []}
    if promotions:
        sums["model_without_calendar"] = []
    actuals, per_origin = [], []
    for origin in origins:
        f = forecast(model, data, origin, config, promotions)
        actual = _actual(data, origin, config)
        preds = {"model": f.daily, "seasonal_naive": seasonal_naive(f.history, h),
                 "moving_average": moving_average(f.history, h, config.level_days)}
        if promotions:
            preds["model_without_calendar"] = forecast(model, data, origin, config).daily
        actuals.append(actual)
        for k, v in preds.items():
            sums[k].append(v)
        per_origin.append({"origin_ms": origin, "blend": f.blend, **{f"wape_total_{k}": wape(actual.sum(1), v.sum(1))
                                                                    for k, v in preds.items()}})
    a = np.concatenate(actuals, axis=1)
    totals_a = np.stack([x.sum(1) for x in actuals])
    metrics = {}
    for k, parts in sums.items():
        p = np.concatenate(parts, axis=1)
        totals_p = np.stack([x.sum(1) for x in parts])
        metrics[k] = _scores(a, p, totals_a, totals_p)
    # the same expected counts as Poisson medians (WAPE and MAE reward medians, not means); the
    # moving average gets the same treatment so that the comparison stays like for like
    for k in ("model", "moving_average"):
        p = np.concatenate(sums[k], axis=1)
        totals_p = np.stack([x.sum(1) for x in sums[k]])
        metrics[f"{k}_median"] = _scores(a, poisson_median(p), totals_a, poisson_median(totals_p))
    days = list(range(a.shape[1]))
    series = {"actual": a.sum(0).tolist(), **{k: np.concatenate(v, axis=1).sum(0).tolist() for k, v in sums.items()}}
    return Backtest(config.level, h, origins, metrics, per_origin, days, series)
