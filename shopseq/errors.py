"""Errors users can act on; torch-free, so the CLI can name them without importing a model."""

from __future__ import annotations

__all__ = ["IncompatibleModelError"]


class IncompatibleModelError(RuntimeError):
    """A saved model or run directory this version cannot load: another format version, or a
    weights file that is not valid safetensors (never unpickled)."""
