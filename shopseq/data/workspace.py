"""The workspace: one folder holding the event store, the pseudonymisation key, rejects and caches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = "shopseq-workspace"
WORKSPACE_ENV = "SHOPSEQ_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> Workspace:
        """``path`` if given, else ``$SHOPSEQ_WORKSPACE``, else ``./shopseq-workspace``."""
        chosen = path or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        return cls(Path(chosen).expanduser().resolve())

    def create(self) -> Workspace:
        for folder in (self.root, self.rejects_dir, self.cache_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def store_path(self) -> Path:
        return self.root / "store.duckdb"

    @property
    def key_path(self) -> Path:
        return self.root / "secret.key"

    @property
    def rejects_dir(self) -> Path:
        return self.root / "rejects"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def exists(self) -> bool:
        return self.store_path.exists()
