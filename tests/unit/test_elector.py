"""Election under a fake clock: one leader at any instant; step-down before the lease ends."""

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.elector import LeaderElector
from nightwatch.app.scheduler import Scheduler

TTL, RENEW, DEADLINE, RETRY = 10.0, 2.0, 7.0, 1.0


def make(name, clock, hub, store, scheduler=None):
    lock = InMemoryLeaderLock("nightwatch", name, TTL, clock, hub)
    return LeaderElector(
        lock, store, clock, identity=name, renew_interval=RENEW, renew_deadline=DEADLINE,
        retry_interval=RETRY,
        on_elected=(scheduler.start if scheduler else lambda f: None),
        on_stepped_down=(lambda r: scheduler.stop(0)) if scheduler else (lambda r: None),
    )


def test_two_electors_one_lock_exactly_one_leader_at_every_instant():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    a, b = make("a", clock, hub, store), make("b", clock, hub, store)
    leaders_seen = set()
    for step in range(400):
        for e in (a, b) if step % 2 else (b, a):
            e.tick()
        assert (a.is_leader, b.is_leader).count(True) == 1
        leaders_seen.add("a" if a.is_leader else "b")
        if step == 200:  # the leader's lock backend fails for it alone: it steps down, the other takes over
            leader = a if a.is_leader else b
            leader.lock.renew = lambda: (_ for _ in ()).throw(__import__(
                "nightwatch.domain.errors", fromlist=["x"]).BackendUnavailableError("cut off"))
        clock.advance(0.25)
    assert leaders_seen == {"a", "b"}
    assert store.current_epoch("nightwatch") == 2


def test_leader_whose_renewals_fail_steps_down_before_its_lease_could_expire():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)

    class W:
        name, spec = "w", "@every 1s"

        def __init__(self):
            self.runs = 0

        def run(self, ctx):
            self.runs += 1

    w = W()
    scheduler = Scheduler([w], clock, inline=True)
    e = make("a", clock, hub, store, scheduler)
    e.tick()
    assert e.is_leader and scheduler.active
    acquired_at = clock.monotonic()
    hub.unavailable = True  # every renew from now on fails
    stepped_down_at = None
    while clock.monotonic() < acquired_at + TTL + 5:
        e.tick()
        if e.is_leader:
            scheduler.tick()
        elif stepped_down_at is None:
            stepped_down_at = clock.monotonic()
            runs_at_step_down = w.runs
        clock.advance(0.1)
    # the lease was last extended at acquisition: it would expire at acquired_at + TTL
    assert stepped_down_at is not None
    assert stepped_down_at - acquired_at <= DEADLINE + 0.11
    assert stepped_down_at < acquired_at + TTL
    assert not scheduler.active and w.runs == runs_at_step_down  # its scheduler stopped


def test_lost_lease_steps_down_at_once():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    a = make("a", clock, hub, store)
    a.tick()
    assert a.is_leader
    hub.leases.clear()  # the key vanished (e.g. Redis flushed)
    b = make("b", clock, hub, store)
    b.tick()
    assert b.is_leader
    clock.advance(RENEW)
    a.tick()  # renew finds a foreign holder
    assert not a.is_leader


def test_store_down_at_election_means_no_leadership_and_no_held_lock():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    from nightwatch.domain.errors import BackendUnavailableError

    def down(name):
        raise BackendUnavailableError("db down")

    store.begin_term = down
    a = make("a", clock, hub, store)
    a.tick()
    assert not a.is_leader
    assert a.lock.holder() is None  # it let go, so a replica that can reach the store may lead


class BreakingLock(InMemoryLeaderLock):
    """An in-memory lock whose renew (and, with ``release_fails``, release) raises ``error``
    once armed: a rotated Redis password, a bug, an exception nobody translated."""

    def __init__(self, *args, release_fails=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.error = None
        self.renew_calls = 0
        self.release_fails = release_fails
        self.release_calls = 0

    def renew(self):
        if self.error is not None:
            self.renew_calls += 1
            raise self.error
        return super().renew()

    def release(self):
        self.release_calls += 1
        if self.error is not None and self.release_fails:
            raise self.error
        super().release()


def breaking(clock, hub, store, stopped, **kwargs):
    lock = BreakingLock("nightwatch", "a", TTL, clock, hub, **kwargs)
    return LeaderElector(lock, store, clock, identity="a", renew_interval=RENEW, renew_deadline=DEADLINE,
                         retry_interval=RETRY, on_stepped_down=stopped.append)


def test_a_config_error_on_renew_steps_down_releases_and_is_raised():
    import pytest

    from nightwatch.domain.errors import ConfigError

    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    stopped = []
    e = breaking(clock, hub, store, stopped)
    e.tick()
    assert e.is_leader
    e.lock.error = ConfigError("lock.redis.urls: Redis at redis://x refused our credentials: WRONGPASS")
    clock.advance(RENEW)
    with pytest.raises(ConfigError, match="refused our credentials"):
        e.tick()
    assert not e.is_leader and stopped == ["error"]  # the scheduler was told to stop (and cancel)
    assert e.lock.release_calls == 1
    e.lock.error = None
    assert e.lock.holder() is None  # released: a standby can take over at once


def test_any_other_renew_failure_counts_as_a_failed_renew_and_never_escapes_tick():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    stopped = []
    e = breaking(clock, hub, store, stopped, release_fails=True)
    e.tick()
    acquired = clock.monotonic()
    e.lock.error = RuntimeError("an exception the adapter did not translate")
    while e.is_leader:
        e.tick()  # never raises
        clock.advance(0.1)
    assert e.lock.renew_calls >= 2  # retried as a failed renew ...
    assert clock.monotonic() - acquired <= DEADLINE + 0.2  # ... until the deadline, before the lease ends
    assert stopped == ["deadline"] and e.lock.release_calls == 1  # a release that raised is only logged
