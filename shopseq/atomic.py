"""Atomic writes of files and folders: write under a temporary sibling name, then rename into place,
so a crash never leaves a half-written artifact and readers see the old version or the new one."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths in one step


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden, unique name next to ``path`` (same filesystem, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    OS or filesystem cannot, so the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc >= 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(tmp: Path, target: Path) -> Path:
    """Move the finished folder ``tmp`` to ``target``, replacing any existing ``target``.

    Where the OS can swap two folders in one step (Linux), ``target`` always names a complete
    folder, old or new, whenever the process dies. Elsewhere the old one is renamed aside first,
    leaving a moment in which ``target`` is absent (the old copy survives under a hidden name).
    """
    if target.exists():
        if _exchange(tmp, target):  # ``tmp`` now holds the old version
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        old = temp_sibling(target, "old")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Create ``path`` through ``write(tmp)`` on a temporary sibling, then rename it into place: a
    crash or an error leaves the old file (or none), never a half-written one."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_file(path, lambda p: p.write_text(text))
