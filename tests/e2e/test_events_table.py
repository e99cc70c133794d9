"""The table of docs/events.md, checked against real workers, a real Flower and the real instrumentation.

One module fixture drives each kind of caller once (leader, coalesced,
queued, hosted, recovered) against shared workers of ``tests.apps.traced``
(opentelemetry-instrumentation-celery in every worker process, spans and
signals pushed to Redis). The test process is instrumented too, with an
in-memory exporter. Then one test per row of the table checks what it says:
publish signals, the task-sent event, task events (raw, and as Flower shows
them), task signals, and spans.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import signals
from celery.utils.nodenames import anon_nodename

from celery_persistent import LeaderDied
from tests.apps.basic import PREFIX
from tests.e2e.support import LEASE_TTL
from tests.e2e.test_flower import FINAL, Flower
from tests.support import ROOT, Worker, wait_until

trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from tests.apps.traced import span_record  # noqa: E402

KINDS = ("leader", "coalesced", "queued", "hosted", "recovered")
EXECUTION = 0.5  # seconds the leader's execution takes at least

# The rows of the table in docs/events.md, cell by cell. test_the_docs_table_is_the_one_tested keeps
# the page and this dict equal; the tests below check what each row says.
TABLE = {
    "leader": ("caller", "caller", "runner: received, started, succeeded", "runner",
               "producer in the caller's trace; consumer its child"),
    "coalesced": ("caller, no message", "caller", "runner: received, succeeded, `coalesced_onto`",
                  "runner, `request.coalesced`",
                  "producer in the caller's trace, `coalesced_onto`; consumer in the caller's trace, "
                  "linked to the execution"),
    "queued": ("publisher, the caller's lineage", "publisher, as the caller", "runner: received, started, succeeded",
               "runner", "producer in the caller's trace; consumer its child"),
    "hosted": ("caller", "caller", "persistent worker: received, started, succeeded", "persistent worker",
               "producer in the caller's trace; consumer its child"),
    "recovered": ("caller", "caller", "reaper: received, failed (`LeaderDied`)", "reaper",
                  "producer in the caller's trace; consumer in the caller's trace"),
}


def docs_table() -> dict[str, tuple[str, ...]]:
    text = (ROOT / "docs" / "events.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in KINDS:
            rows[cells[0]] = tuple(cells[1:])
    return rows


def test_the_docs_table_is_the_one_tested() -> None:
    assert docs_table() == TABLE


class EventLog(threading.Thread):
    """Every Celery event on the broker, raw (with the plugin's extra fields), by task id."""

    def __init__(self, app: Any) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.hosts: set[str] = set()
        self.receiver: Any = None

    def run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.on_event})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def on_event(self, event: dict[str, Any]) -> None:
        self.hosts.add(event.get("hostname", ""))
        if event.get("uuid"):
            self.events[event["uuid"]].append(event)

    def of(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events.get(task_id, []) if e["type"] == kind]

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True


class Spans:
    """Finished spans: the test process's (in memory) and the workers' (a Redis list)."""

    def __init__(self, exporter: InMemorySpanExporter, rdb: Any, key: str) -> None:
        self.exporter, self.rdb, self.key = exporter, rdb, key

    def all(self) -> list[dict[str, Any]]:
        local = [span_record(span) for span in self.exporter.get_finished_spans()]
        return local + [json.loads(raw) for raw in self.rdb.lrange(self.key, 0, -1)]

    def find(self, kind: str, task_id: str) -> list[dict[str, Any]]:
        return [s for s in self.all() if s["kind"] == kind and s["attributes"].get("messaging.message.id") == task_id]


@pytest.fixture(scope="module")
def observed(tmp_path_factory, persistent, rdb, app) -> Iterator[dict[str, Any]]:
    logdir = tmp_path_factory.mktemp("events-table")
    key = f"{PREFIX}:spans:{uuid.uuid4().hex[:8]}"
    env = {"CP_SPANS_KEY": key}
    uid = uuid.uuid4().hex[:10]
    victim_queue = f"victim-{uid}"
    flower = Flower(logdir)
    runner = Worker(app="tests.apps.traced", extra=["-E"], env=env, logdir=logdir)
    hosting = Worker(app="tests.apps.traced", extra=["--persistent", "-E", "-Q", f"unused-{uid}"], env=env,
                     logdir=logdir)
    # Prefork, so that it is known to have started the request before it is killed.
    victim = Worker(app="tests.apps.traced", pool="prefork", extra=["-E", "-Q", victim_queue], env=env,
                    logdir=logdir)
    workers = (runner, hosting, victim)
    exporter = InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test_events_table")
    published: dict[str, list[str]] = defaultdict(list)

    def on_publish(name: str) -> Any:
        def receiver(sender: Any = None, headers: Any = None, **_: Any) -> None:
            published[(headers or {}).get("id", "")].append(name)
        return receiver

    receivers = [(signals.before_task_publish, on_publish("before_task_publish")),
                 (signals.after_task_publish, on_publish("after_task_publish"))]
    log = EventLog(app)
    sent_event = app.conf.task_send_sent_event
    try:
        log.start()
        for worker in workers:
            worker.wait_ready()
        wait_until(flower.up, timeout=30, interval=0.2, message="flower to answer")
        wait_until(lambda: all(flower.get("/api/workers?status=1").get(w.hostname) for w in (runner, hosting)),
                   timeout=20, interval=0.3, message="flower to receive the workers' events")
        wait_until(lambda: runner.hostname in log.hosts, timeout=20, message="the event log to hear the worker")
        wait_until(lambda: hosting.hostname in {w["hostname"] for w in persistent.workers()},
                   message="the persistent worker to report in")
        app.conf.task_send_sent_event = True
        CeleryInstrumentor().instrument(tracer_provider=provider)
        for signal, receiver in receivers:
            signal.connect(receiver, weak=False)
        resolve, ids, callers = persistent.resolve, {}, {}

        def call(kind: str, *args: Any, **options: Any) -> Any:
            with tracer.start_as_current_span(f"caller-{kind}") as span:
                result = resolve.apply_async(args, **options)
            callers[kind] = span.get_span_context()
            ids[kind] = result.id
            return result

        # recovered: a leader whose worker dies while it runs; a surviving worker's reaper answers it.
        lost = {"device": "serial", "id": f"lost-{uid}"}
        recovered = call("recovered", lost, {"path": "run", "sleep": 60}, queue=victim_queue)
        wait_until(lambda: rdb.get(f"{PREFIX}:evidence:runs:lost-{uid}") == b"1", message="the doomed leader to start")
        victim.kill()
        # leader, coalesced, queued: one group; the leader is held until all three are sent.
        msg1 = {"device": "serial", "id": uid}
        held = {"path": "run", "until": uid, "n": "a", "sleep": EXECUTION}
        leader = call("leader", msg1, held)
        coalesced = call("coalesced", msg1, held)
        queued = call("queued", msg1, {"path": "run", "n": "b"})
        rdb.set(f"{PREFIX}:evidence:release:{uid}", 1)
        assert leader.get(timeout=20) == coalesced.get(timeout=20)
        assert queued.get(timeout=20)["n"] == "b"
        # hosted: a request for a group with a persistent worker.
        handle = persistent.start_worker({"device": "state", "id": uid, "count": 0}, {"worker_timeout": 30})
        assert handle.hostname == hosting.hostname
        # The first request may run at adoption, from its record; the second comes through the group queue.
        assert resolve.delay({"device": "state", "id": uid}, {"path": "add", "by": 1}).get(timeout=20)["count"] == 1
        hosted = call("hosted", {"device": "state", "id": uid}, {"path": "add", "by": 1})
        assert hosted.get(timeout=20)["count"] == 2
        with pytest.raises(LeaderDied):
            recovered.get(timeout=LEASE_TTL + 20)

        for task_id in ids.values():
            wait_until(lambda t=task_id: flower.task(t).get("state") in FINAL, timeout=20, interval=0.2,
                       message=f"flower to show {task_id} finished")
            wait_until(lambda t=task_id: log.of(t, "task-succeeded") or log.of(t, "task-failed"), timeout=20,
                       message=f"the event log to hear {task_id} finish")
        spans = Spans(exporter, rdb, key)
        for kind in KINDS:
            wait_until(lambda k=kind: spans.find("CONSUMER", ids[k]), timeout=20, interval=0.2,
                       message=f"the consumer span of the {kind} caller")
        signals_seen = [json.loads(raw) for raw in rdb.lrange(key + ":signals", 0, -1)]
        persistent.stop_worker(handle.group)
        yield {
            "ids": ids, "callers": callers, "flower": flower, "log": log, "spans": spans, "published": published,
            "signals": signals_seen, "runner": runner, "hosting": hosting, "victim": victim,
            "origin": anon_nodename(), "pid": os.getpid(), "workers": flower.get("/api/workers?status=1"),
        }
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
        CeleryInstrumentor().uninstrument()
        app.conf.task_send_sent_event = sent_event
        log.stop()
        for worker in workers:
            worker.stop()
        flower.stop()
        rdb.delete(key, key + ":signals")


def hexid(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def signals_of(seen: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [s for s in seen if s.get("task_id") == task_id]


def check_publish(o: dict[str, Any], kind: str) -> None:
    task_id = o["ids"][kind]
    in_workers = [s for s in signals_of(o["signals"], task_id) if s["signal"].endswith("_task_publish")]
    if kind == "queued":
        # Published by the worker that handed the group on, as the caller would have.
        assert o["published"].get(task_id) is None
        assert [s["signal"] for s in in_workers] == ["before_task_publish", "after_task_publish"]
        before = in_workers[0]
        assert before["pid"] != o["pid"]
        assert (before["parent_id"], before["root_id"], before["origin"]) == (None, task_id, o["origin"])
    else:
        assert o["published"][task_id] == ["before_task_publish", "after_task_publish"]
        assert in_workers == []


def check_sent(o: dict[str, Any], kind: str) -> None:
    task_id = o["ids"][kind]
    sent = o["log"].of(task_id, "task-sent")
    assert len(sent) == 1, sent
    assert sent[0]["hostname"] == o["origin"]  # Flower's "Client"
    assert (sent[0]["parent_id"], sent[0]["root_id"]) == (None, task_id)
    task = o["flower"].task(task_id)
    assert task["client"] == o["origin"] and task["sent"] is not None
    assert (task["parent_id"], task["root_id"]) == (None, task_id)


def check_task_events(o: dict[str, Any], kind: str) -> None:
    task_id, log = o["ids"][kind], o["log"]
    worker = {"hosted": o["hosting"], "recovered": None}.get(kind, o["runner"])
    task = o["flower"].task(task_id)
    if kind == "recovered":
        failed = log.of(task_id, "task-failed")[-1]
        # Whichever surviving worker reaped first answered: a real one, never a made-up node.
        assert failed["hostname"] in (o["runner"].hostname, o["hosting"].hostname)
        assert failed["exception"].startswith("LeaderDied(") and failed["coalesced"] is False
        assert task["worker"] == failed["hostname"] and task["state"] == "FAILURE"
        return
    assert task["worker"] == worker.hostname and task["state"] == "SUCCESS"
    kinds = {e["type"] for e in log.events[task_id] if e["hostname"] == worker.hostname}
    if kind == "coalesced":
        assert kinds == {"task-received", "task-succeeded"}
        leader_id = o["ids"]["leader"]
        for event in log.of(task_id, "task-received") + log.of(task_id, "task-succeeded"):
            assert (event["coalesced"], event["coalesced_onto"]) == (True, leader_id)
        # The execution's runtime and queue (the execution sleeps EXECUTION seconds).
        leader = o["flower"].task(leader_id)
        assert task["runtime"] >= EXECUTION and leader["runtime"] >= EXECUTION
        assert task["routing_key"] == leader["routing_key"] == log.of(leader_id, "task-sent")[0]["routing_key"]
    else:
        assert {"task-received", "task-started", "task-succeeded"} <= kinds


def check_task_signals(o: dict[str, Any], kind: str) -> None:
    task_id = o["ids"][kind]
    # (The killed worker had fired task_prerun for the recovered request: its end is the reaper's.)
    seen = [s for s in signals_of(o["signals"], task_id)
            if s["signal"].startswith("task_") and s["hostname"] != o["victim"].hostname]
    final = "task_failure" if kind == "recovered" else "task_success"
    assert [s["signal"] for s in seen] == ["task_prerun", final, "task_postrun"], seen
    hosts = {s["hostname"] for s in seen}
    expected = {"hosted": {o["hosting"].hostname}, "recovered": {o["runner"].hostname, o["hosting"].hostname}}
    assert len(hosts) == 1 and hosts <= expected.get(kind, {o["runner"].hostname})
    if kind == "coalesced":
        assert all((s["coalesced"], s["coalesced_onto"]) == (True, o["ids"]["leader"]) for s in seen)
    else:
        assert not any(s["coalesced"] for s in seen)


def check_spans(o: dict[str, Any], kind: str) -> None:
    task_id, spans, caller = o["ids"][kind], o["spans"], o["callers"][kind]
    trace_id, caller_span = hexid(caller.trace_id, 32), hexid(caller.span_id, 16)
    (producer,) = spans.find("PRODUCER", task_id)
    assert (producer["trace_id"], producer["parent_id"]) == (trace_id, caller_span)
    assert (producer["pid"] == o["pid"]) is (kind != "queued")  # a queued request is published by a worker
    (consumer,) = spans.find("CONSUMER", task_id)
    assert consumer["trace_id"] == trace_id
    if kind in ("coalesced", "recovered"):
        # Made when the worker answered: in the caller's trace, not inside the execution's span.
        assert consumer["parent_id"] == caller_span
    else:
        assert consumer["parent_id"] == producer["span_id"]
    if kind == "coalesced":
        leader_id = o["ids"]["leader"]
        assert producer["attributes"]["celery_persistent.coalesced_onto"] == leader_id
        assert consumer["attributes"]["celery_persistent.coalesced_onto"] == leader_id
        (execution,) = spans.find("CONSUMER", leader_id)
        assert consumer["links"] == [{"trace_id": execution["trace_id"], "span_id": execution["span_id"]}]
    else:
        assert not consumer["links"]


CHECKS = (check_publish, check_sent, check_task_events, check_task_signals, check_spans)


@pytest.mark.parametrize("kind", KINDS)
def test_each_caller_gets_what_its_row_says(observed, kind) -> None:
    for check in CHECKS:
        check(observed, kind)


def test_flower_lists_only_real_workers(observed) -> None:
    workers = observed["workers"]
    assert f"persistent@{socket.gethostname()}" not in workers  # the made-up node answers used to come from
    # Every worker that sent an event for this module's callers is one of its real workers.
    senders = {e["hostname"] for task_id in observed["ids"].values() for e in observed["log"].events[task_id]
               if e["type"] != "task-sent"}
    assert senders <= {observed[w].hostname for w in ("runner", "hosting", "victim")}
    assert {observed["runner"].hostname, observed["hosting"].hostname} <= set(workers)
    assert re.match(r"^[\w.-]+@", observed["runner"].hostname)


def test_the_page_is_in_the_docs_nav() -> None:
    assert "events.md" in Path(ROOT / "mkdocs.yml").read_text()
