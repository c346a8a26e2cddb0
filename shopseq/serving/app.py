"""The HTTP layer: routes, request limits, error bodies and metrics around ``ServiceState``.

Every error a client can cause is a JSON ``{"error": ..., "details": ...}`` with a 4xx status;
anything unexpected is logged with its traceback on the server and answered with a plain 500.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopseq.serving.metrics import Metrics
from shopseq.serving.schemas import (
    ErrorBody,
    EventsRequest,
    EventsResponse,
    ExplainRequest,
    ExplainResponse,
    ForgetResponse,
    RecommendRequest,
    RecommendResponse,
)
from shopseq.serving.security import (
    API_KEY_HEADER,
    RequestTimeout,
    install_log_redaction,
    key_matches,
    redact_path,
)
from shopseq.serving.state import RequestError, ServiceState

log = logging.getLogger("shopseq.serving")
STATIC_DIR = Path(__file__).with_name("static")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (403, 413, 422, 500, 503)
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, 401: {"model": ErrorBody}}


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimit:
    """413 for bodies over ``max_bytes``: by Content-Length up front, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = {"error": f"request body larger than {self.max_bytes} bytes"}
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_json(send, 413, too_large)
            return
        # read the whole body first (at most max_bytes are ever held), then replay it to the app:
        # a limit hit mid-stream inside the app would surface as FastAPI's generic 400
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await _send_json(send, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestMetrics:
    """Counts and times every request by its route template (not the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", "GET"), label, status, time.perf_counter() - started)


def _error(status: int, message: str, details: list | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=jsonable_encoder(ErrorBody(error=message, details=details)))


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(
        title="shopseq",
        description="Next-item recommendations from shoppers' behaviour sequences. "
        f"Model: {state.model.name} ({state.backend.name}), run {state.run_dir.name}.",
        version="1",
    )
    metrics = Metrics()
    app.state.service = state
    app.state.metrics = metrics
    install_log_redaction()
    api_key = state.config.api_key.get_secret_value() if state.config.api_key is not None else None

    def check_key(given: str | None, admin: bool) -> None:
        if api_key is None:
            if admin:
                raise RequestError(403, "admin endpoints are off: start the service with --api-key-file "
                                   "(or $SHOPSEQ_API_KEY) to enable them")
            return
        if not key_matches(api_key, given):
            metrics.count("auth_failures")
            raise RequestError(401, f"missing or wrong {API_KEY_HEADER} header")

    def writer_key(x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> None:
        check_key(x_api_key, admin=False)

    def admin_key(x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> None:
        check_key(x_api_key, admin=True)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                   for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(
            f"{'.'.join(str(x) for x in d['loc'][1:]) or 'body'}: {d['msg']}" for d in details[:5]), details)

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError) -> JSONResponse:
        metrics.count("client_errors")
        return _error(exc.status, exc.message, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, redact_path(request.url.path), exc_info=exc)
        metrics.count("server_errors")
        return _error(500, "internal error; the service log has the details")

    @app.post("/recommend", response_model=RecommendResponse, responses=_ERRORS, tags=["recommend"])
    async def recommend(req: RecommendRequest) -> RecommendResponse:
        """Top-k items for a user's stored history and/or explicit recent events (not stored).
        Unknown users with no known events get the recent window's most popular items."""
        return await state.recommend_batched(req)

    @app.post("/events", response_model=EventsResponse, responses=_AUTH_ERRORS, tags=["events"],
              dependencies=[Depends(writer_key)])
    def events(req: EventsRequest) -> EventsResponse:
        """Append a user's events (cleaned like `shopseq ingest`); the next /recommend sees them.
        Needs the X-API-Key header when the service has a key."""
        return state.append_events(req)

    @app.delete("/users/{user_id}", response_model=ForgetResponse, responses=_AUTH_ERRORS, tags=["users"],
                dependencies=[Depends(admin_key)])
    def forget(user_id: str, pseudonymised: bool = Query(False, description="user_id is the stored pseudonym")
               ) -> ForgetResponse:
        """Forget a user: events and rejects in the store, the sequence cache, profiles, and the
        service's memory. Admin: needs the X-API-Key header (refused when the service has no key)."""
        return state.forget(user_id, pseudonymised)

    @app.post("/explain", response_model=ExplainResponse, responses=_ERRORS, tags=["recommend"])
    def explain(req: ExplainRequest) -> ExplainResponse:
        """Which history events drove the top recommendations (occlusion; attention for SASRec)."""
        return state.explain(req)

    @app.get("/users/sample", tags=["web page"])
    def sample_users(n: int = Query(20, ge=1, le=200)) -> dict:
        """Pseudonyms of some users with stored history (raw ids are never stored)."""
        return {"users": state.histories.sample_users(n)}

    @app.get("/categories", tags=["web page"])
    def categories(limit: int = Query(500, ge=1, le=10_000)) -> dict:
        return {"categories": state.catalog.categories()[:limit]}

    @app.get("/users/{user_id}/profile", tags=["users"],
             responses={404: {"model": ErrorBody}, 501: {"model": ErrorBody}})
    def profile(user_id: str, pseudonymised: bool = Query(False, description="user_id is the stored pseudonym"),
                include_vector: bool = Query(False, description="also the model's user vector")) -> dict:
        """A user's profile (segment, top categories and brands, RFM, purchase intent, next category)
        from the profiles file built by `shopseq profile`; 501 when the service has none."""
        return state.profile(user_id, pseudonymised, include_vector)

    @app.get("/health", tags=["status"])
    def health() -> dict:
        return state.health()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["status"])
    def prometheus() -> PlainTextResponse:
        text = metrics.render({"users": state.histories.n_users, "uptime_seconds": time.time() - state.started_at,
                               "scoring_batches": state.batcher.batches, "scored_requests": state.batcher.items})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    limits = state.config.limits
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(RequestTimeout, seconds=limits.request_timeout_s)  # outside: the body read counts
    if state.config.cors_origins:  # off unless asked for: no cross-origin page may call the service
        app.add_middleware(CORSMiddleware, allow_origins=list(state.config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["content-type", API_KEY_HEADER])
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: times everything, 413s included
    return app
