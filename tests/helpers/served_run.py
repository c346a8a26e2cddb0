"""One tiny served run (synthetic shop + 1-epoch SASRec) built once per test process and copied
into each test module's own folder, so tests that post events or forget users never see each
other's changes."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shopseq.cli.demo_commands import SYNTHETIC_OPTIONS
from shopseq.data.ingest import ingest_file
from shopseq.data.sequences import build_sequences
from shopseq.data.store import EventStore, upsert_items
from shopseq.data.workspace import Workspace
from shopseq.runs.experiment import ExperimentConfig, SplitConfig, run_experiment
from shopseq.synthetic import SyntheticShopConfig, generate_shop, write_shop

TINY_SASREC = {"model": "sasrec", "hidden": 16, "max_len": 20, "heads": 2, "layers": 1,
               "train": {"epochs": 1, "threads": 1, "batch_size": 64, "warmup_steps": 2}}


@functools.cache
def _built() -> tuple[Path, list[str], list[str]]:
    root = Path(tempfile.mkdtemp(prefix="shopseq-served-"))
    atexit.register(shutil.rmtree, root, True)
    shop = generate_shop(SyntheticShopConfig(n_users=200, n_items=80, n_categories=5, days=20, seed=11))
    write_shop(shop, root / "shop")
    ws = Workspace(root / "ws")
    with EventStore.open(ws) as store:
        ingest_file(store, root / "shop" / "events.parquet", "parquet", SYNTHETIC_OPTIONS)
        upsert_items(store, pq.read_table(root / "shop" / "items.parquet"))
        seqs = build_sequences(store.con)
    config = ExperimentConfig(model=TINY_SASREC, split=SplitConfig(method="loo"), baselines=[])
    run_experiment(seqs, config, root / "run", {}, log=lambda *_: None)
    users = sorted(set(shop.events.column("user_id").to_pylist()))
    items = [str(i) for i in seqs.item_vocab.decode(np.arange(1, seqs.n_items + 1))]
    shutil.rmtree(root / "shop")
    return root, users, items


def served_copy(dest: Path) -> tuple[Path, Workspace, list[str], list[str]]:
    """(run dir, workspace, raw user ids, model item ids) of a private copy under ``dest``."""
    root, users, items = _built()
    shutil.copytree(root / "ws", dest / "ws")
    shutil.copytree(root / "run", dest / "run")
    return dest / "run", Workspace(dest / "ws"), users, items
