"""The one JSON error shape of the service, and the handlers that produce it.

Every error response has the body::

    {"error": {"status": 404, "code": "not_found", "message": "...", "details": []}}

`message` states what failed and what to do next, `code` is a stable machine-readable
name, and `details` lists the invalid fields of a request (location and message),
and is empty otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthscore.errors import FieldError
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
    FieldError becomes 422 with a detail at the request body's field, another
    ValueError 422, or 409 with `conflict` for a state change that the
    current state does not allow, such as completing a completed task.
    StateStoreError becomes 503.
    """
    try:
        yield
    except (LookupError, SnapshotNotFoundError) as exc:
        raise ApiError(404, _text(exc)) from exc
    except FieldError as exc:
        message = _text(exc)
        location = f"body.{exc.field}"
        details = [{"location": location, "message": message}]
        raise ApiError(422, message, details=details) from exc
    except ValueError as exc:
        raise ApiError(409 if conflict else 422, _text(exc)) from exc
    except StateStoreError as exc:
        raise ApiError(503, _text(exc)) from exc


#: PostgreSQL SQLSTATE codes of a store whose tables cannot be read: an undefined
#: table (such as a schema left out of the search path or renamed), an undefined
#: schema, and missing privileges.
_UNREADABLE_STATES = frozenset({"42P01", "3F000", "42501"})


def store_unavailable(exc: DBAPIError) -> ApiError | None:
    """Return the 503 of a database error that means the store cannot be read.

    That is an error of the connection (OperationalError, InterfaceError, which is
    also how SQLite reports a missing table), or a PostgreSQL error of a missing
    table or schema or of missing privileges. Other database errors, such as a
    constraint violation, are failures of the service, and the result is None.
    """
    unreadable = isinstance(exc, OperationalError | InterfaceError)
    if isinstance(exc, ProgrammingError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        unreadable = state in _UNREADABLE_STATES
    if not unreadable:
        return None
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    return ApiError(
        503,
        f"the operational store cannot be read ({reason}); check store.state in "
        "healthscore.yml, that the database is reachable and, for PostgreSQL, "
        "that the schema in its search path has the service's tables",
    )


def _text(exc: BaseException) -> str:
    # KeyError's str() adds quotes around its message.
    return str(exc.args[0]) if exc.args else type(exc).__name__


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _store_error)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    error = store_unavailable(exc)
    if error is None:
        # The service middleware logs it and returns 500.
        raise exc
    logger.error("%s %s: %s", request.method, request.url.path, error.message)
    return error_response(error.status, error.message, code=error.code)


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
    unreadable = _unreadable_json(exc.__cause__) if status == 400 else None
    if unreadable is not None:
        return unreadable
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
    if isinstance(exc.body, bytes) and exc.body:
        # FastAPI parses a body as JSON only when the Content-Type header names a
        # JSON type (strict_content_type, the default since FastAPI 0.132). Here
        # the body stayed bytes, so every body error comes from the header.
        return _unsupported_media_type(request)
    details = [validation_detail(error, exc.body) for error in exc.errors()]
    count = len(details)
    message = (
        f"the request is invalid ({count} problem{'s' if count != 1 else ''}); "
        "see details for each field and /docs for the expected values"
    )
    return error_response(422, message, details=details)


def _unreadable_json(cause: BaseException | None) -> JSONResponse | None:
    """Return the 422 of a JSON body that FastAPI could not parse, or None.

    FastAPI reports a JSON syntax error as a validation error, but a body that is
    not valid UTF-8, that nests deeper than Python's JSON parser allows, or that has
    an integer with more digits than `int()` reads (Python's int digit limit), as a
    400 "There was an error parsing the body" raised from the parser's exception.
    """
    if isinstance(cause, UnicodeDecodeError):
        position = _json_position(cause.object, cause.start)
        byte = cause.object[cause.start : cause.start + 1].hex()
        message = (
            f"the body is not valid JSON: byte 0x{byte}{position} is not valid "
            f"{cause.encoding.upper()} ({cause.reason}); send the body as UTF-8 text"
        )
    elif isinstance(cause, RecursionError):
        message = (
            "the body is not valid JSON for this service: its arrays or objects are "
            "nested too deeply for the JSON parser; send a body with fewer levels"
        )
    elif isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        # Since Python 3.11, json.loads raises a plain ValueError for an integer
        # longer than sys.get_int_max_str_digits(), 4,300 digits by default.
        message = (
            "the body is not valid JSON for this service: a number has more than "
            f"{sys.get_int_max_str_digits():,} digits, the most the JSON parser "
            "reads; send such a value as a string"
        )
    else:
        return None
    return error_response(
        422,
        f"the request is invalid (1 problem): {message}",
        details=[{"location": "body", "message": message}],
    )


def _unsupported_media_type(request: Request) -> JSONResponse:
    sent = request.headers.get("content-type")
    described = f"Content-Type {sent}" if sent else "no Content-Type header"
    return error_response(
        415,
        f"the request body was not read as JSON because the request has "
        f"{described}; send the body as JSON with the header "
        "Content-Type: application/json",
    )


def validation_detail(error: Any, body: Any) -> dict[str, str]:
    """Return the location and message of one FastAPI or pydantic validation error."""
    parts = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset of a JSON syntax error in `loc`.
        position = parts[1] if len(parts) > 1 else None
        reason = str((error.get("ctx") or {}).get("error", "invalid JSON"))
        return {
            "location": "body",
            "message": f"the body is not valid JSON: {reason}"
            + _json_position(body, position),
        }
    if error.get("type") in _DATE_ERRORS:
        return {"location": location(parts), "message": _date_message(error)}
    if error.get("type") == "value_error" and (error.get("ctx") or {}).get("error"):
        # The text of the validator's ValueError, without pydantic's "Value error, ".
        return {"location": location(parts), "message": str(error["ctx"]["error"])}
    return {
        "location": location(parts),
        "message": str(error.get("msg", "invalid value")),
    }


#: Pydantic error types of a value that is not a valid date.
_DATE_ERRORS = {
    "date_parsing",
    "date_from_datetime_parsing",
    "date_from_datetime_inexact",
}


def _date_message(error: Any) -> str:
    """Name the invalid date, why pydantic rejected it, and the format to use."""
    if error.get("type") == "date_from_datetime_inexact":
        reason = "it has a time of day"
    else:
        reason = str((error.get("ctx") or {}).get("error", "not a date"))
    return (
        f"invalid date {error.get('input')!r} ({reason}); "
        "write the date as YYYY-MM-DD, for example 2026-06-01"
    )


def location(parts: Sequence[Any]) -> str:
    """Render a location such as `("body", "outcomes", 0, "kind")` as text.

    List indexes are written in brackets and names after dots, as in
    `body.outcomes[0].kind`, the style of the service's own error details.
    """
    text = ""
    for part in parts:
        if isinstance(part, int) and text:
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _json_position(document: Any, position: Any) -> str:
    """Return " at line L, column C" of offset `position` of a str or bytes body.

    A bytes body is decoded as Latin-1, one character per byte, so its column
    counts bytes.
    """
    if not isinstance(position, int):
        return ""
    if isinstance(document, bytes):
        document = document.decode("latin-1")
    if not isinstance(document, str) or position > len(document):
        return f" at character {position + 1}"
    line = document.count("\n", 0, position) + 1
    column = position - document.rfind("\n", 0, position)
    return f" at line {line}, column {column}"
