"""withdraw.lua: take back an accepted hosted request before it runs (failed publish, refusal, revoke, purge)."""

from __future__ import annotations

import pytest
import redis
from redis.commands.core import Script

from celery_persistent.keys import KeySpace
from tests.lua.conftest import lua_source
from tests.lua.support import record, waiter

GROUP = "g"


@pytest.fixture(scope="module")
def withdraw(db: redis.Redis) -> Script:
    return db.register_script(lua_source("withdraw"))


def keys(ks: KeySpace, key: str) -> list[str]:
    return [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, key), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP)]


def accept(db: redis.Redis, ks: KeySpace, task_id: str, key: str, seq: int) -> None:
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": "host-tok"})
    db.zadd(ks.hosted_ids(GROUP), {task_id: seq})
    db.hset(ks.hosted_records(GROUP), task_id, record(task_id, key, {"device": "d"}, {"path": "p"}))
    db.hset(ks.inflight(GROUP), key, task_id)


def test_an_accepted_request_is_withdrawn_with_its_waiters(db, ks, withdraw) -> None:
    accept(db, ks, "t1", "k1", 1)
    accept(db, ks, "t2", "k2", 2)
    db.rpush(ks.waiters(GROUP, "k1"), waiter("w1", "k1"), waiter("w2", "k1"))

    reply = withdraw(keys=keys(ks, "k1"), args=["t1", "k1"])

    assert reply == ["withdrawn", waiter("w1", "k1"), waiter("w2", "k1")]
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["t2"]
    assert db.hkeys(ks.hosted_records(GROUP)) == ["t2"]
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "t2"}
    assert db.exists(ks.waiters(GROUP, "k1")) == 0


def test_a_request_that_is_not_the_inflight_one_keeps_the_waiters(db, ks, withdraw) -> None:
    accept(db, ks, "t1", "k1", 1)
    db.hset(ks.inflight(GROUP), "k1", "t-other")
    db.rpush(ks.waiters(GROUP, "k1"), waiter("w1", "k1"))

    assert withdraw(keys=keys(ks, "k1"), args=["t1", "k1"]) == ["withdrawn"]
    assert db.lrange(ks.waiters(GROUP, "k1"), 0, -1) == [waiter("w1", "k1")]
    assert db.hget(ks.inflight(GROUP), "k1") == "t-other"


def test_a_running_request_is_not_withdrawn(db, ks, withdraw, state) -> None:
    accept(db, ks, "t1", "k1", 1)
    db.hset(ks.owner(GROUP), "running", "t1")
    before = state()

    assert withdraw(keys=keys(ks, "k1"), args=["t1", "k1"]) == ["running"]
    assert state() == before


def test_a_request_not_accepted_is_gone(db, ks, withdraw, state) -> None:
    accept(db, ks, "t1", "k1", 1)
    before = state()

    assert withdraw(keys=keys(ks, "k9"), args=["t-unknown", "k9"]) == ["gone"]
    assert state() == before


def test_withdrawing_twice_is_gone_the_second_time(db, ks, withdraw) -> None:
    accept(db, ks, "t1", "k1", 1)
    assert withdraw(keys=keys(ks, "k1"), args=["t1", "k1"]) == ["withdrawn"]
    assert withdraw(keys=keys(ks, "k1"), args=["t1", "k1"]) == ["gone"]
