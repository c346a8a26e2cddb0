"""Train / validation / test splits of ``Sequences``, without leakage.

Every splitter returns ``Split`` objects (``SlidingWindowSplit`` a list of them):

* ``train`` — a ``Sequences`` holding only the training events (all users keep their slot).
* ``valid`` / ``test`` — ``EvalSet``s: per evaluated user its *history* (model input) and its
  *targets* (all events of the evaluation window, in order). The first target is the classic
  "next item"; for step-by-step evaluation the input of target ``j`` is ``history + targets[:j]``.

Everything is vectorised over events; the only Python loops are over folds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shopseq.data.sequences import Sequences

__all__ = [
    "SPLITTERS",
    "EvalSet",
    "GlobalTimeSplit",
    "LeaveOneOutSplit",
    "SlidingWindowSplit",
    "Split",
    "Splitter",
    "make_splitter",
]


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class EvalSet:
    """Evaluation users with jagged histories and targets (CSR offsets, like ``Sequences``)."""

    users: np.ndarray  # int32 (E,), user index into the Sequences' user vocabulary
    history_offsets: np.ndarray  # int64 (E + 1,)
    history_items: np.ndarray  # int32
    history_types: np.ndarray  # int8
    history_timestamps: np.ndarray  # int64
    target_offsets: np.ndarray  # int64 (E + 1,)
    target_items: np.ndarray  # int32
    target_types: np.ndarray  # int8
    target_timestamps: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_targets(self) -> int:
        return len(self.target_items)

    @property
    def n_history_events(self) -> int:
        return len(self.history_items)

    def history_lengths(self) -> np.ndarray:
        return np.diff(self.history_offsets)

    def target_lengths(self) -> np.ndarray:
        return np.diff(self.target_offsets)

    def history(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(items, types, timestamps)`` input of the ``k``-th evaluated user (views)."""
        lo, hi = int(self.history_offsets[k]), int(self.history_offsets[k + 1])
        return self.history_items[lo:hi], self.history_types[lo:hi], self.history_timestamps[lo:hi]

    def targets(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(items, types, timestamps)`` targets of the ``k``-th evaluated user (views)."""
        lo, hi = int(self.target_offsets[k]), int(self.target_offsets[k + 1])
        return self.target_items[lo:hi], self.target_types[lo:hi], self.target_timestamps[lo:hi]

    def next_items(self) -> np.ndarray:
        """The first target item of every evaluated user (every user has >= 1 target)."""
        return self.target_items[self.target_offsets[:-1]]

    def summary(self) -> dict[str, int]:
        return {"users": self.n_users, "targets": self.n_targets, "history_events": self.n_history_events}

    def with_target_types(self, types: tuple[int, ...], window_context: bool = False) -> EvalSet:
        """Only target events of the given event types (e.g. purchases: the next-purchase task);
        users left without such a target are dropped.

        ``window_context=False`` keeps the histories unchanged: the model predicts the window's
        purchases from what happened before the window. ``True`` is the task at the moment of the
        first purchase: the window's events before it (this visit's views and carts) join the
        history, and the targets are the purchases from the first one on."""
        keep = np.isin(self.target_types, np.asarray(types, dtype=self.target_types.dtype))
        t_len = self.target_lengths()
        rel = np.arange(len(keep)) - np.repeat(self.target_offsets[:-1], t_len)  # index within the window
        big = np.iinfo(np.int64).max
        first = np.full(self.n_users, big, dtype=np.int64)
        rows = np.repeat(np.arange(self.n_users), t_len)
        np.minimum.at(first, rows[keep], rel[keep])
        chosen = first < big
        before = (rel < first[rows]) & chosen[rows] if window_context else np.zeros(len(keep), dtype=bool)
        n_tgt = np.bincount(rows[keep], minlength=self.n_users)
        h_keep = np.repeat(chosen, self.history_lengths())
        t_keep = keep & chosen[rows]
        # new history per user: its old history, then (window_context) the window's events before the
        # first target; a stable sort by user keeps that order
        h_user = np.concatenate([np.repeat(np.arange(self.n_users), self.history_lengths())[h_keep], rows[before]])
        order = np.argsort(h_user, kind="stable")

        def history(old: np.ndarray, window: np.ndarray) -> np.ndarray:
            return np.concatenate([old[h_keep], window[before]])[order]

        n_hist = np.bincount(h_user, minlength=self.n_users)
        return EvalSet(
            users=self.users[chosen],
            history_offsets=_offsets(n_hist[chosen]),
            history_items=history(self.history_items, self.target_items),
            history_types=history(self.history_types, self.target_types),
            history_timestamps=history(self.history_timestamps, self.target_timestamps),
            target_offsets=_offsets(n_tgt[chosen]),
            target_items=self.target_items[t_keep],
            target_types=self.target_types[t_keep],
            target_timestamps=self.target_timestamps[t_keep],
        )

    @classmethod
    def from_masks(
        cls, seqs: Sequences, history: np.ndarray, target: np.ndarray, min_history: int = 0
    ) -> EvalSet:
        """Evaluate every user with >= 1 ``target`` event and >= ``min_history`` ``history`` events.

        Because events are grouped by user and time-ordered, boolean selection keeps each user's
        events contiguous and in order, so per-user counts alone give the new offsets.
        """
        n_hist = _count_per_user(seqs, history)
        n_tgt = _count_per_user(seqs, target)
        chosen = (n_tgt > 0) & (n_hist >= min_history)
        users = np.flatnonzero(chosen).astype(np.int32)
        ev_chosen = np.repeat(chosen, seqs.lengths())
        h = history & ev_chosen
        t = target & ev_chosen
        return cls(
            users=users,
            history_offsets=_offsets(n_hist[users]),
            history_items=seqs.items[h],
            history_types=seqs.event_types[h],
            history_timestamps=seqs.timestamps[h],
            target_offsets=_offsets(n_tgt[users]),
            target_items=seqs.items[t],
            target_types=seqs.event_types[t],
            target_timestamps=seqs.timestamps[t],
        )


@dataclass(eq=False)
class Split:
    train: Sequences
    valid: EvalSet
    test: EvalSet
    strategy: str  # splitter name, e.g. "global_time"
    description: str  # the splitter's describe()
    cuts: dict[str, int] = field(default_factory=dict)  # ms boundaries for time-based splits

    def summary(self) -> dict[str, Any]:
        lengths = self.train.lengths()
        return {
            "strategy": self.strategy,
            "n_users": self.train.n_users,
            "n_items": self.train.n_items,
            "train_events": self.train.n_events,
            "train_users": int(np.count_nonzero(lengths)),
            "valid_users": self.valid.n_users,
            "valid_targets": self.valid.n_targets,
            "valid_history_events": self.valid.n_history_events,
            "test_users": self.test.n_users,
            "test_targets": self.test.n_targets,
            "test_history_events": self.test.n_history_events,
            **self.cuts,
        }

    def describe(self) -> str:
        s = self.summary()
        lines = [self.description]
        if self.cuts:
            lines.append("cuts: " + ", ".join(f"{k} = {_fmt_ts(v)}" for k, v in self.cuts.items()))
        lines += [
            f"train: {s['train_events']:,} events from {s['train_users']:,} of {s['n_users']:,} users "
            f"({s['n_items']:,} items in the vocabulary)",
            f"valid: {s['valid_users']:,} users, {s['valid_targets']:,} target events, "
            f"{s['valid_history_events']:,} history events",
            f"test:  {s['test_users']:,} users, {s['test_targets']:,} target events, "
            f"{s['test_history_events']:,} history events",
        ]
        return "\n".join(lines)


class Splitter(Protocol):
    name: str

    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------------
# Splitters
# ---------------------------------------------------------------------------------------------
class GlobalTimeSplit:
    """One global time cut shared by all users — the default, and the only realistic protocol.

    Cut points are quantiles of all event timestamps (``valid_fraction`` / ``test_fraction`` of the
    events fall after them), or explicit ``valid_start`` / ``test_start`` (ms, inclusive).

    * train: events with ``ts < valid_start``.
    * valid: targets ``valid_start <= ts < test_start``; history = the user's events before
      ``valid_start``.
    * test: targets ``test_start <= ts < test_end`` (``test_end`` open by default); history = the
      user's events before ``test_start`` (train + valid window), as at serving time.

    Users with fewer than ``min_history`` history events (e.g. users first seen in the window) are
    not evaluated; with ``min_history=0`` they are, with an empty history (cold start).
    No test event is older than any training event; no history reaches into its target window.
    """

    name = "global_time"

    def __init__(
        self,
        valid_fraction: float = 0.1,
        test_fraction: float = 0.1,
        *,
        valid_start: int | None = None,
        test_start: int | None = None,
        test_end: int | None = None,
        min_history: int = 1,
    ) -> None:
        if (valid_start is None) != (test_start is None):
            raise ValueError("give both valid_start and test_start, or neither")
        if valid_start is None:
            if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
                raise ValueError("fractions must be >= 0 and sum to less than 1")
        elif test_start is not None and valid_start > test_start:
            raise ValueError("valid_start must not be after test_start")
        if test_end is not None and test_start is not None and test_end <= test_start:
            raise ValueError("test_end must be after test_start")
        self.valid_fraction = valid_fraction
        self.test_fraction = test_fraction
        self.valid_start = valid_start
        self.test_start = test_start
        self.test_end = test_end
        self.min_history = min_history

    def cuts(self, seqs: Sequences) -> tuple[int, int]:
        """``(valid_start, test_start)`` in ms for these sequences."""
        if self.valid_start is not None and self.test_start is not None:
            return int(self.valid_start), int(self.test_start)
        ts = np.asarray(seqs.timestamps)
        if ts.size == 0:
            return 0, 0
        test_start = _quantile_cut(ts, self.test_fraction)
        valid_start = _quantile_cut(ts, self.valid_fraction + self.test_fraction)
        return min(valid_start, test_start), test_start

    def split(self, seqs: Sequences) -> Split:
        valid_start, test_start = self.cuts(seqs)
        cuts = {"valid_start": valid_start, "test_start": test_start}
        if self.test_end is not None:
            cuts["test_end"] = int(self.test_end)
        return _time_split(seqs, cuts, self.min_history, self.name, self.describe())

    def describe(self) -> str:
        if self.valid_start is not None:
            how = f"valid from {_fmt_ts(self.valid_start)}, test from {_fmt_ts(self.test_start)}"
        else:
            how = (f"last {self.valid_fraction:.0%} of events (by time) for validation, "
                   f"last {self.test_fraction:.0%} for test")
        if self.test_end is not None:
            how += f", test until {_fmt_ts(self.test_end)}"
        return (f"Global time split ({how}): train on events before the validation cut; each "
                f"evaluated user's history is everything before its target window.")


class LeaveOneOutSplit:
    """Per user: last event = test target, second-last = validation target, the rest = train.

    Users with fewer than 3 events are kept whole in train and not evaluated (as in SASRec's
    reference preprocessing). Validation history = first ``n-2`` events, test history = first
    ``n-1``. Cuts are per user, so test events can be older than other users' training events:
    use it only to compare with published tables.
    """

    name = "leave_one_out"

    def split(self, seqs: Sequences) -> Split:
        lengths = seqs.lengths()
        n = np.repeat(lengths, lengths)  # user length of every event
        pos = seqs.positions()
        evaluated = n >= 3
        train = ~evaluated | (pos < n - 2)
        valid = EvalSet.from_masks(seqs, history=evaluated & (pos < n - 2), target=evaluated & (pos == n - 2))
        test = EvalSet.from_masks(seqs, history=evaluated & (pos < n - 1), target=evaluated & (pos == n - 1))
        return Split(seqs.subset(train), valid, test, self.name, self.describe())

    def describe(self) -> str:
        return ("Leave-one-out split (per user: last event for test, second-last for validation; "
                "users with < 3 events train only). For comparison with published tables only: "
                "it leaks future behaviour across users, prefer the global time split.")


class SlidingWindowSplit:
    """Rolling-origin evaluation: ``n_windows`` folds over the end of the timeline.

    The tail is cut into ``n_windows + 1`` consecutive windows ``W_0 < W_1 < ... < W_n`` — each
    ``window_ms`` long and ending just after the last event, or (by default) each holding
    ``window_fraction`` of the events. Fold ``k`` validates on ``W_k``, tests on ``W_{k+1}`` and
    trains on everything before ``W_k``; test windows of successive folds are disjoint and move
    forward in time, and each fold's training data contains the previous fold's.
    """

    name = "sliding_window"

    def __init__(
        self,
        n_windows: int = 3,
        window_ms: int | None = None,
        window_fraction: float | None = None,
        *,
        min_history: int = 1,
    ) -> None:
        if n_windows < 1:
            raise ValueError("n_windows must be >= 1")
        if window_ms is not None and window_fraction is not None:
            raise ValueError("give window_ms or window_fraction, not both")
        if window_ms is None and window_fraction is None:
            window_fraction = 0.1 / n_windows  # whole scheme covers ~ the last 10-20% of events
        if window_ms is not None and window_ms <= 0:
            raise ValueError("window_ms must be positive")
        if window_fraction is not None and not 0 < window_fraction * (n_windows + 1) < 1:
            raise ValueError("window_fraction * (n_windows + 1) must be in (0, 1)")
        self.n_windows = n_windows
        self.window_ms = window_ms
        self.window_fraction = window_fraction
        self.min_history = min_history

    def boundaries(self, seqs: Sequences) -> np.ndarray:
        """The ``n_windows + 2`` window edges in ms (int64, non-decreasing; last is exclusive)."""
        ts = np.asarray(seqs.timestamps)
        if ts.size == 0:
            return np.zeros(self.n_windows + 2, dtype=np.int64)
        end = int(ts.max()) + 1
        k = np.arange(self.n_windows + 1, -1, -1)  # windows still to come after each edge
        if self.window_ms is not None:
            return end - k.astype(np.int64) * int(self.window_ms)
        assert self.window_fraction is not None
        edges = [_quantile_cut(ts, float(j) * self.window_fraction) if j else end for j in k]
        return np.maximum.accumulate(np.asarray(edges, dtype=np.int64))

    def split(self, seqs: Sequences) -> list[Split]:
        b = self.boundaries(seqs)
        folds = []
        for k in range(self.n_windows):
            cuts = {"valid_start": int(b[k]), "test_start": int(b[k + 1]), "test_end": int(b[k + 2])}
            desc = f"{self.describe()}\nfold {k + 1} of {self.n_windows}"
            folds.append(_time_split(seqs, cuts, self.min_history, self.name, desc))
        return folds

    def describe(self) -> str:
        size = (f"{self.window_ms:,} ms" if self.window_ms is not None
                else f"{self.window_fraction:.1%} of events")
        return (f"Sliding-window split ({self.n_windows} rolling-origin folds, windows of {size}): "
                f"fold k validates on window k, tests on window k+1, trains on everything before.")


SPLITTERS: dict[str, type] = {
    "time": GlobalTimeSplit,
    GlobalTimeSplit.name: GlobalTimeSplit,
    "loo": LeaveOneOutSplit,
    LeaveOneOutSplit.name: LeaveOneOutSplit,
    "sliding": SlidingWindowSplit,
    SlidingWindowSplit.name: SlidingWindowSplit,
}


AnySplitter = GlobalTimeSplit | LeaveOneOutSplit | SlidingWindowSplit


def make_splitter(name: str = "time", **kwargs: Any) -> AnySplitter:
    """Splitter by name (``time`` — the default —, ``loo``, ``sliding``) for CLIs and configs."""
    try:
        cls = SPLITTERS[name]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; choose from {sorted(SPLITTERS)}") from None
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _time_split(seqs: Sequences, cuts: dict[str, int], min_history: int, name: str, desc: str) -> Split:
    ts = np.asarray(seqs.timestamps)
    vs, ts_start = cuts["valid_start"], cuts["test_start"]
    before_valid = ts < vs
    before_test = ts < ts_start
    in_valid = ~before_valid & before_test
    in_test = ~before_test if "test_end" not in cuts else ~before_test & (ts < cuts["test_end"])
    return Split(
        train=seqs.subset(before_valid),
        valid=EvalSet.from_masks(seqs, history=before_valid, target=in_valid, min_history=min_history),
        test=EvalSet.from_masks(seqs, history=before_test, target=in_test, min_history=min_history),
        strategy=name,
        description=desc,
        cuts=cuts,
    )


def _count_per_user(seqs: Sequences, mask: np.ndarray) -> np.ndarray:
    before = np.zeros(seqs.n_events + 1, dtype=np.int64)
    np.cumsum(mask, out=before[1:])
    return np.diff(before[seqs.offsets])


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _quantile_cut(ts: np.ndarray, tail_fraction: float) -> int:
    """Smallest timestamp such that about ``tail_fraction`` of the events are at or after it;
    past the last event when the fraction is 0 (an empty window)."""
    if tail_fraction <= 0:
        return int(ts.max()) + 1
    return int(np.quantile(ts, 1.0 - tail_fraction, method="higher"))


def _fmt_ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    # ordinal (clock-less) sources have small "timestamps": show those raw
    if abs(ms) < 10**11:
        return f"{ms:,}"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + f" ({ms})"
