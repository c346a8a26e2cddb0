"""The peer benchmark's own side and its protocol checks (RecBole / RecTools themselves are not
installed in the test environment; their drivers run only in benchmarks/bench_peers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_peers  # noqa: E402


def write_inter(folder: Path, n_users: int = 80, n_items: int = 30, seed: int = 0) -> dict[str, list[str]]:
    """A RecBole atomic file of users walking a cycle of items (ordinal timestamps)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    histories: dict[str, list[str]] = {}
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(n_users):
        start, n = int(rng.integers(n_items)), int(rng.integers(3, 25))
        items = [f"i{(start + k) % n_items}" for k in range(n)]
        histories[f"u{u}"] = items
        lines += [f"u{u}\t{item}\t{k + 1}" for k, item in enumerate(items)]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    return histories


def test_our_side_evaluates_recboles_leave_one_out_pairs(tmp_path: Path) -> None:
    folder = tmp_path / "peers-toy"
    histories = write_inter(folder)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/peers/shopseq_run.py"), str(folder),
                           "--model", "sasrec", "--epochs", "3", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    # RecBole's leave-one-out, computed here from the file itself: last = test, second-last = valid
    expected_test = sorted(f"{u}\t{items[-1]}" for u, items in histories.items())
    expected_valid = sorted(f"{u}\t{items[-2]}" for u, items in histories.items())
    assert sorted((out / "sasrec.test.tsv").read_text().splitlines()) == expected_test
    assert sorted((out / "sasrec.valid.tsv").read_text().splitlines()) == expected_valid
    assert result["n_inters"] == sum(len(v) for v in histories.values())
    assert result["n_train_targets"] == sum(len(v) - 3 for v in histories.values())
    assert result["epochs_run"] == len(result["valid_curve"]) == len(result["epoch_seconds"]) == 3
    assert 0.0 <= result["test"]["ndcg@10"] <= result["test"]["recall@10"] <= 1.0


def test_time_to_reach_a_score_and_pair_checks(tmp_path: Path) -> None:
    res = {"valid_curve": [0.1, 0.3, 0.2, 0.4], "epoch_seconds": [1.0, 1.0, 2.0, 2.0],
           "valid_epoch_seconds": [0.5, 0.5, 0.5, 0.5]}
    assert bench_peers.seconds_to_reach(res, 0.3) == pytest.approx(3.0)  # end of epoch 2's validation
    assert bench_peers.seconds_to_reach(res, 0.4) == pytest.approx(8.0)
    assert bench_peers.seconds_to_reach(res, 0.5) is None  # never reached
    assert bench_peers.ratio(10.0, 2.0) == 5.0 and bench_peers.ratio(None, 2.0) is None
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("u1\ti1\nu2\ti2\n")
    b.write_text("u2\ti2\nu1\ti1\n")  # order does not matter
    c.write_text("u1\ti1\nu2\ti3\n")
    assert bench_peers.same_pairs(a, b) == (True, 2)
    assert bench_peers.same_pairs(a, c)[0] is False


def test_goal_table_picks_the_run_meeting_most_goals_at_equal_quality() -> None:
    from shopseq.benchmarking import BenchRecord, peer_goal_table

    def ratio(ndcg: float, epoch: float, best: float | None, evals: float, memory: float, label: str) -> BenchRecord:
        return BenchRecord(bench="peers", dataset="beauty", model="sasrec", variant=f"ratio shopseq{label} / recbole",
                           metrics={"ndcg@10": ndcg}, timing={"epoch_speedup": epoch, "time_to_peer_best_speedup": best,
                                                              "test_eval_speedup": evals, "memory_ratio": memory})

    rows = [ratio(0.9, 50, 50, 50, 0.1, " worse"),  # newest first; below the peer's quality: never chosen
            ratio(1.0, 6, None, 12, 0.4, " fast"), ratio(1.2, 4, 6, 3, 0.6, " old"),
            BenchRecord(bench="peers", dataset="beauty", model="sasrec", variant="RecBole 1.2.1")]
    table = peer_goal_table(rows)
    body = [line for line in table if line.startswith("| beauty")]
    assert len(body) == 1 and "shopseq fast" in body[0] and "worse" not in body[0]
    assert body[0].count("NOT met") == 1 and "n/a NOT met" in body[0]  # no time-to-best: not met
    assert peer_goal_table(rows[:1]) == []
