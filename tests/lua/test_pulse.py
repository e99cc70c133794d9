"""pulse.lua: when the registry resumed after a gap in every worker's beats (owners then get a grace)."""

from __future__ import annotations

import pytest
import redis
from redis.commands.core import Script

from tests.lua.conftest import lua_source
from tests.lua.support import server_ms

GAP = 1_500


@pytest.fixture(scope="module")
def pulse(db: redis.Redis) -> Script:
    return db.register_script(lua_source("pulse"))


def test_the_first_pulse_counts_as_a_resume(db, ks, pulse) -> None:
    before = server_ms(db)
    resumed = int(pulse(keys=[ks.pulse()], args=[GAP]))
    after = server_ms(db)
    assert before <= resumed <= after
    assert int(db.hget(ks.pulse(), "last")) == resumed


def test_regular_pulses_keep_the_resume_time(db, ks, pulse) -> None:
    first = int(pulse(keys=[ks.pulse()], args=[GAP]))
    assert int(pulse(keys=[ks.pulse()], args=[GAP])) == first
    assert int(db.hget(ks.pulse(), "resumed")) == first
    assert int(db.hget(ks.pulse(), "last")) >= first


def test_a_gap_longer_than_the_threshold_is_a_resume(db, ks, pulse) -> None:
    pulse(keys=[ks.pulse()], args=[GAP])
    db.hset(ks.pulse(), mapping={"last": server_ms(db) - GAP - 500, "resumed": 1})  # nobody beat for 2 s
    before = server_ms(db)
    resumed = int(pulse(keys=[ks.pulse()], args=[GAP]))
    assert resumed >= before
    assert int(db.hget(ks.pulse(), "resumed")) == resumed


def test_a_gap_shorter_than_the_threshold_is_not(db, ks, pulse) -> None:
    pulse(keys=[ks.pulse()], args=[GAP])
    db.hset(ks.pulse(), mapping={"last": server_ms(db) - GAP + 500, "resumed": 7})
    assert int(pulse(keys=[ks.pulse()], args=[GAP])) == 7
