"""Dense integer encodings of user and item ids.

Items are numbered ``1..N`` so that ``0`` is free for padding in fixed-length model inputs; users
are numbered ``0..U-1`` (they index rows, never get padded). Item order is by descending event
frequency then id, which keeps popular items in a compact prefix of the embedding table and makes
the numbering deterministic; users are sorted by id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["ITEM_PAD", "USER_UNKNOWN", "VocabKind", "Vocabulary"]

VocabKind = Literal["item", "user"]

ITEM_PAD = 0  # item index reserved for padding; also what unknown items encode to
USER_UNKNOWN = -1  # what unknown users encode to (0 is a real user)

_KIND_KEY = b"shopseq.vocab.kind"
# kind -> (index of the first id, code for ids not in the vocabulary)
_LAYOUT: dict[str, tuple[int, int]] = {"item": (1, ITEM_PAD), "user": (0, USER_UNKNOWN)}

IdsLike = pa.Array | pa.ChunkedArray | np.ndarray | Iterable[str]


def _as_string_array(ids: IdsLike) -> pa.Array | pa.ChunkedArray:
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        return ids if ids.type == pa.string() else ids.cast(pa.string())
    if isinstance(ids, np.ndarray):
        return pa.array(ids.astype(object) if ids.dtype.kind != "O" else ids, type=pa.string())
    return pa.array(list(ids), type=pa.string())


class Vocabulary:
    """An ordered, duplicate-free list of string ids and its dense integer encoding.

    ``kind="item"``: index ``i + 1`` for ``ids[i]``, ``0`` = padding / unknown.
    ``kind="user"``: index ``i`` for ``ids[i]``, ``-1`` = unknown.
    ``len()`` counts real ids only; ``size`` is the embedding-table size (``len + 1`` for items).
    """

    __slots__ = ("_ids", "kind", "offset", "unknown")

    def __init__(self, ids: IdsLike, kind: VocabKind) -> None:
        if kind not in _LAYOUT:
            raise ValueError(f"kind must be 'item' or 'user', not {kind!r}")
        arr = _as_string_array(ids)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            raise ValueError("vocabulary ids must not be null")
        if len(pc.unique(arr)) != len(arr):
            raise ValueError("vocabulary ids must be unique")
        self._ids: pa.Array = arr
        self.kind: VocabKind = kind
        self.offset, self.unknown = _LAYOUT[kind]

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def for_items(cls, event_item_ids: IdsLike) -> Vocabulary:
        """Item vocabulary from one id per *event*: descending frequency, then id."""
        counts = pc.value_counts(_as_string_array(event_item_ids).drop_null())
        tbl = pa.table({"id": counts.field("values"), "n": counts.field("counts")})
        tbl = tbl.sort_by([("n", "descending"), ("id", "ascending")])
        return cls(tbl.column("id"), "item")

    @classmethod
    def for_users(cls, user_ids: IdsLike) -> Vocabulary:
        """User vocabulary: the distinct ids, sorted."""
        uniq = pc.unique(_as_string_array(user_ids).drop_null())
        return cls(pc.take(uniq, pc.sort_indices(uniq)), "user")

    # -- encoding -------------------------------------------------------------------------------
    @property
    def ids(self) -> pa.Array:
        """The ids in index order (``ids[k]`` has index ``k + offset``)."""
        return self._ids

    @property
    def size(self) -> int:
        """Number of rows an embedding table over this vocabulary needs (includes padding)."""
        return len(self._ids) + self.offset

    def encode(self, ids: IdsLike) -> np.ndarray:
        """Vectorised id -> index (int32); unknown or null ids map to ``self.unknown``."""
        arr = _as_string_array(ids)
        pos = pc.index_in(arr, value_set=self._ids)  # null where not found
        if isinstance(pos, pa.ChunkedArray):
            pos = pos.combine_chunks()
        out = pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32, copy=True)
        found = out >= 0
        out[found] += self.offset
        out[~found] = self.unknown
        return out

    def decode(self, idx: np.ndarray | Iterable[int]) -> np.ndarray:
        """Vectorised index -> id (object array); padding / out-of-range indices give ``None``."""
        pos = np.asarray(idx, dtype=np.int64) - self.offset
        valid = (pos >= 0) & (pos < len(self._ids))
        taken = pc.take(self._ids, pa.array(np.where(valid, pos, 0), mask=~valid))
        return taken.to_numpy(zero_copy_only=False)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        table = pa.table({"id": self._ids}).replace_schema_metadata({_KIND_KEY: self.kind.encode()})
        pq.write_table(table, str(path))

    @classmethod
    def load(cls, path: str | Path, kind: VocabKind | None = None) -> Vocabulary:
        table = pq.read_table(str(path))
        stored = (table.schema.metadata or {}).get(_KIND_KEY)
        if stored is not None:
            stored_kind = stored.decode()
            if kind is not None and kind != stored_kind:
                raise ValueError(f"{path} holds a {stored_kind} vocabulary, not {kind}")
            kind = stored_kind  # type: ignore[assignment]
        if kind is None:
            raise ValueError(f"{path} does not record its vocabulary kind; pass kind=")
        return cls(table.column("id"), kind)

    # -- dunder ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.kind == other.kind and self._ids.equals(other._ids)

    __hash__ = None  # type: ignore[assignment]  # mutable-ish container semantics

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, n={len(self)})"
