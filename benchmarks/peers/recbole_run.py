"""RecBole side of the peer benchmark; runs inside the RecBole virtualenv (not shopseq's).

    .venv-recbole/bin/python benchmarks/peers/recbole_run.py DATASET_DIR --models SASRec --out DIR

A thin layer over the shared driver ``../shared/peers/recbole/run_sasrec.py`` (imported, not
copied: its NOTES.md explains every workaround), which runs RecBole's own pipeline unchanged.
This layer adds what the side-by-side comparison needs and the shared driver does not record:

* the wall-clock seconds of every training and validation epoch (to draw validation NDCG@10
  against time, and to find when the peer reached its best);
* the evaluated (user, target item) pairs of RecBole's validation and test sets, written as
  ``<model>.valid.tsv`` / ``<model>.test.tsv`` so the harness can check that both systems rank
  the same users' same targets;
* this process's peak resident memory.

One JSON line per model goes to stdout, the shared driver's fields plus ``epoch_seconds``,
``valid_epoch_seconds``, ``peak_rss_mb`` and ``pairs``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from proc_stats import peak_rss_mb

SHARED_DRIVER = Path(os.environ.get(
    "SHOPSEQ_RECBOLE_DRIVER", Path(__file__).resolve().parents[3] / "shared" / "peers" / "recbole" / "run_sasrec.py"))
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # before torch (see the shared NOTES.md)


def load_shared_driver():
    spec = importlib.util.spec_from_file_location("recbole_shared_driver", SHARED_DRIVER)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load the shared RecBole driver {SHARED_DRIVER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dump_pairs(loader, path: Path) -> int:
    """(user token, target item token) of every evaluated row, in RecBole's own order."""
    ds = loader._dataset
    uid, iid = ds.uid_field, ds.iid_field
    users = ds.id2token(uid, ds.inter_feat[uid].numpy())
    items = ds.id2token(iid, ds.inter_feat[iid].numpy())
    with open(path, "w") as f:
        for u, i in zip(users, items, strict=True):
            f.write(f"{u}\t{i}\n")
    return len(users)


def main() -> None:
    args_out = None
    if "--out" in sys.argv:  # ours; the rest of the command line belongs to the shared driver
        k = sys.argv.index("--out")
        args_out = Path(sys.argv[k + 1]).resolve()
        del sys.argv[k:k + 2]
    out = args_out or Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    driver = load_shared_driver()

    import recbole.data
    from recbole.trainer import Trainer

    current: dict[str, object] = {}
    epoch_seconds: list[float] = []
    valid_seconds: list[float] = []

    # run_one imports data_preparation from recbole.data at call time: wrap it to dump the pairs
    prepare = recbole.data.data_preparation

    def data_preparation(config, dataset):
        train, valid, test = prepare(config, dataset)
        name = current["model"]
        current["pairs"] = {"valid": dump_pairs(valid, out / f"{name}.valid.tsv"),
                            "test": dump_pairs(test, out / f"{name}.test.tsv")}
        return train, valid, test

    recbole.data.data_preparation = data_preparation

    # class-level timers: the shared driver's instance-level ones wrap these, so they nest
    train_epoch, valid_epoch = Trainer._train_epoch, Trainer._valid_epoch

    def timed_train(self, *a, **kw):
        s = time.perf_counter()
        r = train_epoch(self, *a, **kw)
        epoch_seconds.append(time.perf_counter() - s)
        return r

    def timed_valid(self, *a, **kw):
        s = time.perf_counter()
        r = valid_epoch(self, *a, **kw)
        valid_seconds.append(time.perf_counter() - s)
        return r

    Trainer._train_epoch, Trainer._valid_epoch = timed_train, timed_valid

    # the shared driver prints its JSON to sys.__stdout__; capture it per model and extend it
    run_one = driver.run_one

    def run_one_extended(model_name, *a, **kw):
        current["model"] = model_name
        epoch_seconds.clear()
        valid_seconds.clear()
        res = run_one(model_name, *a, **kw)
        res.update(epoch_seconds=[round(s, 4) for s in epoch_seconds],
                   valid_epoch_seconds=[round(s, 4) for s in valid_seconds],
                   peak_rss_mb=round(peak_rss_mb(), 1), pairs=current.get("pairs"))
        return res

    driver.run_one = run_one_extended
    driver.main()


if __name__ == "__main__":
    main()
