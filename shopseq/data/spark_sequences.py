"""``build_sequences`` as a Spark SQL job, for event logs larger than one machine's DuckDB.

The job reads Parquet events (``shopseq export`` output, or any engine's files with the canonical
columns), numbers users and items with the same rules as :func:`build_sequences` (items by
descending event count then id, ``1..N``; users by id, ``0..U-1``), and writes the folder that
:meth:`Sequences.load` reads. Only Spark SQL runs on the executors (no Python UDFs), so they need
neither shopseq nor numpy; the driver turns Spark's sorted Parquet output into the ``.npy`` arrays
one row group at a time, into memory-mapped files, so no per-event Python object ever exists.

Usage: ``python -m shopseq.data.spark_sequences EVENTS_PARQUET OUT_DIR [--master local[2]]``, or
the same arguments after ``spark-submit --master ... shopseq/data/spark_sequences.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shopseq.data.schema import EVENT_TYPE_NAMES
from shopseq.data.sequences import _ARRAYS, FORMAT_VERSION, MANIFEST
from shopseq.data.vocab import Vocabulary

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["build_sequences_spark", "main"]

_MID = "_shopseq_mid"
# monotonically_increasing_id() puts the partition id above bit 33 and the row within it below
_ROW_BITS = 33


def _spark_uri_and_fs(location: str | Path) -> tuple[str, pafs.FileSystem, str]:
    """(URI for Spark, pyarrow filesystem, path on it) for a scratch folder both sides can read."""
    text = str(location)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return text, fs, path
    path = str(Path(text).resolve())
    return f"file://{path}", pafs.LocalFileSystem(), path


def _part_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Spark's output files in partition order (``part-00000-...`` first; empty partitions write none)."""
    infos = fs.get_file_info(pafs.FileSelector(folder))
    return sorted(i.path for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet"))


def _batches(fs: pafs.FileSystem, files: list[str], columns: list[str]) -> Iterator[pa.RecordBatch]:
    for path in files:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            for rg in range(pf.num_row_groups):
                yield from pf.read_row_group(rg, columns=columns).to_batches()


def _canonical_events(events: DataFrame, where: str | None) -> DataFrame:
    """``user_id, item_id, event_type (code), ts (ms)`` plus the tie-breaking key columns ``_k*``."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in events.schema.fields}
    missing = {"user_id", "item_id", "event_type", "timestamp"} - set(fields)
    if missing:
        raise ValueError(f"events lack the column(s) {sorted(missing)}")
    # the store keeps codes; `shopseq export` writes names ('view', ...) so any engine can read them
    if isinstance(fields["event_type"], T.StringType):
        codes = F.create_map(*[x for code, name in enumerate(EVENT_TYPE_NAMES) for x in (F.lit(name), F.lit(code))])
        event_type = F.element_at(codes, F.lower(F.trim(F.col("event_type"))))
    else:
        event_type = F.col("event_type")
    ts_type = fields["timestamp"]
    ts = (F.expr("unix_millis(timestamp)") if isinstance(ts_type, T.TimestampType | T.TimestampNTZType)
          else F.col("timestamp"))
    # the store breaks timestamp ties by `seq`; an export has no seq but is written in seq order,
    # so the row's place in its file (files by name) is the same order
    if "seq" in fields:
        keys: list[Column] = [F.col("seq").cast("long").alias("_k0")]
    else:
        keys = [F.col("_metadata.file_path").alias("_k0"), F.col("_metadata.row_index").alias("_k1")]
    if where:
        events = events.where(F.expr(where))
    return events.where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull()).select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        event_type.cast("tinyint").alias("event_type"),
        ts.cast("long").alias("ts"),
        *keys,
    )


def _dense_index(spark: SparkSession, ids: DataFrame, order: list[Column], first: int, uri: str,
                 fs: pafs.FileSystem, path: str) -> tuple[DataFrame, list[str]]:
    """Number the rows of ``ids`` (one ``id`` column) ``first, first + 1, ...`` in ``order``.

    A window without PARTITION BY would pull every id onto one executor; instead the ids are
    range-sorted, written with their (partition, row) id, and each partition's start is the count
    of the partitions before it. The written copy fixes the numbering, so re-running a stage can
    never shift it. Returns ``(id, idx)`` and the sorted files (the vocabulary, in order).
    """
    from pyspark.sql import functions as F

    ids.orderBy(*order).select("id", F.monotonically_increasing_id().alias(_MID)).write.parquet(uri)
    written = spark.read.parquet(uri)
    part = F.shiftright(F.col(_MID), _ROW_BITS)
    counts = sorted((int(r["p"]), int(r["n"])) for r in written.groupBy(part.alias("p")).agg(F.count("*").alias("n"))
                    .collect())  # one row per partition, not per id
    starts, total = [], first
    for p, n in counts:
        starts.extend([F.lit(p).cast("long"), F.lit(total).cast("long")])
        total += n
    start = F.element_at(F.create_map(*starts), part) if starts else F.lit(first).cast("long")
    row = F.col(_MID).bitwiseAND(F.lit((1 << _ROW_BITS) - 1))
    return written.select("id", (start + row).cast("int").alias("idx")), _part_files(fs, path)


def _save_vocab(fs: pafs.FileSystem, files: list[str], kind: str, target: Path) -> int:
    # Sequences.load holds the ids in memory anyway; Vocabulary.save writes the canonical file
    tables = [pq.read_table(f, columns=["id", _MID], filesystem=fs) for f in files]
    empty = pa.table({"id": pa.array([], pa.string()), _MID: pa.array([], pa.int64())})
    table = pa.concat_tables(tables) if tables else empty
    mids = table.column(_MID).to_numpy()
    if len(mids) > 1 and not np.all(np.diff(mids) > 0):
        raise RuntimeError(f"Spark's {kind} vocabulary files are not in partition order")
    Vocabulary(table.column("id"), kind).save(target)  # type: ignore[arg-type]
    return table.num_rows


def _write_arrays(fs: pafs.FileSystem, files: list[str], n_users: int, out: Path) -> int:
    """Stream the sorted ``u, i, event_type, ts`` files into the ``.npy`` arrays; returns n_events."""
    n_events = 0
    for path in files:
        with fs.open_input_file(path) as f:
            n_events += pq.ParquetFile(f).metadata.num_rows
    arrays = {name: np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype,
                                              shape=(n_users + 1 if name == "offsets" else n_events,))
              for name, dtype in _ARRAYS.items()}
    offsets = arrays["offsets"]
    offsets[:] = 0
    pos, last = 0, (-1, np.iinfo(np.int64).min)
    for batch in _batches(fs, files, ["u", "i", "event_type", "ts"]):
        cols = {}
        for name in ("u", "i", "event_type", "ts"):
            c = batch.column(name)
            if c.null_count:
                raise ValueError(f"events have null {name!r} values (an unknown event type name?)")
            cols[name] = c.to_numpy()
        u, ts, n = cols["u"], cols["ts"], batch.num_rows
        if not n:
            continue
        # the arrays are only right if the files really are in (user, time) order: check, cheaply
        prev_u = np.concatenate(([last[0]], u[:-1]))
        prev_ts = np.concatenate(([last[1]], ts[:-1]))
        if not np.all((u > prev_u) | ((u == prev_u) & (ts >= prev_ts))):
            raise RuntimeError("Spark's sorted event files are not in (user, timestamp) order")
        last = (int(u[-1]), int(ts[-1]))
        arrays["items"][pos:pos + n] = cols["i"]
        arrays["event_types"][pos:pos + n] = cols["event_type"]
        arrays["timestamps"][pos:pos + n] = ts
        lo = int(u[0])
        counts = np.bincount(u - lo)  # u is sorted, so this spans only the batch's users
        offsets[lo + 1:lo + 1 + len(counts)] += counts
        pos += n
    np.cumsum(offsets, out=offsets)
    for a in arrays.values():
        a.flush()
    del arrays, offsets  # close the memory maps before anyone reads the files
    return n_events


def build_sequences_spark(
    spark: SparkSession,
    events: str | Path | DataFrame,
    out_dir: str | Path,
    *,
    where: str | None = None,
    source_version: str = "",
    work_dir: str | Path | None = None,
) -> Path:
    """Build the saved ``Sequences`` folder ``out_dir`` from Parquet events with Spark.

    ``events``: a Parquet file / folder (a path or URI Spark reads) or a DataFrame with
    ``user_id, item_id, event_type, timestamp`` and ideally ``seq`` (without ``seq``, timestamp
    ties keep the row order of the files, taken by file name then row: true of ``shopseq export``;
    a DataFrame without ``seq`` must come straight from Parquet files). ``where`` is a trusted
    Spark SQL filter. ``work_dir`` (default ``OUT_DIR/_spark_work``, removed afterwards) holds
    Spark's sorted output and must be readable by the driver, so on a cluster give a shared URI
    (``hdfs://...``, ``s3://...``). ``out_dir`` is local to the driver. Returns ``out_dir``.
    """
    from pyspark.sql import functions as F

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a folder with a manifest is a complete one
    uri, fs, work = _spark_uri_and_fs(work_dir if work_dir is not None else out / "_spark_work")
    fs.delete_dir_contents(work, missing_dir_ok=True)
    try:
        df = spark.read.parquet(str(events)) if isinstance(events, str | Path) else events
        ev = _canonical_events(df, where).persist()  # read by the vocabularies and the final sort
        item_ids = ev.groupBy("item_id").agg(F.count("*").alias("n")).withColumnRenamed("item_id", "id")
        items, item_files = _dense_index(spark, item_ids, [F.col("n").desc(), F.col("id").asc()], 1,
                                         f"{uri}/items", fs, f"{work}/items")
        users, user_files = _dense_index(spark, ev.select(F.col("user_id").alias("id")).distinct(),
                                         [F.col("id").asc()], 0, f"{uri}/users", fs, f"{work}/users")
        keys = sorted(c for c in ev.columns if c.startswith("_k"))
        (ev.join(users.withColumnRenamed("id", "user_id").withColumnRenamed("idx", "u"), "user_id")
           .join(items.withColumnRenamed("id", "item_id").withColumnRenamed("idx", "i"), "item_id")
           .orderBy("u", "ts", *keys)  # build_sequences: ORDER BY user, timestamp, seq
           .select("u", "i", "event_type", "ts")
           .write.parquet(f"{uri}/events"))
        ev.unpersist()

        n_items = _save_vocab(fs, item_files, "item", out / "item_vocab.parquet")
        n_users = _save_vocab(fs, user_files, "user", out / "user_vocab.parquet")
        n_events = _write_arrays(fs, _part_files(fs, f"{work}/events"), n_users, out)
    finally:
        if fs.get_file_info(work).type != pafs.FileType.NotFound:
            fs.delete_dir(work)
    manifest = {
        "format": "shopseq.sequences",
        "format_version": FORMAT_VERSION,
        "n_users": n_users,
        "n_items": n_items,
        "n_events": n_events,
        "source_version": source_version,
        "dtypes": {k: v.name for k, v in _ARRAYS.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shopseq.data.spark_sequences", description=__doc__.split("\n")[0])
    parser.add_argument("events", help="Parquet events: a file or folder (path or URI Spark reads)")
    parser.add_argument("out_dir", help="folder to write the sequences into (local to the driver)")
    parser.add_argument("--master", help="Spark master, e.g. local[2]; default: spark-submit's or Spark's own")
    parser.add_argument("--where", help="Spark SQL filter on the events")
    parser.add_argument("--source-version", default="", help="recorded in the manifest")
    parser.add_argument("--work-dir",
                        help="scratch folder that Spark and the driver both reach (default OUT_DIR/_spark_work)")
    parser.add_argument("--shuffle-partitions", type=int, help="spark.sql.shuffle.partitions")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("shopseq-sequences")
    if args.master:
        builder = builder.master(args.master)
    if args.shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
    running = SparkSession.getActiveSession()  # e.g. a notebook's: not ours to stop
    spark = builder.getOrCreate()
    try:
        out = build_sequences_spark(spark, args.events, args.out_dir, where=args.where,
                                    source_version=args.source_version, work_dir=args.work_dir)
    finally:
        if running is None:
            spark.stop()
    print(f"wrote {out} ({json.loads((out / MANIFEST).read_text())['n_events']:,} events)")


if __name__ == "__main__":
    main()
