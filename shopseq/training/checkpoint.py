"""Training checkpoints: tensors as safetensors, scalars as JSON; never pickle, never torch.load.

A checkpoint folder holds ``state-<epoch>.safetensors`` and ``checkpoint.json``, which names that
file. Both are written to a temp file and ``os.replace``d into place, the JSON last: it is the
commit point, so a crash at any moment leaves the previous complete checkpoint readable.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

META_FILE = "checkpoint.json"
_TENSOR_FILE = re.compile(r"state-[A-Za-z0-9_-]{1,64}\.safetensors")
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(directory: Path, ckpt: Checkpoint, tag: str) -> Path:
    """Write ``ckpt`` into ``directory`` (``tag``, e.g. the epoch, names the tensor file) and drop
    the tensor files of older checkpoints once the new one is committed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"state-{tag}.safetensors"
    # clones: safetensors refuses tensors that share storage (e.g. tied weights, views)
    tensors = {k: v.detach().clone().contiguous() for k, v in ckpt.tensors.items()}
    _atomic_write(directory / name, lambda p: save_file(tensors, str(p)))
    meta = {"format_version": FORMAT_VERSION, "tensors": name, **ckpt.meta}
    _atomic_write(directory / META_FILE, lambda p: p.write_text(json.dumps(meta, indent=1)))
    for old in directory.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return directory / META_FILE


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The last committed checkpoint in ``directory``, or None when there is none."""
    path = Path(directory) / META_FILE
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format_version')!r}")
    name = meta.get("tensors")
    # the JSON names the tensor file: only a plain file name of ours, never a path elsewhere
    if not isinstance(name, str) or not _TENSOR_FILE.fullmatch(name):
        raise ValueError(f"{path}: bad tensor file name {name!r} (expected state-<tag>.safetensors in the same folder)")
    tensors = load_file(str(Path(directory) / name))
    return Checkpoint(tensors, meta)
