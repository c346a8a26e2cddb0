"""Server limits and security: API-key auth on writes and admin endpoints (constant-time), CORS off
unless asked for, request deadlines (a stuck computation and a client that never sends its body),
no path traversal, and model files that are JSON + safetensors only (a pickle is never loaded)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from helpers.served_run import served_copy

from shopseq.cli.main import app as cli_app
from shopseq.data.workspace import Workspace
from shopseq.errors import IncompatibleModelError
from shopseq.runs.experiment import load_run
from shopseq.serving import security
from shopseq.serving.app import create_app
from shopseq.serving.client import running_service
from shopseq.serving.schemas import ServeLimits
from shopseq.serving.state import ServiceConfig, ServiceState
from shopseq.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

torch.set_num_threads(1)
KEY = "test-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workspace, list[str], list[str]]:
    return served_copy(tmp_path_factory.mktemp("security"))


def open_client(served: tuple, **config: object) -> Iterator[TestClient]:
    run, ws, *_ = served
    state = ServiceState.open(run, ws, ServiceConfig(**config))
    try:
        with TestClient(create_app(state), raise_server_exceptions=False) as c:
            yield c
    finally:
        state.close()


@pytest.fixture
def keyed(served: tuple) -> Iterator[TestClient]:
    yield from open_client(served, api_key=KEY)


@pytest.fixture
def open_service(served: tuple) -> Iterator[TestClient]:
    yield from open_client(served)


def assert_clean_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and "Traceback" not in r.text and 'File "' not in r.text
    return body


def test_writes_need_the_api_key_when_one_is_set(keyed: TestClient, served: tuple) -> None:
    items = served[3]
    body = {"user_id": "key-test-user", "events": [{"item_id": items[0], "event_type": "view"}]}
    store = keyed.app.state.service.store
    before = store.count()
    assert "X-API-Key" in assert_clean_error(keyed.post("/events", json=body), 401)["error"]
    assert_clean_error(keyed.post("/events", json=body, headers={"X-API-Key": KEY[:-1] + "x"}), 401)
    assert_clean_error(keyed.post("/events", json=body, headers={"X-API-Key": KEY + "x"}), 401)
    assert_clean_error(keyed.post("/events", json=body, headers={"X-API-Key": ""}), 401)
    # an unauthenticated caller learns nothing about the body either: 401 before validation
    assert_clean_error(keyed.post("/events", json={"nonsense": 1}), 401)
    assert store.count() == before  # nothing was written by the refused calls
    ok = keyed.post("/events", json=body, headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1 and store.count() == before + 1
    # reads stay open
    assert keyed.post("/recommend", json={"user_id": "key-test-user", "k": 3}).status_code == 200
    assert keyed.get("/health").status_code == 200
    assert "shopseq_auth_failures" in keyed.get("/metrics").text


def test_admin_endpoints_are_off_without_a_key(open_service: TestClient, served: tuple) -> None:
    _, _, users, items = served
    # writes stay open when no key is configured (the previous behaviour) ...
    ok = open_service.post("/events", json={"user_id": "open-user", "events": [{"item_id": items[1]}]})
    assert ok.status_code == 200
    # ... but nobody may forget a user through an unkeyed service
    before = open_service.app.state.service.store.count()
    body = assert_clean_error(open_service.delete(f"/users/{users[0]}"), 403)
    assert "--api-key-file" in body["error"]
    assert_clean_error(open_service.delete(f"/users/{users[0]}", headers={"X-API-Key": KEY}), 403)
    assert open_service.app.state.service.store.count() == before


def test_admin_endpoint_needs_the_right_key(keyed: TestClient, served: tuple) -> None:
    users = served[2]
    store = keyed.app.state.service.store
    before = store.count()
    assert_clean_error(keyed.delete(f"/users/{users[5]}"), 401)
    assert_clean_error(keyed.delete(f"/users/{users[5]}", headers={"X-API-Key": "wrong" * 5}), 401)
    assert store.count() == before
    r = keyed.delete(f"/users/{users[5]}", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["events_deleted"] > 0
    assert store.count() == before - r.json()["events_deleted"]


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = security.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert security.key_matches(KEY, KEY)
    assert not security.key_matches(KEY, KEY[:-1])
    assert not security.key_matches(KEY, None)
    assert not security.key_matches(KEY, "ünïcødé-key-that-is-long")
    assert len(calls) == 4 and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_api_key_sources_and_cli_checks(tmp_path: Path, served: tuple) -> None:
    key_file = tmp_path / "api.key"
    key_file.write_text(KEY + "\n")
    assert security.load_api_key(key_file, env={}) == KEY
    assert security.load_api_key(None, env={"SHOPSEQ_API_KEY": " " + KEY + " "}) == KEY
    assert security.load_api_key(None, env={}) is None
    with pytest.raises(security.ApiKeyError, match="at least 16"):
        security.load_api_key(None, env={"SHOPSEQ_API_KEY": "short"})
    with pytest.raises(FileNotFoundError):
        security.load_api_key(tmp_path / "missing.key", env={})
    run, ws, *_ = served
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    for extra, message in [(["--api-key-file", str(short)], "at least 16"),
                           (["--cors-origin", "*"], "full origins")]:
        result = CliRunner().invoke(cli_app, ["serve", str(run), "--workspace", str(ws.root), *extra])
        assert result.exit_code == 2 and message in result.output, result.output


def test_cors_is_off_by_default_and_explicit_when_on(open_service: TestClient, served: tuple) -> None:
    origin = {"Origin": "https://evil.example.com"}
    r = open_service.get("/health", headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = open_service.options("/recommend", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    for c in open_client(served, cors_origins=["https://shop.example.com"]):
        allowed = c.get("/health", headers={"Origin": "https://shop.example.com"})
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "access-control-allow-origin" not in c.get("/health", headers=origin).headers
        pre = c.options("/events", headers={"Origin": "https://shop.example.com",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "content-type,x-api-key"})
        assert pre.status_code == 200 and "x-api-key" in pre.headers["access-control-allow-headers"].lower()


def test_a_stuck_request_times_out_with_503(served: tuple) -> None:
    users = served[2]
    limits = ServeLimits(request_timeout_s=0.5)
    for c in open_client(served, limits=limits):
        state: ServiceState = c.app.state.service
        real = state.rank_many

        def hanging(batch: list, real: object = real) -> list:  # a scoring pass that hangs
            time.sleep(2.0)
            return real(batch)  # type: ignore[operator]

        state.batcher.fn = hanging
        t0 = time.perf_counter()
        body = assert_clean_error(c.post("/recommend", json={"user_id": users[0], "k": 3}), 503)
        assert "timed out after 0.5 s" in body["error"] and time.perf_counter() - t0 < 1.8
        state.batcher.fn = real
        time.sleep(2.0)  # the abandoned pass finishes in its thread; the service goes on
        assert c.post("/recommend", json={"user_id": users[0], "k": 3}).status_code == 200


def test_a_client_that_never_sends_its_body_is_cut_off(served: tuple) -> None:
    run, ws, *_ = served
    config = ServiceConfig(read_only=True, limits=ServeLimits(request_timeout_s=1.0))
    with running_service(run, ws, config) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"user_id\": ")  # ... and then nothing
            t0 = time.perf_counter()
            answer = sock.recv(4096)
            waited = time.perf_counter() - t0
            while b"timed out" not in answer:  # headers and body may arrive in separate segments
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        assert answer.startswith(b"HTTP/1.1 503") and b"timed out" in answer, answer
        assert 0.8 < waited < 5
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


def test_no_path_traversal_through_the_api(open_service: TestClient, tmp_path: Path) -> None:
    secret = "TOP-SECRET-" + os.urandom(4).hex()
    key_text = open_service.app.state.service.store.workspace.key_path.read_text()
    for path in ["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/static/..%2f..%2f..%2fsecret.key", "/static/%2e%2e%2fapp.py", "/static//etc/passwd",
                 "/users/..%2F..%2Fsecret.key/profile", "/users/%2e%2e/profile"]:
        r = open_service.get(path)
        assert r.status_code in (400, 404, 501), (path, r.status_code)
        assert "root:" not in r.text and key_text not in r.text and "import" not in r.text
    assert secret not in open_service.get("/static/index.html").text  # the mount serves its own files


def test_checkpoint_names_cannot_point_outside_their_folder(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, Checkpoint({"w": torch.ones(2)}, {"epoch": 1}), tag="00001")
    assert load_checkpoint(ckpt) is not None
    outside = tmp_path / "elsewhere.safetensors"
    (ckpt / "state-00001.safetensors").rename(outside)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    for bad in ["../elsewhere.safetensors", str(outside), "state-1/../../elsewhere.safetensors", 7]:
        (ckpt / "checkpoint.json").write_text(json.dumps({**meta, "tensors": bad}))
        with pytest.raises(ValueError, match="bad tensor file name"):
            load_checkpoint(ckpt)


def test_cli_names_cannot_escape_the_workspace(served: tuple, tmp_path: Path) -> None:
    _, ws, *_ = served
    escape = tmp_path / "escaped"
    result = CliRunner().invoke(cli_app, ["train", "--model", f"../../../{escape.name}", "--workspace",
                                          str(ws.root)])
    assert result.exit_code == 2 and "unknown model" in result.output
    result = CliRunner().invoke(cli_app, ["train", "--split", "../../x", "--workspace", str(ws.root)])
    assert result.exit_code != 0
    assert not escape.exists() and not list(tmp_path.parent.glob("*escaped*"))


class _Boom:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


def test_model_files_are_never_unpickled(served: tuple, tmp_path: Path) -> None:
    run, ws, *_ = served
    marker = tmp_path / "unpickled.txt"
    payload = pickle.dumps(_Boom(marker))
    # a pickle next to the real files is ignored: the run loads from JSON + safetensors
    extra = tmp_path / "run-with-extra"
    shutil.copytree(run, extra)
    for name in ("model/model.pt", "model/model.pkl", "model.bin", "vocab/items.pkl"):
        (extra / name).write_bytes(payload)
    load_run(extra)
    state = ServiceState.open(extra, ws, ServiceConfig(read_only=True))
    state.close()
    assert not marker.exists()
    # a pickle in place of the weights is refused with an error, and still never executed
    swapped = tmp_path / "run-with-pickle"
    shutil.copytree(run, swapped)
    weights = next((swapped / "model").glob("*.safetensors"))
    weights.write_bytes(payload)
    with pytest.raises(IncompatibleModelError, match="not a valid safetensors file"):
        load_run(swapped)
    result = CliRunner().invoke(cli_app, ["serve", str(swapped), "--workspace", str(ws.root)])
    assert result.exit_code == 2 and "not a valid safetensors file" in result.output, result.output
    assert not marker.exists()


def test_the_source_never_deserialises_untrusted_code() -> None:
    """No pickle-based loader anywhere in the package or the benchmarks."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|joblib|dill|cloudpickle|allow_pickle\s*=\s*True"
                         r"|np\.load\((?![^)]*allow_pickle=False)|numpy\.load\(|torch\.jit\.load|pd\.read_pickle")
    offenders = []
    for folder in ("shopseq", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # the peers' own virtualenvs (benchmarks/peers/.venv-*) are not our source
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
    # and the one np.load there is has allow_pickle=False (so the check above can see it)
    assert "allow_pickle=False" in (ROOT / "shopseq" / "data" / "sequences.py").read_text()


def test_log_lines_never_carry_a_user_id_from_a_path(caplog: pytest.LogCaptureFixture) -> None:
    security.install_log_redaction()
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/users/alice@example.com/profile?x=1",
                    "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "DELETE", "/users/bob%40example.com", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/users/sample?n=3", "1.1", 200)
    text = caplog.text
    assert "alice" not in text and "bob" not in text
    assert "/users/<redacted>/profile?x=1" in text and "/users/sample?n=3" in text
