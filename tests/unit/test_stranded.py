"""A leader fetched by a worker that died before receiving it (``stranded.py``), on kombu's real Redis transport.

The message is fetched with kombu itself (``basic_get`` without ack puts it
in the transport's ``unacked`` hash and index, as a worker's fetch does) and
the "worker" never calls ``task_received``: its leader stays "published",
with the queue TTL as its lease.  The reaper must see it in kombu's index
and re-publish it within a lease, and the stranded copy must stay fenced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Ignore

from celery_persistent.stranded import UnackedKeys, stranded_header, stranded_leaders
from tests.unit import test_coalescing as coalescing
from tests.unit.conftest import PersistentEnv, decode

DEVICES = coalescing.DEVICES


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    coalescing.calls.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    # kombu's unacked keys of this test only (the unit Redis database is shared by every test).
    persistent_env.app.conf.broker_transport_options = {
        "unacked_key": f"cpunitu{persistent_env.uid}", "unacked_index_key": f"cpunitui{persistent_env.uid}"}
    return persistent_env


@pytest.fixture
def fetch(env: PersistentEnv) -> Iterator[Any]:
    """Fetch a message as a worker does, and never ack nor restore it (the worker was SIGKILLed)."""
    conn = env.app.connection_for_read()
    channel = conn.default_channel
    channel.qos.restore_at_shutdown = False

    def get(queue: str | None = None) -> bytes:
        message = channel.basic_get(queue or env.default_queue, no_ack=False)
        assert message is not None, "nothing to fetch"
        return str(message.delivery_tag).encode()

    yield get
    conn.release()


def unacked(env: PersistentEnv) -> UnackedKeys:
    return UnackedKeys.from_options(env.app.conf.broker_transport_options)


def age(env: PersistentEnv, tag: bytes, seconds: float) -> None:
    """Make kombu's fetch time of ``tag`` that many seconds old (its score is the fetcher's time.time())."""
    env.client.zadd(unacked(env).index, {tag: time.time() - seconds})


def test_a_leader_stranded_in_a_dead_fetch_is_published_again_within_a_lease(
        env: PersistentEnv, fetch: Any) -> None:
    r = env.submit(coalescing.serial(), {"path": "run", "x": 1})
    tag = fetch()
    assert env.messages() == []  # the only copy is in kombu's unacked hash now
    owner = env.registry.owner("serial-a")
    assert owner["state"] == "published"  # the queue TTL: 600 s without this scan

    age(env, tag, 1.0)  # younger than a lease (10 s): a live worker may be about to receive it
    assert env.reap() == 0 and env.registry.owner("serial-a")["token"] == owner["token"]

    age(env, tag, env.runtime.settings.lease_ttl + 1)
    assert env.reap() == 1
    again = env.registry.owner("serial-a")
    assert again["token"] != owner["token"] and again["state"] == "published"
    [republished] = env.messages()
    assert republished.id == r.id and republished.header["token"] == again["token"]  # type: ignore[index]
    # The fenced copy is dropped from kombu's index: its visibility timeout never brings it back.
    assert env.client.hget(unacked(env).hash, tag) is None
    assert env.client.zscore(unacked(env).index, tag) is None
    assert env.metric("recoveries") == 1

    assert coalescing.execute(env, republished) == {"x": 1, "id": "a"}
    assert coalescing.calls == [("run", 1)]
    assert env.result(r.id).get(timeout=5) == {"x": 1, "id": "a"}


def test_a_received_leader_and_foreign_messages_are_left_alone(env: PersistentEnv, fetch: Any) -> None:
    env.submit(coalescing.serial(), {"path": "run", "x": 2})
    ours = fetch()
    env.app.send_task("not.ours", args=[1], queue=env.default_queue)
    foreign = fetch()
    owner = env.registry.owner("serial-a")
    assert env.registry.reserve("serial-a", owner["token"])  # task_received ran: the worker's lease beat holds it
    for tag in (ours, foreign):
        age(env, tag, 3600)

    assert env.reap() == 0
    assert env.registry.owner("serial-a")["token"] == owner["token"]
    for tag in (ours, foreign):  # still kombu's to restore or ack
        assert env.client.hget(unacked(env).hash, tag) is not None
    # Judged once: a later beat does not read their (possibly large) payloads again.
    assert env.wiring.reaper.stranded is not None
    scanner = env.wiring.reaper.stranded.__self__  # type: ignore[attr-defined]
    assert scanner._settled == {ours, foreign}


def test_a_stranded_copy_that_comes_back_anyway_is_fenced(env: PersistentEnv, fetch: Any) -> None:
    env.submit(coalescing.serial(), {"path": "run", "x": 3})
    tag = fetch()
    raw = env.client.hget(unacked(env).hash, tag)
    age(env, tag, 3600)
    assert env.reap() == 1
    [republished] = env.messages()
    assert coalescing.execute(env, republished) == {"x": 3, "id": "a"}
    # kombu restored the old copy before the scan dropped it (another worker's restore_visible won the race).
    payload = json.loads(raw)[0]
    stale = decode(json.dumps(payload).encode())
    with pytest.raises(Ignore):
        coalescing.execute(env, stale)
    assert coalescing.calls == [("run", 3)]


@pytest.mark.parametrize("raw", [None, b"not json", b"[]", b'[{"headers": null}, "", ""]',
                                 b'[{"headers": {"persistent_request": {"group": "g", "token": "t", "hosted": 1}}}]',
                                 b'[{"headers": {"persistent_request": "text"}}]'])
def test_entries_that_are_not_a_leader_are_not_ours(raw: bytes | None) -> None:
    assert stranded_header(raw) is None


def test_unacked_keys_follow_the_transport_options() -> None:
    assert UnackedKeys.from_options({}) == UnackedKeys("unacked", "unacked_index")
    assert UnackedKeys.from_options({"global_keyprefix": "p:", "unacked_key": "u"}) == \
        UnackedKeys("p:u", "p:unacked_index")


@pytest.mark.parametrize(("url", "scanned"), [("redis://127.0.0.1:6379/3", True), ("rediss://h:1/0", True),
                                              ("redis+socket:///tmp/r.sock", True), ("sentinel://h:26379", False),
                                              ("amqp://guest@localhost//", False), ("memory://", False)])
def test_only_brokers_with_kombus_redis_index_are_scanned(env: PersistentEnv, url: str, scanned: bool) -> None:
    app = Celery("scan", broker=url, set_as_current=False)
    try:
        assert (stranded_leaders(app, env.registry, after=1.0) is not None) is scanned
    finally:
        app.close()


def test_a_broker_that_cannot_be_read_never_stops_the_reaper(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused() -> int:
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    monkeypatch.setattr(env.wiring.reaper, "stranded", refused)
    r = env.submit(coalescing.serial(), {"path": "run", "x": 4})
    env.client.delete(env.default_queue)  # lost: only the registry's own recovery can bring it back
    coalescing.expire_lease(env, "serial-a")
    assert env.reap() == 1 and [m.id for m in env.messages()] == [r.id]
