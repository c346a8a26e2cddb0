"""The main job (the README's first command) end to end on a small synthetic shop: every stage
runs and reports, the applications report against their baselines, and the service answers."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from shopseq.cli.main import app


def test_demo_runs_every_stage_and_the_service_answers(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--users", "900", "--epochs", "1", "--workspace", str(tmp_path)],
                                env={"COLUMNS": "200", "OMP_NUM_THREADS": "1"})
    out = result.output
    assert result.exit_code == 0, out[-3000:]
    for stage in ("1. generate", "2. ingest", "4. encode", "6. train sasrec", "7. shop applications", "8. serve"):
        assert stage in out, stage
    assert re.search(r"purchase intent: AUC 0\.\d+", out) and "promotion" in out and "category demand" in out
    assert "health: ok" in out and "POST /recommend" in out
    assert len(re.findall(r"^\s+\d+\. i\d+\s+score", out, flags=re.M)) == 5  # the 5 items the service returned
    run = tmp_path / "runs" / "demo-sasrec"
    assert (run / "report.html").exists() and (tmp_path / "apps" / "demo-sasrec" / "profiles.parquet").exists()
