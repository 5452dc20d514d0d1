"""Accepted values that the command line's help text lists.

This module imports nothing, so `healthscore --help` can show these values without
loading the modules that check them.
"""

from __future__ import annotations

__all__ = ["MAX_ACCOUNTS", "MIN_ACCOUNTS", "TOKEN_ROLES"]

MIN_ACCOUNTS = 10
"""Minimum number of sample accounts, so that every profile and segment has one."""
MAX_ACCOUNTS = 5000
"""Maximum number of sample accounts, because account ids have four digits."""

#: Roles a service API token can have, from the most to the least access.
TOKEN_ROLES = ("admin", "analyst", "csm", "viewer")
