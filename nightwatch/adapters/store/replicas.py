"""Where replicas report themselves: ``nightwatch_replica`` (one heartbeat row per replica)
and ``nightwatch_leader_change`` (one row per leadership term), created by revision 0006.
A memory version for the memory store (one process)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from nightwatch.domain.cluster import RECENT_CHANGES, LeaderChange, ReplicaInfo, ReplicaStore

metadata = sa.MetaData()
replica = sa.Table(
    "nightwatch_replica", metadata,
    sa.Column("lock_name", sa.String(191), primary_key=True),
    sa.Column("identity", sa.String(191), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Column("version", sa.String(45), nullable=False, server_default=""),
)
leader_change = sa.Table(
    "nightwatch_leader_change", metadata,
    sa.Column("lock_name", sa.String(191), primary_key=True),
    sa.Column("epoch", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(191), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
)


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SqlReplicaStore(ReplicaStore):
    """On the task store's own engine; errors are translated by the task store."""

    def __init__(self, task_store: Any) -> None:
        self._store = task_store
        self._engine: sa.Engine = task_store.engine

    def _begin(self) -> Any:
        return self._store._boundary()

    def heartbeat(self, info: ReplicaInfo) -> None:
        values = {"role": info.role, "epoch": info.epoch, "started_at": _naive(info.started_at),
                  "heartbeat_at": _naive(info.heartbeat_at), "version": info.version[:45]}
        key = (replica.c.lock_name == info.lock_name) & (replica.c.identity == info.identity)
        with self._begin(), self._engine.begin() as conn:
            if conn.execute(replica.update().where(key).values(**values)).rowcount:
                return
        try:
            with self._begin(), self._engine.begin() as conn:
                conn.execute(replica.insert().values(lock_name=info.lock_name, identity=info.identity, **values))
        except Exception:  # inserted by a twin meanwhile (same identity): update it
            with self._begin(), self._engine.begin() as conn:
                conn.execute(replica.update().where(key).values(**values))

    def replicas(self, lock_name: str) -> list[ReplicaInfo]:
        with self._begin(), self._engine.connect() as conn:
            rows = conn.execute(sa.select(replica).where(replica.c.lock_name == lock_name)
                                .order_by(replica.c.identity)).all()
        return [ReplicaInfo(identity=r.identity, lock_name=r.lock_name, role=r.role,
                            epoch=None if r.epoch is None else int(r.epoch), started_at=_aware(r.started_at),
                            heartbeat_at=_aware(r.heartbeat_at), version=r.version) for r in rows]

    def forget(self, lock_name: str, before: datetime) -> int:
        with self._begin(), self._engine.begin() as conn:
            gone = conn.execute(replica.delete().where((replica.c.lock_name == lock_name)
                                                       & (replica.c.heartbeat_at < _naive(before))))
        return int(gone.rowcount or 0)

    def record_leader_change(self, change: LeaderChange) -> None:
        key = (leader_change.c.lock_name == change.lock_name) & (leader_change.c.epoch == change.epoch)
        with self._begin(), self._engine.begin() as conn:
            if conn.execute(sa.select(leader_change.c.epoch).where(key)).first() is not None:
                return
        try:
            with self._begin(), self._engine.begin() as conn:
                conn.execute(leader_change.insert().values(lock_name=change.lock_name, epoch=change.epoch,
                                                           holder=change.holder, at=_naive(change.at)))
        except Exception as e:  # recorded by a concurrent call for the same term
            if not self.has_change(change):
                raise self._store.translate(e) from e

    def has_change(self, change: LeaderChange) -> bool:
        key = (leader_change.c.lock_name == change.lock_name) & (leader_change.c.epoch == change.epoch)
        with self._begin(), self._engine.connect() as conn:
            return conn.execute(sa.select(leader_change.c.epoch).where(key)).first() is not None

    def leader_changes(self, lock_name: str, limit: int = RECENT_CHANGES) -> list[LeaderChange]:
        with self._begin(), self._engine.connect() as conn:
            rows = conn.execute(sa.select(leader_change).where(leader_change.c.lock_name == lock_name)
                                .order_by(leader_change.c.epoch.desc()).limit(limit)).all()
        return [LeaderChange(r.lock_name, int(r.epoch), r.holder, _aware(r.at)) for r in rows]


class MemoryReplicaStore(ReplicaStore):
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._replicas: dict[tuple[str, str], ReplicaInfo] = {}
        self._changes: dict[tuple[str, int], LeaderChange] = {}

    def heartbeat(self, info: ReplicaInfo) -> None:
        with self._mutex:
            self._replicas[(info.lock_name, info.identity)] = info

    def replicas(self, lock_name: str) -> list[ReplicaInfo]:
        with self._mutex:
            return sorted((r for r in self._replicas.values() if r.lock_name == lock_name), key=lambda r: r.identity)

    def forget(self, lock_name: str, before: datetime) -> int:
        with self._mutex:
            gone = [k for k, r in self._replicas.items() if k[0] == lock_name and r.heartbeat_at < before]
            for k in gone:
                del self._replicas[k]
            return len(gone)

    def record_leader_change(self, change: LeaderChange) -> None:
        with self._mutex:
            self._changes.setdefault((change.lock_name, change.epoch), change)

    def leader_changes(self, lock_name: str, limit: int = RECENT_CHANGES) -> list[LeaderChange]:
        with self._mutex:
            mine = [c for c in self._changes.values() if c.lock_name == lock_name]
        return sorted(mine, key=lambda c: c.epoch, reverse=True)[:limit]


def replica_store_for(task_store: Any) -> ReplicaStore:
    """The SQL tables beside the task store's, or memory for the memory store."""
    if getattr(task_store, "engine", None) is not None:
        return SqlReplicaStore(task_store)
    return MemoryReplicaStore()
