"""ASGI middleware of the service: request body limit, access log, last-resort errors.

The access log line of a request contains its method, route template (such as
``/api/v1/accounts/{account_id}``), status, duration and token id. It contains
nothing of the path, query, headers or body, so no account data, personal data or
token text reaches the log.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthscore.service.errors import error_response
from healthscore.service.paths import keep_account_segments

logger = logging.getLogger("healthscore.service.access")
error_logger = logging.getLogger("healthscore.service")

#: Key in the request scope's state under which authentication stores the token id.
TOKEN_ID_KEY = "token_id"


class ServiceMiddleware:
    """Reject request bodies over `max_request_bytes`, log every request, catch crashes.

    The body is read whole before the application runs, so a body that grows past the
    limit while it streams in is rejected with 413 before any route reads it. A body
    sent with `Content-Encoding: gzip`, as Segment's libraries can send it, is
    uncompressed here, and the limit applies to its uncompressed size. An
    exception that no handler took is logged with its type and route only, because its
    message may quote request data, and answered with 500 in the error shape.
    """

    def __init__(self, app: ASGIApp, *, max_request_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        keep_account_segments(scope)
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 0, "started": False}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["started"] = True
            await send(message)

        try:
            replay = await self._read_body(scope, receive, send_and_record)
            if replay is not None:
                await self.app(scope, replay, send_and_record)
        except Exception as exc:
            error_logger.error(
                "unhandled %s on %s %s",
                type(exc).__name__,
                scope.get("method", "-"),
                _route_template(scope),
            )
            error_logger.debug("traceback of the unhandled error", exc_info=exc)
            if not response["started"]:
                reply = error_response(
                    500,
                    "the service failed to answer this request; the error is logged "
                    "on the server, so try again or ask its operator",
                )
                await reply(scope, receive, send_and_record)
        finally:
            _log_request(scope, response["status"], started)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send
    ) -> Receive | None:
        """Read the body within the limit and return a receive that replays it.

        Returns None after sending an error response.
        """
        declared = _content_length(scope)
        if declared == -1:
            await error_response(
                400, "the Content-Length header is not a non-negative whole number"
            )(scope, receive, send)
            return None
        if declared is not None and declared > self.max_request_bytes:
            await self._too_large(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        pending: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                await self._too_large(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = _content_encoding(scope)
        if encoding == "x-gzip":
            # x-gzip is the older name of gzip, which some clients still send.
            encoding = "gzip"
        if encoding not in ("", "identity", "gzip"):
            await error_response(
                415,
                f"the Content-Encoding {encoding!r} is not supported; send the body "
                "uncompressed or with gzip",
            )(scope, receive, send)
            return None
        if encoding == "gzip":
            expanded = self._gunzip(body)
            if expanded is None:
                await self._too_large(scope, receive, send)
                return None
            if isinstance(expanded, str):
                await error_response(400, expanded)(scope, receive, send)
                return None
            body = expanded
            # The app receives the plain body, as if it had been sent uncompressed.
            scope["headers"] = [
                (name, value)
                for name, value in scope.get("headers", [])
                if name not in (b"content-encoding", b"content-length")
            ] + [(b"content-length", str(len(body)).encode("ascii"))]
        delivered = False

        async def replay() -> Message:
            nonlocal delivered, pending
            if not delivered:
                delivered = True
                if pending is not None:
                    message, pending = pending, None
                    return message
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _gunzip(self, body: bytes) -> bytes | str | None:
        """Return the gunzipped body; None past the size limit, or the error text.

        The limit applies to the uncompressed size, so a small compressed body
        cannot expand into a large one.
        """
        # A gzip body can hold several members one after the other, as `cat a.gz
        # b.gz` writes them; each is inflated in turn.
        parts: list[bytes] = []
        size = 0
        remaining = body
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                expanded = inflater.decompress(
                    remaining, self.max_request_bytes + 1 - size
                )
            except zlib.error:
                return "the body is not valid gzip data; check Content-Encoding"
            size += len(expanded)
            if size > self.max_request_bytes or inflater.unconsumed_tail:
                return None
            if not inflater.eof:
                return "the gzip body ends early; send the whole compressed body"
            parts.append(expanded)
            remaining = inflater.unused_data
            if not remaining:
                return b"".join(parts)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(
            413,
            f"the request body is larger than the limit of {self.max_request_bytes:,} "
            "bytes; send a smaller body or raise service.max_request_bytes",
        )(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """Return the declared body size, None when absent, or -1 when it is invalid."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def _content_encoding(scope: Scope) -> str:
    """Return the request's Content-Encoding in lower case, or "" without one."""
    for name, value in scope.get("headers", []):
        if name == b"content-encoding":
            return value.decode("latin-1").strip().lower()
    return ""


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    # path_format is the path without convertor names: {account_id}, not
    # {account_id:account}.
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return str(path)
    if "endpoint" in scope and not scope.get("path_params"):
        # A plain Starlette route such as /openapi.json sets no `route`. Its path
        # has no parameters, so it contains no account id.
        return str(scope.get("path", "(no route)"))
    return "(no route)"


def _log_request(scope: Scope, status: int, started: float) -> None:
    state = scope.get("state") or {}
    token_id = state.get(TOKEN_ID_KEY, "-")
    logger.info(
        "%s %s %d %.1f ms token %s",
        scope.get("method", "-"),
        _route_template(scope),
        status,
        (time.perf_counter() - started) * 1000,
        token_id,
    )
