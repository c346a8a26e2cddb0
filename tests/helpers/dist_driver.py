"""A small SASRec training run for the distributed tests, launched with or without torchrun.

    python tests/helpers/dist_driver.py OUT.json                       # one process
    torchrun --standalone --nproc_per_node 2 tests/helpers/dist_driver.py OUT.json
    ... --kill-rank 1 --kill-step 5   # that rank SIGKILLs itself at its 5th training step

Rank 0 writes the per-epoch losses and the scores of a few histories to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: for test_training's data
from test_training import chain_sequences

from shopseq.models.base import Histories
from shopseq.models.sasrec import SASRec, SASRecConfig
from shopseq.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-step", type=int, default=3)
    args = parser.parse_args()
    seqs = chain_sequences(300, 30, seed=4)
    # dropout 0: the only difference between 1 and 2 processes is then float summation order
    config = SASRecConfig(hidden=16, max_len=12, dropout=0.0, layers=1, heads=2,
                          train=TrainConfig(epochs=args.epochs, batch_size=32, lr=5e-3, warmup_steps=0,
                                            quiet=True, threads=1))
    model = SASRec(config, 30)
    rank = int(os.environ.get("RANK", "0"))
    if args.kill_rank == rank:
        original, calls = model.module.training_terms, [0]

        def dying(batch):
            calls[0] += 1
            if calls[0] >= args.kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(batch)

        model.module.training_terms = dying  # type: ignore[method-assign]
    model.fit(seqs)
    if rank == 0:
        h = Histories.from_sequences(seqs, 12, np.arange(20))
        args.out.write_text(json.dumps({"losses": [r["loss"] for r in model.history],
                                        "scores": model.score(h).numpy().tolist()}))


if __name__ == "__main__":
    main()
