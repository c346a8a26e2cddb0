"""Runs an ingest or a training in a process the crash tests SIGKILL at a chosen point.

    python tests/helpers/crash_driver.py ingest WS FILE --pause-at STAGE
    python tests/helpers/crash_driver.py train --pause-at checkpoint-2 -- <shopseq train arguments>

Prints ``AT <stage>`` (flushed) as it passes each stage and, at the ``--pause-at`` stage, sleeps
so the test can kill it exactly there. Nothing here changes what the product code does: the
hooks only print and wait around the real calls. Ingest stages: the ingest's own steps
(``reading``, ``cleaning``, ..., ``writing``), ``in-transaction`` (rows inserted, not committed)
and ``after-commit`` (committed, rejects CSV not yet renamed into place). Training stages:
``checkpoint-<epoch>`` (that epoch's checkpoint is on disk).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

PAUSE_SECONDS = 120.0


def stage(name: str, pause_at: str | None) -> None:
    print(f"AT {name}", flush=True)
    if name == pause_at:
        time.sleep(PAUSE_SECONDS)  # the test kills us here


def ingest(ws: Path, src: Path, pause_at: str | None) -> None:
    from shopseq.data import ingest as ingest_module
    from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
    from shopseq.data.store import EventStore
    from shopseq.data.workspace import Workspace

    real_bump = EventStore.bump_version

    def bump_version(self: EventStore) -> None:
        real_bump(self)
        stage("in-transaction", pause_at)

    def replace(a: Any, b: Any) -> None:
        stage("after-commit", pause_at)
        os.replace(a, b)

    # the ingest module's ``os`` with a stage before its one rename (the rejects CSV, after COMMIT)
    staged_os = types.ModuleType("os")
    staged_os.__dict__.update(os.__dict__)
    staged_os.replace = replace  # type: ignore[attr-defined]
    EventStore.bump_version = bump_version  # type: ignore[method-assign]
    ingest_module.os = staged_os  # type: ignore[attr-defined]
    mapping = ColumnMapping(user_id="user", item_id="item", timestamp="ts", event_type="type", price="price")
    options = ReadOptions(mapping=mapping, timestamp_unit=TimestampUnit.SECONDS)
    with EventStore.open(Workspace(ws)) as store:
        report = ingest_module.ingest_file(store, src, "csv", options, on_step=lambda s: stage(s, pause_at))
    stage("done", pause_at)
    print(report.model_dump_json(), flush=True)


def train(args: list[str], pause_at: str | None) -> None:
    from shopseq.cli.main import app
    from shopseq.training import trainer

    real_save = trainer.save_checkpoint

    def save_checkpoint(directory: Path, ckpt: Any, tag: str) -> Path:
        out = real_save(directory, ckpt, tag)
        stage(f"checkpoint-{int(tag)}", pause_at)
        return out

    trainer.save_checkpoint = save_checkpoint  # type: ignore[assignment]
    app(args, standalone_mode=True)


def main() -> None:
    argv = sys.argv[1:]
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["ingest", "train"])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--pause-at")
    args = parser.parse_intermixed_args(own)
    if args.what == "ingest":
        ingest(args.paths[0], args.paths[1], args.pause_at)
    else:
        train(rest, args.pause_at)


if __name__ == "__main__":
    sys.exit(main())
