"""String id -> integer lookups that cost O(log n) per query and a few bytes per id.

``Vocabulary.encode`` hashes its whole value set on every call (right for bulk encoding, too slow
per request at 100k+ ids); a sorted numpy array + ``searchsorted`` answers a handful of ids in
microseconds and is built once, vectorised, at startup.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def as_str_array(ids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray) -> np.ndarray:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        ids = ids.to_numpy(zero_copy_only=False)
    arr = np.asarray(ids, dtype=object)
    return arr.astype(str) if len(arr) else np.zeros(0, dtype="<U1")


class SortedLookup:
    """Maps each of ``keys`` to ``values`` (default: its position); unknown keys give -1."""

    def __init__(self, keys: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray,
                 values: np.ndarray | None = None) -> None:
        keys_arr = as_str_array(keys)
        vals = np.arange(len(keys_arr), dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
        order = np.argsort(keys_arr, kind="stable")
        self._keys = keys_arr[order]
        self._values = vals[order]

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """int64 value per id, -1 where unknown."""
        if not len(self._keys) or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        query = np.asarray(list(ids), dtype=str)
        pos = np.searchsorted(self._keys, query).clip(max=len(self._keys) - 1)
        return np.where(self._keys[pos] == query, self._values[pos], -1)

    def get_one(self, key: str) -> int:
        return int(self.get([key])[0])

    def keys_sample(self, n: int) -> list[str]:
        """Up to ``n`` keys spread over the whole range (deterministic)."""
        if not len(self._keys):
            return []
        idx = np.unique(np.linspace(0, len(self._keys) - 1, num=min(n, len(self._keys))).astype(np.int64))
        return [str(k) for k in self._keys[idx]]
