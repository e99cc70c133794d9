"""LeaseKeeper (``celery_persistent/leases.py``) with a real Registry on its own KeySpace."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from celery_persistent.keys import KeySpace
from celery_persistent.leases import LeaseKeeper
from celery_persistent.protocol import SubmitOutcome
from celery_persistent.records import RequestRecord
from celery_persistent.registry import Registry
from tests.conftest import LEASE_TTL


@pytest.fixture
def keeper(registry: Registry) -> Iterator[LeaseKeeper]:
    # A long interval: the background thread beats once when started, then waits.
    k = LeaseKeeper(registry, interval=3600)
    yield k
    k.stop()


def lead(registry: Registry, group: str) -> str:
    rec = RequestRecord(id=uuid.uuid4().hex, key="k", task="persistent.resolve", args=[{}, {}], kwargs={})
    sub = registry.submit(group, rec)
    assert sub.outcome is SubmitOutcome.LEADER
    assert registry.claim(group, sub.token)
    return sub.token


def deadline(client: redis.Redis, keys: KeySpace, group: str) -> float | None:
    return client.zscore(keys.leases(), group)


def server_ms(client: redis.Redis) -> int:
    """The Redis server's clock, which every lease deadline is measured on."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def backdate(client: redis.Redis, keys: KeySpace, group: str, ms: int = 1_000) -> int:
    past = server_ms(client) - ms
    assert client.zadd(keys.leases(), {group: past}, xx=True, ch=True) == 1
    return past


def quiet(keeper: LeaseKeeper) -> None:
    """Stop the background thread so that only the test's own beats run."""
    keeper.stop()
    assert keeper._thread is None


def test_hold_starts_the_thread(keeper: LeaseKeeper, registry: Registry) -> None:
    token = lead(registry, "g-a")
    keeper.hold("g-a", token)
    thread = keeper._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    keeper.hold("g-b", "t-b")
    assert keeper._thread is thread  # one thread per process
    keeper.stop()
    assert not thread.is_alive()


def test_held_lease_moves_forward_each_beat(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = lead(registry, "g-a")
    keeper.hold("g-a", token)
    quiet(keeper)

    for _ in range(3):
        past = backdate(client, keys, "g-a")
        before = server_ms(client)
        keeper.beat()
        after = server_ms(client)
        moved = deadline(client, keys, "g-a")
        assert moved is not None and moved > past
        assert before + LEASE_TTL * 1000 <= moved <= after + LEASE_TTL * 1000
    assert registry.expired() == []


def test_dropped_lease_is_no_longer_renewed(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    kept, dropped = lead(registry, "g-kept"), lead(registry, "g-dropped")
    keeper.hold("g-kept", kept)
    keeper.hold("g-dropped", dropped)
    quiet(keeper)

    keeper.drop(dropped)
    keeper.drop("never-held")  # harmless
    past_kept = backdate(client, keys, "g-kept")
    past_dropped = backdate(client, keys, "g-dropped")
    keeper.beat()

    assert deadline(client, keys, "g-dropped") == past_dropped
    assert deadline(client, keys, "g-kept") > past_kept
    assert [group for group, _ in registry.expired()] == ["g-dropped"]


def test_token_for(keeper: LeaseKeeper) -> None:
    keeper.hold("g-a", "t-a")
    keeper.hold("g-b", "t-b")
    quiet(keeper)
    assert keeper.token_for("g-a") == "t-a"
    assert keeper.token_for("g-b") == "t-b"
    assert keeper.token_for("g-none") is None
    keeper.drop("t-a")
    assert keeper.token_for("g-a") is None


def test_sources_and_ticks_run_each_beat(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = lead(registry, "g-src")
    calls: list[str] = []

    def source() -> list[tuple[str, str]]:
        calls.append("source")
        return [("g-src", token)]

    keeper.add_source(source)
    keeper.add_tick(lambda: calls.append("tick-1"))
    keeper.add_tick(lambda: calls.append("tick-2"))

    for n in range(1, 3):
        past = backdate(client, keys, "g-src")
        keeper.beat()
        assert deadline(client, keys, "g-src") > past  # a source's lease is renewed too
        assert calls == ["source", "tick-1", "tick-2"] * n


def test_a_failing_tick_does_not_stop_the_others(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace, caplog
) -> None:
    token = lead(registry, "g-a")
    keeper.hold("g-a", token)
    quiet(keeper)
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("tick failed")

    keeper.add_tick(boom)
    keeper.add_tick(lambda: ran.append(1))

    with caplog.at_level(logging.ERROR, logger="celery_persistent.leases"):
        past = backdate(client, keys, "g-a")
        keeper.beat()
        keeper.beat()

    assert ran == [1, 1]
    assert deadline(client, keys, "g-a") > past
    assert any("tick" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_failing_source_does_not_stop_renewal_or_ticks(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = lead(registry, "g-a")
    keeper.hold("g-a", token)
    quiet(keeper)
    ran: list[int] = []

    def broken() -> list[tuple[str, str]]:
        raise RuntimeError("source failed")

    keeper.add_source(broken)
    keeper.add_tick(lambda: ran.append(1))
    past = backdate(client, keys, "g-a")
    keeper.beat()
    assert deadline(client, keys, "g-a") > past
    assert ran == [1]


def test_a_lost_lease_is_reported_without_raising(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace, caplog
) -> None:
    token = lead(registry, "g-lost")
    keeper.hold("g-lost", token)
    quiet(keeper)
    client.hset(keys.owner("g-lost"), "token", "someone-else")
    past = backdate(client, keys, "g-lost")
    ticked: list[int] = []
    keeper.add_tick(lambda: ticked.append(1))

    with caplog.at_level(logging.WARNING, logger="celery_persistent.leases"):
        keeper.beat()

    assert deadline(client, keys, "g-lost") == past  # not renewed by the stale holder
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("g-lost" in m and "lost" in m for m in warnings)
    assert ticked == [1]


def test_start_after_fork_forgets_the_parents_duties(
    keeper: LeaseKeeper, registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = lead(registry, "g-parent")
    keeper.hold("g-parent", token)
    ticks: list[int] = []
    keeper.add_tick(lambda: ticks.append(1))
    keeper.add_source(lambda: [("g-parent", token)])
    quiet(keeper)
    ticks.clear()

    keeper._pid = os.getpid() + 1_000_000  # as if this were a forked child
    keeper.start()

    assert keeper._pid == os.getpid()
    assert keeper.token_for("g-parent") is None
    assert keeper._sources == [] and keeper._ticks == []
    thread = keeper._thread
    assert thread is not None and thread.is_alive()  # the child has its own thread
    quiet(keeper)
    past = backdate(client, keys, "g-parent")
    keeper.beat()
    assert ticks == []
    assert deadline(client, keys, "g-parent") == past  # the child renews nothing of the parent's


def test_start_in_the_same_process_keeps_duties(keeper: LeaseKeeper) -> None:
    keeper.hold("g-a", "t-a")
    keeper.add_tick(lambda: None)
    quiet(keeper)
    keeper.start()
    assert keeper.token_for("g-a") == "t-a"
    assert len(keeper._ticks) == 1
