"""Pseudonymisation of user ids with a keyed hash (HMAC-SHA256).

The key is 32 random bytes in the workspace (``secret.key``, mode 0600). It never leaves the
workspace: artifacts carry only pseudonyms and a key *fingerprint* (a hash of the key), which tells
whether two exports were made with the same key without revealing it. HMAC is computed inside
DuckDB (``sha256`` over blobs), so millions of ids are hashed without a Python loop.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

PSEUDONYM_HEX_CHARS = 16  # 64 bits: collision odds ~3e-8 at a million users
_BLOCK = 64  # SHA-256 block size in bytes


class PseudonymKey:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonymisation key must be at least 16 bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> PseudonymKey:
        if path.exists():
            return cls(bytes.fromhex(path.read_text().strip()))
        key = os.urandom(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex())
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written key
        return cls(key)

    @property
    def fingerprint(self) -> str:
        """Safe to publish: identifies the key, reveals nothing about pseudonyms."""
        return hashlib.sha256(b"shopseq-key-fingerprint:" + self._key).hexdigest()[:16]

    def pseudonymise(self, user_id: str) -> str:
        """One id, in Python (for ``forget`` and the API). Matches :meth:`sql_expr` exactly."""
        digest = hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_HEX_CHARS]

    def sql_expr(self, column: str) -> str:
        """A DuckDB expression computing the pseudonym of VARCHAR ``column`` (RFC 2104 HMAC)."""
        key = self._key if len(self._key) <= _BLOCK else hashlib.sha256(self._key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        ipad = bytes(b ^ 0x36 for b in padded).hex()
        opad = bytes(b ^ 0x5C for b in padded).hex()
        inner = f"unhex(sha256(unhex('{ipad}') || encode({column})))"
        return f"substr(sha256(unhex('{opad}') || {inner}), 1, {PSEUDONYM_HEX_CHARS})"
