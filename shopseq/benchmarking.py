"""Benchmark records: one JSON object per run appended to benchmarks/results.jsonl, and
BENCHMARKS.md rendered from them (a table per benchmark, newest first, with the command)."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "benchmarks" / "results.jsonl"
BENCHMARKS_MD = PROJECT_ROOT / "BENCHMARKS.md"


def machine() -> str:
    gpu = "no GPU"
    return f"{os.cpu_count()} cores, {_mem_gib():.0f} GiB RAM, {gpu}, {platform.machine()}"


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return kib / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def this_command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


class BenchRecord(BaseModel):
    bench: str
    dataset: str
    model: str | None = None
    variant: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    protocol: dict[str, Any] = Field(default_factory=dict)
    # None: undefined for this run (e.g. an AUC when every label is the same); NaN is written as null
    metrics: dict[str, float | None] = Field(default_factory=dict)
    timing: dict[str, float | None] = Field(default_factory=dict)
    seed: int | None = None
    command: str = Field(default_factory=this_command)
    commit: str = Field(default_factory=git_commit)
    date: str = Field(default_factory=lambda: date.today().isoformat())
    machine: str = Field(default_factory=machine)
    notes: str | None = None
    plots: list[str] | None = Field(None, description="images, relative to the project root")


def append_record(record: BenchRecord, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(record.model_dump_json(exclude_none=True) + "\n")


def load_records(path: Path = RESULTS) -> list[BenchRecord]:
    if not path.exists():
        return []
    return [BenchRecord.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(records: list[BenchRecord], intro: str = "") -> str:
    """One section per benchmark, newest run first; columns are the union of keys seen."""
    out = ["# Benchmarks", "", intro or _INTRO, ""]
    for bench in dict.fromkeys(r.bench for r in records):
        rows = [r for r in records if r.bench == bench][::-1]
        count_keys = list(dict.fromkeys(k for r in rows for k in r.counts))
        metric_keys = list(dict.fromkeys(k for r in rows for k in r.metrics))
        timing_keys = list(dict.fromkeys(k for r in rows for k in r.timing))
        header = ["date", "dataset", "model / variant", *count_keys, *metric_keys, *timing_keys, "seed", "commit"]
        out += [f"## {bench}", ""]
        if bench == "peers":
            out += peer_goal_table(rows)
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            label = " / ".join(x for x in (r.model, r.variant) if x) or "-"
            cells = [r.date, r.dataset, label]
            cells += [_fmt(r.counts.get(k, "")) for k in count_keys]
            cells += [_fmt(r.metrics.get(k, "")) for k in metric_keys]
            cells += [_fmt(r.timing.get(k, "")) for k in timing_keys]
            cells += [_fmt(r.seed) if r.seed is not None else "-", r.commit]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        for r in rows:
            proto = json.dumps(r.protocol) if r.protocol else ""
            note = f" — {r.notes}" if r.notes else ""
            out.append(f"- {r.date} {r.dataset}: `{r.command}` on {r.machine}{(' ' + proto) if proto else ''}{note}")
        out.append("")
        for plot in dict.fromkeys(p for r in rows for p in r.plots or ()):
            out += [f"![{Path(plot).stem}]({plot})", ""]
    return "\n".join(out)


# the side-by-side benchmark's goal (issue 9): at equal or better test NDCG@10, each of these
PEER_GOALS: dict[str, tuple[str, float]] = {
    "epoch_speedup": (">=", 5.0),
    "time_to_peer_best_speedup": (">=", 5.0),
    "test_eval_speedup": (">=", 10.0),
    "memory_ratio": ("<=", 0.5),
}


def _meets(value: float | None, rule: tuple[str, float]) -> bool:
    return value is not None and (value >= rule[1] if rule[0] == ">=" else value <= rule[1])


def peer_goal_table(rows: list[BenchRecord]) -> list[str]:
    """Per dataset, model and peer: the ratio run (ours / peer) that meets most of ``PEER_GOALS``
    with test NDCG@10 at least the peer's (the newest among equals), each criterion marked."""
    best: dict[tuple[str, str, str], tuple[int, BenchRecord]] = {}
    for r in rows:  # newest first
        if not (r.variant or "").startswith("ratio ") or (r.metrics.get("ndcg@10") or 0) < 1.0:
            continue
        key = (r.dataset, r.model or "", r.variant.rsplit(" / ", 1)[-1])
        met = sum(_meets(r.timing.get(k), rule) for k, rule in PEER_GOALS.items())
        if key not in best or met > best[key][0]:
            best[key] = (met, r)
    if not best:
        return []
    goals = ", ".join(f"{k} {op} {v:g}" for k, (op, v) in PEER_GOALS.items())
    out = [f"Goal status (generated): the run meeting most of {goals}, at test NDCG@10 >= the peer's; "
           "every run is in the table below with its command.", "",
           "| dataset | model | peer | ndcg@10 ratio | " + " | ".join(PEER_GOALS) + " | run |",
           "|" + "---|" * (5 + len(PEER_GOALS))]
    for (dataset, model, peer), (_, r) in sorted(best.items()):
        cells = [f"{_fmt(r.timing.get(k))} {'met' if _meets(r.timing.get(k), rule) else 'NOT met'}"
                 for k, rule in PEER_GOALS.items()]
        ours = r.variant.removeprefix("ratio ").rsplit(" / ", 1)[0]
        out.append(f"| {dataset} | {model} | {peer} | {_fmt(r.metrics['ndcg@10'])} | " + " | ".join(cells)
                   + f" | {r.date} {ours} |")
    return [*out, ""]


_INTRO = (
    "Written by `python benchmarks/render.py` from `benchmarks/results.jsonl` (one JSON record per run, "
    "appended by the benchmark scripts). Every number comes with the command that produced it; timings "
    "are wall-clock seconds on the machine named in each record. Nothing here is typed by hand."
)


def write_markdown(path: Path = BENCHMARKS_MD, results: Path = RESULTS) -> Path:
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render_markdown(load_records(results)))
    os.replace(tmp, path)
    return path
