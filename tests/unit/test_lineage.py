"""Coalesced callers go through Celery's send path; queued requests keep their caller's lineage and trace;
answers are attributed to the worker that gives them (docs/events.md).

A real Redis and a real Celery app (``persistent_env``); nothing consumes its
broker, so published messages stay in their Redis list, where the tests read
their headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals
from celery._state import _task_stack
from celery.utils.nodenames import anon_nodename

from celery_persistent import Device, events, lineage, tracing
from celery_persistent import signals as answer_signals
from celery_persistent.dispatch import HEADER
from celery_persistent.events import Answered, Execution, answered_by, executing
from celery_persistent.records import RequestRecord

trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")


class Serial(Device):
    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"n": msg2["n"]}


DEVICES = {"serial": Serial}


def headers(env: Any) -> dict[str, dict[str, Any]]:
    """The message headers in the default queue, by task id."""
    found = {}
    for raw in env.client.lrange(env.default_queue, 0, -1):
        message = json.loads(raw)
        found[message["headers"]["id"]] = message["headers"]
    return found


@pytest.fixture
def published() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """What before_task_publish saw, by task id: the headers, and the span current at that moment."""
    seen: dict[str, list[dict[str, Any]]] = {}

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen.setdefault(headers["id"], []).append({"headers": dict(headers), "span": tracing.current_span(),
                                                   "routing_key": kwargs.get("routing_key")})

    signals.before_task_publish.connect(receiver, weak=False)
    yield seen
    signals.before_task_publish.disconnect(receiver)


class RunningTask:
    """Celery's tracer as seen from inside an execution: a task on the task stack, with its request."""

    def __init__(self, task: Any, task_id: str, root_id: str) -> None:
        self.task, self.task_id, self.root_id = task, task_id, root_id

    def __enter__(self) -> RunningTask:
        self.task.push_request(id=self.task_id, root_id=self.root_id, called_directly=False, hostname="w@unit")
        _task_stack.push(self.task)
        return self

    def __exit__(self, *exc: Any) -> None:
        _task_stack.pop()
        self.task.pop_request()


def test_a_coalesced_caller_fires_the_publish_signals_and_sends_no_message(persistent_env, published) -> None:
    env, uid = persistent_env, persistent_env.uid
    msg1, msg2 = {"device": "serial", "id": uid}, {"path": "run", "n": 1}
    leader, coalesced = env.submit(msg1, msg2), env.submit(msg1, msg2)
    assert list(headers(env)) == [leader.id]  # one message: the leader's
    (seen,) = published[coalesced.id]
    header = seen["headers"][HEADER]
    assert (header["coalesced"], header["onto"], header["unsent"]) == (True, leader.id, True)
    assert seen["routing_key"] == env.default_queue  # routed as Celery would have sent it
    assert published[leader.id][0]["headers"][HEADER].get("unsent") is None


def test_a_queued_request_is_published_with_its_callers_parent_root_origin_and_trace(persistent_env,
                                                                                      published) -> None:
    env, uid = persistent_env, persistent_env.uid
    tracer = trace_sdk.TracerProvider().get_tracer("unit")
    msg1 = {"device": "serial", "id": uid}
    leader = env.submit(msg1, {"path": "run", "n": 1})
    with tracer.start_as_current_span("caller") as caller:
        queued = env.submit(msg1, {"path": "run", "n": 2})
    assert queued.id not in headers(env)  # kept in Redis until the group reaches it
    owner = env.registry.owner(f"serial-{uid}")
    # The leader's execution hands the group on: the queued request is published from inside it.
    with RunningTask(env.persistent.resolve, "exec-id", "exec-root"), \
            tracer.start_as_current_span("execution"):
        env.persistent.dispatcher.complete(f"serial-{uid}", env.message(None, leader.id).header["key"],
                                           owner["token"], {"n": 1}, executed=True)
    sent = headers(env)[queued.id]
    assert (sent["parent_id"], sent["root_id"], sent["origin"]) == (None, queued.id, anon_nodename())
    # The caller's span was current while it was published (a producer span would be its child).
    span, expected = published[queued.id][-1]["span"], caller.get_span_context()
    assert (span.trace_id, span.span_id) == (expected.trace_id, expected.span_id)


def test_a_request_sent_from_a_task_keeps_that_task_as_parent_and_root(persistent_env) -> None:
    env, uid = persistent_env, persistent_env.uid
    msg1 = {"device": "serial", "id": uid}
    leader = env.submit(msg1, {"path": "run", "n": 1})
    with RunningTask(env.persistent.resolve, "caller-task", "caller-root"):
        queued = env.submit(msg1, {"path": "run", "n": 2})
    owner = env.registry.owner(f"serial-{uid}")
    with RunningTask(env.persistent.resolve, "exec-id", "exec-root"):
        env.persistent.dispatcher.complete(f"serial-{uid}", env.message(None, leader.id).header["key"],
                                           owner["token"], {"n": 1}, executed=True)
    sent = headers(env)[queued.id]
    assert (sent["parent_id"], sent["root_id"]) == ("caller-task", "caller-root")


def test_lineage_without_a_current_span_starts_a_new_trace(persistent_env) -> None:
    options: dict[str, Any] = {}
    lineage.of_caller(persistent_env.app, options)
    assert options[lineage.KEY] == {"origin": anon_nodename(), "trace": {}}
    assert "parent_id" not in options and "root_id" not in options
    tracer = trace_sdk.TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("elsewhere"), tracing.restored({}):
        assert tracing.current_span() is None


def test_answers_outside_a_worker_are_attributed_to_nobody(monkeypatch) -> None:
    monkeypatch.setitem(events._worker, "hostname", None)  # a client process (no worker_init)
    assert answered_by() is None
    monkeypatch.setitem(events._worker, "hostname", "w@unit")  # a worker's reaper, outside any execution
    by = answered_by(onto="leader")
    assert by is not None and (by.hostname, by.onto, by.runtime) == ("w@unit", "leader", None)


def test_answers_inside_an_execution_are_the_executing_workers(persistent_env, monkeypatch) -> None:
    monkeypatch.setitem(events._worker, "hostname", None)
    execution = Execution("exec-id", "w@unit", "q1", "", started=0.0)
    with executing(execution):
        by, given = answered_by(), answered_by(onto="given")
    assert by is not None
    assert (by.hostname, by.onto, by.routing_key) == ("w@unit", "exec-id", "q1")
    assert by.runtime is not None and by.runtime > 0
    assert by.coalesced(RequestRecord("other", "k", "t")) and not by.coalesced(RequestRecord("exec-id", "k", "t"))
    assert given is not None and given.onto == "given"
    assert answered_by() is None  # the execution is over


def test_task_signals_of_an_answered_caller_see_its_own_request(persistent_env) -> None:
    task = persistent_env.persistent.resolve
    record = RequestRecord("waiter-id", "k", task.name, {"parent_id": "p", "root_id": "r",
                                                         lineage.KEY: {"origin": "gen1@client", "trace": {}}})
    seen: list[tuple[str, Any]] = []

    def receiver(name: str) -> Any:
        def on(sender: Any = None, **kwargs: Any) -> None:
            request = sender.request
            seen.append((name, (request.id, request.hostname, request.parent_id, request.root_id,
                                request.origin, request.coalesced, request.coalesced_onto)))
        return on

    connected = [(s, receiver(n)) for s, n in ((signals.task_prerun, "prerun"), (signals.task_success, "success"),
                                               (signals.task_postrun, "postrun"))]
    for signal, on in connected:
        signal.connect(on, weak=False)
    try:
        with RunningTask(task, "exec-id", "exec-root"):
            answer_signals.fire(persistent_env.app, [(record, {"ok": 1})], Answered("w@unit", "exec-id"))
            assert task.request.id == "exec-id"  # the execution's own request is back
    finally:
        for signal, on in connected:
            signal.disconnect(on)
    expected = ("waiter-id", "w@unit", "p", "r", "gen1@client", True, "exec-id")
    assert seen == [("prerun", expected), ("success", expected), ("postrun", expected)]


def test_the_unsent_producer_drops_only_marked_task_messages() -> None:
    from celery_persistent.unsent import UnsentProducer

    class Recording:
        def __init__(self) -> None:
            self.bodies: list[Any] = []

        def publish(self, body: Any, **kwargs: Any) -> str:
            self.bodies.append(body)
            return "sent"

    inner, skipped = Recording(), []
    producer = UnsentProducer(inner, on_skip=skipped.append)
    assert producer.publish("task", headers={HEADER: {"unsent": True}, "id": "x"}) is None
    assert producer.publish("event", headers={}) == "sent"
    assert inner.bodies == ["event"] and skipped[0]["id"] == "x"
