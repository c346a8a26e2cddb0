"""The Spark job builds the same sequences folder as ``build_sequences`` (Spark local mode).

Needs Java and the optional ``spark`` extra (``pip install -e ".[spark]"``); skips otherwise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shopseq.data.formats.base import ColumnMapping, ReadOptions, TimestampUnit
from shopseq.data.ingest import ingest_file
from shopseq.data.sequences import Sequences, build_sequences
from shopseq.data.spark_sequences import build_sequences_spark, main  # imports pyspark only when run
from shopseq.data.store import EventStore
from shopseq.data.workspace import Workspace
from shopseq.synthetic import SyntheticShopConfig, generate_shop

if shutil.which("java") is None:
    pytest.skip("the Spark job needs Java: no `java` on PATH", allow_module_level=True)
if importlib.util.find_spec("pyspark") is None:
    pytest.skip('pyspark is not installed (pip install -e ".[spark]")', allow_module_level=True)


def _java_major() -> int:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


if int(importlib.metadata.version("pyspark").split(".")[0]) >= 4 and _java_major() < 17:
    pytest.skip("pyspark 4 needs Java 17 or newer", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # several shuffle partitions, never coalesced: the vocabulary numbering and the sorted output
    # then span many part files, which is the case that has to come out in order
    session = (SparkSession.builder.master("local[1]").appName("shopseq-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.adaptive.coalescePartitions.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1")
               # tiny data: compiling whole-stage code and C2-optimising the JVM cost more than they save
               .config("spark.sql.codegen.wholeStage", "false")
               .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("spark-store")
    shop = generate_shop(SyntheticShopConfig(n_users=300, n_items=200, n_categories=8, chunk_users=300, seed=3))
    pq.write_table(shop.events, tmp / "events.parquet")
    # a second batch with timestamp ties (broken by ingest order) and items tied on count (by id)
    ties = tmp / "ties.csv"
    ties.write_text("user,item,ts,type\n" + "".join(
        f"tie-user,{item},1700000000,{kind}\n" for item, kind in
        (("zz-b", "view"), ("zz-a", "view"), ("zz-c", "view"), ("zz-a", "fav"))) +
        "tie-user,zz-b,1600000000,cart\nnew-user,zz-c,1700000000,purchase\n")
    with EventStore.open(Workspace(tmp / "ws")) as s:
        ingest_file(s, tmp / "events.parquet", "parquet", ReadOptions(
            mapping=ColumnMapping(session_id="session_id", category="category", price="price", quantity="quantity"),
            timestamp_unit=TimestampUnit.MILLISECONDS))
        ingest_file(s, ties, "csv", ReadOptions(
            mapping=ColumnMapping(user_id="user", item_id="item", timestamp="ts", event_type="type"),
            timestamp_unit=TimestampUnit.SECONDS))
        yield s


def assert_same(got: Sequences, want: Sequences) -> None:
    assert got.user_vocab == want.user_vocab
    assert got.item_vocab == want.item_vocab
    for name in ("offsets", "items", "event_types", "timestamps"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_spark_job_on_an_export_equals_build_sequences(spark, store: EventStore, tmp_path: Path) -> None:
    export = tmp_path / "events.parquet"
    store.export_parquet(export)  # event type names, no seq: ties keep the file's (seq) order
    want = build_sequences(store.con)
    assert want.n_events > 1000 and len(want.user_vocab) > 250  # a real shop, not a toy

    out = build_sequences_spark(spark, export, tmp_path / "seqs", source_version="v-test")
    got = Sequences.load(out)
    assert_same(got, want)
    assert got.source_version == "v-test"
    assert not (out / "_spark_work").exists()
    # the tie rows: same timestamp, kept in ingest order (zz-a has 2 events, zz-b 2, zz-c 2 -> by id)
    items, types, _ = got.user(int(got.user_vocab.encode(np.array([_pseudonym(store, "tie-user")]))[0]))
    assert got.item_vocab.decode(items).tolist() == ["zz-b", "zz-b", "zz-a", "zz-c", "zz-a"]
    assert types.tolist() == [1, 0, 0, 0, 2]


def test_spark_job_reads_store_columns_with_seq_and_a_filter(spark, store: EventStore, tmp_path: Path) -> None:
    # the store's own columns (event type codes, seq), as another engine might write them;
    # rows shuffled so the order can only come from seq
    raw = tmp_path / "raw.parquet"
    store.con.execute(f"COPY (SELECT user_id, item_id, event_type, timestamp, seq FROM events ORDER BY hash(seq)) "
                      f"TO '{raw}' (FORMAT parquet, ROW_GROUP_SIZE 2048)")
    where = "event_type <> 0"
    want = build_sequences(store.con, where=where)
    main([str(raw), str(tmp_path / "seqs"), "--where", where])  # the CLI reuses the running session
    assert_same(Sequences.load(tmp_path / "seqs"), want)
    assert spark.range(3).count() == 3  # still running


def _pseudonym(store: EventStore, source_id: str) -> str:
    return store.key.pseudonymise(source_id)
