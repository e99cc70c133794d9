"""Coalescing, serialization and recovery in process: ``Dispatcher``, ``Coalescer`` and ``Reaper``.

A real Redis and a real Celery app whose broker nobody consumes: requests
are sent with ``apply_async`` (the Dispatcher registers and publishes them),
read back from the default queue's Redis list, and executed by handing them
to ``Coalescer.run`` as the task would, then to what Celery's tracer does
after it (``trace``: the request's own answer, then ``after_return``, which
settles the execution's delivery).  Answers are read through ``AsyncResult``
from the result backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery.exceptions import Ignore, WorkerLostError
from kombu.exceptions import SerializerNotInstalled

from celery_persistent import Device, LeaderDied, faults
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.records import RequestRecord
from celery_persistent.registry import delivery_member
from celery_persistent.testing import wait_until
from tests.unit.conftest import FakeTask, PersistentEnv, Published, trace

calls: list[tuple[str, Any]] = []
"""Executions in the current test, in order."""

during: list[Callable[[], None]] = []
"""Probes a device runs while it executes (to look at the registry mid-execution)."""


def _executed(name: str, value: Any) -> None:
    calls.append((name, value))
    for probe in during:
        probe()


class Echo(Device):
    """The default grouper: only identical requests share a group."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        _executed("run", msg2.get("x"))
        return {"x": msg2.get("x"), "id": msg1.get("id")}

    def boom(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        _executed("boom", msg2.get("x"))
        raise ValueError("boom on purpose")


class Serial(Echo):
    """One group per ``msg1["id"]``: different Msg2s queue one behind the other."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])


class Tally(Device):
    """A rolling counter, grouped by ``msg1["id"]`` (for spawn_worker)."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "tally-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        _executed("add", msg2["by"])
        return {**msg1, "count": msg1["count"] + msg2["by"]}


DEVICES = {"echo": Echo, "serial": Serial, "tally": Tally}


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()
    during.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def serial(uid: str = "a") -> dict[str, Any]:
    return {"device": "serial", "id": uid}


def run(env: PersistentEnv, sent: Published, task: FakeTask) -> Any:
    """What the task does with a published request: plan it, then ``Coalescer.run``."""
    plan = env.persistent.plan(sent.args[0], sent.msg2, sent.opts,
                               stack=tuple(sent.header["stack"]) if sent.header else None)
    return env.wiring.coalescer.run(task, plan, sent.header, list(sent.args))


def execute(env: PersistentEnv, sent: Published) -> Any:
    """What the worker does with a published request: ``run``, then the tracer (not after ``Ignore``)."""
    task = FakeTask(sent.id)
    try:
        outcome = run(env, sent, task)
    except Ignore:
        raise
    except Exception as exc:
        trace(env, task, exc)
        raise
    trace(env, task, outcome)
    return outcome


class Died(BaseException):
    """A process killed at a crash point: nothing after it runs (raised by ``die_at``)."""


def die_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Arm the crash point ``name`` in this process, as ``CELERY_PERSISTENT_CRASH`` would (without exiting)."""
    def point(reached: str) -> None:
        if reached == name:
            raise Died(reached)

    monkeypatch.setattr(faults, "point", point)


def records(env: PersistentEnv, key: str) -> list[str]:
    """Ids of the records in a Redis list (waiters, pending)."""
    return [RequestRecord.loads(raw).id for raw in env.client.lrange(key, 0, -1)]


def expire_lease(env: PersistentEnv, group: str) -> None:
    """Its deadline long past (score 1: in the past on any clock), as if its holder stopped renewing."""
    assert env.client.zadd(env.keys.leases(), {group: 1}, xx=True, ch=True) == 1


def failure(env: PersistentEnv, task_id: str) -> BaseException:
    result = env.result(task_id)
    wait_until(result.ready, timeout=5, message=f"an answer for {task_id}")
    assert result.state == "FAILURE", result.state
    assert isinstance(result.result, BaseException)
    return result.result


# -- sending: Dispatcher.submit ------------------------------------------------------------------


def test_submit_registers_a_leader_and_publishes_it(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    before = env.registry.server_ms()
    r = env.submit(serial(), msg2)
    after = env.registry.server_ms()
    owner = env.registry.owner("serial-a")
    # Marked published once it is on the broker: it may wait there for a worker up to the queue TTL.
    assert owner["mode"] == "leader" and owner["task_id"] == r.id and owner["state"] == "published"
    deadline = env.client.zscore(env.keys.leases(), "serial-a")
    assert before + env.registry.queue_ms <= deadline <= after + env.registry.queue_ms
    assert env.registry.expired() == []
    assert env.client.hget(env.keys.inflight("serial-a"), owner["key"]) == r.id.encode()
    [sent] = env.messages()
    assert sent.id == r.id
    assert sent.header is not None and before / 1000 - 1 <= sent.header.pop("sent") <= after / 1000 + 1
    assert sent.header == {"group": "serial-a", "token": owner["token"], "key": owner["key"], "stack": []}
    assert sent.args == [serial(), msg2]
    assert r.state == "PENDING" and calls == []


def test_an_identical_request_waits_for_the_leader(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), {**msg2, "priv": {"ignored": True}})  # priv takes no part in equality
    assert [m.id for m in env.messages()] == [leader.id]  # the waiter is not published
    key = env.registry.owner("serial-a")["key"]
    assert records(env, env.keys.waiters("serial-a", key)) == [waiter.id]
    assert env.metric("coalesced") == 1 and env.metric("queued") == 0


def test_a_different_request_queues_behind_the_leader_in_order(env: PersistentEnv) -> None:
    first = env.submit(serial(), {"path": "run", "x": 1})
    second = env.submit(serial(), {"path": "run", "x": 2})
    third = env.submit(serial(), {"path": "run", "x": 3})
    assert [m.id for m in env.messages()] == [first.id]
    assert records(env, env.keys.pending("serial-a")) == [second.id, third.id]
    assert env.metric("queued") == 2 and env.metric("coalesced") == 0
    assert env.client.hlen(env.keys.inflight("serial-a")) == 3


def test_a_failed_publish_leaves_nothing_registered(env: PersistentEnv) -> None:
    msg1, msg2 = serial(), {"path": "run", "x": 1}
    earlier = env.submit(msg1, {"path": "run", "x": 2})  # an earlier request led the group, and ended
    assert execute(env, env.message(None, earlier.id)) == {"x": 2, "id": "a"}
    assert env.registry.owner("serial-a") == {}
    plan = env.persistent.plan(msg1, msg2, None)
    # The broker refuses the message (here: kombu has no such serializer).
    with pytest.raises(SerializerNotInstalled):
        env.wiring.dispatcher.submit(env.persistent.resolve, plan, [msg1, msg2], "never-sent",
                                     {"serializer": "no-such-serializer"})
    assert env.registry.owner("serial-a") == {}
    assert env.client.hlen(env.keys.inflight("serial-a")) == 0
    assert env.client.zscore(env.keys.leases(), "serial-a") is None
    assert env.deliveries() == []  # the release's delivery is settled at once
    assert not env.result("never-sent").ready()
    # The group is free: the next send leads.
    r = env.submit(msg1, msg2)
    assert env.registry.owner("serial-a")["task_id"] == r.id


# -- executing: Coalescer.run ----------------------------------------------------------------------


def test_the_leader_claims_executes_and_answers_its_waiters(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiters = [env.submit(serial(), msg2) for _ in range(2)]
    queued = env.submit(serial(), {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    seen: list[tuple[str, str | None]] = []
    during.append(lambda: seen.append((env.registry.owner("serial-a")["state"],
                                       env.runtime.keeper.token_for("serial-a"))))

    msg3 = execute(env, sent)
    assert msg3 == {"x": 1, "id": "a"}
    assert seen == [("running", sent.header["token"])]  # claimed, and its lease held while it ran
    assert env.runtime.keeper.token_for("serial-a") is None
    for w in waiters:
        assert env.result(w.id).get(timeout=5) == msg3
    assert env.result(leader.id).get(timeout=5) == msg3  # stored by its tracer
    assert env.deliveries() == []  # ...which then settled the delivery
    assert calls == [("run", 1)]
    assert env.metric("executions") == 1
    # The group goes to the queued request, under a new token, and it is published.
    owner = env.registry.owner("serial-a")
    assert owner["task_id"] == queued.id and owner["state"] == "published"
    assert owner["token"] != sent.header["token"]
    nxt = env.message(None, queued.id)
    assert nxt.header["token"] == owner["token"]
    assert execute(env, nxt) == {"x": 2, "id": "a"}
    assert env.registry.owner("serial-a") == {}
    assert env.client.zscore(env.keys.leases(), "serial-a") is None
    assert env.client.hlen(env.keys.inflight("serial-a")) == 0


def test_the_leaders_delivery_stays_open_until_after_return_settles_it(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), msg2)
    queued = env.submit(serial(), {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    task = FakeTask(sent.id)

    msg3 = run(env, sent, task)
    member = delivery_member("serial-a", sent.header["token"])
    assert task.request.persistent_delivery == member
    # The waiters are answered and the next request is published...
    assert env.result(waiter.id).get(timeout=5) == msg3
    owner = env.registry.owner("serial-a")
    assert env.message(None, queued.id).header["token"] == owner["token"]
    # ...but the leader's own answer is its tracer's to store: until then the delivery keeps all of it.
    assert not env.result(leader.id).ready()
    assert env.deliveries() == [member]
    kept = env.delivery(member)
    assert (kept["leader"], RequestRecord.loads(kept["self"]).id) == (leader.id, leader.id)
    assert env.wiring.answer.decode_outcome(kept["outcome"]) == msg3
    assert (RequestRecord.loads(kept["next"]).id, kept["next_token"]) == (queued.id, owner["token"])
    assert env.delivery_waiters(member) == [waiter.id]
    assert env.reap() == 0 and env.deliveries() == [member]  # not overdue: the reaper leaves it be

    trace(env, task, msg3)
    assert env.result(leader.id).get(timeout=5) == msg3
    assert env.deliveries() == [] and env.delivery(member) == {} and env.delivery_waiters(member) == []


def test_a_failing_leaders_delivery_records_the_error_until_after_return(env: PersistentEnv) -> None:
    msg1, msg2 = {"device": "echo", "id": "e"}, {"path": "boom", "x": 7}
    group = env.persistent.group(msg1, msg2)
    leader = env.submit(msg1, msg2)
    sent = env.message(None, leader.id)
    task = FakeTask(sent.id)
    with pytest.raises(ValueError, match="boom on purpose") as raised:
        run(env, sent, task)
    member = delivery_member(group, sent.header["token"])
    assert task.request.persistent_delivery == member
    recorded = env.wiring.answer.decode_outcome(env.delivery(member)["outcome"])
    assert isinstance(recorded, ValueError) and "boom on purpose" in str(recorded)
    trace(env, task, raised.value)
    assert env.deliveries() == []


def test_a_stale_copy_is_ignored(env: PersistentEnv) -> None:
    leader = env.submit(serial(), {"path": "run", "x": 1})
    sent = env.message(None, leader.id)
    forged = Published(sent.id, {**sent.header, "token": "not-the-owner"}, sent.args)
    with pytest.raises(Ignore):
        execute(env, forged)
    assert calls == [] and env.registry.owner("serial-a")["state"] == "published"

    # A second copy of the running leader (a redelivery) never runs beside it.
    ignored: list[bool] = []

    def redelivered() -> None:
        try:
            execute(env, sent)
        except Ignore:
            ignored.append(True)

    during.append(redelivered)
    execute(env, sent)
    assert ignored == [True] and calls == [("run", 1)]
    during.clear()
    # And once the leader finished, its token is gone: a late copy is stale too.
    with pytest.raises(Ignore):
        execute(env, sent)
    assert calls == [("run", 1)]


def test_a_failing_leader_answers_its_waiters_with_the_error(env: PersistentEnv) -> None:
    msg1, msg2 = {"device": "echo", "id": "e"}, {"path": "boom", "x": 7}
    group = env.persistent.group(msg1, msg2)
    leader = env.submit(msg1, msg2)
    waiter = env.submit(msg1, msg2)
    with pytest.raises(ValueError, match="boom on purpose"):
        execute(env, env.message(None, leader.id))
    error = failure(env, waiter.id)
    assert isinstance(error, ValueError) and "boom on purpose" in str(error)
    assert calls == [("boom", 7)]
    assert env.registry.owner(group) == {}  # released: the next request leads
    again = env.submit(msg1, msg2)
    assert env.registry.owner(group)["task_id"] == again.id


def test_a_request_that_bypassed_apply_async_registers_when_it_starts(env: PersistentEnv) -> None:
    msg1, msg2 = serial(), {"path": "run", "x": 1}
    # Nobody registered it (send_task, beat): it leads at once if the group is free.
    assert execute(env, Published("direct", None, [msg1, msg2])) == {"x": 1, "id": "a"}
    assert env.registry.owner("serial-a") == {}
    # If an identical request is in flight, it is not executed here: it is answered by the leader.
    leader = env.submit(msg1, msg2)
    with pytest.raises(Ignore):
        execute(env, Published("late-copy", None, [msg1, msg2]))
    assert calls == [("run", 1)]
    msg3 = execute(env, env.message(None, leader.id))
    assert env.result("late-copy").get(timeout=5) == msg3
    assert calls == [("run", 1), ("run", 1)]


def test_an_ungrouped_request_executes_without_registration(env: PersistentEnv) -> None:
    msg1, msg2, opts = serial(), {"path": "run", "x": 3}, {"await_inprogress": False}
    r = env.submit(msg1, msg2, opts)
    sent = env.message(None, r.id)
    assert sent.header == {"stack": []}
    assert execute(env, sent) == {"x": 3, "id": "a"}
    assert execute(env, sent) == {"x": 3, "id": "a"}  # nothing fences it: it runs each time
    assert calls == [("run", 3), ("run", 3)]
    assert [k for k in env.client.scan_iter(match=f"{env.prefix}:*") if not k.endswith(b":metrics")] == []


# -- spawn_worker ------------------------------------------------------------------------------------


def test_spawn_worker_places_the_group_on_a_live_worker(env: PersistentEnv) -> None:
    worker = env.worker_hostname("w")
    env.registry.heartbeat(worker, {"groups": 0})
    msg1, opts = {"device": "tally", "id": "s", "count": 0}, {"spawn_worker": True}
    leader = env.submit(msg1, {"path": "add", "by": 1}, opts)
    waiter = env.submit(msg1, {"path": "add", "by": 1}, opts)
    queued = env.submit(msg1, {"path": "add", "by": 5}, opts)

    msg3 = execute(env, env.message(None, leader.id))
    assert msg3 == {**msg1, "count": 1}
    assert env.result(waiter.id).get(timeout=5) == msg3
    owner = env.registry.owner("tally-s")
    assert owner["mode"] == "hosted" and owner["host"] == worker and owner["queue"] == env.queue("tally-s")
    assert env.store.get({"$persistent-ref": owner["ref"]}) == msg3  # it holds Msg3
    assert env.registry.take_inbox(worker) == ["place:tally-s"]
    # The request queued behind the leader is the new worker's, not published again.
    assert [m.id for m in env.messages()] == [leader.id]
    adopted = env.registry.adopt("tally-s", worker)
    assert adopted is not None and [r.id for r in adopted.unfinished] == [queued.id]
    assert [g["group"] for g in env.persistent.groups()] == ["tally-s"]
    assert env.deliveries() == []  # kept until the leader's tracer stored its answer, then settled


def test_spawn_worker_without_a_live_worker_hands_the_group_on(env: PersistentEnv) -> None:
    msg1, opts = {"device": "tally", "id": "n", "count": 0}, {"spawn_worker": True}
    leader = env.submit(msg1, {"path": "add", "by": 1}, opts)
    queued = env.submit(msg1, {"path": "add", "by": 2}, opts)
    assert execute(env, env.message(None, leader.id)) == {**msg1, "count": 1}
    owner = env.registry.owner("tally-n")
    assert owner["mode"] == "leader" and owner["task_id"] == queued.id
    assert env.message(None, queued.id).header["token"] == owner["token"]
    assert env.persistent.groups() == []
    assert env.deliveries() == []


# -- recovery: Reaper.reap --------------------------------------------------------------------------


def test_reap_republishes_an_expired_leader_that_never_started(env: PersistentEnv) -> None:
    leader = env.submit(serial(), {"path": "run", "x": 1})
    lost = env.message(None, leader.id)
    env.client.delete(env.default_queue)  # the message was lost on its way
    expire_lease(env, "serial-a")
    assert env.reap() == 1
    owner = env.registry.owner("serial-a")
    assert owner["task_id"] == leader.id and owner["state"] == "published"
    assert owner["token"] != lost.header["token"]
    assert env.client.zscore(env.keys.leases(), "serial-a") > env.registry.server_ms()
    assert env.registry.expired() == []
    [again] = env.messages()
    assert again.id == leader.id and again.header["token"] == owner["token"]
    assert env.metric("recoveries") == 1
    assert env.reap() == 0  # its new lease is live
    with pytest.raises(Ignore):
        execute(env, lost)  # a late copy of the lost message is fenced
    assert execute(env, again) == {"x": 1, "id": "a"}
    assert calls == [("run", 1)]


def test_a_republished_leader_may_wait_on_the_broker_for_the_queue_ttl(env: PersistentEnv) -> None:
    env.submit(serial(), {"path": "run", "x": 1})
    env.client.delete(env.default_queue)  # the message was lost on its way
    expire_lease(env, "serial-a")
    before = env.registry.server_ms()
    assert env.reap() == 1
    after = env.registry.server_ms()
    deadline = env.client.zscore(env.keys.leases(), "serial-a")
    assert before + env.registry.queue_ms <= deadline <= after + env.registry.queue_ms


def test_reap_publishes_a_leader_whose_sender_died_before_publishing(env: PersistentEnv) -> None:
    msg1, msg2 = serial(), {"path": "run", "x": 1}
    plan = env.persistent.plan(msg1, msg2, None)
    record = RequestRecord(id="never-published", key=plan.key, task=env.persistent.resolve.name,
                           args=[msg1, msg2], kwargs={})
    before = env.registry.server_ms()
    group, submitted = env.wiring.dispatcher.register(plan, record)  # registered; then its sender died
    after = env.registry.server_ms()
    assert env.registry.owner(group)["state"] == "queued" and env.messages() == []
    # Unpublished, it has a lease, not a queue TTL: it is found within one lease.
    deadline = env.client.zscore(env.keys.leases(), group)
    assert before + env.registry.lease_ms <= deadline <= after + env.registry.lease_ms
    expire_lease(env, group)

    before = env.registry.server_ms()
    assert env.reap() == 1
    after = env.registry.server_ms()
    owner = env.registry.owner(group)
    [sent] = env.messages()
    assert sent.id == "never-published" and sent.header["token"] == owner["token"] != submitted.token
    # On the broker now: marked published, it may wait there up to the queue TTL.
    assert owner["state"] == "published"
    deadline = env.client.zscore(env.keys.leases(), group)
    assert before + env.registry.queue_ms <= deadline <= after + env.registry.queue_ms
    assert execute(env, sent) == {"x": 1, "id": "a"}


def test_reap_answers_a_dead_running_leader_and_its_waiters_with_leader_died(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), msg2)
    queued = env.submit(serial(), {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    assert env.registry.claim("serial-a", sent.header["token"])  # it started; then its worker died
    expire_lease(env, "serial-a")

    assert env.reap() == 1
    for task_id in (leader.id, waiter.id):
        error = failure(env, task_id)
        assert isinstance(error, LeaderDied), repr(error)
        assert error.group == "serial-a" and error.leader_id == leader.id
    assert env.deliveries() == []  # everyone is answered: the reaper settled what it finished
    # The group goes on with the queued request.
    owner = env.registry.owner("serial-a")
    assert owner["task_id"] == queued.id
    assert env.message(None, queued.id).header["token"] == owner["token"]
    # The dead leader, had it only stalled, can no longer release its successor's group.
    late = env.wiring.dispatcher.complete("serial-a", owner["key"], sent.header["token"], {"late": 1})
    assert late.stale and late.delivery == ""
    assert env.registry.owner("serial-a")["token"] == owner["token"]
    assert env.deliveries() == []
    assert calls == []


def test_reap_does_not_republish_a_leader_whose_caller_already_failed(env: PersistentEnv) -> None:
    """A prefork child lost before the request started: Celery stored WorkerLostError for its caller."""
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), msg2)
    queued = env.submit(serial(), {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    env.client.delete(env.default_queue)  # its worker took the message...
    assert env.registry.reserve("serial-a", sent.header["token"])
    assert env.registry.owner("serial-a")["state"] == "reserved"
    env.app.backend.mark_as_failure(leader.id, WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL)."))
    expire_lease(env, "serial-a")  # ...and died before the request started

    assert env.reap() == 1
    # That failure is the request's one outcome: it is not run again, and its waiter gets the same.
    assert isinstance(failure(env, leader.id), WorkerLostError)
    assert isinstance(failure(env, waiter.id), WorkerLostError)
    assert [m.id for m in env.messages()] == [queued.id]
    owner = env.registry.owner("serial-a")
    assert owner["task_id"] == queued.id and env.message(None, queued.id).header["token"] == owner["token"]
    assert env.deliveries() == []
    assert execute(env, env.message(None, queued.id)) == {"x": 2, "id": "a"}
    assert calls == [("run", 2)]


def test_reap_completes_the_delivery_of_a_leader_that_died_after_finishing(
    env: PersistentEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), msg2)
    queued = env.submit(serial(), {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    die_at(monkeypatch, "after-finish")
    with pytest.raises(Died):
        run(env, sent, FakeTask(sent.id))  # finish recorded the outcome; the worker died right after
    monkeypatch.undo()
    member = delivery_member("serial-a", sent.header["token"])
    # Nobody was answered and nothing published: only the delivery knows what is owed.
    assert not env.result(leader.id).ready() and not env.result(waiter.id).ready()
    assert [m.id for m in env.messages()] == [leader.id]
    owner = env.registry.owner("serial-a")
    assert owner["task_id"] == queued.id and owner["state"] == "published"
    assert env.deliveries() == [member]
    assert env.reap() == 0  # not overdue yet: its writer might still answer

    assert env.client.zadd(env.keys.deliveries(), {member: 1}, xx=True, ch=True) == 1  # its deadline passed
    assert env.reap() == 1
    msg3 = {"x": 1, "id": "a"}
    assert env.result(leader.id).get(timeout=5) == msg3  # the recorded outcome, not LeaderDied
    assert env.result(waiter.id).get(timeout=5) == msg3
    nxt = env.message(None, queued.id)
    assert nxt.header["token"] == owner["token"]
    assert env.deliveries() == [] and env.delivery(member) == {} and env.delivery_waiters(member) == []
    assert env.metric("recoveries") == 1
    assert env.reap() == 0
    assert execute(env, nxt) == {"x": 2, "id": "a"}
    assert calls == [("run", 1), ("run", 2)]  # the leader never ran twice


def test_reap_places_an_orphaned_hosted_group_on_a_live_worker(env: PersistentEnv) -> None:
    dead, alive = env.worker_hostname("dead"), env.worker_hostname("alive")
    env.registry.heartbeat(alive, {"groups": 0})
    msg1 = {"device": "tally", "id": "o", "count": 3}
    ref = env.store.put(msg1)
    where = Placement("tally-o", dead, env.queue("tally-o"), ref.storage_id, False, 30.0, "tally", ref.size)
    assert env.registry.place(where).status is PlaceStatus.PLACED
    accepted = env.submit(msg1, {"path": "add", "by": 1})
    expire_lease(env, "tally-o")

    assert env.reap() == 1
    owner = env.registry.owner("tally-o")
    assert owner["host"] == alive and owner["ref"] == ref.storage_id
    assert env.registry.take_inbox(alive) == ["place:tally-o"]
    adopted = env.registry.adopt("tally-o", alive)
    assert adopted is not None and [r.id for r in adopted.unfinished] == [accepted.id]


def test_reap_dissolves_an_orphaned_static_group_when_no_worker_is_live(env: PersistentEnv) -> None:
    """A static group has no state of its own to keep (a rolling one is parked: tests/unit/test_checkpoints.py)."""
    msg1 = {"device": "tally", "id": "d", "count": 3}
    ref = env.store.put(msg1)
    where = Placement("tally-d", env.worker_hostname("dead"), env.queue("tally-d"), ref.storage_id, True, 30.0,
                      "tally", ref.size)
    assert env.registry.place(where).status is PlaceStatus.PLACED
    accepted = env.submit(msg1, {"path": "add", "by": 1})
    expire_lease(env, "tally-d")

    assert env.reap() == 1
    # Its accepted request runs the ordinary way, against the group's last state.
    owner = env.registry.owner("tally-d")
    assert owner["mode"] == "leader" and owner["task_id"] == accepted.id
    sent = env.message(None, accepted.id)
    assert execute(env, sent) == {**msg1, "count": 4}
    assert env.persistent.groups() == []


def test_a_leader_reaped_while_it_ran_keeps_its_one_final_outcome(env: PersistentEnv) -> None:
    msg2 = {"path": "run", "x": 1}
    leader = env.submit(serial(), msg2)
    waiter = env.submit(serial(), msg2)
    sent = env.message(None, leader.id)
    reaped: list[int] = []

    def stalled_past_its_lease() -> None:
        env.runtime.keeper.stop()  # a frozen process renews nothing
        expire_lease(env, "serial-a")
        reaped.append(env.reap())

    during.append(stalled_past_its_lease)
    task = FakeTask(sent.id)
    # Its finish is stale: nothing is returned for Celery's tracer to store (Ignore: no after_return either).
    with pytest.raises(Ignore):
        run(env, sent, task)
    assert reaped == [1] and calls == [("run", 1)]
    assert isinstance(failure(env, waiter.id), LeaderDied)
    # The leader's caller was answered LeaderDied, and that stays its one outcome.
    stored = env.result(leader.id)
    assert (stored.state, type(stored.result)) == ("FAILURE", LeaderDied)
    assert getattr(task.request, "persistent_delivery", None) is None
    assert env.deliveries() == []  # the reaper settled its own; the stale finish left none
    assert env.registry.owner("serial-a") == {}
