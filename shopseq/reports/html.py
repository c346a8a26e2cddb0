"""Self-contained HTML reports: tables plus matplotlib plots inlined as PNG (one file, no assets).

matplotlib is an optional extra (``shopseq[plots]``); without it the report keeps its tables and
says which plots it could not draw.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@functools.cache
def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None without the extra; imported on first plot, so
    the processes that only train (the benchmarks measure their peak memory) never load it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised only without the extra
        return None
    return plt


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: .9rem; } img { max-width: 100%; }
tr.best td { font-weight: bold; }
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


@dataclass
class HtmlReport:
    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> HtmlReport:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str, note: bool = False) -> HtmlReport:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def table(self, rows: Sequence[dict[str, Any]], highlight: int | None = None) -> HtmlReport:
        if not rows:
            return self.paragraph("(no rows)", note=True)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for i, row in enumerate(rows):
            cls = ' class="best"' if i == highlight else ""
            body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(row.get(c, ''))}</td>" for c in columns) + "</tr>")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
        return self

    def bullets(self, items: Sequence[str]) -> HtmlReport:
        self.parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in items) + "</ul>")
        return self

    def key_values(self, pairs: dict[str, Any]) -> HtmlReport:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in pairs.items())
        self.parts.append(f"<table>{rows}</table>")
        return self

    def line_plot(self, title: str, x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str,
                  ylabel: str) -> HtmlReport:
        if (plt := _pyplot()) is None:
            return self._no_plot(title)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for name, ys in series.items():
            ax.plot(list(x)[: len(ys)], list(ys), marker="o", markersize=3, label=name)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        return self._figure(fig)

    def reliability_plot(self, title: str, tables: dict[str, Sequence[dict[str, float]]]) -> HtmlReport:
        """Observed rate against mean predicted probability per bin (``reliability_table`` rows), one
        line per model, with the diagonal of perfect calibration."""
        if (plt := _pyplot()) is None:
            return self._no_plot(title)
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        top = max([r["predicted"] for rows in tables.values() for r in rows]
                  + [r["observed"] for rows in tables.values() for r in rows] + [1e-3])
        ax.plot([0, top], [0, top], color="#999", linestyle="--", label="perfect calibration")
        for name, rows in tables.items():
            ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o", markersize=4, label=name)
        ax.set(title=title, xlabel="mean predicted probability", ylabel="observed rate")
        ax.grid(alpha=0.3)
        ax.legend()
        return self._figure(fig)

    def bar_plot(self, title: str, labels: Sequence[str], values: dict[str, Sequence[float]]) -> HtmlReport:
        """Grouped bars: one group per label, one bar per series (e.g. metric per model)."""
        if (plt := _pyplot()) is None:
            return self._no_plot(title)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        n = max(len(values), 1)
        width = 0.8 / n
        for i, (name, ys) in enumerate(values.items()):
            ax.bar([j + i * width for j in range(len(labels))], list(ys), width=width, label=name)
        ax.set_xticks([j + width * (n - 1) / 2 for j in range(len(labels))], list(labels), rotation=20)
        ax.set(title=title)
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
        return self._figure(fig)

    def _no_plot(self, title: str) -> HtmlReport:
        return self.paragraph(f"[plot '{title}' needs matplotlib: pip install 'shopseq[plots]']", note=True)

    def _figure(self, fig: Any) -> HtmlReport:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        _pyplot().close(fig)
        data = base64.b64encode(buf.getvalue()).decode()
        self.parts.append(f'<img alt="plot" src="data:image/png;base64,{data}">')
        return self

    def render(self) -> str:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>"
        )
