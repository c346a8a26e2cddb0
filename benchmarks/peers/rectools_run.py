"""RecTools side of the peer benchmark; runs inside RecTools' own virtualenv (not shopseq's).

    .venv-rectools/bin/python benchmarks/peers/rectools_run.py DATASET_DIR --out DIR [--epochs 100]

Reads the same atomic file NAME/NAME.inter as the other systems and applies the same
leave-one-out split: the last event of each user is the test target, the second-last the
validation target, the rest is training data. RecTools' ``SASRecModel`` (its defaults except the
shared settings: 2 blocks, 2 heads, 64 factors, session length 50, softmax loss, batch 256) is
trained one epoch at a time with ``fit_partial``; after each epoch it recommends the top 20 of all
items for every validation user without filtering seen items (full ranking, seen kept), and
training stops after 10 epochs without a better validation NDCG@10. The best epoch's weights are
restored for the test, whose input is every event but the last. Prints one JSON line with the
fields of ``recbole_run.py`` and writes the evaluated (user, target) pairs to
``SASRec.valid.tsv`` / ``SASRec.test.tsv`` in DIR.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from proc_stats import peak_rss_mb


def ranking_metrics(recos: pd.DataFrame, targets: pd.Series) -> dict[str, float]:
    """NDCG / HR / MRR at 10 and 20 of one target per user; users without recommendations miss."""
    ranked = recos.merge(targets.rename("target").reset_index(), on="user_id")
    ranks = ranked.loc[ranked["item_id"] == ranked["target"]].set_index("user_id")["rank"]  # 1-based
    rank = ranks.reindex(targets.index).to_numpy(dtype=np.float64)  # NaN = not in the top 20
    out = {}
    for k in (10, 20):
        hit = np.nan_to_num(rank <= k, nan=0.0).astype(bool)
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.nan_to_num(rank, nan=1.0) + 1.0), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / np.nan_to_num(rank, nan=1.0), 0.0).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    name = args.dataset_dir.name
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    raw = pd.read_csv(args.dataset_dir / f"{name}.inter", sep="\t", dtype={0: str, 1: str})
    raw.columns = [Columns.User, Columns.Item, "ts"]
    raw = raw.sort_values([Columns.User, "ts"], kind="stable").reset_index(drop=True)
    raw[Columns.Weight] = 1.0
    raw[Columns.Datetime] = pd.to_datetime(raw["ts"], unit="s")
    pos_from_end = raw.groupby(Columns.User).cumcount(ascending=False)  # 0 = the user's last event
    n_per_user = raw.groupby(Columns.User)[Columns.Item].transform("size")
    evaluated = n_per_user >= 3
    cols = [Columns.User, Columns.Item, Columns.Weight, Columns.Datetime]
    train = raw.loc[~evaluated | (pos_from_end >= 2), cols]
    valid_input, test_input = train, raw.loc[~evaluated | (pos_from_end >= 1), cols]
    valid_targets = raw.loc[evaluated & (pos_from_end == 1)].set_index(Columns.User)[Columns.Item]
    test_targets = raw.loc[evaluated & (pos_from_end == 0)].set_index(Columns.User)[Columns.Item]
    train_ds = Dataset.construct(train)
    valid_ds, test_ds = Dataset.construct(valid_input), Dataset.construct(test_input)
    data_seconds = time.perf_counter() - started

    model = SASRecModel(n_blocks=2, n_heads=2, n_factors=64, session_max_len=50, loss="softmax", batch_size=256,
                        lr=1e-3, epochs=1, verbose=0, recommend_torch_device="cpu")

    def recommend(ds: Dataset, users: pd.Index) -> pd.DataFrame:
        return model.recommend(users=users.to_numpy(), dataset=ds, k=20, filter_viewed=False,
                               on_unsupported_targets="ignore")

    epoch_seconds, valid_seconds, curve = [], [], []
    best_state, best, bad, stopped = None, -1.0, 0, "max_epochs"
    fit_started = time.perf_counter()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.fit_partial(train_ds, min_epochs=1, max_epochs=1)
        epoch_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ndcg = ranking_metrics(recommend(valid_ds, valid_targets.index), valid_targets)["ndcg@10"]
        valid_seconds.append(time.perf_counter() - t0)
        curve.append(ndcg)
        if ndcg > best:
            best, bad, best_state = ndcg, 0, copy.deepcopy(model.lightning_model.state_dict())
        else:
            bad += 1
            if bad >= args.patience:
                stopped = "early_stopping"
                break
        elapsed = time.perf_counter() - fit_started
        if args.time_budget and elapsed + elapsed / (epoch + 1) > args.time_budget:
            stopped = "time_budget"
            break
    model.lightning_model.load_state_dict(best_state)
    t0 = time.perf_counter()
    test = ranking_metrics(recommend(test_ds, test_targets.index), test_targets)
    test_seconds = time.perf_counter() - t0

    def pairs(targets: pd.Series, path: Path) -> int:
        path.write_text("".join(f"{u}\t{i}\n" for u, i in targets.items()))
        return len(targets)

    import rectools

    result = {
        "system": "rectools", "model": "SASRec", "dataset": name,
        "n_users": int(raw[Columns.User].nunique()), "n_items": int(raw[Columns.Item].nunique()),
        "n_inters": len(raw), "n_params": sum(p.numel() for p in model.lightning_model.parameters()),
        "torch_threads": torch.get_num_threads(), "epochs_run": len(epoch_seconds),
        "best_epoch": int(np.argmax(curve)) + 1, "stopped_by": stopped,
        "sec_per_train_epoch": round(float(np.mean(epoch_seconds)), 4),
        "sec_per_valid_eval": round(float(np.mean(valid_seconds)), 4),
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "valid_epoch_seconds": [round(s, 4) for s in valid_seconds],
        "valid_curve": [round(v, 4) for v in curve], "best_valid": {"ndcg@10": round(best, 4)},
        "test": {k: round(v, 4) for k, v in test.items()}, "test_eval_seconds": round(test_seconds, 4),
        "data_prep_seconds": round(data_seconds, 4), "peak_rss_mb": round(peak_rss_mb(), 1),
        "pairs": {"valid": pairs(valid_targets, args.out / "SASRec.valid.tsv"),
                  "test": pairs(test_targets, args.out / "SASRec.test.tsv")},
        "versions": {"rectools": rectools.__version__, "torch": torch.__version__},
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
