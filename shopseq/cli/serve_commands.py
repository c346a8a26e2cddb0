"""Commands on serving: ``serve`` (the HTTP service) and ``export-model`` (ONNX)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from shopseq.cli.common import WorkspaceOpt, console, friendly_errors
from shopseq.data.workspace import Workspace


@friendly_errors
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `shopseq train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: Annotated[str, typer.Option(help="torch (eager PyTorch, any model) or onnx (onnxruntime).")] = "torch",
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="An export of this run (`shopseq export-model`); "
                                  "default with --backend onnx: exported at startup.")
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Open the store read-only; POST /events is refused.")
    ] = False,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.")] = 100,
    max_events: Annotated[int, typer.Option(help="Most events one request may carry.")] = 200,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1 << 20,
    popular_days: Annotated[float, typer.Option(help="Cold start: most popular items of the last N days.")] = 7.0,
    threads: Annotated[int, typer.Option(help="Intra-op threads of torch / onnxruntime.")] = 1,
    profiles: Annotated[
        Path | None, typer.Option(help="User profiles Parquet from `shopseq profile` (default: the workspace's "
                                  "apps/<run>/profiles.parquet when it exists).")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (user ids in paths are redacted).")] = False,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the API key that POST /events and admin "
                                  "endpoints (DELETE /users/ID) require in X-API-Key. Default: $SHOPSEQ_API_KEY; "
                                  "with neither, /events is open and admin endpoints are off.")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser pages from this origin (repeatable), e.g. "
                                       "https://shop.example.com. Default: CORS off.")
    ] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may take (503 after).")] = 30.0,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve recommendations over HTTP: POST /recommend, /events, /explain; GET /health, /metrics;
    a web page at / and the OpenAPI docs at /docs.

    Example: shopseq serve shopseq-workspace/runs/demo-sasrec --port 8000
    """
    import uvicorn

    from shopseq.serving.app import create_app
    from shopseq.serving.schemas import ServeLimits
    from shopseq.serving.security import load_api_key
    from shopseq.serving.state import ServiceConfig, ServiceState

    if backend not in ("torch", "onnx"):
        raise ValueError(f"--backend must be torch or onnx, not {backend!r}")
    origins = [o.strip().rstrip("/") for o in cors_origin or []]
    bad = [o for o in origins if o == "*" or not o.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"--cors-origin takes full origins such as https://shop.example.com, not {bad}")
    config = ServiceConfig(
        backend=backend, onnx_dir=onnx, read_only=read_only, popular_days=popular_days, threads=threads,
        profiles=profiles, api_key=load_api_key(api_key_file), cors_origins=origins,
        limits=ServeLimits(max_k=max_k, max_events=max_events, max_body_bytes=max_body_bytes,
                           request_timeout_s=request_timeout),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with console.status("loading the model and the users' recent histories"):
        state = ServiceState.open(run_dir, Workspace.resolve(workspace), config)
    console.print(f"{state.model.name} ({state.backend.name}) · {state.histories.n_users:,} users · "
                  f"{state.model.n_items:,} items · http://{host}:{port}/ (docs: /docs)")
    console.print("API key: " + ("required for writes and admin" if config.api_key else
                                 "none (POST /events open, admin endpoints off)")
                  + (f" · CORS: {', '.join(origins)}" if origins else ""))
    try:
        uvicorn.run(create_app(state), host=host, port=port, log_level="info", access_log=access_log)
    finally:
        state.close()


@friendly_errors
def export_model(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `shopseq train`.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Folder to write encoder.onnx, items.safetensors, "
                                       "manifest.json into.")],
    check: Annotated[bool, typer.Option(help="Compare with eager PyTorch on random histories.")] = True,
) -> None:
    """Export a neural run's sequence encoder to ONNX, with its item matrix (scores = vectors @ items.T).
    Not the same as `shopseq export`, which writes the events as Parquet."""
    from shopseq.runs.experiment import load_run
    from shopseq.serving.onnx_export import export_onnx, parity

    model, _ = load_run(run_dir)
    out = export_onnx(model, onnx)
    console.print(f"wrote {out} ({model.name}, {model.n_items:,} items, max_len {model.max_len})")
    if check:
        diff = parity(model, out)
        console.print(f"parity with eager PyTorch on random histories: max |diff| of scores {diff:.2e}")
        if diff > 1e-4:
            raise ValueError(f"the ONNX encoder differs from PyTorch by {diff:.2e} (> 1e-4)")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("export-model")(export_model)
