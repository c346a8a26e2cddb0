"""What the neural sequence models share: the transformer block, the torch-module contract the
trainer uses, and ``NeuralRecommender`` (the ``Recommender`` wrapper around a torch module).

Inside the modules sequences are LEFT-aligned (position 0 = oldest event of the window, zeros
after the end), so a causal model needs no padding mask at all (padding only ever follows real
events) and learned positions count from the start of the window, the same in training and at
inference. ``Histories`` arrive right-aligned and are re-aligned by one gather.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from shopseq.data.attributes import ItemAttributes
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.models.base import Histories, ModelConfig, Recommender
from shopseq.models.features import EventEmbedding
from shopseq.models.pointer import SeenOffset
from shopseq.training.batching import Batch, LengthBatcher
from shopseq.training.config import TrainConfig
from shopseq.training.losses import TrainingTerms
from shopseq.training.trainer import Trainer

__all__ = [
    "Dropout", "NeuralConfig", "NeuralRecommender", "SequenceModule", "TransformerBlock", "TransformerConfig",
    "last_states", "left_align", "left_align_histories",
]


class NeuralConfig(ModelConfig):
    hidden: int = Field(64, ge=1)
    max_len: int = Field(50, ge=1, description="most recent events the model reads")
    dropout: float = Field(0.2, ge=0, lt=1)
    seen_offset: bool = Field(False, description="a learned logit offset, by recency, for the items already in "
                              "the history (models.pointer.SeenOffset): negative where users rarely repeat "
                              "(ratings), positive where they do")
    train: TrainConfig = Field(default_factory=TrainConfig)


class TransformerConfig(NeuralConfig):
    """Architecture knobs shared by the Transformer models (SASRec, BERT4Rec)."""

    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    attn_dropout: float | None = Field(None, description="attention-weight dropout; None = dropout")
    norm_first: bool = Field(False, description="pre-LN blocks (+ final LayerNorm) instead of post-LN")
    ffn_mult: int = Field(1, ge=1, description="feed-forward width = ffn_mult x hidden")


def _left_index(width: int, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source columns of right-aligned (B, width) rows for left-aligned windows of <= max_len."""
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), min(width, max_len))
    out_w = max(int(lengths.max()) if len(lengths) else 1, 1)
    cols = np.arange(out_w)
    valid = cols[None, :] < lengths[:, None]
    src = np.where(valid, (width - lengths)[:, None] + cols[None, :], 0)
    return src, valid, lengths


def _gather(values: np.ndarray, src: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    values = np.asarray(values, dtype=np.int64)
    if values.shape[1] == 0:
        return torch.zeros(src.shape, dtype=torch.int64)
    return torch.from_numpy(np.ascontiguousarray(np.where(valid, np.take_along_axis(values, src, axis=1), 0)))


def left_align(items: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned (B, W) histories -> left-aligned (B, <= max_len) of the last ``max_len`` events."""
    items = np.asarray(items)
    src, valid, lengths = _left_index(items.shape[1], lengths, max_len)
    return _gather(items, src, valid), torch.from_numpy(lengths)


def left_align_histories(histories: Histories, max_len: int, with_features: bool) -> Batch:
    """``Histories`` -> a left-aligned ``Batch`` (with event types and timestamps when asked)."""
    src, valid, lengths = _left_index(histories.items.shape[1], histories.lengths, max_len)
    users = np.zeros(len(lengths), dtype=np.int64)
    if not with_features:
        return Batch(_gather(histories.items, src, valid), torch.from_numpy(lengths), users)
    return Batch(_gather(histories.items, src, valid), torch.from_numpy(lengths), users,
                 _gather(histories.types, src, valid), _gather(histories.timestamps, src, valid))


def last_states(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, d) state at each left-aligned row's last event (an empty history reads position 0,
    the constant padding state)."""
    return h[torch.arange(len(h)), (lengths - 1).clamp_min(0)]


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal-ish small init (BERT / SASRec reference code); padding rows stay zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw: same distribution as ``nn.Dropout`` but ~3x faster on
    CPU, where ``bernoulli_`` dominated the encoder's time (10% of a SASRec epoch)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerBlock(nn.Module):
    """Multi-head self-attention + feed-forward, post-LN (``norm_first=False``, as in SASRec /
    BERT) or pre-LN; attention by ``F.scaled_dot_product_attention``."""

    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float, norm_first: bool,
                 ffn_mult: int = 1) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads, self.attn_dropout, self.norm_first = heads, attn_dropout, norm_first
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), nn.GELU(), Dropout(dropout),
                                 nn.Linear(ffn_mult * hidden, hidden))
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop = Dropout(dropout)

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d) outputs; with ``last`` (causal), the (B, d) output at one position per row only."""
        if last is not None:
            return self._forward_last(x, last)
        if self.norm_first:
            x = x + self.drop(self.attention(self.norm1(x), mask, causal))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, mask, causal)))
        return self.norm2(x + self.drop(self.ffn(x)))

    def _forward_last(self, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """What scoring needs from the final block: keys and values still cover every position,
        but the query, projection, feed-forward and norms run on one state per row."""
        x_last = x[torch.arange(len(x)), last]
        if self.norm_first:
            x_last = x_last + self.drop(self._attend_from(self.norm1(x), self.norm1(x_last), last))
            return x_last + self.drop(self.ffn(self.norm2(x_last)))
        y = self.norm1(x_last + self.drop(self._attend_from(x, x_last, last)))
        return self.norm2(y + self.drop(self.ffn(y)))

    def _attend_from(self, x: torch.Tensor, query: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Attention of one query state per row over the positions <= ``last``."""
        b, n, d = x.shape
        dh = d // self.heads
        q = F.linear(query, self.qkv.weight[:d], self.qkv.bias[:d]).view(b, self.heads, 1, dh)
        k, v = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:]).view(b, n, 2, self.heads, dh).permute(2, 0, 3, 1, 4)
        visible = (torch.arange(n, device=x.device)[None, :] <= last[:, None])[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(y.reshape(b, d))


class SequenceModule(nn.Module):
    """A torch module the trainer can train and ``NeuralRecommender`` can score with."""

    item_emb: nn.Embedding
    window: int  # events per training window the batcher cuts
    reads_event_features: bool = False  # True: inputs carry event types and timestamps
    trains_on_event_types: bool = False  # True: training batches need event types (auxiliary targets)
    honours_first_target: bool = False  # True: its loss follows Batch.target_mask (overlapping windows)
    default_lr: float = 1e-3  # peak lr when TrainConfig.lr is None

    def __init__(self, n_items: int, seen_offset: bool = False) -> None:
        super().__init__()
        self.n_items = n_items
        self.seen_offset = SeenOffset() if seen_offset else None

    @property
    def scores_each_history(self) -> bool:
        """Whether next-item scores depend on each history's own items, not only on its vector
        (then ``history_scores`` gives them, and there is no ONNX encoder + item matrix form)."""
        return self.seen_offset is not None

    def history_scores(self, batch: Batch) -> torch.Tensor:
        """(B, n_items + 1) next-item logits of a left-aligned batch, with the seen-item offsets."""
        logits = self.batch_user_vectors(batch) @ self.output_weight().t()
        return self._offset_last(logits, batch)

    def _offset_last(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``logits`` (B, V) at each row's last event plus the seen-item offsets there."""
        if self.seen_offset is not None:
            cols, vals = self.seen_offset.offsets(batch.items, at=(batch.lengths - 1).clamp_min(0))
            logits = logits.scatter_add(1, cols, vals)
        logits[:, 0] = float("-inf")
        return logits

    def _with_offsets(self, terms: TrainingTerms, batch: Batch) -> TrainingTerms:
        """``terms`` of the target positions (``batch.target_mask()`` order) plus their offsets."""
        if self.seen_offset is not None:
            cols, vals = self.seen_offset.offsets(batch.inputs().items)
            keep = batch.target_mask()
            terms.offset_cols, terms.offset_vals = cols[keep], vals[keep]
        return terms

    @abstractmethod
    def user_vectors(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, d) vector that scores the next item, from left-aligned histories."""

    @abstractmethod
    def training_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (N, d) of a batch's target positions and the target items (N,)."""

    def training_terms(self, batch: Batch) -> TrainingTerms:
        """``training_pairs``, plus what auxiliary heads or a pointer add (models that have them)."""
        h, targets = self.training_pairs(batch)
        return self._with_offsets(TrainingTerms(h, targets), batch)

    def batch_user_vectors(self, batch: Batch) -> torch.Tensor:
        """``user_vectors`` of a left-aligned batch (models with event features override this)."""
        return self.user_vectors(batch.items, batch.lengths)

    @abstractmethod
    def mean_targets(self, lengths: np.ndarray) -> float:
        """Expected targets per training window, for the loss constant."""

    def output_weight(self) -> torch.Tensor:
        """(n_items + 1, d): tied output layer = item embeddings (extra rows like [MASK] cut off)."""
        return self.item_emb.weight[: self.n_items + 1]


# users per encoder call when scoring many histories: 128 keeps a group's activations in cache and
# small (ml-100k, 943 users: evaluation 0.087 s against 0.12 s with 512, and ~40 MB less peak memory)
LENGTH_GROUP = 128


class NeuralRecommender(Recommender):
    """``Recommender`` around a ``SequenceModule``; subclasses implement ``build_module``."""

    config: NeuralConfig

    def __init__(self, config: NeuralConfig, n_items: int) -> None:
        super().__init__(config, n_items)
        with torch.random.fork_rng():  # seeded init without disturbing the caller's RNG
            torch.manual_seed(config.train.seed)
            self.module = self.build_module()
        self.module.eval()
        self.history: list[dict[str, Any]] = []  # per-epoch training log of the last fit

    @abstractmethod
    def build_module(self) -> SequenceModule: ...

    # -- learning -------------------------------------------------------------------------
    def fit(
        self,
        train: Sequences,
        valid: EvalSet | None = None,
        *,
        validate: Callable[[], dict[str, float]] | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
    ) -> Self:
        """Train on ``train``; with ``valid`` (or an explicit ``validate`` callable) early-stop on
        validation NDCG@10 (full ranking, seen items filtered) and keep the best epoch's weights."""
        if train.n_events and int(train.items.max()) > self.n_items:
            raise ValueError(f"training items go up to {int(train.items.max())}, the model has {self.n_items}")
        if validate is None and valid is not None:
            validate = self._validator(valid)
        tc = self.config.train
        if tc.all_windows and tc.window_stride is not None and not self.module.honours_first_target:
            raise ValueError(f"{self.name} cannot train on overlapping windows; leave train.window_stride unset")
        batcher = LengthBatcher.from_sequences(train, self.module.window, tc.batch_size,
                                               with_features=self.module.reads_event_features
                                               or self.module.trains_on_event_types, all_windows=tc.all_windows,
                                               stride=tc.window_stride, batch_targets=tc.batch_targets)
        counts = np.bincount(np.asarray(train.items, dtype=np.int64), minlength=self.n_items + 1)
        trainer = Trainer(self.module, batcher, tc, n_items=self.n_items, item_counts=counts, validate=validate,
                          checkpoint_dir=checkpoint_dir, resume=resume, desc=self.name)
        self.history = trainer.fit()
        return self

    def set_item_attributes(self, attrs: ItemAttributes) -> None:
        """Load the item -> attribute-token matrix (the config must come from ``with_attributes``)."""
        features = getattr(self.module, "features", None)
        if not isinstance(features, EventEmbedding):
            raise TypeError(f"{self.name} does not read item attributes")
        if attrs.matrix.shape[0] != self.n_items + 1:
            raise ValueError(f"attributes cover {attrs.matrix.shape[0] - 1} items, the model has {self.n_items}")
        features.set_item_attributes(torch.from_numpy(attrs.matrix))

    def _validator(self, valid: EvalSet) -> Callable[[], dict[str, float]]:
        from shopseq.evaluation import EvalConfig, evaluate  # lazy: only needed with validation data

        # ranks beyond the top 10 only matter to an uncut metric (monitor "mrr")
        config = EvalConfig(ks=(10,), filter_seen=True, exact_ranks="@" not in self.config.train.monitor)
        return lambda: {k: float(v) for k, v in evaluate(self, valid, config).metrics.items()}

    # -- scoring --------------------------------------------------------------------------
    def _batch(self, histories: Histories) -> Batch:
        return left_align_histories(histories, self.max_len, self.module.reads_event_features)

    def _by_length(self, histories: Histories, fn: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
        """``fn`` (in eval mode) over left-aligned groups of similar history length, rows back in
        input order. Each group is padded only to its own longest history: one padded batch of
        Beauty users (mean 9 events) would run the encoder over 50 positions for every user."""
        self.module.eval()
        n = histories.batch_size
        with torch.no_grad():
            if n <= LENGTH_GROUP:
                return fn(self._batch(histories))
            order = np.argsort(histories.lengths, kind="stable")
            parts = [fn(self._batch(histories.take(order[i:i + LENGTH_GROUP]))) for i in range(0, n, LENGTH_GROUP)]
            return torch.cat(parts)[torch.from_numpy(np.argsort(order, kind="stable"))]

    def _user_vectors(self, histories: Histories) -> torch.Tensor:
        return self._by_length(histories, self.module.batch_user_vectors)

    def score(self, histories: Histories) -> torch.Tensor:
        if self.module.scores_each_history:  # offsets / a pointer need each history, not only its vector
            return self._by_length(histories, self.module.history_scores).float()
        return self.score_vectors(self._user_vectors(histories))

    def score_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) float32 scores of (B, d) user vectors against the output layer."""
        with torch.no_grad():
            weight_t = self.module.output_weight().detach().t()
            # a contiguous (d, items) operand makes the product ~20% faster (Beauty, 512 users);
            # the copy is worth it only over many rows. Not cached: the fused optimiser changes
            # weights in place without bumping torch's version counters.
            if len(vectors) >= 64:
                weight_t = weight_t.contiguous()
            return (vectors @ weight_t).float()

    def encode(self, histories: Histories) -> np.ndarray:
        return self._user_vectors(histories).float().numpy()

    # -- persistence ----------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
        self.module.eval()


def expected_masked(lengths: np.ndarray, p: float) -> float:
    """Mean of max(1, Binomial(n, p)) over windows of the given lengths (BERT4Rec's targets)."""
    n = np.asarray(lengths, dtype=np.float64)
    return float(np.mean(p * n + (1 - p) ** n)) if len(n) else 1.0
