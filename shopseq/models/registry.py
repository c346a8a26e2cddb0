"""Model classes by name, and loading a saved model from its directory."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TypeVar

from shopseq.models.base import ModelConfig, Recommender, load_weights, read_model_meta

MODELS: dict[str, type[Recommender]] = {}
T = TypeVar("T", bound=type[Recommender])
# modules that define (and register) models: imported on first use so `import shopseq` stays light
_MODEL_MODULES = ("shopseq.models.baselines", "shopseq.models.sasrec", "shopseq.models.bert4rec",
                  "shopseq.models.gru4rec", "shopseq.models.blend")


def register(cls: T) -> T:
    """Class decorator: make a model available by its ``name``."""
    MODELS[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def model_names() -> list[str]:
    _load_all()
    return sorted(MODELS)


def model_class(name: str) -> type[Recommender]:
    _load_all()
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}") from None


def default_config(name: str, **overrides: object) -> ModelConfig:
    cls = model_class(name)
    return cls.config_class(model=name, **overrides)


def build_model(config: ModelConfig, n_items: int) -> Recommender:
    return model_class(config.model).from_config(config, n_items)


def load_model(directory: Path) -> Recommender:
    """A model saved with ``Recommender.save``: JSON config + safetensors only, never pickle."""
    meta = read_model_meta(Path(directory))
    cls = model_class(meta["model"])
    model = cls.from_config(cls.config_class.model_validate(meta["config"]), int(meta["n_items"]))
    model.load_state(load_weights(Path(directory)))
    return model
