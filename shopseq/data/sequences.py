"""Per-user event sequences as jagged numpy arrays, built in one DuckDB pass and cached on disk.

Layout (CSR-style): events are sorted by (user index, timestamp, seq); user ``u`` owns
``items[offsets[u]:offsets[u + 1]]`` (and the same slice of ``event_types`` / ``timestamps``).
Every user of the vocabulary has a slot, possibly empty, so user indices stay aligned across
subsets and splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from shopseq.data.vocab import Vocabulary

__all__ = ["SequenceCache", "Sequences", "build_item_vocab", "build_sequences", "build_user_vocab"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_ARRAYS: dict[str, np.dtype] = {
    "offsets": np.dtype(np.int64),
    "items": np.dtype(np.int32),
    "event_types": np.dtype(np.int8),
    "timestamps": np.dtype(np.int64),
}


@dataclass(eq=False)
class Sequences:
    offsets: np.ndarray  # int64, (n_users + 1,)
    items: np.ndarray  # int32, (n_events,), dense item index (>= 1)
    event_types: np.ndarray  # int8, (n_events,), EventType code
    timestamps: np.ndarray  # int64, (n_events,), ms
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    source_version: str = ""

    def __post_init__(self) -> None:
        # O(1) shape checks only: these objects are built often (subsets, splits).
        n = len(self.items)
        if len(self.offsets) != len(self.user_vocab) + 1:
            raise ValueError(f"offsets has {len(self.offsets)} entries for {len(self.user_vocab)} users")
        if len(self.event_types) != n or len(self.timestamps) != n:
            raise ValueError("items, event_types and timestamps must have equal lengths")
        if len(self.offsets) and (self.offsets[0] != 0 or self.offsets[-1] != n):
            raise ValueError("offsets must start at 0 and end at the number of events")

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Number of distinct items, without the padding index."""
        return len(self.item_vocab)

    @property
    def n_events(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        """Events per user (int64, ``n_users``)."""
        return np.diff(self.offsets)

    # -- access ---------------------------------------------------------------------------------
    def user(self, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(items, event_types, timestamps)`` of user ``u`` — views, not copies."""
        lo, hi = int(self.offsets[u]), int(self.offsets[u + 1])
        return self.items[lo:hi], self.event_types[lo:hi], self.timestamps[lo:hi]

    def event_users(self) -> np.ndarray:
        """User index of every event (int32, ``n_events``)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int32), self.lengths())

    def positions(self) -> np.ndarray:
        """0-based position of every event within its user's sequence (int64)."""
        return np.arange(self.n_events, dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths())

    def subset(self, mask: np.ndarray) -> Sequences:
        """Keep the events where ``mask`` is True; every user keeps its slot (maybe empty)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_events,):
            raise ValueError(f"mask must have shape ({self.n_events},), got {mask.shape}")
        kept_before = np.zeros(self.n_events + 1, dtype=np.int64)
        np.cumsum(mask, out=kept_before[1:])
        return dataclasses.replace(
            self,
            offsets=kept_before[self.offsets],  # events kept before each user's start
            items=self.items[mask],
            event_types=self.event_types[mask],
            timestamps=self.timestamps[mask],
        )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path, source_version: str | None = None) -> Path:
        """Write ``.npy`` arrays, Parquet vocabularies and ``manifest.json`` (written last, so a
        folder with a manifest is complete)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / MANIFEST).unlink(missing_ok=True)
        for name, dtype in _ARRAYS.items():
            np.save(d / f"{name}.npy", np.ascontiguousarray(getattr(self, name), dtype=dtype))
        self.user_vocab.save(d / "user_vocab.parquet")
        self.item_vocab.save(d / "item_vocab.parquet")
        manifest = {
            "format": "shopseq.sequences",
            "format_version": FORMAT_VERSION,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_events": self.n_events,
            "source_version": self.source_version if source_version is None else source_version,
            "dtypes": {k: v.name for k, v in _ARRAYS.items()},
        }
        (d / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> Sequences:
        """Load a saved folder; with ``mmap`` the arrays are read-only memory maps (no RAM copy)."""
        d = Path(directory)
        manifest = read_manifest(d)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{d}: unsupported sequences format {manifest.get('format_version')}")
        arrays = {
            name: np.load(d / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            for name in _ARRAYS
        }
        for name, dtype in _ARRAYS.items():
            if arrays[name].dtype != dtype:
                raise ValueError(f"{d}/{name}.npy has dtype {arrays[name].dtype}, expected {dtype}")
        seqs = cls(
            **arrays,
            user_vocab=Vocabulary.load(d / "user_vocab.parquet", kind="user"),
            item_vocab=Vocabulary.load(d / "item_vocab.parquet", kind="item"),
            source_version=str(manifest.get("source_version", "")),
        )
        if (seqs.n_users, seqs.n_items, seqs.n_events) != (
            manifest["n_users"], manifest["n_items"], manifest["n_events"]
        ):
            raise ValueError(f"{d}: arrays do not match the counts in {MANIFEST}")
        return seqs

    def __repr__(self) -> str:
        return (
            f"Sequences(n_users={self.n_users}, n_items={self.n_items}, n_events={self.n_events}, "
            f"source_version={self.source_version!r})"
        )


def read_manifest(directory: str | Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text())


# ---------------------------------------------------------------------------------------------
# Building from the event store
# ---------------------------------------------------------------------------------------------
def _where_sql(where: str | None) -> str:
    base = "user_id IS NOT NULL AND item_id IS NOT NULL"
    return f"WHERE {base} AND ({where})" if where else f"WHERE {base}"


def build_item_vocab(
    con: duckdb.DuckDBPyConnection, table: str = "events", where: str | None = None
) -> Vocabulary:
    """Item vocabulary of the (filtered) events: descending event count, then id."""
    tbl = con.sql(
        f"SELECT item_id FROM {table} {_where_sql(where)} GROUP BY item_id ORDER BY count(*) DESC, item_id"
    ).to_arrow_table()
    return Vocabulary(tbl.column("item_id"), "item")


def build_user_vocab(
    con: duckdb.DuckDBPyConnection, table: str = "events", where: str | None = None
) -> Vocabulary:
    """User vocabulary of the (filtered) events: distinct ids, sorted."""
    tbl = con.sql(
        f"SELECT DISTINCT user_id FROM {table} {_where_sql(where)} ORDER BY user_id"
    ).to_arrow_table()
    return Vocabulary(tbl.column("user_id"), "user")


def build_sequences(
    con: duckdb.DuckDBPyConnection,
    table: str = "events",
    where: str | None = None,
    *,
    user_vocab: Vocabulary | None = None,
    item_vocab: Vocabulary | None = None,
    source_version: str = "",
) -> Sequences:
    """Build sequences from an events table (``table`` and ``where`` are trusted SQL fragments).

    Vocabularies are built from the same filtered events unless given; with a given vocabulary,
    events whose user / item it lacks are dropped (never encoded as padding).
    """
    user_vocab = user_vocab or build_user_vocab(con, table, where)
    item_vocab = item_vocab or build_item_vocab(con, table, where)
    uv_name, iv_name = f"_shopseq_uv_{uuid.uuid4().hex}", f"_shopseq_iv_{uuid.uuid4().hex}"
    # Indices are attached by hash-joining the vocabularies, so the one sort below is the only
    # heavy step; everything after it is zero-copy or O(n) numpy.
    con.register(uv_name, pa.table({"user_id": user_vocab.ids,
                                    "u": pa.array(np.arange(len(user_vocab), dtype=np.int32))}))
    con.register(iv_name, pa.table({"item_id": item_vocab.ids,
                                    "i": pa.array(np.arange(1, len(item_vocab) + 1, dtype=np.int32))}))
    try:
        res = con.sql(
            f"""
            SELECT v.u AS u, w.i AS i, e.event_type::TINYINT AS event_type, e.timestamp AS ts
            FROM (SELECT user_id, item_id, event_type, timestamp, seq FROM {table} {_where_sql(where)}) e
            JOIN {uv_name} v ON e.user_id = v.user_id
            JOIN {iv_name} w ON e.item_id = w.item_id
            ORDER BY v.u, e.timestamp, e.seq
            """
        ).to_arrow_table()
    finally:
        con.unregister(uv_name)
        con.unregister(iv_name)

    def col(name: str, dtype: type) -> np.ndarray:
        c = res.column(name)
        if c.null_count:
            raise ValueError(f"events have null {name!r} values")
        return np.ascontiguousarray(c.to_numpy(), dtype=dtype)

    users = col("u", np.int32)
    counts = np.bincount(users, minlength=len(user_vocab))
    offsets = np.zeros(len(user_vocab) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Sequences(
        offsets=offsets,
        items=col("i", np.int32),
        event_types=col("event_type", np.int8),
        timestamps=col("ts", np.int64),
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        source_version=source_version,
    )


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
Builder = Callable[[duckdb.DuckDBPyConnection], Sequences]


class SequenceCache:
    """Folder of saved ``Sequences`` keyed by a string (e.g. the event store's version).

    A key maps to its own sub-folder, so changing the store version never serves stale data.
    ``hits`` / ``misses`` count what ``get_or_build`` did.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        # readable prefix + hash: keys may hold characters a file name cannot
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:60] or "key"
        return self.root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def contains(self, key: str) -> bool:
        p = self.path_for(key) / MANIFEST
        return p.is_file() and read_manifest(p.parent).get("source_version") == key

    def get_or_build(
        self, con: duckdb.DuckDBPyConnection, key: str, builder: Builder | None = None, mmap: bool = True
    ) -> Sequences:
        """Load the sequences for ``key`` from disk, or build them with ``builder(con)`` (default
        ``build_sequences``), save them under ``key`` and return them."""
        target = self.path_for(key)
        if self.contains(key):
            self.hits += 1
            return Sequences.load(target, mmap=mmap)
        self.misses += 1
        seqs = (builder or build_sequences)(con)
        seqs = dataclasses.replace(seqs, source_version=key)
        # build in a private folder then rename: a crash or a concurrent builder never leaves a
        # half-written folder under the real name
        tmp = self.root / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        seqs.save(tmp)
        try:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.contains(key):  # someone else's finished copy is as good as ours
                raise
        return seqs

    def invalidate(self, key: str) -> None:
        shutil.rmtree(self.path_for(key), ignore_errors=True)
