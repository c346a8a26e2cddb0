"""Promotion targeting: rank users by how likely they engage with (or buy) promoted items in a window.

Signals per user u, from the history before the window's start, for the promoted items S:

* ``P_u(S)``: the model's next-item probability mass on S (what the sequence model expects next);
* ``T_u(S)``: the same mass from first-order item transitions counted before the start (a Markov
  chain from the user's last item): a sharp short-term signal beside the sequence model's smoother
  distribution, weighed by the learned combination like the others;
* the user's recency-weighted share of events on S's categories, and recent events on S itself;
* activity: recent events per day (shrunk towards the population rate), recency, purchases.

They are combined by a logistic model fitted on the *preceding* window of the same length on the
same items (features at start - D, label: engaged with S in [start - D, start)), so the weights are
learned on a time split and the output is a probability. That window has no promotion: it teaches
who comes to S on their own, and a campaign's engagement is driven more by who reacts to campaigns.

So the shop's *past* promotions that ended before the start, when given, add what only they can
teach: each becomes training rows under promotion conditions (its own items, features at its own
start, label: engaged in its window), marked by an indicator that the scored promotion shares, and
every row gets one more signal, the user's past response (log of 1 + the number of earlier
promotions the user engaged with, counted before that row's cut).

When no training window has an engaged user, the score falls back to the Poisson formula
``1 - exp(-rate_u * D * P_u(S))``. Baselines: RFM (recency, frequency, monetary; blind to S) and
popularity (the Poisson formula with the global popularity of S).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shopseq.applications.data import DAY_MS, AppData
from shopseq.applications.features import PURCHASE, activity_features, interest_share
from shopseq.applications.logistic import LogisticModel
from shopseq.applications.metrics import auc, lift_at, precision_at_k
from shopseq.applications.vectors import item_set_mass
from shopseq.applications.windowed import population, rfm_score
from shopseq.models.base import Recommender
from shopseq.models.baselines import Markov, MarkovConfig


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(default_factory=list, description="promoted item ids")
    categories: list[str] = Field(default_factory=list, description="promoted categories (all their items)")
    start_ms: int
    end_ms: int
    name: str = "promotion"

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


class PromotionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_days: float = Field(28.0, gt=0, description="window of recent activity behind rate_u")
    rate_prior_days: float = Field(14.0, ge=0, description="shrinkage of rate_u towards the population rate")
    history_weight: float = Field(0.5, ge=0, le=1, description="weight of the user's own category shares in P(S)")
    half_life_days: float = Field(30.0, gt=0)
    l2: float = Field(1e-2, ge=0, description="L2 penalty of the learned combination")
    transitions: bool = Field(True, description="add the item-transition (Markov) mass T_u(S) as a signal")


def promoted_mask(data: AppData, promotion: Promotion) -> np.ndarray:
    """bool (n_items + 1,): items of the promotion known to the model's vocabulary."""
    mask = np.zeros(data.seqs.n_items + 1, dtype=bool)
    if promotion.items:
        idx = data.seqs.item_vocab.encode(promotion.items)
        mask[idx[idx > 0]] = True
    if promotion.categories:
        codes = data.items.category_codes(promotion.categories)
        mask |= np.isin(data.items.category, codes[codes >= 0])
    mask[0] = False
    if not mask.any():
        raise ValueError(f"{promotion.name}: none of the promoted items or categories is known to the model")
    return mask


@dataclass
class PromotionScores:
    rows: np.ndarray  # user indices (users with history before the start)
    p_engage: np.ndarray  # the model's score (a probability)
    poisson: np.ndarray  # 1 - exp(-rate * days * P(S)): the unlearned combination
    model_mass: np.ndarray  # P_u(S) from the sequence model alone
    transition_mass: np.ndarray | None  # T_u(S) from item transitions (None: switched off)
    history_share: np.ndarray  # the user's recency-weighted share of events on S's categories
    rate_per_day: np.ndarray
    rfm: np.ndarray  # baseline scores
    popularity: np.ndarray
    learned: bool  # False when no training window could fit the combination
    past_promotions: int = 0  # earlier promotions whose outcomes trained the combination


@dataclass
class _Signals:
    rows: np.ndarray
    x: np.ndarray  # logistic inputs
    mass: np.ndarray
    transition_mass: np.ndarray | None
    share: np.ndarray
    rate: np.ndarray
    poisson: np.ndarray
    rfm: np.ndarray
    popularity: np.ndarray


def _signals(model: Recommender, data: AppData, mask: np.ndarray, start: int, days: float,
             config: PromotionConfig) -> _Signals:
    rows = population(data, start)
    if len(rows) == 0:
        raise ValueError(f"no user has history before {start} (the start of the window)")
    act = activity_features(data, start)
    ts = np.asarray(data.seqs.timestamps)
    items = np.asarray(data.seqs.items, dtype=np.int64)
    users = data.seqs.event_users()
    recent = (ts >= start - config.rate_days * DAY_MS) & (ts < start)
    n_recent = np.bincount(users[recent], minlength=data.seqs.n_users)[rows].astype(np.float64)
    on_set = np.bincount(users[recent & mask[items]], minlength=data.seqs.n_users)[rows].astype(np.float64)
    prior = n_recent.mean() / config.rate_days
    rate = (n_recent + config.rate_prior_days * prior) / (config.rate_days + config.rate_prior_days)

    history = data.before(start)
    mass = item_set_mass(model, history, rows, mask)
    t_mass = None
    if config.transitions:
        chain = Markov(MarkovConfig(), data.seqs.n_items).fit(history)
        t_mass = item_set_mass(chain, history, rows, mask)
    cats = np.unique(data.items.category[mask])
    cat_items = np.isin(data.items.category, cats[cats >= 0])
    share = interest_share(data, start, cat_items, config.half_life_days)[rows]
    counts = np.bincount(items[ts < start], minlength=len(mask))
    part = counts[mask].sum() / max(counts[cat_items].sum(), 1)  # promoted part of those categories
    p_set = (1 - config.history_weight) * mass + config.history_weight * share * part
    pop_share = counts[mask].sum() / max(counts.sum(), 1)
    a = act.values[rows]
    col = act.names.index
    x = np.column_stack([
        np.log(rate), np.log(mass + 1e-7), np.log(share + 1e-4), np.log1p(on_set),
        np.log1p(a[:, col("recency_days")]), np.log1p(a[:, col("purchases")]), np.log(p_set * rate + 1e-9),
        *([] if t_mass is None else [np.log(t_mass + 1e-7)]),
    ])
    return _Signals(rows, x, mass, t_mass, share, rate, 1 - np.exp(-rate * days * p_set), rfm_score(a, act.names),
                    1 - np.exp(-rate * days * pop_share))


def engaged_users(data: AppData, mask: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    """bool per user: any event on the ``mask`` items in [start, end)."""
    ts = np.asarray(data.seqs.timestamps)
    on = mask[np.asarray(data.seqs.items, dtype=np.int64)] & (ts >= start_ms) & (ts < end_ms)
    return np.bincount(data.seqs.event_users()[on], minlength=data.seqs.n_users) > 0


def score_users(model: Recommender, data: AppData, promotion: Promotion, config: PromotionConfig | None = None,
                past: Sequence[Promotion] = ()) -> PromotionScores:
    """Scores of the users with history before the start. ``past``: the shop's earlier promotions
    (those that ended after the start are ignored: their outcome is not known yet)."""
    config = config or PromotionConfig()
    mask = promoted_mask(data, promotion)
    days, start = promotion.days, promotion.start_ms
    now = _signals(model, data, mask, start, days, config)
    # training windows: the same items over the preceding window of the same length (no promotion),
    # then every earlier promotion (under promotion conditions)
    windows: list[tuple[_Signals, np.ndarray, float, int]] = []
    prev_start = start - int(days * DAY_MS)
    if prev_start > data.start_ms:
        prev = _signals(model, data, mask, prev_start, days, config)
        windows.append((prev, engaged_users(data, mask, prev_start, start)[prev.rows], 0.0, prev_start))
    earlier = [p for p in past if p.end_ms <= start and p.start_ms > data.start_ms]
    engaged_in = []  # (end, engaged per user) of every earlier promotion
    for p in earlier:
        p_mask = promoted_mask(data, p)
        engaged = engaged_users(data, p_mask, p.start_ms, p.end_ms)
        engaged_in.append((p.end_ms, engaged))
        sig = _signals(model, data, p_mask, p.start_ms, p.days, config)
        windows.append((sig, engaged[sig.rows], 1.0, p.start_ms))

    def design(sig: _Signals, promoted: float, cut: int) -> np.ndarray:
        if not earlier:  # the preceding window alone: no indicator, no past response to learn from
            return sig.x
        # past response: in how many of the promotions that ended by the row's cut the user engaged
        count = sum((e.astype(np.float64) for end, e in engaged_in if end <= cut), np.zeros(data.seqs.n_users))
        return np.column_stack([sig.x, np.log1p(count[sig.rows]), np.full(len(sig.rows), promoted)])

    learned, p_engage = False, now.poisson
    y = np.concatenate([w[1] for w in windows]) if windows else np.zeros(0, dtype=bool)
    if y.sum() >= 5 and not y.all():
        x = np.vstack([design(sig, promoted, cut) for sig, _, promoted, cut in windows])
        p_engage = LogisticModel.fit(x, y, config.l2).predict_proba(design(now, 1.0, start))
        learned = True
    return PromotionScores(now.rows, p_engage, now.poisson, now.mass, now.transition_mass, now.share, now.rate,
                           now.rfm, now.popularity, learned, len(earlier))


def outcome_labels(data: AppData, promotion: Promotion, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What happened in the window: any event on a promoted item, any purchase of one."""
    mask = promoted_mask(data, promotion)
    ts = np.asarray(data.seqs.timestamps)
    on = mask[np.asarray(data.seqs.items, dtype=np.int64)] & (ts >= promotion.start_ms) & (ts < promotion.end_ms)
    bought = np.bincount(data.seqs.event_users()[on & (np.asarray(data.seqs.event_types) == PURCHASE)],
                         minlength=data.seqs.n_users) > 0
    return {"engaged": engaged_users(data, mask, promotion.start_ms, promotion.end_ms)[rows], "purchased": bought[rows]}


def targeting_metrics(labels: np.ndarray, scores: dict[str, np.ndarray], k: int | None = None
                      ) -> dict[str, dict[str, float]]:
    """AUC, lift in the top 10 % and precision@k of each scorer against one outcome."""
    k = k or max(1, len(labels) // 100)
    return {name: {"auc": auc(labels, s), "lift@10%": lift_at(labels, s, 0.1),
                   f"precision@{k}": precision_at_k(labels, s, k)} for name, s in scores.items()}


def evaluate_promotion(model: Recommender, data: AppData, promotion: Promotion,
                       extra_labels: dict[str, np.ndarray] | None = None, config: PromotionConfig | None = None,
                       past: Sequence[Promotion] = ()) -> dict[str, dict[str, dict[str, float]]]:
    """Per outcome (engaged, purchased, plus ``extra_labels`` given per user of the vocabulary,
    e.g. the synthetic shop's planted responders): metrics of the model and the baselines."""
    s = score_users(model, data, promotion, config, past)
    scorers = {"model": s.p_engage, "poisson": s.poisson, "sequence_model_only": s.model_mass, "rfm": s.rfm,
               "popularity": s.popularity}
    if s.transition_mass is not None:
        scorers["transitions_only"] = s.transition_mass
    outcomes = outcome_labels(data, promotion, s.rows)
    outcomes.update({k: v[s.rows] for k, v in (extra_labels or {}).items()})
    return {name: targeting_metrics(y, scorers) for name, y in outcomes.items() if 0 < y.sum() < len(y)}


def pseudo_campaigns(data: AppData, days: float = 2.0, n: int = 3, end_ms: int | None = None) -> list[Promotion]:
    """For data without recorded campaigns: the ``n`` busiest categories of the last ``days`` as
    category promotions over that window (what would we have targeted, who came?)."""
    end = data.end_ms if end_ms is None else end_ms
    start = end - int(days * DAY_MS)
    ts = np.asarray(data.seqs.timestamps)
    cat = data.event_category[(ts >= start) & (ts < end)]
    counts = np.bincount(cat[cat >= 0], minlength=data.items.n_categories)
    top = np.argsort(-counts, kind="stable")[:n]
    return [Promotion(categories=[str(data.items.category_names[c])], start_ms=start, end_ms=end,
                      name=f"category {data.items.category_names[c]}") for c in top if counts[c] > 0]


def campaign_promotions(campaigns: list[dict]) -> list[Promotion]:
    """The synthetic shop's campaigns table rows as promotions (item campaigns by items, category ones
    by category)."""
    out = []
    for c in campaigns:
        if c.get("kind") == "category" and c.get("category"):
            out.append(Promotion(categories=[c["category"]], start_ms=c["start_ms"], end_ms=c["end_ms"],
                                 name=f"{c['campaign_id']} {c['name']}"))
        else:
            out.append(Promotion(items=list(c["item_ids"]), start_ms=c["start_ms"], end_ms=c["end_ms"],
                                 name=f"{c['campaign_id']} {c['name']}"))
    return out


def load_promotions(path: Path) -> list[Promotion]:
    """A shop's promotions from a file: Parquet with the campaigns table's columns (campaign_id,
    name, kind, start_ms, end_ms, item_ids, category; what the synthetic shop writes), or JSON, a
    list of ``Promotion`` objects (items and/or categories, start_ms, end_ms, name)."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        missing = {"campaign_id", "name", "start_ms", "end_ms"} - set(table.column_names)
        if missing:
            raise ValueError(f"{path}: campaigns table lacks the column(s) {sorted(missing)}")
        return campaign_promotions(table.to_pylist())
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of promotions")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(Promotion.model_validate(entry))
        except ValidationError as e:
            raise ValueError(f"{path}: promotion {i}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    return out
