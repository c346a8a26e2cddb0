"""Who may call what, from where, and for how long: API-key auth, CORS, request timeouts, and
log lines that never carry a raw user id.

- Writes and admin endpoints (``POST /events``, ``DELETE /users/{id}``) take an ``X-API-Key``
  header when the service has a key (``--api-key-file`` or ``$SHOPSEQ_API_KEY``); keys are compared
  in constant time. Admin endpoints are refused outright when no key is configured: forgetting a
  user must never be open to anyone who can reach the port.
- CORS is off unless ``--cors-origin`` names the origins a browser page may call from.
- Every request has a deadline (``ServeLimits.request_timeout_s``): a 503 JSON body instead of a
  worker held forever by a slow client or a stuck computation.
- URL paths that hold a user id (``/users/<id>/...``) are redacted in the access and error logs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "SHOPSEQ_API_KEY"
MIN_KEY_CHARS = 16  # a short key is guessable; refuse it at startup rather than serve with it

_USER_PATH = re.compile(r"(/users/)(?!sample(?:[/?\s\"]|$))[^/?\s\"]+")


class ApiKeyError(ValueError):
    pass


def load_api_key(key_file: Path | None = None, env: dict[str, str] | None = None) -> str | None:
    """The configured key: ``key_file`` (first line, trimmed) if given, else ``$SHOPSEQ_API_KEY``,
    else None (writes open, admin endpoints refused)."""
    env = os.environ if env is None else env
    if key_file is not None:
        if not Path(key_file).is_file():
            raise FileNotFoundError(f"no API key file {key_file}")
        lines = Path(key_file).read_text().strip().splitlines()
        key = lines[0].strip() if lines else ""
        source = str(key_file)
    else:
        key = env.get(API_KEY_ENV, "").strip()
        source = f"${API_KEY_ENV}"
        if not key:
            return None
    if len(key) < MIN_KEY_CHARS:
        raise ApiKeyError(f"the API key from {source} has {len(key)} characters; use at least {MIN_KEY_CHARS} "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return key


def key_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (the time does not depend on how many leading characters match)."""
    if given is None:
        # compare anyway so a missing header costs the same as a wrong one
        hmac.compare_digest(expected.encode(), b"")
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


def redact_path(text: str) -> str:
    """``/users/alice@example.com/profile`` -> ``/users/<redacted>/profile`` (``/users/sample`` kept)."""
    return _USER_PATH.sub(r"\1<redacted>", text)


class RedactUserIds(logging.Filter):
    """Rewrites log records whose message or arguments hold a ``/users/<id>`` path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_path(record.msg)
        return True


def install_log_redaction() -> None:
    """On uvicorn's access and error loggers and ours; idempotent."""
    for name in ("uvicorn.access", "uvicorn.error", "shopseq.serving"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUserIds) for f in logger.filters):
            logger.addFilter(RedactUserIds())


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestTimeout:
    """503 when a request (body read included) takes longer than ``seconds``. A response already
    under way is cut off instead (its status line has gone out)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracking_send), self.seconds)
        except TimeoutError:
            logging.getLogger("shopseq.serving").warning(
                "request %s %s timed out after %.1f s", scope.get("method"), redact_path(scope.get("path", "")),
                self.seconds)
            if not started:
                body = f'{{"error": "request timed out after {self.seconds:g} s"}}'.encode()
                await send_json(send, 503, body)
