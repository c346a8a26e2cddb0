"""Everything a running service holds, and the three operations behind its endpoints.

``ServiceState.open`` loads the run (JSON + safetensors only), opens the event store, and builds
the catalogue, the users' recent histories and recent popularity once; after that a
``/recommend`` touches only memory: binary search for the user, a merge with the overlay of events
posted since start, one forward pass, one exact matmul + top-k over all items.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from shopseq.data.cleaning import CleaningPolicy
from shopseq.data.schema import EventType
from shopseq.data.store import EventStore
from shopseq.data.vocab import Vocabulary
from shopseq.data.workspace import Workspace
from shopseq.models.base import Histories, Recommender
from shopseq.runs.experiment import load_run
from shopseq.serving.backends import OnnxBackend, ScoringBackend, TorchBackend
from shopseq.serving.batching import MicroBatcher
from shopseq.serving.catalog import Catalog
from shopseq.serving.event_writer import EventWriter
from shopseq.serving.explain import last_position_attention, occlusion, supports_attention
from shopseq.serving.histories import EventArrays, RecentHistories
from shopseq.serving.onnx_export import OnnxEncoder, export_onnx
from shopseq.serving.schemas import (
    Contribution,
    EventIn,
    EventsRequest,
    EventsResponse,
    ExplainedItem,
    ExplainRequest,
    ExplainResponse,
    Filters,
    ForgetResponse,
    HistoryEvent,
    HistoryQuery,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    ServeLimits,
)

log = logging.getLogger("shopseq.serving")
_DAY_MS = 86_400_000


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["torch", "onnx"] = "torch"
    onnx_dir: Path | None = Field(None, description="an export of this run; default: exported at startup")
    read_only: bool = Field(False, description="open the store read-only: POST /events is refused")
    limits: ServeLimits = Field(default_factory=ServeLimits)
    popular_days: float = Field(7.0, gt=0, description="cold start: most popular items of the last N days")
    threads: int = Field(1, ge=1, description="torch / onnxruntime intra-op threads")
    max_batch: int = Field(64, ge=1, le=1024, description="most concurrent /recommend requests scored together")
    profiles: Path | None = Field(None, description="user profiles Parquet (`shopseq profile`); default: the "
                                  "workspace's apps/<run>/profiles.parquet when it exists")
    api_key: SecretStr | None = Field(None, description="required in X-API-Key by POST /events and admin "
                                      "endpoints; None: writes open, admin endpoints refused")
    cors_origins: list[str] = Field(default_factory=list, description="origins a browser page may call "
                                    "from; empty: CORS off")


class RequestError(Exception):
    """A client error with its HTTP status; the message is shown to the client as is."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


class History:
    """One request's history: the events shown and the model input among them."""

    def __init__(self, events: EventArrays, catalog: Catalog, max_len: int) -> None:
        self.events = events
        known = np.flatnonzero(catalog.is_model_item(events.items))[-max_len:]
        self.model_positions = known  # indices into ``events`` the model reads
        self.model_items = events.items[known]

    def histories(self) -> Histories:
        """A batch of one right-aligned history."""
        known = self.model_positions
        return Histories(self.model_items[None, :], self.events.types[known][None, :],
                         self.events.timestamps[known][None, :], np.array([len(known)], dtype=np.int64))


def timestamp_ms(value: int | str | None, now_ms: int) -> int | None:
    """The ingest rule in Python: numbers by magnitude (s / ms / us) or ISO-8601 (naive = UTC);
    None when unparsable."""
    if value is None:
        return now_ms
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return int(parsed.timestamp() * 1000)
    number = float(value)
    if not math.isfinite(number):
        return None
    if abs(number) >= 1e14:
        return round(number / 1000)
    if abs(number) >= 1e11:
        return round(number)
    return round(number * 1000)


class ServiceState:
    def __init__(self, run_dir: Path, model: Recommender, store: EventStore, backend: ScoringBackend,
                 config: ServiceConfig, policy: CleaningPolicy | None = None) -> None:
        started = time.perf_counter()
        self.run_dir, self.model, self.store, self.backend, self.config = run_dir, model, store, backend, config
        self.policy = policy or CleaningPolicy()
        vocab = Vocabulary.load(run_dir / "vocab" / "items.parquet", kind="item")
        if len(vocab) != model.n_items:
            raise ValueError(f"{run_dir}: the item vocabulary has {len(vocab)} items, the model {model.n_items}")
        self.catalog = Catalog(vocab, store)
        self.histories = RecentHistories(store, self.catalog, model.max_len)
        self.popular_order, self.popular_counts = self._recent_popularity()
        self.writer = None if config.read_only else EventWriter(store, self.policy)
        self.profiles, self.profiles_path = self._load_profiles()
        self._store_lock = threading.Lock()
        self.batcher: MicroBatcher[tuple[History, Filters], tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self.rank_many, max_batch=config.max_batch)
        self.started_at = time.time()
        log.info("service state ready in %.2f s: %d users, %d items", time.perf_counter() - started,
                 self.histories.n_users, self.catalog.size - 1)

    @classmethod
    def open(cls, run_dir: Path, workspace: Workspace, config: ServiceConfig | None = None) -> ServiceState:
        config = config or ServiceConfig()
        torch.set_num_threads(config.threads)
        run_dir = Path(run_dir)
        model, _ = load_run(run_dir)
        backend: ScoringBackend = TorchBackend(model)
        if config.backend == "onnx":
            if config.onnx_dir is not None:
                backend = OnnxBackend(OnnxEncoder(config.onnx_dir, threads=config.threads), model)
            else:  # export now; the session and the item matrix are in memory once loaded
                with tempfile.TemporaryDirectory(prefix="shopseq-onnx-") as tmp:
                    encoder = OnnxEncoder(export_onnx(model, Path(tmp) / "export"), threads=config.threads)
                backend = OnnxBackend(encoder, model)
                log.info("exported the encoder to ONNX at startup (save it with `shopseq export-model`)")
        store = EventStore.open(workspace, read_only=config.read_only)
        try:
            return cls(run_dir, model, store, backend, config)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        with self._store_lock:
            self.store.close()

    # -- startup aggregates -----------------------------------------------------------------
    def _recent_popularity(self) -> tuple[np.ndarray, np.ndarray]:
        """Model items by event count in the last ``popular_days`` of the log (ties: overall
        popularity, which is the vocabulary order)."""
        window = int(self.config.popular_days * _DAY_MS)
        table = self.store.con.sql(
            f"""SELECT item_id, count(*) AS n FROM events
            WHERE timestamp > (SELECT max(timestamp) FROM events) - {window} GROUP BY item_id"""
        ).to_arrow_table()
        counts = np.zeros(self.model.n_items + 1, dtype=np.float64)
        idx = self.catalog.indices(table.column("item_id").to_pylist())
        keep = self.catalog.is_model_item(idx)
        counts[idx[keep]] = table.column("n").to_numpy()[keep]
        order = np.lexsort((np.arange(len(counts)), -counts))
        return order[order > 0], counts

    # -- histories --------------------------------------------------------------------------
    def pseudonym(self, query: HistoryQuery) -> str | None:
        if query.user_id is not None:
            return self.store.key.pseudonymise(query.user_id)
        return query.user_pseudonym

    def parse_events(self, events: list[EventIn]) -> tuple[EventArrays, list[str]]:
        """Request events as arrays (types by the ingest aliases); unknown item ids reported."""
        now_ms = int(time.time() * 1000)
        problems: list[dict] = []
        types, stamps = [], []
        for i, e in enumerate(events):
            name = e.event_type.strip().lower() if e.event_type and e.event_type.strip() else None
            label = self.policy.default_event_type if name is None else self.policy.event_aliases.get(name)
            if label is None:
                problems.append({"index": i, "field": "event_type", "reason": "unknown_event_type",
                                 "value": e.event_type})
                continue
            ts = timestamp_ms(e.timestamp, now_ms)
            if ts is None:
                problems.append({"index": i, "field": "timestamp", "reason": "bad_timestamp", "value": e.timestamp})
                continue
            if ts < max(self.policy.min_timestamp_ms, 1) or ts > now_ms + self.policy.max_future_ms:
                problems.append({"index": i, "field": "timestamp", "reason": "impossible_timestamp",
                                 "value": e.timestamp})
                continue
            types.append(EventType[label.upper()].value)
            stamps.append(ts)
        if problems:
            raise RequestError(422, f"{len(problems)} of {len(events)} events are invalid", problems)
        ids = [e.item_id.strip() for e in events]
        items = self.catalog.indices(ids)
        unknown = [i for i, x in zip(ids, items, strict=True) if not (1 <= x <= self.model.n_items)]
        return EventArrays(items, np.array(types, dtype=np.int64), np.array(stamps, dtype=np.int64)), unknown

    def history_for(self, query: HistoryQuery) -> tuple[History, str | None, bool, list[str]]:
        limits = self.config.limits
        if query.events and len(query.events) > limits.max_events:
            raise RequestError(422, f"at most {limits.max_events} events per request (got {len(query.events)})")
        pseudonym = self.pseudonym(query)
        known = pseudonym is not None and self.histories.knows(pseudonym)
        events = self.histories.get(pseudonym) if known else EventArrays.empty()
        unknown: list[str] = []
        if query.events:
            extra, unknown = self.parse_events(query.events)
            events = events.merged(extra, self.model.max_len)
        return History(events, self.catalog, self.model.max_len), pseudonym, known, unknown

    def history_events(self, history: History) -> list[HistoryEvent]:
        ev = history.events
        known = self.catalog.is_model_item(ev.items)
        return [
            HistoryEvent(**self.catalog.info(int(ev.items[i])).model_dump(), position=i,
                         event_type=EventType(int(ev.types[i])).label, timestamp=int(ev.timestamps[i]),
                         known=bool(known[i]))
            for i in range(len(ev))
        ]

    # -- ranking ----------------------------------------------------------------------------
    def _category_filter(self, filters: Filters, n: int) -> np.ndarray | None:
        """bool (n,) of items the category filters allow, or None when there are none."""
        if not filters.include_categories and not filters.exclude_categories:
            return None
        allowed = np.ones(n, dtype=bool)
        if filters.include_categories:
            allowed &= self.catalog.category_mask(filters.include_categories, n)
        if filters.exclude_categories:
            allowed &= ~self.catalog.category_mask(filters.exclude_categories, n)
        return allowed

    def _check(self, filters: Filters) -> None:
        if filters.k > self.config.limits.max_k:
            raise RequestError(422, f"k must be at most {self.config.limits.max_k} (got {filters.k})")
        if filters.head not in self.backend.heads:
            why = ("this model has no purchase head (train it with aux.next_purchase > 0)"
                   if not self.model.has_purchase_head else f"the {self.backend.name} backend cannot rank by it "
                   "(serve with --backend torch)")
            raise RequestError(422, f"head {filters.head!r} is not available: {why}")

    def _cold_start(self, history: History, filters: Filters) -> tuple[np.ndarray, np.ndarray]:
        """Most popular items of the recent window, under the same filters."""
        allowed = self._category_filter(filters, self.model.n_items + 1)
        if allowed is None:
            allowed = np.ones(self.model.n_items + 1, dtype=bool)
        if filters.filter_seen:
            allowed[history.events.items[self.catalog.is_model_item(history.events.items)]] = False
        top = self.popular_order[allowed[self.popular_order]][: filters.k]
        return top, self.popular_counts[top].astype(np.float32)

    def rank_many(self, requests: list[tuple[History, Filters]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k indices and scores of histories with known events: ONE forward pass and one
        matmul for the whole batch, then the filters as -inf and one top-k."""
        width = max(len(h.model_items) for h, _ in requests)
        stacked = [np.zeros((len(requests), width), dtype=np.int64) for _ in range(3)]
        lengths = np.zeros(len(requests), dtype=np.int64)
        for row, (history, _) in enumerate(requests):  # at most max_batch rows
            one = history.histories()
            n = int(one.lengths[0])
            for out, values in zip(stacked, (one.items, one.types, one.timestamps), strict=True):
                out[row, width - n:] = values[0]
            lengths[row] = n
        histories = Histories(*stacked, lengths)
        heads = [filters.head for _, filters in requests]
        if len(set(heads)) == 1:
            scores = self.backend.scores(histories, heads[0])
        else:  # a micro-batch mixing heads: one pass per head
            scores = np.empty((len(requests), self.model.n_items + 1), dtype=np.float32)
            for head in set(heads):
                rows = np.flatnonzero(np.asarray(heads) == head)
                scores[rows] = self.backend.scores(histories.take(rows), head)
        scores[:, 0] = -np.inf
        for row, (history, filters) in enumerate(requests):
            if filters.filter_seen:
                scores[row, history.model_items] = -np.inf
            allowed = self._category_filter(filters, scores.shape[1])
            if allowed is not None:
                scores[row, ~allowed] = -np.inf
        k_max = min(max(f.k for _, f in requests), self.model.n_items)
        top = torch.topk(torch.from_numpy(scores), k_max, dim=1)
        indices, values = top.indices.numpy(), top.values.numpy()
        out = []
        for row, (_, filters) in enumerate(requests):
            keep = np.isfinite(values[row, : filters.k])
            out.append((indices[row, : filters.k][keep], values[row, : filters.k][keep]))
        return out

    def rank(self, history: History, filters: Filters) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top-k item indices and scores under the filters; cold start when no known events."""
        self._check(filters)
        if len(history.model_items) == 0:
            return (*self._cold_start(history, filters), True)
        return (*self.rank_many([(history, filters)])[0], False)

    def _response(self, req: RecommendRequest, history: History, pseudonym: str | None, known: bool,
                  unknown: list[str], ranked: tuple[np.ndarray, np.ndarray, bool]) -> RecommendResponse:
        top, scores, cold = ranked
        items = [ScoredItem(**self.catalog.info(int(i)).model_dump(), rank=r + 1, score=float(s))
                 for r, (i, s) in enumerate(zip(top, scores, strict=True))]
        return RecommendResponse(
            user_pseudonym=pseudonym, known_user=known, cold_start=cold,
            history_length=len(history.model_items), items=items, unknown_items=unknown,
            model=self.model.name, backend=self.backend.name, head=req.head,
            history=self.history_events(history) if req.include_history else None,
        )

    def recommend(self, req: RecommendRequest) -> RecommendResponse:
        history, pseudonym, known, unknown = self.history_for(req)
        return self._response(req, history, pseudonym, known, unknown, self.rank(history, req))

    async def recommend_batched(self, req: RecommendRequest) -> RecommendResponse:
        """``recommend`` with the model work micro-batched with concurrent requests."""
        history, pseudonym, known, unknown = self.history_for(req)
        self._check(req)
        if len(history.model_items) == 0:
            ranked = (*self._cold_start(history, req), True)
        else:
            ranked = (*await self.batcher.submit((history, req)), False)
        return self._response(req, history, pseudonym, known, unknown, ranked)

    # -- events -----------------------------------------------------------------------------
    def append_events(self, req: EventsRequest) -> EventsResponse:
        if self.writer is None:
            raise RequestError(403, "this service was started with --read-only: events are not accepted")
        if len(req.events) > self.config.limits.max_events:
            raise RequestError(422, f"at most {self.config.limits.max_events} events per request")
        pseudonym = self.store.key.pseudonymise(req.user_id)
        with self._store_lock:  # one writer on the DuckDB connection; overlay updated in the same order
            result = self.writer.append(pseudonym, req.events)
            if result.item_ids:
                items = self.catalog.indices(result.item_ids, add=True)
                self.histories.append(pseudonym, EventArrays(items, result.types, result.timestamps))
        return EventsResponse(user_pseudonym=pseudonym, accepted=len(result.item_ids),
                              duplicates=result.duplicates, rejected=result.rejected,
                              history_length=len(self.histories.get(pseudonym)))

    def forget(self, user_id: str, pseudonymised: bool) -> ForgetResponse:
        """Forget a user everywhere the service and its workspace hold them: the store (events,
        rejects), derived files (sequence cache, profiles), the in-memory histories and profiles."""
        if self.writer is None:
            raise RequestError(403, "this service was started with --read-only: users cannot be forgotten here; "
                               "run `shopseq forget` with the service stopped")
        pseudonym = user_id if pseudonymised else self.store.key.pseudonymise(user_id)
        with self._store_lock:
            deleted = self.store.forget(pseudonym, already_pseudonymised=True)
            derived = len(self.store.last_purged)
            self.histories.forget(pseudonym)
            had_profile = False
            if self.profiles is not None and self.profiles.lookup(pseudonym) is not None:
                from shopseq.applications.profiles import Profiles

                table = self.profiles.table
                self.profiles = Profiles(table.filter(pc.invert(pc.equal(table.column("user_id"), pseudonym))),
                                         self.profiles.meta)
                had_profile = True
                purged = {p.resolve() for p in self.store.last_purged}
                if self.profiles_path is not None and self.profiles_path.resolve() not in purged:
                    self.profiles.save(self.profiles_path)  # a --profiles file outside the workspace
                    derived += 1
        log.info("forgot a user: %d events deleted, %d derived files", deleted, derived)
        return ForgetResponse(user_pseudonym=pseudonym, events_deleted=deleted, profile_removed=had_profile,
                              derived_files=derived)

    # -- explanations -----------------------------------------------------------------------
    def explain(self, req: ExplainRequest) -> ExplainResponse:
        if req.k > self.config.limits.max_explain and not req.items:
            raise RequestError(422, f"at most {self.config.limits.max_explain} items per explanation")
        history, pseudonym, _, unknown = self.history_for(req)
        if len(history.model_items) == 0:
            raise RequestError(422, "nothing to explain: no event of this history is known to the model")
        if req.items:
            ids = [i.strip() for i in req.items]
            idx = self.catalog.indices(ids)
            ok = self.catalog.is_model_item(idx)
            unknown += [i for i, good in zip(ids, ok, strict=True) if not good]
            targets = idx[ok][: self.config.limits.max_explain]
            if not len(targets):
                raise RequestError(422, "none of the items to explain is known to the model")
        else:
            targets, _, _ = self.rank(history, req)
        one = history.histories()
        scores, drops = occlusion(self.backend, one, targets)
        attention = last_position_attention(self.model, one)
        positions = history.model_positions
        explained = []
        for t, item in enumerate(targets):
            order = np.argsort(-drops[:, t], kind="stable")
            contributions = [
                Contribution(position=int(positions[j]), item_id=self.catalog.item_id(int(history.model_items[j])),
                             occlusion=float(drops[j, t]),
                             attention=None if attention is None else float(attention[j]))
                for j in order
            ]
            explained.append(ExplainedItem(**self.catalog.info(int(item)).model_dump(), score=float(scores[t]),
                                           contributions=contributions))
        return ExplainResponse(
            user_pseudonym=pseudonym, history=self.history_events(history), explained=explained,
            unknown_items=unknown, attention_available=supports_attention(self.model),
            method="occlusion (score drop when the event is removed)"
            + ("; attention: last block, final position, mean over heads" if attention is not None else ""),
        )

    # -- profiles ---------------------------------------------------------------------------
    def _load_profiles(self) -> tuple[Any, Path | None]:
        """The profiles file built by `shopseq profile` for this run, if any (read once)."""
        default = self.store.workspace.root / "apps" / self.run_dir.resolve().name / "profiles.parquet"
        path = self.config.profiles or default
        if not path.exists():
            if self.config.profiles is not None:
                raise FileNotFoundError(f"no profiles file {path}: build it with `shopseq profile RUN_DIR`")
            return None, None
        from shopseq.applications.profiles import Profiles  # only needed when profiles are served

        return Profiles.load(path), path

    def profile(self, user_id: str, pseudonymised: bool, include_vector: bool) -> dict[str, Any]:
        if self.profiles is None:
            raise RequestError(501, "no user profiles loaded: build them with `shopseq profile RUN_DIR` and start "
                               "the service with --profiles FILE (or keep the default location)")
        pseudonym = user_id if pseudonymised else self.store.key.pseudonymise(user_id)
        found = self.profiles.lookup(pseudonym)
        if found is None:
            raise RequestError(404, "no profile for this user (unknown, or new since the profiles were built)")
        if not include_vector:
            found.pop("vector", None)
        # JSON has no NaN: missing estimates (e.g. no prices for monetary) become null
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in found.items()}

    # -- status -----------------------------------------------------------------------------
    def health(self) -> dict:
        return {"status": "ok", "model": self.model.name, "backend": self.backend.name,
                "run_dir": str(self.run_dir), "users": self.histories.n_users, "items": self.model.n_items,
                "read_only": self.config.read_only, "profiles": self.profiles is not None,
                "uptime_s": round(time.time() - self.started_at, 1)}
