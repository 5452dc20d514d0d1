"""The one JSON error shape of the service, and the handlers that produce it.

Every error response has the body::

    {"error": {"status": 404, "code": "not_found", "message": "...", "details": []}}

`message` states what failed and what to do next, `code` is a stable machine-readable
name, and `details` lists the invalid fields of a request (location and message),
and is empty otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthscore.store import SnapshotNotFoundError, StateStoreError

logger = logging.getLogger(__name__)

#: Codes of the statuses that the service produces itself.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    """One invalid field of a request."""

    location: str
    message: str


class ErrorBody(BaseModel):
    """Status, code, message and details of an error."""

    status: int
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: ErrorBody


#: OpenAPI description of the error responses every route can give.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase}
    for status in (401, 404, 413, 422)
}


class ApiError(Exception):
    """An error that the service returns with its status, in the error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.message = message
        self.details = details or []
        self.headers = headers


def not_found(message: str) -> ApiError:
    """Return a 404 error with `message`."""
    return ApiError(404, message)


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a response in the error shape."""
    body = {
        "error": {
            "status": status,
            "code": code or STATUS_CODES.get(status, "error"),
            "message": message,
            "details": details or [],
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


@contextmanager
def layer_errors(*, conflict: bool = False) -> Iterator[None]:
    """Turn the errors of the layers below into API errors.

    LookupError (an unknown alert, task, snapshot or override) becomes 404, and
    ValueError becomes 422, or 409 with `conflict` for a state change that the
    current state does not allow, such as completing a completed task.
    StateStoreError becomes 503.
    """
    try:
        yield
    except (LookupError, SnapshotNotFoundError) as exc:
        raise ApiError(404, _text(exc)) from exc
    except ValueError as exc:
        raise ApiError(409 if conflict else 422, _text(exc)) from exc
    except StateStoreError as exc:
        raise ApiError(503, _text(exc)) from exc


def _text(exc: BaseException) -> str:
    # KeyError's str() adds quotes around its message.
    return str(exc.args[0]) if exc.args else type(exc).__name__


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status,
        exc.message,
        code=exc.code,
        details=exc.details,
        headers=exc.headers,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route matches {request.url.path}; see /docs for the API's routes"
    elif status == 405:
        message = (
            f"method {request.method} is not allowed on {request.url.path}; see /docs "
            "for the methods of this route"
        )
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, message, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {
            "location": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "invalid value")),
        }
        for error in exc.errors()
    ]
    count = len(details)
    message = (
        f"the request is invalid ({count} problem{'s' if count != 1 else ''}); "
        "see details for each field and /docs for the expected values"
    )
    return error_response(422, message, details=details)
