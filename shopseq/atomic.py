"""Atomic writes of files and folders: write under a temporary sibling name, then rename into place,
so a crash never leaves a half-written artifact and readers see the old version or the new one."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden, unique name next to ``path`` (same filesystem, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def replace_dir(tmp: Path, target: Path) -> Path:
    """Move the finished folder ``tmp`` to ``target``. An existing ``target`` is first renamed
    aside (directories cannot be swapped in one call), then removed: the old version stays whole
    until the new one is in place."""
    if target.exists():
        old = temp_sibling(target, "old")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target
