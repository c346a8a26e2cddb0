"""Dataset statistics straight from the store (one pass of DuckDB aggregates)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from shopseq.data.schema import EventType
from shopseq.data.store import EventStore


class LengthDistribution(BaseModel):
    min: int
    p25: float
    median: float
    mean: float
    p75: float
    p95: float
    max: int


class StoreStats(BaseModel):
    users: int
    items: int
    events: int
    events_per_type: dict[str, int]
    sessions: int | None
    sequence_length: LengthDistribution | None
    time_min_ms: int | None
    time_max_ms: int | None
    ordinal_time: bool
    density: float
    items_with_attributes: int
    rejected: int
    batches: int

    def time_range(self) -> str:
        if self.time_min_ms is None or self.time_max_ms is None:
            return "n/a"
        if self.ordinal_time:
            return f"positions {self.time_min_ms}..{self.time_max_ms} (source has no clock)"

        def fmt(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")

        return f"{fmt(self.time_min_ms)} .. {fmt(self.time_max_ms)} UTC"

    def rows(self) -> list[tuple[str, str]]:
        """Label/value pairs for display."""
        out = [
            ("users", f"{self.users:,}"),
            ("items", f"{self.items:,}"),
            ("events", f"{self.events:,}"),
        ]
        out += [(f"  {name}", f"{n:,}") for name, n in self.events_per_type.items() if n]
        if self.sessions is not None:
            out.append(("sessions", f"{self.sessions:,}"))
        if self.sequence_length:
            d = self.sequence_length
            out.append(
                ("events per user", f"min {d.min} · p25 {d.p25:g} · median {d.median:g} · mean {d.mean:.2f} · "
                 f"p75 {d.p75:g} · p95 {d.p95:g} · max {d.max}")
            )
        out += [
            ("time range", self.time_range()),
            ("density", f"{self.density:.4%}"),
            ("items with attributes", f"{self.items_with_attributes:,}"),
            ("rejected rows (all batches)", f"{self.rejected:,}"),
            ("ingest batches", f"{self.batches:,}"),
        ]
        return out


def compute_stats(store: EventStore) -> StoreStats:
    con = store.con
    users, items, events, sessions, tmin, tmax = con.execute(
        "SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*), count(DISTINCT session_id), "
        "min(timestamp), max(timestamp) FROM events"
    ).fetchall()[0]
    per_type = dict(con.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    lengths = None
    if events:
        row = con.execute(
            """SELECT min(n), quantile_cont(n, 0.25), median(n), avg(n), quantile_cont(n, 0.75),
                      quantile_cont(n, 0.95), max(n)
               FROM (SELECT count(*) AS n FROM events GROUP BY user_id)"""
        ).fetchall()[0]
        lengths = LengthDistribution(
            min=row[0], p25=row[1], median=row[2], mean=row[3], p75=row[4], p95=row[5], max=row[6]
        )
    return StoreStats(
        users=users,
        items=items,
        events=events,
        events_per_type={t.label: int(per_type.get(t.value, 0)) for t in EventType},
        sessions=sessions or None,
        sequence_length=lengths,
        time_min_ms=tmin,
        time_max_ms=tmax,
        ordinal_time=store.has_ordinal_time(),
        density=events / (users * items) if users and items else 0.0,
        items_with_attributes=store.count("items"),
        rejected=store.count("rejects"),
        batches=store.count("batches"),
    )
