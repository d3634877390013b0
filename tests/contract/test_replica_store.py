"""The replica store (heartbeats and leader changes, revision 0006) on every store backend:
two "replicas" on one database see each other's rows; a term is recorded once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import StoreBackend

from nightwatch.adapters.store.replicas import MemoryReplicaStore, replica_store_for
from nightwatch.domain.cluster import LeaderChange, ReplicaInfo, ReplicaStore

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _pair(backend: StoreBackend) -> tuple[ReplicaStore, ReplicaStore]:
    first = backend.make()
    first.migrate()
    if backend.id == "memory":
        shared = MemoryReplicaStore()
        return shared, shared
    return replica_store_for(first), replica_store_for(backend.make())


def info(identity: str, role: str, epoch: int | None, at: datetime) -> ReplicaInfo:
    return ReplicaInfo(identity, "nightwatch", role, epoch, T0, at, "0.1.0")


def test_replicas_see_each_others_heartbeats_and_the_latest_wins(backend: StoreBackend) -> None:
    a, b = _pair(backend)
    a.heartbeat(info("r1", "leader", 3, T0))
    b.heartbeat(info("r2", "standby", None, T0 + timedelta(seconds=1)))
    a.heartbeat(info("r1", "leader", 3, T0 + timedelta(seconds=3)))
    seen = b.replicas("nightwatch")
    assert [(r.identity, r.role, r.epoch, r.heartbeat_at, r.started_at) for r in seen] == [
        ("r1", "leader", 3, T0 + timedelta(seconds=3), T0), ("r2", "standby", None, T0 + timedelta(seconds=1), T0)]
    assert b.replicas("another-lock") == []
    assert a.forget("nightwatch", T0 + timedelta(seconds=2)) == 1
    assert [r.identity for r in b.replicas("nightwatch")] == ["r1"]


def test_a_term_is_recorded_once_newest_first(backend: StoreBackend) -> None:
    a, b = _pair(backend)
    a.record_leader_change(LeaderChange("nightwatch", 1, "r1", T0))
    b.record_leader_change(LeaderChange("nightwatch", 2, "r2", T0 + timedelta(seconds=9)))
    a.record_leader_change(LeaderChange("nightwatch", 2, "r2", T0 + timedelta(seconds=20)))  # again: no change
    assert b.leader_changes("nightwatch") == [LeaderChange("nightwatch", 2, "r2", T0 + timedelta(seconds=9)),
                                              LeaderChange("nightwatch", 1, "r1", T0)]
    assert a.leader_changes("nightwatch", limit=1)[0].epoch == 2
