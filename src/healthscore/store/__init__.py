"""Storage of results and operational state: score snapshots and the state database."""

from healthscore.store.database import StateStoreError
from healthscore.store.snapshots import SnapshotNotFoundError, SnapshotStore
from healthscore.store.state import AuditEntry, OverrideNotFoundError, StateStore

__all__ = [
    "AuditEntry",
    "OverrideNotFoundError",
    "SnapshotNotFoundError",
    "SnapshotStore",
    "StateStore",
    "StateStoreError",
]
