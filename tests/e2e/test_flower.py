"""What a real Flower shows of the plugin: group queues, shadow names, coalesced requests, events.

Flower, workers and the test share one broker; other test sessions may share
it too, so every assertion looks at this test's own task ids, workers and
groups only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_persistent import LeaderDied
from tests.conftest import evidence_key
from tests.e2e.support import LEASE_TTL
from tests.support import ROOT, Worker, wait_until

FINAL = {"SUCCESS", "FAILURE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flower:
    """A real `celery flower` subprocess, read through its HTTP API."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.logfile = logdir / "flower.log"
        self._log = open(self.logfile, "w")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.apps.basic", "flower", f"--port={self.port}",
             "--address=127.0.0.1"],
            cwd=ROOT, env={**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def text(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return str(reply.read().decode())

    def get(self, path: str) -> Any:
        return json.loads(self.text(path))

    def up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"flower exited:\n{self.logfile.read_text()[-3000:]}")
        try:
            return self.text("/healthcheck") == "OK"
        except (urllib.error.URLError, ConnectionError):
            return False

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.get("/api/tasks").get(task_id) or {})

    def events_counted(self, worker: str, kind: str, task: str) -> float:
        """flower_events_total for one (worker, event type, task name), from /metrics."""
        pattern = re.compile(rf'^flower_events_total\{{task="{re.escape(task)}",type="{kind}",'
                             rf'worker="{re.escape(worker)}"\}} (\S+)$', re.MULTILINE)
        found = pattern.search(self.text("/metrics"))
        return float(found.group(1)) if found else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Flower, a persistent worker and an ordinary worker, both sending task events (-E)."""
    logdir = tmp_path_factory.mktemp("flower")
    flower = Flower(logdir)
    hosting = Worker(extra=["--persistent", "-E", "-Q", f"unused-{uuid.uuid4().hex[:8]}"], logdir=logdir)
    plain = Worker(extra=["-E"], logdir=logdir)
    try:
        hosting.wait_ready()
        plain.wait_ready()
        wait_until(flower.up, timeout=30, interval=0.2, message="flower to answer")
        # Flower follows the events once it shows both workers alive (their heartbeats are events).
        wait_until(lambda: all(flower.get("/api/workers?status=1").get(w.hostname) for w in (hosting, plain)),
                   timeout=20, interval=0.3, message="flower to receive the workers' events")
        yield {"flower": flower, "hosting": hosting, "plain": plain}
    finally:
        hosting.stop()
        plain.stop()
        flower.stop()


def worker_counters(flower: Flower, hostname: str) -> dict[str, Any]:
    """Flower's per-worker event counts (its Workers page data)."""
    rows = flower.get("/workers?json=1")["data"]
    return next((row for row in rows if row.get("hostname") == hostname), {})


def final_state(flower: Flower, task_id: str) -> dict[str, Any]:
    """Poll Flower until the task reaches a final state; a task stuck in RECEIVED/STARTED fails here."""
    return dict(wait_until(lambda: (t := flower.task(task_id)).get("state") in FINAL and t, timeout=15,
                           interval=0.2, message=f"flower to show task {task_id} finished"))


def test_group_queues_show_in_the_persistent_workers_active_queues(site, persistent, rdb, uid) -> None:
    flower, hosting = site["flower"], site["hosting"]
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = persistent.start_worker(msg1, {"worker_timeout": 30})
    assert handle.hostname == hosting.hostname

    def queues() -> list[str]:
        info = flower.get(f"/api/workers?refresh=1&workername={hosting.hostname}").get(hosting.hostname) or {}
        return [queue["name"] for queue in info.get("active_queues") or []]

    def listed_while_awake() -> bool:
        # On the Redis broker an idle group's queue naps (is not consumed) until a request rings it,
        # and a solo worker answers Flower only between executions: ask right after one.
        persistent.resolve.delay(msg1, {"path": "add", "by": 0, "n": -1}).get(timeout=10)
        return handle.queue in queues()

    wait_until(listed_while_awake, timeout=30, interval=0.3,
               message="the group queue in the worker's active_queues")
    # The ordinary worker does not consume group queues.
    plain = flower.get(f"/api/workers?refresh=1&workername={site['plain'].hostname}")[site["plain"].hostname]
    assert handle.queue not in [q["name"] for q in plain["active_queues"]]

    # Requests waiting behind a busy hosted execution are messages in the group queue.
    ran = int(rdb.get(evidence_key("runs", uid)) or 0)  # the wake-ups above ran too
    blocker = persistent.resolve.delay(msg1, {"path": "add", "by": 1, "until": uid, "n": 0})
    behind = [persistent.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in (1, 2, 3)]

    def waiting() -> int:
        lengths = flower.get("/api/queues/length")["active_queues"]
        return next((q["messages"] for q in lengths if q["name"] == handle.queue), 0)

    wait_until(lambda: int(rdb.get(evidence_key("runs", uid)) or 0) == ran + 1, message="the blocker to start")
    wait_until(lambda: waiting() >= 1, timeout=10, interval=0.2, message="flower to count the group queue")
    # A persistent worker is solo: its task events wait in a buffer until the execution ends,
    # so while the blocker runs Flower has not heard of it.
    assert not blocker.ready()
    assert flower.task(blocker.id).get("state") is None
    rdb.set(evidence_key("release", uid), 1)  # let the blocker finish
    assert [r.get(timeout=20)["count"] for r in (blocker, *behind)] == [1, 2, 3, 4]

    # Hosted requests are ordinary tasks of the persistent worker, under the shadow name.
    for result in (blocker, *behind):
        task = final_state(flower, result.id)
        assert (task["name"], task["state"], task["worker"]) == ("persistent:state/add", "SUCCESS", hosting.hostname)
    persistent.stop_worker(handle.group)
    # The plugin's worker events (persistent-hosted, persistent-released) are counted per worker.
    counted = wait_until(lambda: (c := worker_counters(flower, hosting.hostname)).get("persistent-released") and c,
                         timeout=10, interval=0.2, message="flower to count the persistent-released event")
    assert counted["persistent-hosted"] >= 1


def test_coalesced_requests_show_as_shadow_named_tasks_that_succeed(site, persistent, rdb, uid) -> None:
    flower, plain = site["flower"], site["plain"]
    msg1 = {"device": "work", "id": uid}
    msg2 = {"path": "run", "sleep": 1.0, "echo": uid}
    before = persistent.metrics.read()["coalesced"]
    leader = persistent.resolve.delay(msg1, msg2)
    waiter = persistent.resolve.delay(msg1, msg2)
    assert leader.get(timeout=15) == waiter.get(timeout=15)
    assert int(rdb.get(evidence_key("runs", uid))) == 1
    assert persistent.metrics.read()["coalesced"] >= before + 1

    led, waited = final_state(flower, leader.id), final_state(flower, waiter.id)
    assert (led["name"], led["state"], led["worker"]) == ("persistent:work/run", "SUCCESS", plain.hostname)
    assert led["started"] is not None and led["runtime"] >= 1.0
    # The waiter never ran: the worker that ran the leader announced it when it answered it, with the
    # execution's runtime and queue (docs/events.md).
    assert (waited["name"], waited["state"], waited["worker"]) == ("persistent:work/run", "SUCCESS", plain.hostname)
    assert waited["started"] is None and waited["runtime"] >= 1.0
    assert waited["routing_key"] == persistent.app.conf.task_default_queue  # the queue the leader came from
    assert waited["result"] == led["result"]


def test_plugin_events_are_counted_by_flower(site, persistent, uid) -> None:
    flower, node = site["flower"], site["plain"].hostname
    name = "persistent:work/run"
    received, succeeded = (flower.events_counted(node, kind, name) for kind in ("task-received", "task-succeeded"))
    msg1 = {"device": "work", "id": uid}
    msg2 = {"path": "run", "sleep": 0.5}
    results = [persistent.resolve.delay(msg1, msg2) for _ in range(3)]
    assert len({json.dumps(r.get(timeout=15), sort_keys=True) for r in results}) == 1
    for result in results:
        final_state(flower, result.id)
    # The leader and two waiters: each has a task-received and a task-succeeded from the worker that ran it.
    wait_until(lambda: flower.events_counted(node, "task-succeeded", name) >= succeeded + 3, timeout=10,
               interval=0.2, message="flower to count the waiters' task-succeeded events")
    assert flower.events_counted(node, "task-received", name) >= received + 3
    # No made-up node (answers used to come from persistent@<host>): the answers came from the real worker.
    assert f"persistent@{socket.gethostname()}" not in flower.get("/api/workers?status=1")


def test_requests_answered_leader_died_show_as_failed(site, workers, persistent, rdb, uid, tmp_path) -> None:
    flower = site["flower"]
    victim_queue = f"victim-{uid}"
    # Prefork: a solo worker buffers its task events until the execution ends, so
    # Flower would never hear that the leader started before it was killed.
    victim = Worker(pool="prefork", extra=["-E", "-Q", victim_queue], logdir=tmp_path)
    workers.append(victim)
    victim.wait_ready()
    msg1 = {"device": "serial", "id": uid}
    long_run = {"path": "run", "sleep": 60, "n": 0}
    leader = persistent.resolve.apply_async((msg1, long_run), queue=victim_queue)
    waiter = persistent.resolve.delay(msg1, long_run)
    wait_until(lambda: rdb.get(evidence_key("runs", uid)) == b"1", message="the leader to start")
    wait_until(lambda: flower.task(leader.id).get("state") == "STARTED", timeout=10, interval=0.2,
               message="flower to show the leader started")
    victim.kill()

    for result in (leader, waiter):
        with pytest.raises(LeaderDied):
            result.get(timeout=LEASE_TTL + 15)
    for result in (leader, waiter):
        task = final_state(flower, result.id)
        assert task["state"] == "FAILURE"
        assert task["name"] == "persistent:serial/run"
        assert task["exception"].startswith("LeaderDied(")
    assert time.time() - final_state(flower, waiter.id)["failed"] < 60
