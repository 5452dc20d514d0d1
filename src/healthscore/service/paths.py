"""Account ids as URL path segments, so ids that contain `/` or `%` can be addressed.

A client writes an account id as one path segment, percent-encoded with
`quote(account_id, safe="")` (for example `X%2Fslash` for the id `X/slash`). ASGI
servers decode the path before routing, so `/accounts/X%2Fslash` would reach the
router as `/accounts/X/slash`. `keep_account_segments` therefore rebuilds the path
of the account routes from the request's undecoded `raw_path` and leaves `%2F` and
`%25` encoded, and route parameters written `{account_id:account}` decode them.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import Scope

#: Path prefixes of the routes that take an account id, under the app's root path.
ACCOUNT_PREFIXES = ("/api/v1/accounts/", "/accounts/")

#: Escapes that stay encoded in the routed path: `/` and `%` itself.
_KEPT_ESCAPES = re.compile(r"(%2[fF5])")


def encode_segment(account_id: str) -> str:
    """Percent-encode `account_id` as one URL path segment (`/` becomes `%2F`)."""
    return quote(account_id, safe="")


class AccountIdConvertor(Convertor[str]):
    """The `account` route convertor: one path segment, with `%2F` and `%25` decoded."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return encode_segment(value)


register_url_convertor("account", AccountIdConvertor())


def _decode_except_kept(raw: str) -> str:
    """Decode the escapes of `raw` except `%2F` and `%25`, written upper-case."""
    parts = _KEPT_ESCAPES.split(raw)
    decoded = []
    for index, part in enumerate(parts):
        # re.split puts the captured escapes at the odd indexes.
        decoded.append(part.upper() if index % 2 else unquote(part))
    return "".join(decoded)


def keep_account_segments(scope: Scope) -> None:
    """Set the scope's `path` of an account route so that `{account_id:account}` works.

    Paths of other routes are left as the server decoded them. Without a usable
    `raw_path`, the decoded path is used with each `%` written `%25`, so an id with
    `%` still reaches its route but an id with `/` does not.
    """
    root = scope.get("root_path", "")
    path: str = scope["path"]
    if not path.startswith(root) or not path[len(root) :].startswith(ACCOUNT_PREFIXES):
        return
    raw = scope.get("raw_path")
    rebuilt = None
    if isinstance(raw, bytes):
        rebuilt = _decode_except_kept(raw.decode("latin-1"))
    if (
        rebuilt is None
        or not rebuilt.startswith(root)
        or not rebuilt[len(root) :].startswith(ACCOUNT_PREFIXES)
    ):
        rebuilt = path.replace("%", "%25")
    scope["path"] = rebuilt
