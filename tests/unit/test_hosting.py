"""The persistent worker's parts (``celery_persistent/hosting/``), in process.

A real Redis and a real Celery app; the worker's consumer is a fake that
records which group queues it consumes and cancels, and, where the order of
events matters, an event loop whose ``call_soon`` queue the test runs itself.
Requests are sent the ordinary way (``apply_async``) and read back from the
group queue's Redis list, then handed to ``Host.run`` as the worker would,
and to what Celery's tracer does after it (``trace``: the request's own
answer, then ``after_return``, which settles the execution's delivery).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_persistent import Device, faults, inbox
from celery_persistent.hosting import Host, Hosted, HostedTable, Msg1Cache, build_host
from celery_persistent.hosting.lifecycle import TOUCH_MAX
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.records import RequestRecord
from celery_persistent.registry import delivery_member
from celery_persistent.store import REF_KEY
from celery_persistent.testing import wait_until
from tests.unit.conftest import FakeConsumer, FakeHub, FakeTask, PersistentEnv, UnreadBell, trace

calls: list[tuple[str, Any]] = []
"""What the devices did in the current test, in order (this process runs them)."""

during: list[Callable[[], None]] = []
"""Probes ``Counter.add`` runs while it executes (to change the world mid-execution)."""


class Counter(Device):
    """One group per counter; ``add`` rolls the state forward."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "ctr-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        calls.append(("add", msg2["by"]))
        for probe in during:
            probe()
        return {**msg1, "count": msg1["count"] + msg2["by"]}

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        calls.append(("peek", id(msg1)))
        return {"count": msg1["count"], "n": msg2.get("n")}

    def fail(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        calls.append(("fail", msg1["count"]))
        raise ValueError("failed on purpose")

    def on_idle(self, msg1: Any, opts: Any) -> None:
        calls.append(("idle", dict(msg1)))


class Mover(Device):
    """Its grouper reads the state: a rolling group changes its name as it rolls."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return f"mv-{msg1['id']}-{msg1['gen']}"

    def bump(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "gen": msg1["gen"] + 1}


DEVICES = {"counter": Counter, "mover": Mover}


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()
    during.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def make_host(env: PersistentEnv, name: str = "a", *, hub: bool = False, bind: bool = True,
              cache_bytes: int = 1 << 20, default_timeout: float = 30.0) -> tuple[Host, FakeConsumer]:
    """A Host as ``--persistent`` builds it, bound to a fake consumer (and, with ``hub``, a fake loop)."""
    w = env.wiring
    host = build_host(env.app, env.worker_hostname(name), env.runtime, w.planner, w.placer, env.persistent.devices,
                      w.answer, w.dispatcher, cache_bytes=cache_bytes, default_timeout=default_timeout)
    host.bell = UnreadBell(host.naps, host.ring)
    consumer = FakeConsumer(env.app, FakeHub() if hub else None)
    if bind:
        host.bind(consumer)
    return host, consumer


def counter(uid: str = "a", count: int = 0) -> dict[str, Any]:
    return {"device": "counter", "id": uid, "count": count}


def place(env: PersistentEnv, host: Host, msg1: dict[str, Any], *, static: bool = False, timeout: float = 30.0,
          errors: str = "ignore") -> str:
    """Place the group of ``msg1`` on ``host`` (``registry.place``, as start_worker does); return its name."""
    group = env.persistent.group(msg1)
    assert group is not None
    ref = env.store.put(msg1)
    where = Placement(group, host.hostname, env.queue(group), ref.storage_id, static, timeout, msg1["device"],
                      ref.size, errors)
    placed = env.registry.place(where)
    assert placed.status is PlaceStatus.PLACED, placed
    return group


def adopt(env: PersistentEnv, host: Host, msg1: dict[str, Any], **kw: Any) -> Hosted:
    """Place a group on ``host`` and let one beat adopt it."""
    group = place(env, host, msg1, **kw)
    host.tick()
    h = host.table.lookup(group)
    assert h is not None, f"{group} was not adopted"
    return h


def run(env: PersistentEnv, host: Host, group: str, task: FakeTask) -> Any:
    """What the task does with the queued message of ``task`` in ``group``'s queue: ``Host.run``."""
    queue = env.queue(group)
    msg = env.message(queue, task.request.id)
    assert msg.header is not None and msg.header["hosted"] is True
    # What the worker's request carries, for a host that must hand the message back.
    task.request.args, task.request.delivery_info = msg.args, {"routing_key": queue}
    if not hasattr(task, "publish"):
        task.publish = env.persistent.resolve.publish
    return host.run(task, msg.header, msg.msg2, msg.opts)


def deliver(env: PersistentEnv, host: Host, group: str, task_id: str) -> Any:
    """What the worker does with the queued message ``task_id`` of ``group``: ``run``, then the tracer."""
    task = FakeTask(task_id)
    try:
        outcome = run(env, host, group, task)
    except Ignore:
        raise  # the tracer stores nothing and calls no after_return
    except Exception as exc:
        trace(env, task, exc)
        raise
    trace(env, task, outcome)
    return outcome


class Died(BaseException):
    """A process killed at a crash point: nothing after it runs."""


def die_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Arm the crash point ``name`` in this process, as ``CELERY_PERSISTENT_CRASH`` would (without exiting)."""
    def point(reached: str) -> None:
        if reached == name:
            raise Died(reached)

    monkeypatch.setattr(faults, "point", point)


def binding_exists(env: PersistentEnv, queue: str) -> bool:
    return bool(env.client.exists(f"_kombu.binding.{queue}"))


# -- adoption ------------------------------------------------------------------------------


def test_adopting_a_placed_group_runs_its_accepted_requests_first_then_consumes(env: PersistentEnv) -> None:
    host, consumer = make_host(env, hub=True)
    msg1 = counter()
    group = place(env, host, msg1)
    queue = env.queue(group)
    # Accepted while the group is placed but not yet adopted: they go to its queue.
    r1 = env.submit(msg1, {"path": "add", "by": 1})
    r2 = env.submit(msg1, {"path": "add", "by": 10})
    assert [m.id for m in env.messages(queue)] == [r1.id, r2.id]
    assert env.registry.unfinished(group) == 2

    host.tick()
    h = host.table.lookup(group)
    assert h is not None and h.token == env.registry.owner(group)["token"]
    # Nothing touches the consumer or runs from the lease thread: it waits for the event loop.
    assert consumer.task_consumer.names() == [] and calls == []

    assert consumer.hub is not None and consumer.hub.run() == 1
    assert calls == [("add", 1), ("add", 10)]
    assert consumer.task_consumer.names() == [queue]
    assert consumer.task_consumer.consume_calls == 1
    assert env.result(r1.id).get(timeout=5)["count"] == 1
    assert env.result(r2.id).get(timeout=5)["count"] == 11
    assert env.registry.unfinished(group) == 0
    assert env.deliveries() == []  # no tracer runs a stored record: the runner answered it, and settled
    owner = env.registry.owner(group)
    assert owner["state"] == "active" and owner["executions"] == "2"
    # Their queue messages then find them done, and are skipped.
    for r in (r1, r2):
        with pytest.raises(Ignore):
            deliver(env, host, group, r.id)
    assert len(calls) == 2


def test_a_group_placed_elsewhere_is_not_adopted(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    other, _ = make_host(env, "b")
    group = place(env, other, counter())
    env.registry.post(host.hostname, inbox.place(group))  # a stale placement command
    host.tick()
    assert not host.table.knows(group)
    assert consumer.task_consumer.names() == []
    assert env.registry.owner(group)["host"] == other.hostname


def test_bind_consumes_every_hosted_queue(env: PersistentEnv) -> None:
    host, _ = make_host(env, bind=False)
    a = adopt(env, host, counter("a"))
    b = adopt(env, host, counter("b"))
    consumer = FakeConsumer(env.app)
    host.bind(consumer)
    assert consumer.task_consumer.names() == [a.queue, b.queue]
    # Added only: the consumer's own loop starts consuming them (consuming before Celery set its
    # message handler fails, which is what a consumer restart after a broker restart ran into).
    assert consumer.task_consumer.consume_calls == 0


def test_unknown_inbox_commands_are_ignored(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    group = place(env, host, counter())
    inbox_key = env.keys.inbox(host.hostname)
    # The placement command is already there; garbage around it must not stop the beat.
    env.client.lpush(inbox_key, "explode:now", "no-colon-at-all")
    env.client.rpush(inbox_key, "", "ctr-a")
    host.tick()
    assert [h.group for h in host.table.all()] == [group]
    assert consumer.task_consumer.names() == [env.queue(group)]
    assert env.client.llen(inbox_key) == 0


# -- the lease beat ----------------------------------------------------------------------------


def test_tick_renews_leases_and_heartbeats(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    h = adopt(env, host, counter())
    leases, workers = env.keys.leases(), env.keys.workers()
    # Both deadlines long past (score 1: in the past on any clock).
    env.client.zadd(leases, {h.group: 1})
    env.client.zadd(workers, {host.hostname: 1})
    assert dict(env.registry.expired()) == {h.group: h.token}
    assert dict(env.registry.live_workers()) == {}
    host.tick()
    assert env.client.zscore(leases, h.group) > 1 and env.client.zscore(workers, host.hostname) > 1
    assert env.registry.expired() == []
    assert env.reap() == 0
    assert dict(env.registry.live_workers()) == {host.hostname: 1}
    [info] = env.persistent.workers()
    assert info["hostname"] == host.hostname and info["groups"] == 1 and info["draining"] == 0
    assert host.table.lookup(h.group) is h


def test_stored_msg1s_are_renewed_every_quarter_of_their_ttl_not_every_minute(env: PersistentEnv) -> None:
    """Renewing 10,000 Msg1s every 60 beats put a burst of 10,000 PEXPIREs in every minute of an idle
    worker; their TTL is 7 days, so a quarter of it (at most an hour) is enough."""
    host, _ = make_host(env)
    h = adopt(env, host, counter("ttl"))
    key = env.keys.store(h.ref)
    env.client.pexpire(key, 100_000)
    for _ in range(70):  # more beats than the old 60-beat period
        host.tick()
    assert env.client.pttl(key) <= 100_000, "not renewed on a fixed count of beats"
    host._touched_at -= min(env.store.ttl / 4, TOUCH_MAX)
    host.tick()
    assert env.client.pttl(key) > env.store.ttl * 1000 - 60_000, "renewed once a quarter of the TTL passed"


def test_a_lost_lease_forgets_the_group_but_keeps_its_queue(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    msg1 = counter()
    h = adopt(env, host, msg1)
    waiting = env.submit(msg1, {"path": "add", "by": 1})
    assert env.client.llen(h.queue) == 1
    # Another owner took the group (this worker stalled past its lease).
    env.client.hset(env.keys.owner(h.group), "token", "someone-else")
    host.tick()
    assert not host.table.knows(h.group)
    assert consumer.cancelled == [h.queue]
    assert consumer.task_consumer.names() == []
    # The queue and the registration are the new owner's: untouched.
    assert env.client.llen(h.queue) == 1 and binding_exists(env, h.queue)
    assert env.registry.owner(h.group)["token"] == "someone-else"
    assert env.registry.unfinished(h.group) == 1
    with pytest.raises(Ignore):
        deliver(env, host, h.group, waiting.id)
    assert calls == []
    # Still accepted: the message it took goes back to the queue, for the group's owner (the
    # fake consumer left the original in the list too; a real one has taken and acked it).
    assert [m.id for m in env.messages(h.queue)] == [waiting.id, waiting.id]


# -- release -----------------------------------------------------------------------------------


def test_idle_release_calls_on_idle_with_the_last_msg1_and_unhosts(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    msg1 = counter(count=4)
    h = adopt(env, host, msg1, timeout=5)
    r = env.submit(msg1, {"path": "add", "by": 3})
    assert deliver(env, host, h.group, r.id)["count"] == 7
    host.tick()
    assert host.table.lookup(h.group) is h, "released before its timeout"
    assert binding_exists(env, h.queue)

    h.last -= 6  # idle for longer than its 5 s timeout
    host.tick()
    assert calls[-1] == ("idle", {**msg1, "count": 7})
    assert not host.table.knows(h.group)
    assert env.registry.owner(h.group) == {}
    assert env.persistent.groups() == []
    assert env.client.zscore(env.keys.leases(), h.group) is None
    assert consumer.cancelled == [h.queue]
    assert not binding_exists(env, h.queue) and env.client.llen(h.queue) == 0
    # The group ended: a new request is an ordinary leader on the default queue.
    late = env.submit(msg1, {"path": "add", "by": 1})
    assert env.message(None, late.id).header["token"] == env.registry.owner(h.group)["token"]


def test_idle_release_calls_on_idle_for_an_evicted_msg1(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=2)
    h = adopt(env, host, msg1, timeout=5)
    assert h.msg1 is None  # adopted, never ran: only its checkpoint is known
    h.last -= 6
    host.tick()
    assert not host.table.knows(h.group)
    assert calls == [("idle", msg1)]


def test_a_request_racing_the_idle_timeout_keeps_the_group_hosted(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    msg1 = counter()
    h = adopt(env, host, msg1, timeout=5)
    raced = env.submit(msg1, {"path": "add", "by": 2})  # accepted, not run yet
    h.last -= 6
    host.tick()
    # unhost.lua answered "busy": keep hosting, and the idle clock starts again.
    assert host.table.lookup(h.group) is h
    assert not h.releasing and time.monotonic() - h.last < 1
    assert env.registry.owner(h.group)["host"] == host.hostname
    assert consumer.cancelled == [] and binding_exists(env, h.queue)
    assert deliver(env, host, h.group, raced.id)["count"] == 2
    h.last -= 6
    host.tick()
    assert not host.table.knows(h.group)
    assert env.registry.owner(h.group) == {}


def test_stop_command_releases_after_accepted_requests_and_on_idle_sees_the_last_state(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    msg1 = counter()
    h = adopt(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 5})
    assert deliver(env, host, h.group, r.id)["count"] == 5
    accepted = env.submit(msg1, {"path": "add", "by": 1})
    assert env.persistent.stop_worker(h.group) is True
    host.tick()
    # Stopping, but a request is accepted: it runs first.
    assert h.stopping and host.table.lookup(h.group) is h
    assert deliver(env, host, h.group, accepted.id)["count"] == 6
    host.tick()
    assert not host.table.knows(h.group)
    assert env.registry.owner(h.group) == {}
    assert consumer.cancelled == [h.queue]
    assert [c for c in calls if c[0] == "idle"] == [("idle", {**msg1, "count": 6})]
    assert env.persistent.stop_worker(h.group) is False


# -- hand-off ----------------------------------------------------------------------------------


def test_drain_hands_every_group_to_another_live_worker(env: PersistentEnv) -> None:
    a, consumer = make_host(env, "a")
    b, b_consumer = make_host(env, "b")
    ha = adopt(env, a, counter("x"))
    hb = adopt(env, a, counter("y"))
    a.tick()
    b.tick()  # b reports in
    assert dict(env.registry.live_workers()) == {a.hostname: 2, b.hostname: 0}
    # One accepted request of x is left when the drain comes: it goes along.
    r = env.submit(counter("x"), {"path": "add", "by": 3})

    assert env.persistent.drain(a.hostname) is True
    a.tick()
    assert a.draining and len(a.table) == 0
    assert sorted(consumer.cancelled) == sorted([ha.queue, hb.queue])
    assert a.hostname not in dict(env.registry.live_workers())
    for h in (ha, hb):
        owner = env.registry.owner(h.group)
        assert owner["host"] == b.hostname and owner["token"] != h.token
    # A handed-off queue is not deleted: the accepted request's message is still there.
    assert env.client.llen(ha.queue) == 1 and binding_exists(env, ha.queue)

    b.tick()
    assert sorted(h.group for h in b.table.all()) == sorted([ha.group, hb.group])
    assert sorted(b_consumer.task_consumer.names()) == sorted([ha.queue, hb.queue])
    assert env.result(r.id).get(timeout=5)["count"] == 3  # run by b at adoption
    # A group placed on a draining worker after it said so is passed on.
    late = place(env, a, counter("z"))
    a.tick()
    assert not a.table.knows(late)
    assert env.registry.owner(late)["host"] == b.hostname


def test_shutdown_without_another_worker_dissolves_a_static_group_and_hands_requests_on(env: PersistentEnv) -> None:
    """A rolling group is parked instead (tests/unit/test_checkpoints.py)."""
    host, consumer = make_host(env)
    msg1 = counter()
    h = adopt(env, host, msg1, static=True)
    r = env.submit(msg1, {"path": "add", "by": 3})
    assert deliver(env, host, h.group, r.id)["count"] == 3
    accepted = env.submit(msg1, {"path": "add", "by": 1})
    host.shutdown()
    assert len(host.table) == 0 and env.persistent.workers() == []
    assert consumer.cancelled == [h.queue]
    # The accepted request is not lost: it leads the group the ordinary way, against the last state.
    owner = env.registry.owner(h.group)
    assert owner["mode"] == "leader" and owner["task_id"] == accepted.id
    sent = env.message(None, accepted.id)
    assert sent.header["token"] == owner["token"]
    assert sent.args[0][REF_KEY] == h.ref


# -- running requests --------------------------------------------------------------------------


def test_rolling_run_replaces_msg1_checkpoints_and_answers_waiters(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=1)
    h = adopt(env, host, msg1)
    first_ref = h.ref
    r = env.submit(msg1, {"path": "add", "by": 2})
    same = env.submit(msg1, {"path": "add", "by": 2})  # identical, while r is in flight: coalesces
    assert [m.id for m in env.messages(h.queue)] == [r.id]

    msg3 = deliver(env, host, h.group, r.id)
    assert msg3 == {**msg1, "count": 3}
    assert h.msg1 == msg3 and h.ref != first_ref and h.executions == 1
    assert env.store.get({"$persistent-ref": h.ref}, cache=False) == msg3
    owner = env.registry.owner(h.group)
    assert owner["ref"] == h.ref and int(owner["bytes"]) == h.size > 0
    assert env.result(same.id).get(timeout=5) == msg3
    assert calls == [("add", 2)]
    # The next request runs against the new state.
    nxt = env.submit(msg1, {"path": "add", "by": 10})
    assert deliver(env, host, h.group, nxt.id)["count"] == 13


def test_a_hosted_requests_delivery_stays_open_until_after_return_settles_it(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=1)
    h = adopt(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 2})
    same = env.submit(msg1, {"path": "add", "by": 2})
    task = FakeTask(r.id)

    msg3 = run(env, host, h.group, task)
    member = delivery_member(h.group, r.id)
    assert task.request.persistent_delivery == member
    assert env.result(same.id).get(timeout=5) == msg3
    # Its own answer is its tracer's to store: until then the delivery keeps it.  The outcome is the
    # new checkpoint, named by its ref rather than repeated.
    assert not env.result(r.id).ready()
    assert env.deliveries() == [member]
    kept = env.delivery(member)
    assert RequestRecord.loads(kept.pop("self")).id == r.id
    assert kept == {"outcome": "", "ref": h.ref, "device": "counter"}
    assert env.delivery_waiters(member) == [same.id]

    trace(env, task, msg3)
    assert env.result(r.id).get(timeout=5) == msg3
    assert env.deliveries() == [] and env.delivery(member) == {} and env.delivery_waiters(member) == []


def test_a_failed_hosted_requests_delivery_records_the_error(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    h = adopt(env, host, counter(count=1))
    bad = env.submit(counter(count=1), {"path": "fail"})
    task = FakeTask(bad.id)
    with pytest.raises(ValueError, match="on purpose") as raised:
        run(env, host, h.group, task)
    kept = env.delivery(task.request.persistent_delivery)
    assert kept["ref"] == ""
    recorded = env.wiring.answer.decode_outcome(kept["outcome"])
    assert isinstance(recorded, ValueError) and "on purpose" in str(recorded)
    trace(env, task, raised.value)
    assert env.deliveries() == []


def test_the_reaper_completes_a_hosted_delivery_from_its_checkpoint(
    env: PersistentEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=1)
    h = adopt(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 2})
    same = env.submit(msg1, {"path": "add", "by": 2})
    die_at(monkeypatch, "after-finish-hosted")
    with pytest.raises(Died):
        run(env, host, h.group, FakeTask(r.id))  # the new state is recorded; the worker died right after
    monkeypatch.undo()
    member = delivery_member(h.group, r.id)
    checkpoint = env.registry.owner(h.group)["ref"]
    assert env.delivery(member)["ref"] == checkpoint != h.ref  # recorded, though this host never cached it
    assert not env.result(r.id).ready() and not env.result(same.id).ready()
    assert env.reap() == 0  # not overdue yet

    assert env.client.zadd(env.keys.deliveries(), {member: 1}, xx=True, ch=True) == 1
    assert env.reap() == 1
    # Both callers get the checkpointed Msg3, read back from the store.
    msg3 = {**msg1, "count": 3}
    assert env.result(r.id).get(timeout=5) == msg3
    assert env.result(same.id).get(timeout=5) == msg3
    assert env.deliveries() == [] and env.delivery(member) == {} and env.delivery_waiters(member) == []
    assert calls == [("add", 2)]
    assert env.registry.unfinished(h.group) == 0  # it is not run again


def test_static_run_keeps_msg1(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=5)
    h = adopt(env, host, msg1, static=True)
    ref = h.ref
    out = [deliver(env, host, h.group, env.submit(msg1, {"path": "add", "by": n}).id)["count"] for n in (1, 2)]
    assert out == [6, 7]
    assert h.msg1 == msg1 and h.ref == ref
    assert env.registry.owner(h.group)["ref"] == ref
    # The same in-memory object answers every request.
    peeks = [deliver(env, host, h.group, env.submit(msg1, {"path": "peek", "n": n}).id) for n in (1, 2)]
    assert [p["count"] for p in peeks] == [5, 5]
    assert calls[-1] == calls[-2] == ("peek", id(h.msg1))


def test_a_failure_with_ignore_keeps_the_old_state(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = counter(count=1)
    h = adopt(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 1})
    deliver(env, host, h.group, r.id)
    ref = h.ref
    bad = env.submit(msg1, {"path": "fail"})
    waiter = env.submit(msg1, {"path": "fail"})
    with pytest.raises(ValueError, match="on purpose"):
        deliver(env, host, h.group, bad.id)
    assert host.table.lookup(h.group) is h and h.ref == ref and h.msg1 == {**msg1, "count": 2}
    failed = env.result(waiter.id)
    wait_until(failed.ready, timeout=5, message="the waiter's error")
    assert failed.state == "FAILURE" and isinstance(failed.result, ValueError)


def test_throw_restarts_the_group_from_its_checkpoint(env: PersistentEnv) -> None:
    host, consumer = make_host(env, hub=True)
    msg1 = counter(count=1)
    group = place(env, host, msg1, errors="throw")
    host.tick()
    assert consumer.hub is not None
    consumer.hub.run()
    h = host.table.lookup(group)
    assert h is not None and h.error_strategy == "throw"
    r = env.submit(msg1, {"path": "add", "by": 1})
    deliver(env, host, group, r.id)
    checkpoint = h.ref
    bad = env.submit(msg1, {"path": "fail"})
    with pytest.raises(ValueError):
        deliver(env, host, group, bad.id)
    assert h.releasing and consumer.hub.pending, "the restart waits for the event loop"
    host.tick()  # a releasing group is not released twice by the beat
    consumer.hub.run()
    # This instance ended; the group is placed again (on this worker, the only live one).
    assert not host.table.knows(group)
    assert consumer.cancelled == [h.queue]
    owner = env.registry.owner(group)
    assert owner["host"] == host.hostname and owner["token"] != h.token and owner["ref"] == checkpoint
    host.tick()
    consumer.hub.run()
    fresh = host.table.lookup(group)
    assert fresh is not None and fresh is not h and fresh.msg1 is None
    assert consumer.task_consumer.names() == [h.queue]
    nxt = env.submit(msg1, {"path": "add", "by": 10})
    assert deliver(env, host, group, nxt.id)["count"] == 12  # resumed from the checkpoint


def test_rename_when_the_rolled_state_names_another_group(env: PersistentEnv) -> None:
    host, consumer = make_host(env)
    msg1 = {"device": "mover", "id": "m", "gen": 0}
    h = adopt(env, host, msg1)
    old, old_queue = h.group, h.queue
    assert old == "mv-m-0"
    r = env.submit(msg1, {"path": "bump"})
    assert deliver(env, host, old, r.id) == {**msg1, "gen": 1}

    assert h.group == "mv-m-1" and h.queue == env.queue("mv-m-1")
    assert host.table.lookup(old) is h and host.table.lookup("mv-m-1") is h
    assert env.registry.owner(old)["mode"] == "moved" and env.registry.owner(old)["target"] == "mv-m-1"
    new_owner = env.registry.owner("mv-m-1")
    assert new_owner["mode"] == "hosted" and new_owner["host"] == host.hostname and new_owner["token"] == h.token
    assert consumer.task_consumer.names() == [old_queue, h.queue]
    assert [g["group"] for g in env.persistent.groups()] == ["mv-m-1"]

    # A caller with the old Msg1 follows the "moved" marker to the new queue.
    late = env.submit(msg1, {"path": "bump"})
    assert env.messages(old_queue) == [env.message(old_queue, r.id)]
    assert deliver(env, host, "mv-m-1", late.id) == {**msg1, "gen": 2}
    assert h.group == "mv-m-2"

    # The beat renews the old names' markers, and retires their drained queues.
    env.client.zadd(env.keys.leases(), {old: 1})
    host.tick()
    assert h.retired == {"mv-m-0", "mv-m-1"}
    assert old_queue in consumer.cancelled and not binding_exists(env, old_queue)
    assert env.client.zscore(env.keys.leases(), old) > 1 and env.registry.expired() == []
    # When the group ends, every name it had ends with it.
    h.last -= h.timeout + 1
    host.tick()
    assert not host.table.knows(h.group) and not host.table.knows(old)
    for name in ("mv-m-0", "mv-m-1", "mv-m-2"):
        assert env.registry.owner(name) == {}, name
        assert env.client.zscore(env.keys.leases(), name) is None


def test_rename_keeps_the_name_when_the_new_one_is_taken(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = {"device": "mover", "id": "t", "gen": 0}
    h = adopt(env, host, msg1)
    # Someone else leads "mv-t-1".
    taken = env.submit({"device": "mover", "id": "t", "gen": 1}, {"path": "bump"})
    assert env.registry.owner("mv-t-1")["task_id"] == taken.id
    r = env.submit(msg1, {"path": "bump"})
    assert deliver(env, host, "mv-t-0", r.id)["gen"] == 1
    assert h.group == "mv-t-0" and h.aliases == {}
    assert env.registry.owner("mv-t-0")["mode"] == "hosted"
    # The group is still reachable under its old name.
    again = env.submit(msg1, {"path": "bump", "n": 2})
    assert env.message(h.queue, again.id).header["group"] == "mv-t-0"


# -- the Msg1 cache ----------------------------------------------------------------------------


def cached_group(env: PersistentEnv, table: HostedTable, name: str, blob: int) -> Hosted:
    msg = {"device": "counter", "id": name, "count": 0, "blob": "x" * blob}
    ref = env.store.put(msg)
    h = Hosted(group=name, token="t", queue=env.queue(name), device="counter", static=True, timeout=30,
               ref=ref.storage_id, size=ref.size)
    table.add(h)
    return h


def test_cache_evicts_least_recently_used_first_and_reloads(env: PersistentEnv) -> None:
    table = HostedTable()
    a, b, c = (cached_group(env, table, n, 1000) for n in "abc")
    cache = Msg1Cache(table, env.store, env.runtime.metrics, max_bytes=a.size * 2 + a.size // 2)
    for h in (a, b):
        assert cache.get(h)["id"] == h.group
    assert cache.used() == a.size + b.size
    cache.get(a)  # a is now more recently used than b
    cache.get(c)
    assert b.msg1 is None and a.msg1 is not None and c.msg1 is not None
    assert env.metric("evictions") == 1
    assert cache.used() <= cache.max_bytes
    # b is loaded again from its checkpoint; a is the least recently used now.
    assert cache.get(b)["id"] == "b"
    assert a.msg1 is None and b.msg1 is not None and c.msg1 is not None
    assert env.metric("evictions") == 2


def test_cache_never_evicts_the_msg1_in_use(env: PersistentEnv) -> None:
    table = HostedTable()
    small = cached_group(env, table, "small", 10)
    big = cached_group(env, table, "big", 5000)
    cache = Msg1Cache(table, env.store, env.runtime.metrics, max_bytes=big.size // 2)
    cache.get(small)
    assert cache.get(big)["id"] == "big"  # larger than the whole bound, and still kept while in use
    assert big.msg1 is not None and small.msg1 is None
    # A rolling group's new state counts too, and is kept.
    cache.put(small, {"device": "counter", "id": "small", "count": 1}, small.ref, small.size)
    assert small.msg1 is not None and big.msg1 is None


def test_cache_puts_within_the_bound_do_not_walk_the_hosted_groups(env: PersistentEnv) -> None:
    """A rolling group's put is O(1) while the bound holds; memory let go elsewhere (a stale state dropped)
    never evicts a group: the walk on crossing the bound counts what is really held."""
    table = HostedTable()
    a, b, c = (cached_group(env, table, n, 1000) for n in "abc")
    cache = Msg1Cache(table, env.store, env.runtime.metrics, max_bytes=a.size * 2 + a.size // 2)
    cache.get(a)
    cache.get(b)
    walks = 0
    snapshot = table.all

    def counted() -> list[Hosted]:
        nonlocal walks
        walks += 1
        return snapshot()

    table.all = counted  # type: ignore[method-assign]
    for n in range(1, 50):
        cache.put(a, {"device": "counter", "id": "a", "count": n}, a.ref, a.size)
    assert walks == 0
    b.msg1 = None  # dropped outside the cache (a repeat's stale state): the running sum still counts it
    cache.get(c)  # crosses the bound on the running sum: one walk finds a and c within it
    assert walks == 1
    assert a.msg1 is not None and c.msg1 is not None
    assert env.metric("evictions") == 0
    cache.get(b)  # really over the bound now: the least recently used (a) goes
    assert a.msg1 is None and b.msg1 is not None and c.msg1 is not None
    assert env.metric("evictions") == 1


def test_a_small_cache_on_a_host_reloads_evicted_groups_per_request(env: PersistentEnv) -> None:
    blob = "y" * 2000
    host, _ = make_host(env, cache_bytes=3000)
    m1, m2 = ({"device": "counter", "id": i, "count": 0, "blob": blob} for i in ("p", "q"))
    h1, h2 = adopt(env, host, m1, static=True), adopt(env, host, m2, static=True)
    for msg, h in ((m1, h1), (m2, h2), (m1, h1)):
        assert deliver(env, host, h.group, env.submit(msg, {"path": "peek"}).id)["count"] == 0
        assert h.msg1 is not None
    assert h2.msg1 is None and env.metric("evictions") == 2
    assert host.load()["cache_bytes"] == h1.size <= host.load()["max_cache_bytes"]


# -- a group taken away mid-execution, and executions before the consumer is bound ---------------


def test_a_request_whose_group_moved_on_while_it_ran_is_answered_once(env: PersistentEnv) -> None:
    a, _ = make_host(env, "a")
    b, _ = make_host(env, "b")
    msg1 = counter()
    h = adopt(env, a, msg1)
    r = env.submit(msg1, {"path": "add", "by": 1})

    def taken_away() -> None:
        # a stalled past its lease: the group was placed on b (as Placer.recover does).
        owner = env.registry.owner(h.group)
        where = Placement.from_owner(h.group, b.hostname, owner)
        assert env.registry.place(where, expect=owner["token"]).status is PlaceStatus.PLACED

    during.append(taken_away)
    task = FakeTask(r.id)
    # finish_hosted is stale: a gives the task no result of its own (the tracer stores nothing for Ignore).
    with pytest.raises(Ignore):
        run(env, a, h.group, task)
    during.clear()
    assert getattr(task.request, "persistent_delivery", None) is None
    assert env.deliveries() == [] and not env.result(r.id).ready()
    assert env.registry.unfinished(h.group) == 1  # still accepted: its new owner runs it
    b.tick()  # b adopts the group with the request it had accepted
    assert env.result(r.id).get(timeout=5)["count"] == 1
    assert calls == [("add", 1), ("add", 1)]  # it had to run again: a's run never finished it
    assert env.registry.unfinished(h.group) == 0 and env.deliveries() == []


def test_groups_adopted_before_the_consumer_binds_do_not_run_on_the_lease_thread(env: PersistentEnv) -> None:
    host, _ = make_host(env, bind=False)
    msg1 = counter()
    group = place(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 1})
    threads: list[str] = []
    during.append(lambda: threads.append(threading.current_thread().name))
    beat = threading.Thread(target=host.tick, name="persistent-leases")
    beat.start()
    beat.join(5)
    assert host.table.knows(group)
    consumer = FakeConsumer(env.app, FakeHub())
    host.bind(consumer)
    assert consumer.hub is not None
    consumer.hub.run()
    assert env.result(r.id).get(timeout=5)["count"] == 1
    assert threads == [threading.current_thread().name]
