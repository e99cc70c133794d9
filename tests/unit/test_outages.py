"""What a short Redis outage or a stalled host does at each step, in process.

Each test makes one registry step fail as redis-py does when Redis is
unreachable (``ConnectionError``), or takes a group from a host behind its
back, and checks that the request still gets exactly one outcome and runs
at most once: nothing is stored for a caller the reaper will answer, a
message is never dropped while its request is still accepted, and a
request that could not be sent on is left to the reaper, not to a queue TTL.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.exceptions import Ignore

from celery_persistent import registry as registry_module
from celery_persistent.protocol import Placement, PlaceStatus
from tests.unit import test_coalescing as coalescing
from tests.unit import test_hosting as hosting
from tests.unit.conftest import FakeTask, PersistentEnv, trace

DEVICES = {**coalescing.DEVICES, **hosting.DEVICES}


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    for shared in (coalescing.calls, coalescing.during, hosting.calls, hosting.during):
        shared.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> PersistentEnv:
    # Retries through an outage last one lease; a short budget keeps the tests fast.
    monkeypatch.setattr(persistent_env.registry, "steady",
                        lambda call: registry_module.until_reachable(call, 0.3))
    return persistent_env


def unreachable(*_args: Any, **_kw: Any) -> Any:
    raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_a_leader_that_cannot_claim_stores_nothing_and_the_reaper_runs_it_once(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    r = env.submit(coalescing.serial(), {"path": "run", "x": 1})
    sent = env.message(None, r.id)
    task = FakeTask(r.id)
    with monkeypatch.context() as outage:
        outage.setattr(env.registry, "claim", unreachable)
        with pytest.raises(Ignore):  # no outcome of its own: the tracer stores nothing
            coalescing.run(env, sent, task)
    assert not env.result(r.id).ready() and coalescing.calls == []
    group = sent.header["group"]  # type: ignore[index]
    assert env.registry.owner(group)["state"] != "running"

    coalescing.expire_lease(env, group)  # the worker no longer holds it: its lease lapses
    assert env.reap() == 1
    again = [m for m in env.messages() if m.id == r.id][-1]
    assert again.header["token"] != sent.header["token"]  # type: ignore[index]
    assert coalescing.execute(env, again) == {"x": 1, "id": "a"}
    assert coalescing.calls == [("run", 1)]
    assert env.result(r.id).get(timeout=5) == {"x": 1, "id": "a"}


def test_a_leader_whose_outcome_cannot_be_recorded_leaves_its_answer_to_the_reaper(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    r = env.submit(coalescing.serial(), {"path": "run", "x": 2})
    sent = env.message(None, r.id)
    with monkeypatch.context() as outage:
        outage.setattr(env.registry, "finish", unreachable)
        with pytest.raises(Ignore):
            coalescing.run(env, sent, FakeTask(r.id))
    assert not env.result(r.id).ready()  # not stored by the leader: the reaper gives the one answer

    coalescing.expire_lease(env, sent.header["group"])  # type: ignore[index]
    assert env.reap() == 1
    error = coalescing.failure(env, r.id)
    assert type(error).__name__ == "LeaderDied"
    assert coalescing.calls == [("run", 2)]


def test_a_next_request_that_could_not_be_published_is_published_by_the_reaper(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    first = env.submit(coalescing.serial(), {"path": "run", "x": 1})
    second = env.submit(coalescing.serial(), {"path": "run", "x": 2})  # queued behind the first
    sent = env.message(None, first.id)
    task = FakeTask(first.id)
    with monkeypatch.context() as broker_down:
        broker_down.setattr(env.wiring.dispatcher, "publish", unreachable)
        outcome = coalescing.run(env, sent, task)
    trace(env, task, outcome)
    assert env.result(first.id).get(timeout=5) == {"x": 1, "id": "a"}
    [member] = env.deliveries()  # not settled: it holds the next request, which never left
    assert [m.id for m in env.messages()] == [first.id]

    env.client.zadd(env.keys.deliveries(), {member: 1}, xx=True)  # its deadline passed
    assert env.reap() == 1
    assert env.deliveries() == []
    nxt = env.message(None, second.id)
    assert coalescing.execute(env, nxt) == {"x": 2, "id": "a"}
    assert coalescing.calls == [("run", 1), ("run", 2)]


def test_a_send_whose_registration_reply_was_lost_is_registered_once(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """submit.lua ran, then the connection dropped: the send's repeat finds it and publishes it once."""
    real = env.registry.submit
    lost: list[str] = []

    def applied_then_lost(group: str, record: Any, flags: str = "", host_group: str | None = None) -> Any:
        real(group, record, flags, host_group=host_group)
        if not lost:
            lost.append(record.id)
            raise redis.ConnectionError("Connection closed by server.")
        return real(group, record, flags, host_group=host_group)

    monkeypatch.setattr(env.registry, "submit", applied_then_lost)
    r = env.submit(coalescing.serial(), {"path": "run", "x": 3})
    monkeypatch.setattr(env.registry, "submit", real)

    assert lost == [r.id]
    [sent] = env.messages()
    assert sent.id == r.id
    group = sent.header["group"]  # type: ignore[index]
    assert env.registry.owner(group)["token"] == sent.header["token"]  # type: ignore[index]
    assert env.client.llen(env.keys.pending(group)) == 0  # not queued behind itself
    assert coalescing.execute(env, sent) == {"x": 3, "id": "a"}


def test_a_host_that_lost_its_group_hands_a_message_back_to_the_queue(env: PersistentEnv) -> None:
    """A host stalled past its lease, its group went to b, and its consumer still took a message."""
    a, consumer_a = hosting.make_host(env, "a")
    b, _ = hosting.make_host(env, "b")
    msg1 = hosting.counter()
    h = hosting.adopt(env, a, msg1)
    owner = env.registry.owner(h.group)
    where = Placement.from_owner(h.group, b.hostname, owner)
    assert env.registry.place(where, expect=owner["token"]).status is PlaceStatus.PLACED
    b.tick()
    assert b.table.lookup(h.group) is not None
    r = env.submit(msg1, {"path": "add", "by": 1})
    queue = env.queue(h.group)
    msg = env.message(queue, r.id)
    env.client.delete(queue)  # a's consumer took it, and acked it (persistent workers ack early)

    task = FakeTask(r.id, publish=env.persistent.resolve.publish)
    task.request.args = msg.args
    task.request.delivery_info = {"routing_key": queue}
    with pytest.raises(Ignore):
        a.run(task, msg.header, msg.msg2, msg.opts)

    assert a.table.lookup(h.group) is None and queue in consumer_a.cancelled
    back = env.message(queue, r.id)  # the same request, for its owner
    assert back.header == msg.header and back.args == msg.args
    assert hosting.deliver(env, b, h.group, r.id)["count"] == 1
    assert env.result(r.id).get(timeout=5)["count"] == 1
    assert hosting.calls == [("add", 1)]


def test_a_checkpoint_that_cannot_be_stored_leaves_the_request_to_the_next_owner(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = hosting.make_host(env, "a")
    msg1 = hosting.counter()
    h = hosting.adopt(env, a, msg1)
    r = env.submit(msg1, {"path": "add", "by": 5})
    with monkeypatch.context() as outage:
        # The checkpoint is written by finish_hosted, in one step with the answers' delivery.
        outage.setattr(env.registry, "finish_hosted", unreachable)
        with pytest.raises(Ignore):  # no answer of its own: the caller gets one answer, later
            hosting.run(env, a, h.group, FakeTask(r.id))
    assert a.table.lookup(h.group) is None  # let go: its lease lapses
    assert not env.result(r.id).ready()
    assert env.registry.unfinished(h.group) == 1  # still accepted

    b, _ = hosting.make_host(env, "b")
    b.tick()  # a live persistent worker (its heartbeat)
    coalescing.expire_lease(env, h.group)
    assert env.reap() == 1  # placed again, on a live worker other than a
    b.tick()  # adopts it and runs the accepted request from the checkpoint
    assert b.table.lookup(h.group) is not None
    assert env.result(r.id).get(timeout=5)["count"] == 5
    assert hosting.calls == [("add", 5), ("add", 5)]  # ran twice, answered and applied once
