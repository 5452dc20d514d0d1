"""Signed session cookies and CSRF tokens of the dashboard.

A session cookie contains the id of the API token that logged in (never the token's
secret), a random session id and the time of login, signed with HMAC-SHA256 under the
project's session key. Every process reads the key file again when it changes, so
deleting the file ends every session. Each request looks the token up again, so
revoking the token ends its sessions. Logout records the session id in a file beside
the key until the session would have expired anyway, so every process that serves
the project rejects the old cookie. The CSRF token of a session is an HMAC of its
session id, so it changes at every login and needs no server-side storage.

A visitor who is not logged in gets an anonymous session (no token id), so the login
form carries a CSRF token too.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
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
#: Project file of the sessions ended by logout, one "<expiry> <session id>" line each,
#: with the expiry in seconds since the epoch.
ENDED_SESSIONS_FILE = ".healthscore/session.ended"
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
    key, _stamp = _read_key_file(project.path(SESSION_KEY_FILE))
    return key


def _read_key_file(path: Path) -> tuple[bytes, tuple[int, int, int]]:
    """Return the key in `path` and the stamp of the file it was read from."""
    for attempt in range(2):
        if not path.exists():
            _create_key_file(path)
        try:
            with open(path, "rb") as handle:
                stamp = _file_stamp(os.fstat(handle.fileno()))
                key = handle.read().strip()
        except FileNotFoundError:
            # Deleted again between its creation and the read: create it once more.
            if attempt == 0:
                continue
            raise SessionKeyError(
                f"the session key file {path} was deleted while it was read; "
                "retry the request"
            ) from None
        except OSError as exc:
            raise SessionKeyError(
                f"the session key file {path} cannot be read: {exc.strerror}; fix its "
                "permissions"
            ) from None
        if not key:
            raise SessionKeyError(
                f"the session key file {path} is empty; delete it so that a new key "
                "is created"
            )
        return key, stamp
    raise AssertionError("unreachable")


class SessionKeyFile:
    """The session key of a project, read again whenever its file changes.

    Each use stats the file, and reads it again when its inode, size or
    modification time changed. So a key that is replaced or deleted on disk takes
    effect in every process of the service at its next request, and cookies signed
    with the previous key no longer decode. A missing file is created once
    (`_create_key_file` links it into place only if no other process did), and
    every process then reads the key that was written.
    """

    def __init__(self, path: Path):
        self.path = path
        self._guard = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._key = b""

    def current(self) -> bytes:
        """Return the key in the file now, creating the file when it is missing.

        Raises
        ------
        ApiError
            503 when the file exists but cannot be read or is empty.
        """
        with self._guard:
            try:
                stamp: tuple[int, int, int] | None = _file_stamp(os.stat(self.path))
            except FileNotFoundError:
                stamp = None
            if stamp is None or stamp != self._stamp:
                try:
                    key, self._stamp = _read_key_file(self.path)
                except SessionKeyError as exc:
                    logger.error("dashboard sessions cannot be checked: %s", exc)
                    raise ApiError(503, str(exc)) from exc
                if self._key and key != self._key:
                    logger.warning(
                        "the session key in %s changed, so every dashboard session "
                        "signed with the previous key has ended",
                        self.path,
                    )
                self._key = key
            return self._key


def _file_stamp(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


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


class EndedSessions:
    """The ids of sessions ended by logout, shared through a file by every process.

    A check costs one stat() of the file, because its ids are read again only when
    the file's inode, size or modification time changes. Logout appends a line under
    an exclusive lock, and drops the lines whose session has expired by rewriting the
    file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock_path = path.with_name(f"{path.name}.lock")
        self._guard = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def contains(self, session_id: str) -> bool:
        """Return whether the session `session_id` was ended."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._guard:
            if stamp != self._stamp:
                self._ids = frozenset(entry[0] for entry in self._read())
                self._stamp = stamp
            return session_id in self._ids

    def end(self, session_id: str, expires_at: float, *, now: float) -> None:
        """Record that the session `session_id` ended; forget it after `expires_at`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "w") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self._add(session_id, expires_at, now)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _add(self, session_id: str, expires_at: float, now: float) -> None:
        entries = self._read()
        live = [entry for entry in entries if entry[1] > now]
        if any(entry[0] == session_id for entry in live):
            return
        line = _ended_line(session_id, expires_at)
        if len(live) == len(entries):
            descriptor = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(line)
            return
        # Written under a temporary name and renamed, so a reader sees either the old
        # or the new file, never a half-written one.
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.writelines(_ended_line(*entry) for entry in live)
                handle.write(line)
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _read(self) -> list[tuple[str, float]]:
        """Return the (session id, expiry) entries of the file.

        A malformed line, such as the unfinished last line of an append in progress,
        is skipped.
        """
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            expires_at, _, session_id = line.partition(" ")
            try:
                entries.append((session_id, float(expires_at)))
            except ValueError:
                continue
        return entries


def _ended_line(session_id: str, expires_at: float) -> str:
    # Rounded up, so a line is never dropped while its cookie could still decode.
    return f"{math.ceil(expires_at)} {session_id}\n"


class SessionSigner:
    """Encode, sign, verify and decode session cookies with one key.

    With a SessionKeyFile as `key`, the signer uses the key in the file at each
    call, so a cookie signed with an earlier key no longer decodes. With `ended`, a
    cookie of a session ended by logout no longer decodes.
    """

    def __init__(
        self,
        key: bytes | SessionKeyFile,
        *,
        max_age: float = SESSION_MAX_AGE_SECONDS,
        ended: EndedSessions | None = None,
    ):
        self._key = key
        self.max_age = max_age
        self.ended = ended

    def _mac(self, purpose: bytes, payload: bytes) -> str:
        key = self._key if isinstance(self._key, bytes) else self._key.current()
        digest = hmac.new(key, purpose + b"\x00" + payload, hashlib.sha256)
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
        if self.ended is not None and self.ended.contains(session.session_id):
            return None
        return session

    def end(self, session: Session, *, now: float | None = None) -> None:
        """End `session`, so its cookie no longer decodes in any process.

        Raises
        ------
        ValueError
            When the signer was built without `ended`.
        """
        if self.ended is None:
            raise ValueError(
                "this session signer keeps no ended sessions; build it with "
                "`ended=EndedSessions(path)`"
            )
        self.ended.end(
            session.session_id,
            session.issued_at + self.max_age,
            now=time.time() if now is None else now,
        )

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
