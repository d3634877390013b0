"""Replicas report themselves through the store: each writes a heartbeat row (identity, role,
epoch, started_at, version) every few seconds from a thread of its own, and the leader
records each new term (epoch, holder, time) once. ``GET /api/v1/cluster`` reads them back.

The heartbeat thread never touches the elector's lock or state beyond reading two fields,
so a slow store delays only the heartbeat, never the election.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from nightwatch.domain.cluster import LeaderChange, ReplicaInfo, ReplicaStore
from nightwatch.domain.errors import NightwatchError

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 3.0  # seconds between two heartbeats of a replica
STALE_AFTER = 3 * HEARTBEAT_INTERVAL  # a replica not heard of for this long is shown as gone
FORGET_AFTER = timedelta(days=1)  # rows of replicas gone this long are deleted by the leader


class ReplicaRegistry:
    """This replica's heartbeat thread, and what the cluster view reads."""

    def __init__(self, store: ReplicaStore, daemon: Any, clock: Any, version: str,
                 interval: float = HEARTBEAT_INTERVAL) -> None:
        self.store = store
        self.daemon = daemon
        self.clock = clock
        self.version = version
        self.interval = interval
        self.started_at = clock.now()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._recorded: int | None = None  # the last term this replica recorded
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._failing = False
        elector = daemon.elector
        previous = elector.on_elected

        def elected(fence: Any) -> None:  # a new term is recorded without waiting a whole interval
            previous(fence)
            self._wake.set()

        elector.on_elected = elected

    @property
    def lock_name(self) -> str:
        return str(self.daemon.elector.lock.name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def beat(self) -> None:
        """The term's record when this replica leads a new one (first), then the heartbeat."""
        elector = self.daemon.elector
        fence = elector.fence if elector.is_leader else None
        now = self.clock.now()
        if fence is not None and fence.epoch != self._recorded:
            self.store.record_leader_change(LeaderChange(self.lock_name, fence.epoch, elector.identity, now))
            self._recorded = fence.epoch
            try:  # a DML-only database user may have no DELETE: the view skips old rows anyway
                self.store.forget(self.lock_name, now - FORGET_AFTER)
            except NightwatchError as e:
                logger.debug("heartbeat: cannot delete the rows of replicas gone for a day: %s", e)
        self.store.heartbeat(ReplicaInfo(
            identity=elector.identity, lock_name=self.lock_name, role="leader" if fence else "standby",
            epoch=fence.epoch if fence else None, started_at=self.started_at, heartbeat_at=now,
            version=self.version))

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.daemon.migrated:  # the tables exist only once the schema is up to date
                try:
                    self.beat()
                    if self._failing:
                        logger.info("heartbeat: written again")
                    self._failing = False
                except NightwatchError as e:
                    if not self._failing:
                        logger.warning("heartbeat: cannot write it to the store: %s", e)
                    self._failing = True
                except Exception:  # never let the thread die: the cluster view would go stale
                    logger.exception("heartbeat: unexpected error")
            self._wake.wait(self.interval)
            self._wake.clear()


def cluster_view(ctx: Any) -> dict[str, Any]:
    """What ``GET /api/v1/cluster`` answers."""
    store, now = ctx.store, ctx.clock.now()
    daemon = ctx.daemon
    lock_name = daemon.elector.lock.name if daemon is not None else "nightwatch"
    replicas: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    leader = None
    if ctx.replicas is not None:
        for r in ctx.replicas.store.replicas(lock_name):
            age = (now - r.heartbeat_at).total_seconds()
            if age > FORGET_AFTER.total_seconds():
                continue
            alive = age <= STALE_AFTER
            replicas.append({"identity": r.identity, "role": r.role if alive else "gone", "epoch": r.epoch,
                             "last_heartbeat": r.heartbeat_at.isoformat(), "heartbeat_age": round(age, 1),
                             "started_at": r.started_at.isoformat(), "version": r.version, "alive": alive})
        changes = [{"epoch": c.epoch, "holder": c.holder, "at": c.at.isoformat()}
                   for c in ctx.replicas.store.leader_changes(lock_name)]
    epoch = store.current_epoch(lock_name)
    leading = [r for r in replicas if r["role"] == "leader" and r["epoch"] == epoch]
    if leading:
        leader = leading[0]["identity"]
    elif daemon is not None and daemon.elector.is_leader:
        leader = daemon.elector.identity
    return {"leader": leader, "epoch": epoch, "lock": lock_name, "served_by": ctx.identity,
            "replicas": replicas, "leader_changes": changes, "counts": store.count_by_status()}
