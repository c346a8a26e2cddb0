"""Shop applications on a trained run: profile, forecast, promote, churn (and apps: all evaluations)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.table import Table

from shopseq.applications.churn import churn_config, evaluate_churn, fit_churn
from shopseq.applications.data import DAY_MS, load_run_and_data
from shopseq.applications.forecast import ForecastConfig, backtest, forecast
from shopseq.applications.profiles import build_profiles_from, segment_report
from shopseq.applications.promotion import Promotion, load_promotions, score_users
from shopseq.applications.report import forecast_section
from shopseq.applications.summary import run_all
from shopseq.atomic import write_file, write_text
from shopseq.cli.common import WorkspaceOpt, console, friendly_errors, open_store
from shopseq.reports.html import HtmlReport

RunArg = Annotated[Path, typer.Argument(help="A run directory written by `shopseq train`.")]
_UNITS_MS = {"h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_duration_days(text: str) -> float:
    """'7d', '12h', '2w' or a plain number of days -> days."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hdw]?)\s*", text.lower())
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 7d, 12h or 2w")
    return float(m.group(1)) * _UNITS_MS[m.group(2) or "d"] / DAY_MS


def parse_time_ms(text: str) -> int:
    """An ISO date / datetime (UTC unless it says otherwise) or epoch milliseconds -> ms."""
    if re.fullmatch(r"\d{11,}", text.strip()):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"bad time {text!r}: use an ISO date such as 2024-03-01 or epoch ms") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for x in values or [] for v in x.split(",") if v.strip()]


def _apps_dir(store_root: Path, run_dir: Path) -> Path:
    return store_root / "apps" / Path(run_dir).resolve().name


@friendly_errors
def profile(
    run_dir: RunArg,
    out: Annotated[Path | None, typer.Option(help="Profiles Parquet (default: <workspace>/apps/<run>/).")] = None,
    report: Annotated[Path | None, typer.Option(help="Segment report HTML (default: next to the profiles).")] = None,
    k: Annotated[int | None, typer.Option(help="Number of segments (default: chosen by silhouette).")] = None,
    user: Annotated[list[str] | None, typer.Option("--user", "-u", help="Show these users' profiles.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """A profile per user (vector, segment, top categories and brands, RFM, purchase intent, next
    category) to Parquet, and an HTML report on what distinguishes the segments."""
    from shopseq.applications.profiles import ProfileConfig

    with open_store(workspace, read_only=True) as store:
        model, data, _ = load_run_and_data(store, run_dir)
        config = ProfileConfig()
        if k is not None:
            config.segments = config.segments.model_copy(update={"k": k})
        with console.status("building profiles"):
            profiles = build_profiles_from(model, data, config, run_info={"run_dir": str(run_dir), "model": model.name})
        folder = _apps_dir(store.workspace.root, run_dir)
        pseudonyms = [store.key.pseudonymise(u) for u in user or []]
    out = out or folder / "profiles.parquet"
    profiles.save(out)
    report = report or out.with_name("segments.html")
    write_text(report, segment_report(profiles))
    table = Table(title=profiles.meta["segmentation"], title_justify="left")
    for col in ("segment", "users", "top categories", "what distinguishes it"):
        table.add_column(col)
    for s in profiles.meta["segments"]:
        table.add_row(str(s["segment"]), f"{s['users']:,}", ", ".join(s["top_categories"]), s["description"])
    console.print(table)
    for raw, pseudonym in zip(user or [], pseudonyms, strict=True):
        found = profiles.lookup(pseudonym)
        if found is None:
            console.print(f"[yellow]{raw}: unknown user[/]")
            continue
        found.pop("vector", None)
        console.print({"user": raw, **found})
    console.print(f"wrote {len(profiles):,} profiles to {out} and the segment report to {report}")


@friendly_errors
def forecast_cmd(
    run_dir: RunArg,
    horizon: Annotated[str, typer.Option(help="Forecast horizon, e.g. 7d or 2w.")] = "7d",
    level: Annotated[str, typer.Option(help="category or item.")] = "category",
    windows: Annotated[int, typer.Option(help="Back-test windows (0 = no back-test).")] = 3,
    top: Annotated[int, typer.Option(help="Rows to print.")] = 15,
    out: Annotated[Path | None, typer.Option(help="Write the forecast (group, day, expected) as Parquet.")] = None,
    campaigns: Annotated[Path | None, typer.Option(
        help="The shop's promotion calendar, past and planned (Parquet campaigns table or a JSON list, as "
             "for promote --past-campaigns): past promotion days are left out of the baseline, planned "
             "ones in the horizon get the uplift the past ones showed.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Expected purchases per category (or item) and day over the horizon, with a back-test
    (WAPE, MAE) against seasonal-naive and moving-average baselines and a plot (forecast.html)."""
    if level not in ("category", "item"):
        raise ValueError("--level must be category or item")
    config = ForecastConfig(horizon_days=max(1, round(parse_duration_days(horizon))), level=level)  # type: ignore[arg-type]
    calendar = load_promotions(campaigns) if campaigns is not None else []
    with open_store(workspace, read_only=True) as store:
        model, data, _ = load_run_and_data(store, run_dir)
        folder = _apps_dir(store.workspace.root, run_dir)
    with console.status("forecasting"):
        f = forecast(model, data, config=config, promotions=calendar)
        bt = backtest(model, data, config, n_windows=windows, promotions=calendar) if windows > 0 else None
    totals = f.totals()
    table = Table(title=f"expected purchases, {config.horizon_days} days from day {f.origin_ms // DAY_MS} "
                        f"(behaviour weight {f.blend:.2f})", title_justify="left")
    table.add_column(level)
    table.add_column("expected", justify="right")
    for g in np.argsort(-totals, kind="stable")[:top]:
        table.add_row(str(f.names[g]), f"{totals[g]:.1f}")
    console.print(table)
    if f.promotion_days:
        console.print(f"{f.promotion_days} promotion day(s) in the horizon: uplift x{f.uplift[0]:.2f} on the "
                      f"promoted items, x{f.uplift[1]:.2f} on the others (learned from the earlier promotions)")
    report = HtmlReport(f"shopseq demand forecast ({level})")
    if bt is not None:
        console.print(bt.headline())
        forecast_section(report, bt)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "forecast.html", report.render())
    if out is not None:
        h = config.horizon_days
        table = pa.table({
            level: np.repeat(f.names.astype(object), h),
            "day_start_ms": np.tile(f.origin_ms + DAY_MS * np.arange(h), len(f.names)),
            "expected_purchases": f.daily.ravel(),
        })
        write_file(out, lambda p: pq.write_table(table, p))
        console.print(f"wrote the forecast to {out}")
    console.print(f"plot: {folder / 'forecast.html'}")


@friendly_errors
def promote(
    run_dir: RunArg,
    start: Annotated[str, typer.Option(help="Window start: ISO date/time (UTC) or epoch ms.")],
    end: Annotated[str, typer.Option(help="Window end (exclusive).")],
    items: Annotated[list[str] | None, typer.Option("--items", help="Promoted item ids (comma-separated).")] = None,
    categories: Annotated[list[str] | None, typer.Option("--categories", help="Promoted categories.")] = None,
    top: Annotated[int, typer.Option(help="Users to print.")] = 20,
    out: Annotated[Path | None, typer.Option(help="Write every user's score as Parquet.")] = None,
    past_campaigns: Annotated[Path | None, typer.Option(
        help="The shop's earlier promotions (Parquet campaigns table or a JSON list): those that ended "
             "before --start teach how users react to campaigns.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Rank users by their probability of engaging with the promoted items in the window."""
    promotion = Promotion(items=_split_list(items), categories=_split_list(categories),
                          start_ms=parse_time_ms(start), end_ms=parse_time_ms(end))
    if not promotion.items and not promotion.categories:
        raise ValueError("name the promoted --items or --categories")
    if promotion.end_ms <= promotion.start_ms:
        raise ValueError("--end must be after --start")
    with open_store(workspace, read_only=True) as store:
        model, data, _ = load_run_and_data(store, run_dir)
    past = load_promotions(past_campaigns) if past_campaigns is not None else []
    s = score_users(model, data, promotion, past=past)
    result = pa.table({"user_id": data.seqs.user_vocab.decode(s.rows).astype(object), "p_engage": s.p_engage,
                       "model_mass": s.model_mass, "category_share": s.history_share,
                       "events_per_day": s.rate_per_day}).sort_by([("p_engage", "descending")])
    table = Table(title=f"top {top} of {len(s.rows):,} users for the promotion "
                        f"({_how_learned(s.learned, s.past_promotions)})",
                  title_justify="left")
    for col in ("user (pseudonym)", "P(engage)", "P(next in promo)", "category share"):
        table.add_column(col)
    for r in result.slice(0, top).to_pylist():
        table.add_row(r["user_id"], f"{r['p_engage']:.4f}", f"{r['model_mass']:.4f}", f"{r['category_share']:.3f}")
    console.print(table)
    if out is not None:
        write_file(out, lambda p: pq.write_table(result, p))
        console.print(f"wrote {result.num_rows:,} scores to {out}")


def _how_learned(learned: bool, past_promotions: int) -> str:
    if not learned:
        return "unlearned Poisson score"
    earlier = f", with {past_promotions} earlier promotion(s)" if past_promotions else ""
    return "learned on the windows before the start" + earlier


@friendly_errors
def churn(
    run_dir: RunArg,
    horizon: Annotated[str, typer.Option(help="No activity within this horizon counts as churn, e.g. 30d.")] = "30d",
    evaluate: Annotated[bool, typer.Option(help="Back-test on the last horizon of the data first.")] = True,
    out: Annotated[Path | None, typer.Option(help="Write every user's churn probability as Parquet.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """P(no activity in the next horizon) per user, from user vectors and activity features."""
    config = churn_config(parse_duration_days(horizon))
    with open_store(workspace, read_only=True) as store:
        model, data, _ = load_run_and_data(store, run_dir)
    if evaluate:
        console.print(evaluate_churn(model, data, config).headline())
    rows, p = fit_churn(model, data, config).predict(model, data, data.end_ms)
    console.print(f"{len(rows):,} users scored; mean churn probability {p.mean():.3f}; "
                  f"{(p > 0.5).mean():.1%} above 0.5")
    if out is not None:
        table = pa.table({"user_id": data.seqs.user_vocab.decode(rows).astype(object), "p_churn": p})
        write_file(out, lambda path: pq.write_table(table, path))
        console.print(f"wrote {len(rows):,} churn probabilities to {out}")


@friendly_errors
def apps(
    run_dir: RunArg,
    truth: Annotated[Path | None, typer.Option(help="Synthetic shop folder with the ground-truth tables.")] = None,
    quick: Annotated[bool, typer.Option(help="Fewer segment counts, campaigns and back-test windows.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Evaluate every application (segments, intent, promotion, demand, churn) against its baselines."""
    with open_store(workspace, read_only=True) as store:
        folder = _apps_dir(store.workspace.root, run_dir)
        summary = run_all(store, run_dir, truth, quick, folder)
    console.print(summary.render())
    console.print(f"report with plots: {folder / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command()(profile)
    app.command("forecast")(forecast_cmd)
    app.command()(promote)
    app.command()(churn)
    app.command()(apps)
