"""Signed session cookies and CSRF tokens of the dashboard.

A session cookie contains the id of the API token that logged in (never the token's
secret), a random session id and the time of login, signed with HMAC-SHA256 under the
project's session key. Each request looks the token up again, so revoking the token
ends its sessions. The CSRF token of a session is an HMAC of its session id, so it
changes at every login and needs no server-side storage.

A visitor who is not logged in gets an anonymous session (no token id), so the login
form carries a CSRF token too.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response

from healthscore.config import Project
from healthscore.service.errors import ApiError
from healthscore.service.tokens import TokenInfo, list_tokens
from healthscore.store import StateStore

logger = logging.getLogger(__name__)

#: Name of the session cookie.
COOKIE_NAME = "healthscore_session"
#: Form field and request header that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: Project file of the key that signs session cookies.
SESSION_KEY_FILE = ".healthscore/session.key"
#: Seconds a login lasts; the cookie itself ends with the browser session.
SESSION_MAX_AGE_SECONDS = 12 * 3600
#: HTTP methods that change nothing, so they need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SessionKeyError(Exception):
    """The session key file exists but cannot be used."""


@dataclass(frozen=True)
class Session:
    """The content of a valid session cookie."""

    session_id: str
    token_id: int | None
    issued_at: float


def load_session_key(project: Project) -> bytes:
    """Read the project's session key, creating it (mode 0600) when it is missing.

    Raises
    ------
    SessionKeyError
        When the file exists but cannot be read or is empty.
    """
    path = project.path(SESSION_KEY_FILE)
    if not path.exists():
        _create_key_file(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise SessionKeyError(
            f"the session key file {path} cannot be read: {exc.strerror}; fix its "
            "permissions"
        ) from None
    if not key:
        raise SessionKeyError(
            f"the session key file {path} is empty; delete it so that a new key is "
            "created"
        )
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written in full under a temporary name and then linked into place, so a second
    # process never reads a half-written key and every process keeps the first key.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()


class SessionSigner:
    """Encode, sign, verify and decode session cookies with one key."""

    def __init__(self, key: bytes, *, max_age: float = SESSION_MAX_AGE_SECONDS):
        self._key = key
        self.max_age = max_age

    def _mac(self, purpose: bytes, payload: bytes) -> str:
        digest = hmac.new(self._key, purpose + b"\x00" + payload, hashlib.sha256)
        return _b64(digest.digest())

    def encode(self, session: Session) -> str:
        """Return the signed cookie value of `session`."""
        body = {"s": session.session_id, "t": session.token_id, "i": session.issued_at}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(b'session', payload.encode())}"

    def decode(self, value: str, *, now: float | None = None) -> Session | None:
        """Return the session of a cookie value; None when unsigned, altered or old."""
        payload, _, signature = value.partition(".")
        expected = self._mac(b"session", payload.encode())
        if not signature or not hmac.compare_digest(signature, expected):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(str(body["s"]), body["t"], float(body["i"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.token_id is not None and not isinstance(session.token_id, int):
            return None
        age = (time.time() if now is None else now) - session.issued_at
        if not 0 <= age <= self.max_age:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """Return the CSRF token of `session`."""
        return self._mac(b"csrf", session.session_id.encode())

    def check_csrf(self, session: Session | None, sent: str | None) -> bool:
        """Return whether `sent` is the CSRF token of `session`."""
        if session is None or not sent:
            return False
        return hmac.compare_digest(sent, self.csrf_token(session))


def new_session(token_id: int | None) -> Session:
    """Start a session with a fresh random id, for a login or for a visitor."""
    return Session(secrets.token_urlsafe(18), token_id, time.time())


def read_session(request: Request, signer: SessionSigner) -> Session | None:
    """Return the request's valid session cookie, or None."""
    value = request.cookies.get(COOKIE_NAME)
    return signer.decode(value) if value else None


def session_token(state: StateStore, session: Session | None) -> TokenInfo | None:
    """Return the active API token of a logged-in session, or None."""
    if session is None or session.token_id is None:
        return None
    for token in list_tokens(state):
        if token.id == session.token_id:
            return token
    return None


def set_session_cookie(
    response: Response, request: Request, signer: SessionSigner, session: Session
) -> None:
    """Attach `session` as an HttpOnly, SameSite=Lax cookie.

    The cookie is marked Secure when the request came over https, or always when the
    app was built with `secure_cookies=True` (for a proxy that ends TLS and does not
    forward the scheme).
    """
    secure = request.url.scheme == "https" or bool(
        getattr(request.app.state, "secure_cookies", False)
    )
    response.set_cookie(
        COOKIE_NAME,
        signer.encode(session),
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    """Remove the session cookie from the browser."""
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def api_session_token(request: Request, state: StateStore) -> TokenInfo | None:
    """Return the token of the request's dashboard session, for the API routes.

    Returns None when the app has no dashboard or the request has no logged-in
    session. A request that changes state must carry the session's CSRF token in the
    X-CSRF-Token header, because the browser sends the cookie with any form post.

    Raises
    ------
    ApiError
        403 when a logged-in session sends a change without its CSRF token.
    """
    signer: SessionSigner | None = getattr(request.app.state, "session_signer", None)
    if signer is None:
        return None
    session = read_session(request, signer)
    token = session_token(state, session)
    if token is None:
        return None
    if request.method not in SAFE_METHODS and not signer.check_csrf(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(
            403,
            f"missing or invalid CSRF token; send the {CSRF_HEADER} header of the "
            "dashboard session, or use a bearer token",
        )
    return token
