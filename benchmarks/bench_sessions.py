"""Session-based next-click benchmarks under the SR-GNN / GCE-GNN protocol.

    python benchmarks/bench_sessions.py --datasets diginetica tmall --models sasrec gru4rec --seed 0

Data: ../shared/data/session-benchmarks-gcegnn (GCE-GNN's published splits, item ids 1..N):
training sessions, and test examples ``label<TAB>prefix``; and ../shared/data/yoochoose-clicks-100k
(session-rec's sample: ``train_full`` / ``test`` click logs split by time), where every prefix of a
test session predicts its next click (session-rec's next-item protocol) and, having no published
numbers, is reported beside the Markov and popularity baselines run here. The models run in session mode: every
session is a "user" with no id beyond the session, no event types, no timestamps. Every position
of a training session is a target (the equivalent of SR-GNN's prefix augmentation, in one pass).
Test: rank all items for every prefix, seen items NOT filtered (the published protocol), and
report P@20 (= HR@20: one label per prefix) and MRR@20, in percent as the papers print them,
beside the published SR-GNN and GCE-GNN numbers. Early stopping watches 5% of the training
sessions held out (their last click), never the test file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from shopseq.benchmarking import BenchRecord, append_record, peak_rss_mb, write_markdown
from shopseq.data.sequences import Sequences
from shopseq.data.splits import EvalSet
from shopseq.data.vocab import Vocabulary
from shopseq.evaluation import EvalConfig, evaluate
from shopseq.models.base import ModelConfig, Recommender
from shopseq.models.blend import Blend, BlendConfig
from shopseq.models.registry import build_model, default_config, load_model
from shopseq.runs.experiment import model_from_dict

SHARED = Path(os.environ.get("SHOPSEQ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FOLDER = SHARED / "session-benchmarks-gcegnn"
FILES = {"diginetica": "diginetica", "tmall": "Tmall", "yoochoose-100k": "yoochoose-clicks-100k"}
# (P@20, MRR@20) in percent, from the GCE-GNN paper (SIGIR 2020), Table 3
PUBLISHED = {"diginetica": {"SR-GNN": (50.73, 17.59), "GCE-GNN": (54.22, 19.04)},
             "tmall": {"SR-GNN": (27.57, 13.72), "GCE-GNN": (33.42, 15.42)},
             "yoochoose-100k": {}}


def _token_lists(path: Path, column: str = "line") -> tuple[np.ndarray, np.ndarray]:
    """(lengths, flat int32 tokens) of a whitespace-separated file of ints, one list per line."""
    con = duckdb.connect()
    rows = con.sql(f"""
        SELECT list_transform(string_split(replace(trim({column}), chr(9), ' '), ' '), lambda x: x::INTEGER) AS toks
        FROM read_csv('{path}', columns={{'{column}': 'VARCHAR'}}, header=false, auto_detect=false,
                      delim='\\x01', quote='', escape='')
        WHERE trim({column}) <> ''""").to_arrow_table().column("toks").combine_chunks()
    return np.diff(rows.offsets.to_numpy()).astype(np.int64), rows.values.to_numpy().astype(np.int32)


def load(dataset: str) -> tuple[Sequences, EvalSet, EvalSet, int] | None:
    if dataset == "yoochoose-100k":
        return load_yoochoose()
    train_file = FOLDER / f"{FILES[dataset]}_train_sessions.txt.gz"
    test_file = FOLDER / f"{FILES[dataset]}_test_prefix_label.txt.gz"
    if not train_file.exists():
        print(f"skipping {dataset}: {train_file} is absent", file=sys.stderr)
        return None
    lengths, items = _token_lists(train_file)
    t_lengths, t_tokens = _token_lists(test_file)  # "label<TAB>prefix": the tab splits like a space below
    n_items = int(max(items.max(), t_tokens.max()))
    # test: first token of each line = label, the rest = prefix
    t_off = np.concatenate([[0], np.cumsum(t_lengths)])
    is_label = np.zeros(len(t_tokens), dtype=bool)
    is_label[t_off[:-1]] = True
    test = _eval_set(t_tokens[~is_label], t_lengths - 1, t_tokens[is_label], np.ones(len(t_lengths), np.int64))

    train, valid = _hold_out_last_clicks(items, lengths, n_items)
    return train, valid, test, n_items


def _hold_out_last_clicks(items: np.ndarray, lengths: np.ndarray, n_items: int) -> tuple[Sequences, EvalSet]:
    """Training sessions without the last click of 5% of them (length >= 2), and those clicks as
    the early-stopping set."""
    rng = np.random.default_rng(0)
    held = (rng.random(len(lengths)) < 0.05) & (lengths >= 2)
    last = np.zeros(len(items), dtype=bool)
    last[np.cumsum(lengths)[held] - 1] = True
    train = _sequences(items[~last], lengths - held, n_items)
    h_mask = np.repeat(held, lengths) & ~last
    return train, _eval_set(items[h_mask], lengths[held] - 1, items[last], np.ones(int(held.sum()), np.int64))


def _click_sessions(path: Path, con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, np.ndarray]:
    """(session lengths, item ids) of a session-rec click log, sessions in id order, clicks by time."""
    rows = con.sql(f"""SELECT SessionId AS s, ItemId AS i FROM read_csv('{path}', delim='\t', header=true)
                       ORDER BY SessionId, Time""").fetchnumpy()
    sessions = rows["s"]
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    return np.diff(np.r_[starts, len(sessions)]).astype(np.int64), np.asarray(rows["i"], dtype=np.int64)


def load_yoochoose() -> tuple[Sequences, EvalSet, EvalSet, int] | None:
    folder = SHARED / "yoochoose-clicks-100k"
    train_file = folder / "yoochoose-clicks-100k_train_full.txt.gz"
    test_file = folder / "yoochoose-clicks-100k_test.txt"
    if not train_file.exists():
        print(f"skipping yoochoose-100k: {train_file} is absent", file=sys.stderr)
        return None
    con = duckdb.connect()
    lengths, raw = _click_sessions(train_file, con)
    t_lengths, t_raw = _click_sessions(test_file, con)
    vocab, items = np.unique(raw, return_inverse=True)  # ids 1..N in sorted order of the original ids
    items = (items + 1).astype(np.int32)
    t_items = np.searchsorted(vocab, t_raw) + 1
    t_items = np.where(vocab[np.minimum(t_items - 1, len(vocab) - 1)] == t_raw, t_items, 0)  # 0: unseen item
    # every prefix of a test session predicts the click after it
    starts = np.repeat(np.cumsum(t_lengths) - t_lengths, t_lengths)
    j = np.arange(len(t_items)) - starts  # position within the session
    targets = np.flatnonzero(j >= 1)
    h_len = j[targets]
    h_first = np.repeat(starts[targets], h_len)
    h_items = t_items[h_first + np.arange(int(h_len.sum())) - np.repeat(np.cumsum(h_len) - h_len, h_len)]
    test = _eval_set(h_items, h_len, t_items[targets], np.ones(len(targets), np.int64))
    train, valid = _hold_out_last_clicks(items, lengths, len(vocab))
    return train, valid, test, len(vocab)


def _sequences(items: np.ndarray, lengths: np.ndarray, n_items: int) -> Sequences:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(offsets=offsets, items=items.astype(np.int32), event_types=np.zeros(len(items), np.int8),
                     timestamps=np.arange(len(items), dtype=np.int64),  # order only: sessions carry no clock
                     user_vocab=Vocabulary([f"s{i}" for i in range(len(lengths))], "user"),
                     item_vocab=Vocabulary([str(i) for i in range(1, n_items + 1)], "item"))


def _eval_set(h_items: np.ndarray, h_lengths: np.ndarray, t_items: np.ndarray, t_lengths: np.ndarray) -> EvalSet:
    def offsets(lengths: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    return EvalSet(users=np.arange(len(h_lengths), dtype=np.int32), history_offsets=offsets(h_lengths),
                   history_items=h_items.astype(np.int32), history_types=np.zeros(len(h_items), np.int8),
                   history_timestamps=np.zeros(len(h_items), np.int64), target_offsets=offsets(t_lengths),
                   target_items=t_items.astype(np.int32), target_types=np.zeros(len(t_items), np.int8),
                   target_timestamps=np.zeros(len(t_items), np.int64))


COMMAND = "python benchmarks/bench_sessions.py " + " ".join(sys.argv[1:])
EVAL = EvalConfig(ks=(20,), filter_seen=False)  # the published protocol: seen items stay rankable


def report(args: argparse.Namespace, dataset: str, train: Sequences, test: EvalSet, scored: Recommender,
           model_name: str, variant: str, timing: dict[str, float], extra: dict[str, Any]) -> None:
    """Rank the test prefixes, print P@20 / MRR@20 beside the published numbers, append the record."""
    result = evaluate(scored, test, EVAL)
    p20, mrr20 = 100 * result.metrics["hr@20"], 100 * result.metrics["mrr@20"]
    published = ", ".join(f"{k} {p:.2f} / {m:.2f}" for k, (p, m) in PUBLISHED[dataset].items()) or "none"
    trained = f"{timing['epochs']:.0f} epochs, {timing['train_seconds']:.0f} s, " if "epochs" in timing else ""
    print(f"{dataset} {model_name}: P@20 {p20:.2f}, MRR@20 {mrr20:.2f} (published: {published}); "
          f"{trained}eval {result.seconds:.1f} s", flush=True)
    if args.no_record:
        return
    append_record(BenchRecord(
        bench="sessions-gcegnn", dataset=dataset, model=model_name, variant=variant,
        counts={"train_sessions": train.n_users, "train_clicks": train.n_events, "items": train.n_items,
                "test_prefixes": test.n_users},
        protocol={"split": "GCE-GNN published train/test", "ranking": "full", "filter_seen": False,
                  "early_stopping": f"valid {args.monitor.upper()} on the last click of 5% of training sessions",
                  "published": {k: {"P@20": p, "MRR@20": m} for k, (p, m) in PUBLISHED[dataset].items()}, **extra},
        metrics={"P@20": round(p20, 2), "MRR@20": round(mrr20, 2)},
        timing={**timing, "eval_seconds": round(result.seconds, 1), "peak_rss_mb": round(peak_rss_mb())},
        seed=args.seed, command=COMMAND))


def settings(config: ModelConfig) -> str:
    """A saved model's settings that differ from its defaults (its training schedule aside), as JSON."""
    default = default_config(config.model).model_dump(mode="json")
    own = config.model_dump(mode="json")
    changed = {k: v for k, v in own.items()
               if k not in ("train", "model", "seed") and (v != default.get(k) or k == "hidden")}
    return f"{config.model} {json.dumps(changed)}"


def mixed(args: argparse.Namespace, members: list[Recommender], train: Sequences, valid: EvalSet
          ) -> tuple[Blend, dict[str, Any]]:
    """``members`` and the ``--blend`` baseline, if any (fitted here), in one blend, the weights chosen
    on the validation clicks; with the record's ``blend`` entry."""
    if args.blend:
        members = [*members, build_model(model_from_dict({"model": args.blend}, args.seed),
                                         members[0].n_items).fit(train)]
    blend = Blend.from_members(members, BlendConfig(members=[m.config for m in members], monitor=args.blend_monitor,
                                                    grid_step=args.grid_step, filter_seen=False))
    blend.choose_weights(valid)
    return blend, {"weights": blend.weights, "chosen_on": f"valid {args.blend_monitor}", "tuning": blend.tuning}


def ensemble(args: argparse.Namespace, dataset: str, train: Sequences, valid: EvalSet, test: EvalSet,
             n_items: int) -> None:
    """Mix saved models (and the ``--blend`` baseline), the weights chosen on the validation clicks."""
    members = [load_model(folder) for folder in args.ensemble]
    if any(m.n_items != n_items for m in members):
        raise SystemExit(f"the saved models know {sorted({m.n_items for m in members})} items; {dataset} has "
                         f"{n_items}: were they trained on another dataset?")
    started = time.perf_counter()
    blend, entry = mixed(args, members, train, valid)
    seconds = time.perf_counter() - started
    print(f"{dataset} ensemble: weights {blend.weights} ({seconds:.0f} s to choose them on "
          f"{len(blend.tuning)} grid points)", flush=True)
    report(args, dataset, train, test, blend, "+".join(m.name for m in blend.members),
           "ensemble of " + "; ".join(settings(m.config) for m in blend.members)
           + f", weights {blend.weights} chosen on valid {args.blend_monitor}",
           {"tuning_seconds": round(seconds, 1)},
           {"early_stopping": "each member's own, when it was trained (--save), on the same valid clicks",
            "blend": {**entry, "members": [*map(str, args.ensemble), *([args.blend] if args.blend else [])]}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["diginetica"], choices=sorted(FILES))
    parser.add_argument("--models", nargs="+", default=["sasrec"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=20, help="most recent clicks a model reads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="settings", default="{}",
                        help='JSON overrides of the neural models\' config, e.g. \'{"train": {"lr": 0.003}}\'')
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--monitor", default="mrr@20", help="validation metric early stopping watches (hr@20 = P@20)")
    parser.add_argument("--blend", default=None, metavar="BASELINE",
                        help="also report each neural model mixed with this baseline (e.g. itemknn), the "
                             "mixture weight chosen on the validation clicks (models.blend)")
    parser.add_argument("--blend-monitor", default="hr@20", help="validation metric the blend weight maximises")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR",
                        help="save each trained neural model under DIR (to mix later with --ensemble)")
    parser.add_argument("--ensemble", nargs="+", type=Path, default=None, metavar="DIR",
                        help="instead of training: mix models saved with --save (and the --blend baseline), "
                             "the weights chosen on the validation clicks from a grid over the simplex")
    parser.add_argument("--grid-step", type=float, default=0.1, help="spacing of the blend's weight grid")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    for dataset in args.datasets:
        loaded = load(dataset)
        if loaded is None:
            continue
        train, valid, test, n_items = loaded
        print(f"{dataset}: {train.n_users:,} training sessions, {train.n_events:,} clicks, {n_items:,} items; "
              f"{test.n_users:,} test prefixes", flush=True)
        if args.ensemble:
            ensemble(args, dataset, train, valid, test, n_items)
            continue
        for name in args.models:
            neural = "train" in type(default_config(name)).model_fields
            overrides = json.loads(args.settings)
            label = f"session mode, max_len {args.max_len}" + (f" {args.settings}" if overrides else "")
            spec = {"model": name, "max_len": args.max_len, **overrides,
                    "train": {"epochs": args.epochs, "patience": args.patience, "monitor": args.monitor,
                              "threads": args.threads, "quiet": False, "batch_size": 256,
                              **overrides.get("train", {})}} if neural else {"model": name}
            model = build_model(model_from_dict(spec, args.seed), n_items)
            started = time.perf_counter()
            if neural:
                model.fit(train, validate=lambda m=model, v=valid: evaluate(m, v, EVAL).metrics)
            else:  # baselines (markov, pop) have nothing to early-stop
                model.fit(train)
            train_seconds = time.perf_counter() - started
            if neural and args.save:
                saved = model.save(args.save / f"{dataset}-{name}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
                print(f"saved {saved}", flush=True)
            per_epoch = [r["seconds"] for r in getattr(model, "history", [])]
            timing = {"seconds_per_epoch": round(sum(per_epoch) / max(len(per_epoch), 1), 1),
                      "epochs": len(per_epoch), "train_seconds": round(train_seconds, 1)}
            runs = [(model, name, label if neural else "baseline", {})]
            if neural and args.blend:
                started = time.perf_counter()
                blend, entry = mixed(args, [model], train, valid)
                print(f"{dataset} {name} + {args.blend}: weights {blend.weights} "
                      f"({time.perf_counter() - started:.0f} s to fit the partner and choose them)", flush=True)
                runs.append((blend, f"{name}+{args.blend}", f"{label} + {args.blend} blend", {"blend": entry}))
            for scored, model_name, variant, extra in runs:
                report(args, dataset, train, test, scored, model_name, variant, timing, extra)
    if not args.no_record:
        write_markdown()


if __name__ == "__main__":
    main()
