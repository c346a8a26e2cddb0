"""ONNX export of the sequence encoders: parity with eager PyTorch on random histories, the
`shopseq export-model` command, and the service on the onnxruntime backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from test_serving import TINY_SASREC, make_served_run
from typer.testing import CliRunner

from shopseq.cli.main import app as cli_app
from shopseq.data.workspace import Workspace
from shopseq.models.base import Histories, IncompatibleModelError
from shopseq.models.neural import NeuralRecommender
from shopseq.models.registry import build_model, default_config
from shopseq.serving.app import create_app
from shopseq.serving.onnx_export import (
    OnnxEncoder,
    export_onnx,
    parity,
    random_histories,
    read_manifest,
    right_aligned,
)
from shopseq.serving.state import ServiceConfig, ServiceState

pytest.importorskip("onnxruntime")
torch.set_num_threads(1)
N_ITEMS, MAX_LEN = 300, 16


FEATURES = {"event_types": True, "time_gaps": True, "hour_of_week": True}


def random_model(name: str, **overrides: object) -> NeuralRecommender:
    """A model with O(1) random weights (the small init would make parity trivially tight)."""
    model = build_model(default_config(name, hidden=32, max_len=MAX_LEN, **overrides), N_ITEMS)
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.module.eval()
    return model


@pytest.mark.parametrize(("name", "overrides"), [
    ("sasrec", {}), ("sasrec", {"features": FEATURES}), ("sasrec", {"temperature": 0.1}), ("gru4rec", {}),
    ("bert4rec", {}),
], ids=["sasrec", "sasrec-event-features", "sasrec-cosine", "gru4rec", "bert4rec"])
def test_onnx_encoder_matches_eager_pytorch(name: str, overrides: dict, tmp_path: Path) -> None:
    model = random_model(name, **overrides)
    out = export_onnx(model, tmp_path / "onnx")
    encoder = OnnxEncoder(out)
    assert read_manifest(out)["model"] == name and encoder.item_matrix.shape == (N_ITEMS + 1, 32)
    assert ("types" in encoder.inputs) == ("features" in overrides)
    items, lengths, types, stamps = random_histories(N_ITEMS, MAX_LEN, batch=48, seed=1)
    # the eager reference goes through the model's own (right-aligned) scoring path
    histories = Histories(*(right_aligned(a, lengths) for a in (items, types, stamps)), lengths)
    eager = model.encode(histories)
    vectors = encoder.user_vectors(items, lengths, types, stamps)
    assert np.abs(eager).max() > 0.1  # outputs of a real size, not near-zero
    assert np.abs(vectors - eager).max() <= 1e-4
    scores = vectors @ encoder.item_matrix.T
    assert np.abs(scores - model.score(histories).numpy()).max() <= 1e-4
    assert parity(model, out, batch=16, seed=2) <= 1e-4
    if "features" in overrides:  # the features really enter the graph: other event types change the vectors
        assert np.abs(encoder.user_vectors(items, lengths, (types + 1) % 5, stamps) - vectors).max() > 1e-3
    # inputs narrower than the exported window are padded by the encoder
    narrow = np.minimum(lengths, 5)
    cut = [a[:, :5] * (np.arange(5) < narrow[:, None]) for a in (items, types, stamps)]
    histories5 = Histories(*(right_aligned(a, narrow) for a in cut), narrow)
    assert np.abs(encoder.user_vectors(cut[0], narrow, cut[1], cut[2]) - model.encode(histories5)).max() <= 1e-4


def test_baselines_do_not_export_and_old_exports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a neural sequence model"):
        export_onnx(build_model(default_config("markov"), N_ITEMS), tmp_path / "x")
    out = export_onnx(random_model("sasrec"), tmp_path / "onnx")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(IncompatibleModelError, match="Export it again"):
        OnnxEncoder(out)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workspace, list[str]]:
    spec = {**TINY_SASREC, "train": {**TINY_SASREC["train"], "epochs": 1}}
    return make_served_run(tmp_path_factory.mktemp("onnx-serving"), spec)


def test_export_model_command_and_onnx_backend(served: tuple, tmp_path: Path) -> None:
    run, ws, users = served
    out = tmp_path / "export"
    result = CliRunner().invoke(cli_app, ["export-model", str(run), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert "parity with eager PyTorch" in result.output and (out / "encoder.onnx").exists()
    bodies = [{"user_id": users[0], "k": 8}, {"user_id": users[5], "k": 8, "filter_seen": False},
              {"events": [{"item_id": "i000003"}, {"item_id": "i000010"}], "k": 8}]
    answers = {}
    for backend in ("torch", "onnx"):
        state = ServiceState.open(run, ws, ServiceConfig(backend=backend, onnx_dir=out if backend == "onnx" else None,
                                                         read_only=True))
        try:
            with TestClient(create_app(state)) as c:
                answers[backend] = [c.post("/recommend", json=b).json() for b in bodies]
                explained = c.post("/explain", json={"user_id": users[0], "k": 1}).json()
                assert explained["explained"][0]["contributions"]
        finally:
            state.close()
    for torch_answer, onnx_answer in zip(answers["torch"], answers["onnx"], strict=True):
        assert onnx_answer["backend"] == "onnx" and torch_answer["backend"] == "torch"
        assert not onnx_answer["cold_start"]
        t_scores = {i["item_id"]: i["score"] for i in torch_answer["items"]}
        o_scores = {i["item_id"]: i["score"] for i in onnx_answer["items"]}
        shared = t_scores.keys() & o_scores.keys()
        assert len(shared) >= 7  # same top-k up to near-ties at the cut
        assert max(abs(t_scores[i] - o_scores[i]) for i in shared) <= 1e-4
    result = CliRunner().invoke(cli_app, ["export-model", str(tmp_path / "missing"), "--onnx", str(out)])
    assert result.exit_code == 2 and "not a shopseq run directory" in result.output
