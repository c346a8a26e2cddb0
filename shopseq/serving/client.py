"""Start a service in this process, talk to it over loopback, stop it: for the demo and tests.

    from shopseq.serving.client import query_once, running_service

    answer = query_once(run_dir, workspace, user_id="customer-42", k=5)   # one /recommend, then stop
    with running_service(run_dir, workspace) as url:                     # several requests
        httpx.post(f"{url}/recommend", json={"user_id": "customer-42"})
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shopseq.data.workspace import Workspace
from shopseq.serving.state import ServiceConfig, ServiceState


@contextmanager
def running_service(
    run_dir: Path, workspace: Path | Workspace | None = None, config: ServiceConfig | None = None,
    host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Yields the base URL of a service on ``host`` (``port=0``: a free port); stopped on exit.
    The event store is held open (read-write unless ``config.read_only``) while it runs."""
    import uvicorn

    from shopseq.serving.app import create_app

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    state = ServiceState.open(Path(run_dir), ws, config)
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(state), host=host, port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, name="shopseq-serve", daemon=True)
        thread.start()
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start on {host}:{port}")
            time.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    finally:
        state.close()


def query_once(
    run_dir: Path, workspace: Path | Workspace | None = None, *, user_id: str | None = None,
    events: list[dict[str, Any]] | None = None, k: int = 10, explain: bool = False,
    config: ServiceConfig | None = None,
) -> dict[str, Any]:
    """Start a service, POST one /recommend (and /explain with ``explain=True``), stop it.

    Returns ``{"url": ..., "health": ..., "recommend": ..., "explain": ...}`` (JSON bodies)."""
    import httpx

    body: dict[str, Any] = {"k": k, "include_history": True}
    if user_id is not None:
        body["user_id"] = user_id
    if events is not None:
        body["events"] = events
    with running_service(run_dir, workspace, config) as url, httpx.Client(base_url=url, timeout=60) as http:
        out: dict[str, Any] = {"url": url, "health": http.get("/health").json()}
        rec = http.post("/recommend", json=body)
        out["recommend"] = rec.json()
        if explain and rec.status_code == 200 and not out["recommend"]["cold_start"]:
            query = {key: v for key, v in body.items() if key != "include_history"}
            out["explain"] = http.post("/explain", json={**query, "k": min(k, 3)}).json()
        return out
