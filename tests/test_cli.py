"""The command line: every command has a useful --help; the store commands work end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopseq.cli.main import app

runner = CliRunner()
COMMANDS = ["demo", "generate", "ingest", "stats", "rejects", "batches", "export", "forget", "encode", "split"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 200


def test_top_level_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_ingest_stats_rejects_export_forget(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    src = tmp_path / "log.csv"
    src.write_text(
        "customer,sku,when,what\n"
        "c1,s1,2024-01-01T10:00:00,pv\nc1,s2,2024-01-01T10:05:00,buy\n"
        "c2,s1,2024-01-02T09:00:00,cart\nc2,s3,yesterday,pv\n"
    )
    maps = ["-m", "user_id=customer", "-m", "item_id=sku", "-m", "timestamp=when", "-m", "event_type=what"]
    result = runner.invoke(app, ["ingest", str(src), *maps, *ws])
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output and "bad_timestamp" in result.output

    result = runner.invoke(app, ["stats", "--json", *ws])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["users"], stats["items"], stats["events"]) == (2, 2, 3)
    assert stats["events_per_type"] == {"view": 1, "cart": 1, "fav": 0, "purchase": 1, "review": 0}

    result = runner.invoke(app, ["rejects", *ws])
    assert result.exit_code == 0 and "bad_timestamp" in result.output and "yesterday" in result.output

    out = tmp_path / "all.parquet"
    assert runner.invoke(app, ["export", str(out), *ws]).exit_code == 0 and out.exists()

    result = runner.invoke(app, ["forget", "c1", *ws])
    assert result.exit_code == 0 and "deleted 2 events" in result.output
    result = runner.invoke(app, ["stats", "--json", *ws])
    assert json.loads(result.output)["events"] == 1


def test_bad_input_gives_a_clear_error(tmp_path: Path) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    src = tmp_path / "log.csv"
    src.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["ingest", str(src), "-m", "user_id=nope", *ws])
    assert result.exit_code == 2
    assert "'nope'" in result.output and "it has: a, b" in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing.csv"), *ws])
    assert result.exit_code == 2 and "missing.csv" in result.output
    result = runner.invoke(app, ["ingest", str(src), "--format", "klingon", *ws])
    assert result.exit_code == 2 and "klingon" in result.output
    result = runner.invoke(app, ["stats", "--workspace", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no event store" in result.output
