"""Shop applications (profiles, segments, intent, promotion, demand forecast, churn) on a small
synthetic shop whose ground truth is known, plus the metrics they are judged by."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shopseq.applications.churn import churn_config, evaluate_churn
from shopseq.applications.data import DAY_MS, AppData, floor_day, load_run_and_data, train_cut_ms
from shopseq.applications.features import behaviour_features
from shopseq.applications.forecast import ForecastConfig, backtest, forecast, promotion_uplift
from shopseq.applications.intent import evaluate_intent
from shopseq.applications.metrics import adjusted_rand_index, auc, lift_at, log_loss, mae, precision_at_k, wape
from shopseq.applications.profiles import Profiles, build_profiles, segment_report
from shopseq.applications.promotion import (
    Promotion,
    campaign_promotions,
    evaluate_promotion,
    outcome_labels,
    score_users,
)
from shopseq.applications.segments import SegmentConfig, kmeans, segment_space, segment_users, silhouette
from shopseq.applications.summary import run_all
from shopseq.applications.truth import SyntheticTruth
from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
from shopseq.cli.main import app
from shopseq.data.ingest import ingest_file
from shopseq.data.store import EventStore, upsert_items
from shopseq.data.workspace import Workspace
from shopseq.evaluation import EvalConfig
from shopseq.models.baselines import Markov, MarkovConfig
from shopseq.runs.experiment import ExperimentConfig, SplitConfig, run_experiment
from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

runner = CliRunner()
# 8 organic visits per user (default 3): enough history per user for the planted types to show
SHOP = SyntheticShopConfig(n_users=1500, n_items=500, n_categories=15, seed=1, mean_sessions_per_user=8,
                           chunk_users=1500)


@pytest.fixture(scope="module")
def shop_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shop folder + workspace with a markov run and a tiny SASRec run (1 thread, 2 epochs)."""
    root = tmp_path_factory.mktemp("apps")
    write_shop(generate_shop(SHOP), root / "shop")
    with EventStore.open(Workspace(root / "ws")) as store:
        ingest_file(store, root / "shop" / "events.parquet", "parquet", SYNTHETIC_OPTIONS)
        upsert_items(store, pq.read_table(root / "shop" / "items.parquet"))
        from shopseq.data.sequences import build_sequences

        seqs = build_sequences(store.con)
    specs = {"markov": {"model": "markov"},
             "sasrec": {"model": "sasrec", "hidden": 16, "max_len": 30,
                        "train": {"epochs": 2, "threads": 1, "quiet": True, "batch_size": 256}}}
    for name, spec in specs.items():
        config = ExperimentConfig(model=spec, split=SplitConfig(method="time"), eval=EvalConfig(ks=(10,)),
                                  baselines=[])
        run_experiment(seqs, config, root / "ws" / "runs" / name, {}, log=lambda *_: None)
    return root


def _open(root: Path) -> EventStore:
    return EventStore.open(Workspace(root / "ws"), read_only=True)


# -- metrics ----------------------------------------------------------------------------------
def test_auc_equals_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
    assert auc(y, s) == pytest.approx(np.mean(pairs))
    assert auc(y, y.astype(float)) == 1.0 and np.isnan(auc(np.ones(3, bool), np.arange(3)))


def test_adjusted_rand_index_matches_pair_counting() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 3, 40), rng.integers(0, 4, 40)
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    iu = np.triu_indices(40, 1)
    index = (same_a & same_b)[iu].sum()
    ea, eb, n_pairs = same_a[iu].sum(), same_b[iu].sum(), len(iu[0])
    expected = ea * eb / n_pairs
    assert adjusted_rand_index(a, b) == pytest.approx((index - expected) / ((ea + eb) / 2 - expected))
    assert adjusted_rand_index(a, (a + 1) % 3) == pytest.approx(1.0)  # relabelling does not matter


def test_forecast_and_ranking_metrics() -> None:
    assert wape([2, 0, 2], [1, 1, 2]) == pytest.approx(0.5)
    assert mae([2, 0, 2], [1, 1, 2]) == pytest.approx(2 / 3)
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    s = np.arange(10, 0, -1, dtype=float)  # positives ranked first
    assert precision_at_k(y, s, 2) == 1.0 and lift_at(y, s, 0.2) == pytest.approx(5.0)
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


def test_kmeans_and_silhouette_find_separated_blobs() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    truth = rng.integers(0, 4, 400)
    x = centres[truth] + rng.normal(0, 1.0, (400, 2))
    assert adjusted_rand_index(truth, kmeans(x, 4, seed=0).labels) > 0.95
    seg = segment_users(x, SegmentConfig(k_min=2, k_max=7, n_init=2))
    assert seg.k == 4 and max(seg.scores, key=seg.scores.get) == 4
    assert silhouette(x, truth) > silhouette(x, rng.permutation(truth)) + 0.5


# -- segments and profiles --------------------------------------------------------------------
def test_segments_recover_the_planted_shopper_types(shop_ws: Path) -> None:
    """Measured on this shop (seed 1, 8 visits per user): ARI 0.14 with k = 6 (the planted count).
    The types overlap by design (every knob is a probability), so even a supervised nearest-centroid
    classifier on these features reaches only ARI ~0.13 on the default 3-visit shop. The threshold
    0.08 sits well above chance (permuted types give |ARI| < 0.02) and below the measured value."""
    with _open(shop_ws) as store:
        from shopseq.data.sequences import build_item_vocab

        data = AppData.from_store(store, build_item_vocab(store.con))
        truth = SyntheticTruth.load(shop_ws / "shop", store.key)
    types = truth.user_types(data.seqs.user_vocab)
    assert (types >= 0).all() and len(np.unique(types)) == 6
    x = segment_space(behaviour_features(data, data.end_ms).values, None, 0.0)
    labels = segment_users(x, SegmentConfig(k=6)).labels
    ari = adjusted_rand_index(types, labels)
    assert ari > 0.08
    assert abs(adjusted_rand_index(np.random.default_rng(0).permutation(types), labels)) < 0.02


def test_profiles_from_a_neural_model(shop_ws: Path, tmp_path: Path) -> None:
    with _open(shop_ws) as store:
        profiles = build_profiles(store, shop_ws / "ws" / "runs" / "sasrec")
        _, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "sasrec")
        raw_user = "u0000007"
        pseudonym = store.key.pseudonymise(raw_user)
    assert len(profiles) == data.seqs.n_users
    vectors = np.stack(profiles.table.column("vector").to_numpy(zero_copy_only=False))
    assert vectors.shape[1] == 16 and np.isfinite(vectors).all()  # SASRec hidden size
    assert 2 <= len(profiles.meta["segments"]) <= 10
    intent = profiles.table.column("purchase_intent").to_numpy()
    assert np.all((intent > 0) & (intent < 1))

    # the profile's top category is the category the user's (recency-weighted) events favour
    row = profiles.lookup(pseudonym)
    assert row is not None and row["user_id"] == pseudonym and row["segment_description"]
    u = int(data.seqs.user_vocab.encode([pseudonym])[0])
    items, _, _ = data.seqs.user(u)
    cats = data.items.category[np.asarray(items, dtype=np.int64)]
    top_names = [c["name"] for c in row["top_categories"]]
    most_frequent = data.items.category_names[np.bincount(cats).argmax()]
    assert most_frequent in top_names and row["events"] == len(items)
    assert profiles.lookup("no-such-user") is None

    path = profiles.save(tmp_path / "p" / "profiles.parquet")
    again = Profiles.load(path)
    assert again.table.equals(profiles.table) and again.meta["segments"] == profiles.meta["segments"]
    assert [p.name for p in path.parent.iterdir()] == ["profiles.parquet"]  # no temp file left
    html = segment_report(again, ari=0.1)
    assert html.count("data:image/png;base64,") >= 3 and "Segment 0" in html


# -- predictions against baselines ------------------------------------------------------------
def test_promotion_targeting_beats_rfm_on_the_recorded_campaigns(shop_ws: Path) -> None:
    with _open(shop_ws) as store:
        _, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
        truth = SyntheticTruth.load(shop_ws / "shop", store.key)
    campaigns = truth.campaigns.to_pylist()
    promotions = campaign_promotions(campaigns)
    model_auc, rfm_auc, gains = [], [], []
    for c, promo in zip(campaigns, promotions, strict=True):
        # a model that never saw the window: trained on the events before the campaign starts
        model = Markov(MarkovConfig(), data.seqs.n_items).fit(data.before(promo.start_ms))
        result = evaluate_promotion(model, data, promo, truth.campaign_labels(c["campaign_id"], data.seqs.user_vocab))
        assert {"engaged", "responded"} <= set(result)
        model_auc.append(result["engaged"]["model"]["auc"])
        rfm_auc.append(result["engaged"]["rfm"]["auc"])
        # the campaigns that ended before this one teach how users react to campaigns
        with_past = score_users(model, data, promo, past=promotions)
        n_past = sum(p.end_ms <= promo.start_ms for p in promotions)
        assert with_past.past_promotions == n_past
        if n_past:
            y = outcome_labels(data, promo, with_past.rows)["engaged"]
            gains.append(auc(y, with_past.p_engage) - result["engaged"]["model"]["auc"])
    assert np.mean(model_auc) > np.mean(rfm_auc) + 0.02
    assert np.mean(model_auc) > 0.6
    # measured on this shop: +0.001 / +0.016 / +0.007 on the 3 campaigns with earlier ones
    assert len(gains) >= 2 and np.mean(gains) > 0.004


def test_demand_forecast_beats_both_baselines(shop_ws: Path) -> None:
    """Category level, 3 rolling windows of 7 days at the end of the log. Headline: WAPE of the
    7-day totals per category. Measured (markov run, this shop config, seeds 1 / 2 / 3): with the
    shop's campaign calendar 0.234 / 0.252 / 0.238; without it 0.278 / 0.294 / 0.296; seasonal
    naive 0.303 / 0.434 / 0.326; 28-day moving average 0.286 / 0.380 / 0.356. Seed 1 (the one used
    here) is the tightest: 0.82 x the better baseline with the calendar, 0.972 x without it, so the
    checks ask for 0.9 x and 0.98 x. Daily cells (without the calendar 0.631 vs seasonal naive
    0.811) must beat seasonal naive; against the moving average they are within noise (0.631 vs 0.627)."""
    with _open(shop_ws) as store:
        model, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
        truth = SyntheticTruth.load(shop_ws / "shop", store.key)
    calendar = campaign_promotions(truth.campaigns.to_pylist())
    bt = backtest(model, data, ForecastConfig(horizon_days=7), n_windows=3, promotions=calendar)
    m = bt.metrics
    best_baseline = min(m["seasonal_naive"]["wape_total"], m["moving_average"]["wape_total"])
    # the campaigns' extra purchases are not the baseline demand: the calendar keeps them out of it
    assert m["model"]["wape_total"] < 0.9 * best_baseline
    assert m["model"]["wape_total"] < 0.9 * m["model_without_calendar"]["wape_total"]
    assert m["model_without_calendar"]["wape_total"] < 0.98 * best_baseline
    assert m["model_without_calendar"]["wape"] < m["seasonal_naive"]["wape"]
    # Poisson medians of the same means: never worse on absolute error for the moving average either
    assert m["model_median"]["wape_total"] < m["moving_average_median"]["wape_total"]
    assert len(bt.plot_series["actual"]) == 21
    # the blend is chosen on the windows before each origin, and the behaviour part carries weight here
    assert all(0.0 <= p["blend"] <= 1.0 for p in bt.per_origin) and max(p["blend"] for p in bt.per_origin) > 0
    f = forecast(model, data, config=ForecastConfig(horizon_days=7, level="item"))
    assert f.daily.shape == (data.seqs.n_items, 7) and (f.daily >= 0).all()
    # expected purchases are on the scale of what was bought recently
    recent = f.history[:, -28:].sum() / 4
    assert 0.5 * recent < f.daily.sum() < 2 * recent


def test_a_planned_promotion_lifts_its_groups_by_the_uplift_of_the_past_ones(shop_ws: Path) -> None:
    with _open(shop_ws) as store:
        model, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
        truth = SyntheticTruth.load(shop_ws / "shop", store.key)
    calendar = campaign_promotions(truth.campaigns.to_pylist())
    origin = floor_day(data.end_ms) - 7 * DAY_MS
    assert all(p.end_ms <= origin for p in calendar)  # the recorded campaigns all lie before
    uplift = promotion_uplift(data, origin, ForecastConfig(), calendar)
    # the shop's campaigns multiply visits to their items (lift 1.5-3): their purchases rise a lot
    # more than the rest's, which only gains the spill-over of the extra visits
    assert uplift[0] > 2.0 and 0.8 < uplift[1] < uplift[0] / 2
    category = calendar[0].categories or [data.items.category_names[data.items.category[
        data.seqs.item_vocab.encode(calendar[0].items[:1])[0]]]]
    planned = Promotion(categories=category, start_ms=origin + 2 * DAY_MS, end_ms=origin + 5 * DAY_MS, name="planned")
    config = ForecastConfig(horizon_days=7, blend=0.5)
    plain = forecast(model, data, origin, config, calendar)
    lifted = forecast(model, data, origin, config, [*calendar, planned])
    assert lifted.promotion_days == 3 and lifted.uplift == pytest.approx(uplift)
    g = int(np.flatnonzero(lifted.names == category[0])[0])
    ratio = lifted.daily / plain.daily
    assert ratio[g, 2:5] == pytest.approx(uplift[0])  # the whole category is promoted
    others = np.arange(len(ratio)) != g
    assert ratio[others][:, 2:5] == pytest.approx(uplift[1])
    assert ratio[:, [0, 1, 5, 6]] == pytest.approx(1.0)  # days outside the promotion are untouched


def test_restock_intervals_match_the_planted_consumables(shop_ws: Path) -> None:
    """The restock part learns item intervals from repeat purchases alone; on the synthetic shop they
    must be the planted consumables' repurchase intervals (median error within 15 %)."""
    from shopseq.applications.purchase_history import PurchaseHistoryConfig, learn_restocks, purchases_before

    with _open(shop_ws) as store:
        _, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
    truth = pq.read_table(shop_ws / "shop" / "item_truth.parquet").to_pydict()
    u, i, t, _ = purchases_before(data, data.end_ms)
    rs = learn_restocks(u, i, t, data.seqs.n_items, PurchaseHistoryConfig())
    found = np.flatnonzero(rs.items)
    assert len(found) >= 10
    ids = data.seqs.item_vocab.ids.to_pylist()
    row = {item_id: k for k, item_id in enumerate(truth["item_id"])}
    planted = np.array([truth["repurchase_days"][row[ids[j - 1]]] or np.nan for j in found], dtype=np.float64)
    consumable = np.array([truth["is_consumable"][row[ids[j - 1]]] for j in found])
    # what it calls restocked is mostly a consumable (measured 0.90 here; popular items rebought
    # organically at similar gaps make up the rest)
    assert consumable.mean() > 0.8
    ratio = np.exp(rs.log_interval[found][consumable]) / planted[consumable]
    assert np.median(np.abs(np.log(ratio))) < np.log(1.15)


def test_intent_and_churn_beat_their_baselines(shop_ws: Path) -> None:
    with _open(shop_ws) as store:
        model, data, _ = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
    churn = evaluate_churn(model, data, churn_config(21))
    assert churn.metrics["auc_model"] > churn.metrics["auc_recency"]
    intent = evaluate_intent(model, data)
    assert intent.metrics["auc_model"] > 0.65 and intent.metrics["auc_model"] > intent.metrics["auc_rfm"]
    assert intent.metrics["ece"] < 0.05
    r = intent.positive_rate  # log loss of always predicting the base rate: the model must beat it
    assert intent.metrics["log_loss"] < -(r * np.log(r) + (1 - r) * np.log(1 - r))


# -- the demo hook and the commands -----------------------------------------------------------
def test_run_all_and_the_commands(shop_ws: Path, tmp_path: Path) -> None:
    with _open(shop_ws) as store:
        summary = run_all(store, shop_ws / "ws" / "runs" / "markov", shop_ws / "shop", quick=True, out_dir=tmp_path)
    text = summary.render()
    for word in ("profiles", "ARI", "purchase intent", "promotion", "demand", "churn"):
        assert word in text
    # campaigns inside the run's training data are labelled as such (quick: the first two)
    with _open(shop_ws) as store:
        _, _, meta = load_run_and_data(store, shop_ws / "ws" / "runs" / "markov")
        truth = SyntheticTruth.load(shop_ws / "shop", store.key)
    cut = train_cut_ms(meta)
    assert cut is not None
    seen = sum(c["start_ms"] < cut for c in truth.campaigns.to_pylist()[:2])
    assert seen >= 1  # this shop has campaigns inside the training period
    assert text.count("inside the model's training data") == seen
    assert summary.metrics["promo_windows_seen_in_training"] == seen
    assert (tmp_path / "profiles.parquet").exists() and (tmp_path / "segments.html").exists()
    page = (tmp_path / "report.html").read_text()
    for heading in ("Purchase intent", "Promotion response", "Demand forecast", "Churn", "Reliability diagram"):
        assert heading in page
    assert page.count("data:image/png;base64,") >= 3  # two reliability diagrams and the forecast plot

    ws = ["--workspace", str(shop_ws / "ws")]
    run = str(shop_ws / "ws" / "runs" / "markov")
    result = runner.invoke(app, ["profile", run, "--k", "3", "--user", "u0000001", *ws])
    assert result.exit_code == 0, result.output
    assert "segment_description" in result.output
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["forecast", run, "--horizon", "1w", "--windows", "1", "--out", str(out), *ws])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 7 * SHOP.n_categories
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    result = runner.invoke(app, ["forecast", run, "--horizon", "1w", "--windows", "1", "--campaigns",
                                 str(shop_ws / "shop" / "campaigns.parquet"), *ws])
    assert result.exit_code == 0 and "model_without_calendar" in result.output, result.output
    category = pq.read_table(shop_ws / "shop" / "items.parquet").column("category_path")[0].as_py()[-1]
    result = runner.invoke(app, ["promote", run, "--categories", category, "--start", "2024-03-01",
                                 "--end", "2024-03-08", "--top", "3", *ws])
    assert result.exit_code == 0, result.output
    # after the recorded campaigns, which then train the combination with the preceding window
    after = max(c["end_ms"] for c in truth.campaigns.to_pylist())
    past = str(shop_ws / "shop" / "campaigns.parquet")
    result = runner.invoke(app, ["promote", run, "--categories", category, "--start", str(after), "--end",
                                 str(after + 7 * 86_400_000), "--past-campaigns", past, "--top", "3", *ws])
    words = " ".join(result.output.split())  # the table title may wrap at any width
    assert result.exit_code == 0 and f"with {SHOP.n_campaigns} earlier promotion(s)" in words, result.output
    bad = tmp_path / "past.json"
    bad.write_text('[{"categories": ["x"], "start_ms": 1, "end_ms": 2}, {"items": ["a"], "start_ms": "soon"}]')
    result = runner.invoke(app, ["promote", run, "--categories", category, "--start", "2024-03-01",
                                 "--end", "2024-03-08", "--past-campaigns", str(bad), *ws])
    assert result.exit_code == 2 and "past.json: promotion 1" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["churn", run, "--horizon", "14d", "--no-evaluate", *ws])
    assert result.exit_code == 0 and "users scored" in result.output
    result = runner.invoke(app, ["forecast", run, "--horizon", "soon", *ws])
    assert result.exit_code == 2 and "bad duration" in result.output
    result = runner.invoke(app, ["promote", run, "--items", "nope", "--start", "2024-03-01", "--end", "2024-03-02",
                                 *ws])
    assert result.exit_code == 2 and "none of the promoted items" in result.output
