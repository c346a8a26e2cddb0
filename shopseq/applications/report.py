"""The applications' report.html: every application's back-test against its baselines, with plots
(reliability diagrams for intent and churn, forecast against actual for demand)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopseq.applications.forecast import Backtest
from shopseq.applications.windowed import WindowEvaluation
from shopseq.reports.html import HtmlReport

if TYPE_CHECKING:
    from shopseq.applications.summary import AppSummary


def _window_section(report: HtmlReport, ev: WindowEvaluation, what: str) -> None:
    report.heading(f"{ev.task.capitalize()}")
    report.paragraph(f"{what} Fitted on the window before the cut, scored at the cut and compared with "
                     f"what happened in the next {ev.horizon_days:g} days: {ev.users:,} users, positive rate "
                     f"{ev.positive_rate:.3f}.", note=True)
    report.table([{"scorer": k.removeprefix("auc_"), "AUC": v} for k, v in ev.metrics.items() if k.startswith("auc_")],
                 highlight=0)
    report.key_values({k: v for k, v in ev.metrics.items() if not k.startswith("auc_")})
    if ev.reliability:
        report.paragraph("Reliability diagram: observed rate against the mean predicted probability per bin of "
                         "users; on the diagonal the probabilities mean what they say.", note=True)
        report.reliability_plot(f"{ev.task}: reliability (equal-count bins)", {"model": ev.reliability})


def _promotion_section(report: HtmlReport, details: dict[str, Any]) -> None:
    rows = []
    for name, result in details.items():
        if not isinstance(result, dict):
            continue
        for outcome, scorers in result.items():
            for scorer, m in scorers.items():
                rows.append({"promotion": name, "outcome": outcome, "scorer": scorer,
                             **{k: v for k, v in m.items() if isinstance(v, float)}})
    if rows:
        report.heading("Promotion response")
        report.paragraph("Per promotion window: who engaged with (or bought) the promoted items, ranked by the model "
                         "and by the RFM and popularity baselines.", note=True)
        report.table(rows)


def forecast_section(report: HtmlReport, bt: Backtest) -> None:
    """The back-test's metrics per method and its forecast-against-actual plot."""
    report.heading("Demand forecast")
    report.paragraph(bt.headline(), note=True)
    report.table([{"method": k, **v} for k, v in bt.metrics.items()], highlight=0)
    report.line_plot("back-test: daily purchases, all groups", bt.plot_days, bt.plot_series,
                     "day of the back-test", "purchases")


def apps_report(summary: AppSummary, title: str = "shopseq applications") -> str:
    """One self-contained HTML page from ``run_all_on``'s summary."""
    report = HtmlReport(title)
    report.bullets(summary.lines)
    if "segments_ari" in summary.metrics:
        report.heading("Segments")
        report.paragraph("Segment report with plots: segments.html beside this file. Adjusted Rand index against "
                         f"the planted shopper types: {summary.metrics['segments_ari']:.3f}.")
    if isinstance(summary.details.get("intent"), WindowEvaluation):
        _window_section(report, summary.details["intent"], "P(the user buys anything in the horizon).")
    _promotion_section(report, {k: v for k, v in summary.details.items() if k not in ("intent", "churn", "forecast")})
    if isinstance(summary.details.get("forecast"), Backtest):
        forecast_section(report, summary.details["forecast"])
    if isinstance(summary.details.get("churn"), WindowEvaluation):
        _window_section(report, summary.details["churn"], "P(the user has no activity in the horizon).")
    return report.render()
