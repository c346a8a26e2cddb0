"""`shopseq stats` reproduces the counts published in ../shared/data/*/SOURCE.md, end to end
through ingest (skipped with a message when the data folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopseq.data.formats.base import ReadOptions
from shopseq.data.ingest import ingest_file
from shopseq.data.stats import compute_stats
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace

CASES = [
    # (file under shared/data, format, users, items, events, extra checks)
    ("amazon-s3rec/Beauty.txt.gz", "s3rec", 22_363, 12_101, 198_502, {"review": 198_502}),
    ("amazon-s3rec/Sports_and_Outdoors.txt.gz", "s3rec", 35_598, 18_357, 296_337, {}),
    ("amazon-s3rec/Toys_and_Games.txt.gz", "s3rec", 19_412, 11_924, 167_597, {}),
    ("taobao-userbehavior-sample/UserBehavior_head.csv.gz", "taobao", 814, 55_233, 84_287,
     {"view": 75_693, "cart": 4_494, "fav": 2_351, "purchase": 1_749}),
]


@pytest.mark.parametrize(("rel", "fmt", "users", "items", "events", "per_type"), CASES,
                         ids=[c[0].split("/")[-1] for c in CASES])
def test_stats_reproduce_source_counts(
    shared_data: Path, tmp_path: Path, rel: str, fmt: str, users: int, items: int, events: int,
    per_type: dict[str, int],
) -> None:
    with EventStore.open(Workspace(tmp_path / "ws")) as store:
        report = ingest_file(store, shared_data / rel, fmt, ReadOptions())
        stats = compute_stats(store)
    assert report.rejected_total == 0 and report.duplicates == 0
    assert (stats.users, stats.items, stats.events) == (users, items, events)
    for name, n in per_type.items():
        assert stats.events_per_type[name] == n
    if fmt == "s3rec":
        assert stats.sequence_length is not None and stats.sequence_length.min == 5
        assert round(stats.density * 100, 3) in (0.073, 0.045, 0.072)
