"""Every application's evaluation in one call, for the demo and the benchmark:
``run_all(store, run_dir, truth_dir=...)`` -> an ``AppSummary`` that prints as a short report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shopseq.applications.churn import churn_config, evaluate_churn
from shopseq.applications.data import DAY_MS, AppData, load_run_and_data, train_cut_ms
from shopseq.applications.forecast import ForecastConfig, backtest
from shopseq.applications.intent import evaluate_intent
from shopseq.applications.metrics import adjusted_rand_index
from shopseq.applications.profiles import ProfileConfig, Profiles, build_profiles_from, segment_report
from shopseq.applications.promotion import Promotion, campaign_promotions, evaluate_promotion, pseudo_campaigns
from shopseq.applications.report import apps_report
from shopseq.applications.truth import SyntheticTruth
from shopseq.applications.windowed import WindowConfig
from shopseq.atomic import write_text
from shopseq.data.store import EventStore
from shopseq.models.base import Recommender


@dataclass
class AppSummary:
    lines: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # flat, for benchmark records
    details: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def render(self) -> str:
        return "\n".join(self.lines)

    __str__ = render


def segment_ari(profiles: Profiles, truth: SyntheticTruth, data: AppData, min_events: int = 1) -> float:
    rows = data.seqs.user_vocab.encode(profiles.table.column("user_id"))
    types = truth.user_types(data.seqs.user_vocab)[rows]
    keep = (types >= 0) & (profiles.table.column("events").to_numpy() >= min_events)
    return adjusted_rand_index(types[keep], profiles.table.column("segment").to_numpy()[keep])


def evaluation_promotions(data: AppData, truth: SyntheticTruth | None, quick: bool = False
                          ) -> tuple[list[Promotion], list[dict[str, np.ndarray]]]:
    """The promotions to back-test, with any extra per-user labels: the synthetic shop's recorded
    campaigns (and who responded), else the busiest categories of the last days as pseudo-campaigns."""
    if truth is not None:
        campaigns = truth.campaigns.to_pylist()
        promotions = campaign_promotions(campaigns)
        extra = [truth.campaign_labels(c["campaign_id"], data.seqs.user_vocab) for c in campaigns]
    else:
        span_days = (data.end_ms - data.start_ms) / DAY_MS
        promotions = pseudo_campaigns(data, days=min(2.0, span_days / 4), n=2 if quick else 3)
        extra = [{} for _ in promotions]
    return (promotions[:2], extra[:2]) if quick else (promotions, extra)


def run_all_on(model: Recommender, data: AppData, truth: SyntheticTruth | None = None, quick: bool = False,
               out_dir: Path | None = None, forecast_horizon: int = 7, churn_days: float = 30.0,
               trained_until_ms: int | None = None) -> AppSummary:
    """Evaluate profiles/segments, intent, promotion, demand forecast and churn on one dataset.

    ``out_dir``: where profiles.parquet, segments.html and report.html (every back-test with its
    plots) go. ``trained_until_ms``: the end of the model's training data (``train_cut_ms`` of its run). The
    held-out windows of intent, churn and the demand back-test are then kept after it (shorter
    horizons, fewer windows where needed): a window the model was trained on scores optimistically.
    A promotion window is given (a campaign's dates), so one that starts before the cut is labelled
    optimistic and kept out of the ``promo_*`` averages while any unseen window exists.
    """
    s = AppSummary()
    span_days = (data.end_ms - data.start_ms) / DAY_MS
    # days at the end of the log that the model has not seen (all of them without a known cut)
    unseen_days = span_days if trained_until_ms is None else max(0.0, (data.end_ms - trained_until_ms) / DAY_MS)
    if unseen_days < 1:
        s.add(f"note: only {unseen_days:.1f} days of the log come after the model's training data; the "
              "back-tests below overlap what the model saw and are optimistic")
        unseen_days = span_days

    t = time.perf_counter()
    config = ProfileConfig()
    if quick:
        config.segments = config.segments.model_copy(update={"k_max": 6, "n_init": 2, "fit_sample": 3000})
    profiles = build_profiles_from(model, data, config, run_info={"model": model.name})
    s.timing["profiles_s"] = time.perf_counter() - t
    s.add(f"profiles: {len(profiles):,} users; {profiles.meta['segmentation']}")
    if truth is not None:
        s.metrics["segments_ari"] = segment_ari(profiles, truth, data)
        s.metrics["segments_ari_20plus"] = segment_ari(profiles, truth, data, min_events=20)
        s.add(f"  segments vs planted shopper types: ARI {s.metrics['segments_ari']:.3f} "
              f"(users with >= 20 events: {s.metrics['segments_ari_20plus']:.3f})")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        profiles.save(out_dir / "profiles.parquet")
        write_text(out_dir / "segments.html", segment_report(profiles, s.metrics.get("segments_ari")))

    t = time.perf_counter()
    intent = evaluate_intent(model, data, WindowConfig(horizon_days=min(7.0, span_days / 4, unseen_days)))
    s.timing["intent_s"] = time.perf_counter() - t
    s.add(intent.headline())
    s.details["intent"] = intent
    s.metrics.update({f"intent_{k}": v for k, v in intent.metrics.items()})

    t = time.perf_counter()
    promotions, extra = evaluation_promotions(data, truth, quick)
    seen = [trained_until_ms is not None and promo.start_ms < trained_until_ms for promo in promotions]
    averaged = [not x for x in seen] if not all(seen) else seen
    aucs: dict[str, list[float]] = {}
    for promo, labels, was_seen, counts in zip(promotions, extra, seen, averaged, strict=True):
        # the other campaigns that ended before this one starts teach how users react to campaigns
        result = evaluate_promotion(model, data, promo, labels, past=promotions)
        s.details[promo.name] = result
        for outcome, scorers in result.items():
            for name, m in scorers.items():
                if counts:
                    aucs.setdefault(f"promo_{outcome}_auc_{name}", []).append(m["auc"])
        eng = result.get("engaged", {})
        if eng:
            note = " (window inside the model's training data: optimistic)" if was_seen else ""
            s.add(f"promotion {promo.name}: engaged AUC model {eng['model']['auc']:.3f}, rfm {eng['rfm']['auc']:.3f}, "
                  f"popularity {eng['popularity']['auc']:.3f}; lift@10% {eng['model']['lift@10%']:.2f}{note}")
    s.metrics.update({k: float(np.nanmean(v)) for k, v in aucs.items()})
    s.metrics["promo_windows_seen_in_training"] = float(sum(seen))
    s.timing["promotion_s"] = time.perf_counter() - t

    t = time.perf_counter()
    horizon = int(max(1, min(forecast_horizon, span_days // 6, unseen_days)))
    n_windows = int(max(1, min(2 if quick else 3, unseen_days // horizon)))
    # the recorded campaigns are the shop's promotion calendar (pseudo-campaigns are drawn from the
    # outcome itself, so they are not one)
    calendar = promotions if truth is not None else []
    bt = backtest(model, data, ForecastConfig(horizon_days=horizon), n_windows=n_windows, promotions=calendar)
    s.timing["forecast_s"] = time.perf_counter() - t
    s.add(bt.headline())
    s.details["forecast"] = bt
    for method, m in bt.metrics.items():
        s.metrics.update({f"forecast_{method}_{k}": v for k, v in m.items()})

    t = time.perf_counter()
    churn_h = min(churn_days, span_days / 3, unseen_days)
    churn = evaluate_churn(model, data, churn_config(churn_h))
    s.timing["churn_s"] = time.perf_counter() - t
    s.add(churn.headline())
    s.details["churn"] = churn
    s.metrics.update({f"churn_{k}": v for k, v in churn.metrics.items()})
    if out_dir is not None:
        write_text(out_dir / "report.html", apps_report(s, f"shopseq applications: {model.name}"))
    return s


def run_all(store: EventStore, run_dir: Path, truth_dir: Path | None = None, quick: bool = False,
            out_dir: Path | None = None) -> AppSummary:
    """The demo hook: every application evaluated on the store's data with the run's model.
    ``truth_dir``: the synthetic shop folder (users / campaigns / campaign_responses Parquet) for
    the ground-truth checks; ``out_dir``: where profiles.parquet, segments.html and report.html go."""
    model, data, meta = load_run_and_data(store, Path(run_dir))
    truth = SyntheticTruth.load(truth_dir, store.key) if truth_dir is not None else None
    return run_all_on(model, data, truth, quick, out_dir, trained_until_ms=train_cut_ms(meta))
