"""A mixture of recommenders: ``p(item) = sum_m w_m p_m(item)``, weights chosen on validation data.

Models that learn different things make different mistakes: a neural sequence model and the
session item-kNN (co-clicks within a few events, ``baselines.ItemKNN``) are a classic pair for
session data (see BENCHMARKS.md, sessions-gcegnn). Each member's scores become
a distribution over the catalogue first: neural members' scores are logits (softmax), the
baselines' are non-negative votes or counts (divided by their row sum; see ``Recommender.score_kind``).
The mixture is taken in probability space, so an item one member has never seen together with the
history still gets the other member's mass, and ``score`` returns ``log p``.

    blend = Blend(BlendConfig(members=[{"model": "sasrec", "pointer": True}, {"model": "itemknn"}]), n_items)
    blend.fit(train, valid)          # each member on train; the weights on valid (grid, ``monitor``)
    blend.weights                    # e.g. [0.7, 0.3]; three or more members: a grid over the simplex

or, for members already trained elsewhere, ``Blend.from_members([sasrec, knn], config)`` and then
``choose_weights(valid)``.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.models.base import Histories, ModelConfig, Recommender
from shopseq.models.registry import build_model, default_config, register

if TYPE_CHECKING:
    from shopseq.evaluation import EvalConfig

__all__ = ["Blend", "BlendConfig", "probabilities", "simplex_grid"]

MAX_GRID_POINTS = 500  # one validation pass over cached member scores each


class BlendConfig(ModelConfig):
    model: Literal["blend"] = "blend"
    members: list[SerializeAsAny[ModelConfig]] = Field(
        min_length=2, description='member configs, each like {"model": "itemknn", ...}')
    weights: list[float] | None = Field(None, description="mixture weights (normalised to sum 1); None = "
                                        "chosen on the validation set from a grid (grid_step)")
    grid_step: float = Field(0.1, gt=0.0, le=0.5, description="spacing of the weight grid tuned on validation: "
                             "every vector of multiples of it that sums to 1")
    tuning_cache_mb: int = Field(8192, ge=0, description="keep the members' validation scores in memory while "
                                 "tuning (members x users x items x 4 bytes) up to this size, so each grid point "
                                 "costs one mixing pass instead of a forward pass of every member")
    monitor: str = Field("mrr@20", description="validation metric the weights maximise (neural members "
                         "early-stop on their own train.monitor)")
    filter_seen: bool = Field(False, description="validate with the history's items removed from the ranking "
                              "(match the protocol you report)")
    head: Literal["item", "purchase"] = Field("item", description="the scores the weights are chosen for: the "
                                              "next item, or the next purchase (validate on purchase targets)")

    @field_validator("members", mode="before")
    @classmethod
    def _typed_members(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        typed = []
        for m in value:
            if isinstance(m, dict):
                m = default_config(m.get("model", "sasrec"), **{k: v for k, v in m.items() if k != "model"})
            if not isinstance(m, ModelConfig):
                raise ValueError(f'a member must be a model config like {{"model": "itemknn"}}, not {m!r}')
            typed.append(m)
        return typed

    @model_validator(mode="after")
    def _check_weights(self) -> Self:
        if self.weights is None:
            if abs(1.0 / self.grid_step - round(1.0 / self.grid_step)) > 1e-6:
                raise ValueError(f"grid_step must divide 1 (0.1, 0.05, 0.25, ...), not {self.grid_step}")
            n_points = len(simplex_grid(len(self.members), self.grid_step))
            if n_points > MAX_GRID_POINTS:
                raise ValueError(f"a grid of step {self.grid_step} over {len(self.members)} members has {n_points} "
                                 f"points (at most {MAX_GRID_POINTS}): give a coarser grid_step, or the weights")
        elif len(self.weights) != len(self.members) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights must be {len(self.members)} non-negative numbers with a positive sum")
        if any(isinstance(m, BlendConfig) for m in self.members):
            raise ValueError("a blend cannot be a member of a blend")
        return self


def simplex_grid(n_members: int, step: float) -> list[list[float]]:
    """Every weight vector of multiples of ``step`` summing to 1, the later members' weights in
    ascending order (for two members: the second member's weight 0, step, ..., 1)."""
    n = round(1.0 / step)
    return [[round((n - sum(rest)) / n, 6), *(round(r / n, 6) for r in rest)]
            for rest in itertools.product(range(n + 1), repeat=n_members - 1) if sum(rest) <= n]


def _fingerprint(histories: Histories) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for part in (histories.items, histories.types, histories.timestamps, histories.lengths):
        digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(str(part.shape).encode())
    return digest.digest()


def probabilities(model: Recommender, histories: Histories, head: str = "item") -> torch.Tensor:
    """(B, n_items + 1) float32 rows summing to 1 over the real items (column 0 is 0), of the
    next item or (``head="purchase"``) the next purchase."""
    scores = (model.score_purchase(histories) if head == "purchase" else model.score(histories)).float()
    if model.score_kind == "logits":
        scores[:, 0] = -torch.inf
        return torch.softmax(scores, dim=1)
    scores[:, 0] = 0.0
    scores.clamp_(min=0.0)
    return scores / scores.sum(dim=1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny)


@register
class Blend(Recommender):
    name = "blend"
    config_class = BlendConfig
    config: BlendConfig

    def __init__(self, config: BlendConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        self.members = [build_model(m, n_items) for m in config.members]
        self.weights = self._normalised(config.weights) if config.weights is not None else None
        self.tuning: list[dict[str, Any]] = []  # the weights and metrics of each grid point tried
        self._cache: dict[tuple[int, str, bytes], torch.Tensor] | None = None  # member scores while tuning

    @classmethod
    def from_members(cls, members: list[Recommender], config: BlendConfig | None = None) -> Blend:
        """A blend of members already trained (their configs are taken from them)."""
        n_items = {m.n_items for m in members}
        if len(n_items) != 1:
            raise ValueError(f"members know different numbers of items: {sorted(n_items)}")
        fields = (config.model_dump(exclude={"members", "model"}) if config else {})
        blend = cls(BlendConfig(members=[m.config for m in members], **fields), n_items.pop())
        blend.members = list(members)
        return blend

    @staticmethod
    def _normalised(weights: list[float]) -> list[float]:
        total = float(sum(weights))
        return [float(w) / total for w in weights]

    @property
    def max_len(self) -> int:
        return max(m.max_len for m in self.members)

    def _eval_config(self, monitor: str) -> EvalConfig:
        from shopseq.evaluation import EvalConfig  # lazy: evaluation imports models

        k = int(monitor.split("@")[1]) if "@" in monitor else 10
        return EvalConfig(ks=(k,), filter_seen=self.config.filter_seen, exact_ranks="@" not in monitor,
                          head=self.config.head)

    def fit(self, train: Sequences, valid: EvalSet | None = None) -> Self:
        from shopseq.evaluation import evaluate

        for member in self.members:
            if valid is not None and "validate" in inspect.signature(member.fit).parameters:
                monitor = getattr(getattr(member.config, "train", None), "monitor", self.config.monitor)
                config = self._eval_config(monitor)
                member.fit(train, valid, validate=lambda m=member, c=config: {
                    k: float(v) for k, v in evaluate(m, valid, c).metrics.items()})
            else:
                member.fit(train, valid)
        if self.weights is None:
            if valid is None:
                raise ValueError("a blend without weights needs validation data to choose them")
            self.choose_weights(valid)
        return self

    def choose_weights(self, valid: EvalSet) -> list[float]:
        """The point of the weight grid (``simplex_grid(members, grid_step)``) with the best ``monitor``
        on ``valid``; ties go to the earlier point (more weight on the earlier members)."""
        from shopseq.evaluation import evaluate

        config = self._eval_config(self.config.monitor)
        n_bytes = len(self.members) * valid.n_users * (self.n_items + 1) * 4
        self._cache = {} if n_bytes <= self.config.tuning_cache_mb * 2**20 else None
        self.tuning = []
        try:
            for point in simplex_grid(len(self.members), self.config.grid_step):
                self.weights = point
                metrics = evaluate(self, valid, config).metrics
                self.tuning.append({"weights": point, **{k: round(float(v), 5) for k, v in metrics.items()
                                                         if k.split("@")[0] in ("hr", "mrr", "ndcg")}})
        finally:
            self._cache = None
        best = max(self.tuning, key=lambda r: r[self.config.monitor])  # the first of equals
        self.weights = list(best["weights"])
        return self.weights

    def _weights(self) -> list[float]:
        if self.weights is None:
            raise RuntimeError("the blend has no weights yet: fit it, or call choose_weights")
        return self.weights

    def _member_probabilities(self, i: int, histories: Histories, head: str) -> torch.Tensor:
        """Member ``i``'s distribution for the batch; while tuning, computed once per batch (read-only)."""
        if self._cache is None:
            return probabilities(self.members[i], histories, head)
        key = (i, head, _fingerprint(histories))
        if key not in self._cache:
            self._cache[key] = probabilities(self.members[i], histories, head)
        return self._cache[key]

    def _mixture(self, histories: Histories, head: str) -> torch.Tensor:
        mix: torch.Tensor | None = None
        with torch.no_grad():
            for i, w in enumerate(self._weights()):
                if w == 0.0:
                    continue
                part = self._member_probabilities(i, histories, head)
                mix = part * w if mix is None else mix.add_(part, alpha=w)
        assert mix is not None  # weights sum to 1
        return torch.log(mix.clamp_(min=torch.finfo(torch.float32).tiny))

    def score(self, histories: Histories) -> torch.Tensor:
        return self._mixture(histories, "item")

    def score_purchase(self, histories: Histories) -> torch.Tensor:
        """The mixture of the members' next-purchase distributions (their purchase heads, or their
        next-item scores where they have none). The weights are the ones chosen for ``config.head``."""
        return self._mixture(histories, "purchase")

    @property
    def has_purchase_head(self) -> bool:
        return any(m.has_purchase_head for m in self.members)

    def encode(self, histories: Histories) -> np.ndarray:
        """The first member's user vectors (a mixture has no space of its own)."""
        return self.members[0].encode(histories)

    def state(self) -> dict[str, np.ndarray]:
        tensors = {"weights": np.asarray(self._weights(), dtype=np.float64)}
        for i, member in enumerate(self.members):
            tensors |= {f"m{i}.{k}": v for k, v in member.state().items()}
        return tensors

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.weights = [float(w) for w in tensors["weights"]]
        for i, member in enumerate(self.members):
            prefix = f"m{i}."
            member.load_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
