"""Authentication with bearer tokens, roles, and the accounts a token may see.

Roles:

- `admin` and `analyst` read and change everything the API offers;
- `csm` reads and changes only the accounts whose owner is the token's owner; any
  other account gets 404, exactly as an unknown account does;
- `viewer` reads everything and changes nothing (403 on every change).

Every route except `/health` and the OpenAPI docs depends on `authenticate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from healthscore.service.context import ServiceContext, get_context
from healthscore.service.dashboard.sessions import api_session_token
from healthscore.service.errors import ApiError, not_found
from healthscore.service.middleware import TOKEN_ID_KEY
from healthscore.service.paths import encode_segment
from healthscore.service.tokens import TokenInfo, verify_token

#: Roles that may change state through the API.
WRITER_ROLES = ("admin", "analyst", "csm")

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `healthscore token create`, sent as "
    "`Authorization: Bearer hs_...`.",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    context: Annotated[ServiceContext, Depends(get_context)],
) -> TokenInfo:
    """Return the token of the request; 401 when it is missing, unknown or revoked.

    Without a bearer token, a logged-in dashboard session cookie identifies the
    token; a change sent with the cookie must carry its CSRF token (403 otherwise).
    """
    if credentials is None:
        session_token = api_session_token(request, context.state)
        if session_token is not None:
            request.scope.setdefault("state", {})[TOKEN_ID_KEY] = session_token.id
            return session_token
        raise ApiError(
            401,
            "missing bearer token; send `Authorization: Bearer <token>` with a token "
            "from `healthscore token create`",
            headers=_CHALLENGE,
        )
    token = verify_token(context.state, credentials.credentials)
    if token is None:
        raise ApiError(
            401,
            "invalid or revoked token; create a new one with `healthscore token "
            "create`",
            headers=_CHALLENGE,
        )
    request.scope.setdefault("state", {})[TOKEN_ID_KEY] = token.id
    return token


Token = Annotated[TokenInfo, Depends(authenticate)]
Context = Annotated[ServiceContext, Depends(get_context)]


@dataclass(frozen=True)
class Access:
    """The request's token with the accounts it may see."""

    token: TokenInfo
    context: ServiceContext

    @property
    def limited(self) -> bool:
        """Whether the token is limited to the accounts of its owner."""
        return self.token.role == "csm"

    def require_writer(self) -> None:
        """Raise 403 unless the token's role may change state."""
        if self.token.role not in WRITER_ROLES:
            raise ApiError(
                403,
                f"role {self.token.role} is read only; use a token with role "
                f"{', '.join(WRITER_ROLES)} to change data",
            )

    def visible_ids(self) -> set[str] | None:
        """Return the ids the token may see, or None for every account."""
        if not self.limited:
            return None
        return self.context.data.owned_ids(self.token.owner or "")

    def can_see(self, account_id: str) -> bool:
        """Return whether the token may see `account_id`."""
        visible = self.visible_ids()
        return visible is None or account_id in visible

    def is_usable(self, account_id: str) -> bool:
        """Return whether the account is known and visible to the token."""
        return self.context.data.is_known(account_id) and self.can_see(account_id)

    def check_account(self, account_id: str) -> None:
        """Raise 404 when the account is unknown or not visible to the token.

        Routes that change an account call this, so an account removed from the
        accounts source gets 404. When the token may read its stored scores, the
        message names that reason.
        """
        if self.is_usable(account_id):
            return
        if self.can_see(account_id) and self.is_removed(account_id):
            raise not_found(
                f"account {account_id!r} is no longer in the accounts source, so it "
                "cannot be changed; its stored scores stay readable at "
                f"/api/v1/accounts/{encode_segment(account_id)}"
            )
        raise account_not_found(account_id)

    def check_readable(self, account_id: str) -> None:
        """Raise 404 unless the token may read the account's stored results.

        Unlike `check_account`, this accepts an account removed from the accounts
        source that a stored snapshot scored. Tokens limited to an owner never see
        such an account, because its owner is read from the accounts source.
        """
        data = self.context.data
        found = data.is_known(account_id) or data.latest_scored(account_id) is not None
        if not (found and self.can_see(account_id)):
            raise account_not_found(account_id)

    def is_removed(self, account_id: str) -> bool:
        """Return whether the account was scored but left the accounts source since."""
        data = self.context.data
        if data.is_known(account_id):
            return False
        return data.latest_scored(account_id) is not None

    def filter_ids(self, account_ids: Iterable[str]) -> np.ndarray:
        """Return a boolean mask: per id, whether the token may see it.

        A NumPy array rather than a list, because pandas reads an empty list as a
        selection of no columns, not as an empty row mask.
        """
        visible = self.visible_ids()
        mask = [visible is None or item in visible for item in account_ids]
        return np.array(mask, dtype=bool)


def account_not_found(account_id: str) -> ApiError:
    """Return the 404 of an account that is unknown or not visible."""
    return not_found(
        f"account {account_id!r} not found; list the accounts at /api/v1/accounts"
    )


async def get_access(token: Token, context: Context) -> Access:
    """Return the request's Access (a route dependency; a coroutine, as get_context)."""
    return Access(token=token, context=context)


AccessDependency = Annotated[Access, Depends(get_access)]
