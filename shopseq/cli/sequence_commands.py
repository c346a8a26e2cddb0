"""Commands from the store to model inputs: encode (sequences) and split."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import typer

from shopseq.cli.common import WorkspaceOpt, console, friendly_errors, kv_table, open_store
from shopseq.data.sequences import SequenceCache, Sequences
from shopseq.data.splits import GlobalTimeSplit, LeaveOneOutSplit, SlidingWindowSplit, Split
from shopseq.data.store import EventStore


class SplitMethod(StrEnum):
    time = "time"
    loo = "loo"
    sliding = "sliding"


def load_sequences(store: EventStore) -> tuple[Sequences, bool]:
    """Sequences of the store's current version, from the cache when it has them."""
    cache = SequenceCache(store.workspace.cache_dir / "sequences")
    seqs = cache.get_or_build(store.con, store.cache_key)
    return seqs, cache.hits > 0


@friendly_errors
def encode(workspace: WorkspaceOpt = None) -> None:
    """Encode ids densely (item 0 = padding) and build per-user sequences, cached in the workspace.

    The cache is keyed by the store's version: any ingest or forget makes the next encode rebuild.
    """
    with open_store(workspace, read_only=True) as store:
        started = time.perf_counter()
        seqs, hit = load_sequences(store)
        seconds = time.perf_counter() - started
        where = SequenceCache(store.workspace.cache_dir / "sequences").path_for(store.cache_key)
    lengths = seqs.lengths()
    console.print(
        kv_table(
            "sequences",
            [
                ("users", f"{seqs.n_users:,}"),
                ("items", f"{seqs.n_items:,} (index 0 is padding)"),
                ("events", f"{seqs.n_events:,}"),
                ("longest sequence", f"{int(lengths.max()) if len(lengths) else 0:,}"),
                ("source", "cache" if hit else "built from the store"),
                ("time", f"{seconds:.2f} s"),
                ("folder", str(where)),
            ],
        )
    )


def make_split(
    seqs: Sequences,
    method: SplitMethod,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    windows: int = 3,
) -> list[Split]:
    if method is SplitMethod.time:
        return [GlobalTimeSplit(valid_fraction=valid_fraction, test_fraction=test_fraction).split(seqs)]
    if method is SplitMethod.loo:
        return [LeaveOneOutSplit().split(seqs)]
    return SlidingWindowSplit(n_windows=windows).split(seqs)


@friendly_errors
def split(
    method: Annotated[
        SplitMethod,
        typer.Option(help="time: global time split (default); loo: leave-one-out, for comparison with "
                     "published tables; sliding: rolling-origin folds."),
    ] = SplitMethod.time,
    valid_fraction: Annotated[
        float, typer.Option(help="time split: share of the events (by time) used for validation.")
    ] = 0.1,
    test_fraction: Annotated[
        float, typer.Option(help="time split: share of the events (by time) used for test.")
    ] = 0.1,
    windows: Annotated[int, typer.Option(help="sliding: number of folds.")] = 3,
    workspace: WorkspaceOpt = None,
) -> None:
    """Split the encoded sequences into train / validation / test and print what each holds."""
    with open_store(workspace, read_only=True) as store:
        seqs, _ = load_sequences(store)
    for k, fold in enumerate(make_split(seqs, method, valid_fraction, test_fraction, windows)):
        title = f"split: {method.value}" + (f" (fold {k + 1})" if method is SplitMethod.sliding else "")
        console.rule(title)
        console.print(fold.describe())


def register(app: typer.Typer) -> None:
    app.command()(encode)
    app.command()(split)
