"""Replicas and leadership terms as the cluster view shows them, and the port that keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

RECENT_CHANGES = 20


@dataclass(frozen=True)
class ReplicaInfo:
    identity: str
    lock_name: str
    role: str  # leader | standby
    epoch: int | None
    started_at: datetime
    heartbeat_at: datetime
    version: str


@dataclass(frozen=True)
class LeaderChange:
    lock_name: str
    epoch: int
    holder: str
    at: datetime


class ReplicaStore(Protocol):
    """Where replicas' heartbeats and the leader changes are kept (adapters/store/replicas.py)."""

    def heartbeat(self, info: ReplicaInfo) -> None: ...

    def replicas(self, lock_name: str) -> list[ReplicaInfo]: ...

    def forget(self, lock_name: str, before: datetime) -> int: ...

    def record_leader_change(self, change: LeaderChange) -> None:
        """Once per (lock_name, epoch): a second call for the same term changes nothing."""
        ...

    def leader_changes(self, lock_name: str, limit: int = RECENT_CHANGES) -> list[LeaderChange]:
        """Newest first."""
        ...
