"""pulse.lua: when the registry resumed after a gap in every worker's beats (owners then get a grace)."""

from __future__ import annotations

import pytest
import redis
from redis.commands.core import Script

from tests.lua.conftest import lua_source
from tests.lua.support import server_ms

GAP = 1_500
LEASE = 3_000


@pytest.fixture(scope="module")
def pulse(db: redis.Redis) -> Script:
    return db.register_script(lua_source("pulse"))


def test_the_first_pulse_counts_as_a_resume(db, ks, pulse) -> None:
    before = server_ms(db)
    resumed = int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE]))
    after = server_ms(db)
    assert before <= resumed <= after
    assert int(db.hget(ks.pulse(), "last")) == resumed


def test_regular_pulses_keep_the_resume_time(db, ks, pulse) -> None:
    first = int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE]))
    assert int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])) == first
    assert int(db.hget(ks.pulse(), "resumed")) == first
    assert int(db.hget(ks.pulse(), "last")) >= first


def test_a_gap_longer_than_the_threshold_is_a_resume(db, ks, pulse) -> None:
    pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])
    db.hset(ks.pulse(), mapping={"last": server_ms(db) - GAP - 500, "resumed": 1})  # nobody beat for 2 s
    before = server_ms(db)
    resumed = int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE]))
    assert resumed >= before
    assert int(db.hget(ks.pulse(), "resumed")) == resumed


def test_a_gap_shorter_than_the_threshold_is_not(db, ks, pulse) -> None:
    pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])
    db.hset(ks.pulse(), mapping={"last": server_ms(db) - GAP + 500, "resumed": 7})
    assert int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])) == 7


def test_a_resume_cuts_every_lease_longer_than_one_lease(db, ks, pulse) -> None:
    """A published leader's message may have been lost in the gap: its queue-TTL lease becomes one lease."""
    now = server_ms(db)
    db.zadd(ks.leases(), {"published": now + 600_000, "running": now + 1_000, "hosted": now + 2_500})
    db.hset(ks.pulse(), mapping={"last": now - GAP - 500, "resumed": 1})

    resumed = int(pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE]))

    leases = dict(db.zrange(ks.leases(), 0, -1, withscores=True))
    assert leases["published"] == resumed + LEASE
    assert (leases["running"], leases["hosted"]) == (now + 1_000, now + 2_500)


def test_without_a_gap_long_leases_stay(db, ks, pulse) -> None:
    pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])
    deadline = server_ms(db) + 600_000
    db.zadd(ks.leases(), {"published": deadline})

    pulse(keys=[ks.pulse(), ks.leases()], args=[GAP, LEASE])

    assert db.zscore(ks.leases(), "published") == deadline
