"""The sitrep (celery_persistent.monitor): queue depths, rendering and diffs (the live Monitor: tests/e2e)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from celery import Celery
from kombu import Exchange, Queue

from celery_persistent.metrics import COUNTERS
from celery_persistent.monitor import Snapshot, diff, queue_depths, render
from tests.support import wait_until

AMQP_URL = os.environ.get("CP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def publish(app: Celery, name: str, priorities: list[int]) -> None:
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        for priority in priorities:
            producer.publish({"n": priority}, exchange=queue.exchange, routing_key=name, declare=[queue],
                             priority=priority, retry=True)


def row(group: str, **fields: object) -> dict[str, object]:
    base = {"group": group, "hostname": "w1@h", "queue": f"persistent.{group}", "static": False, "executions": 0,
            "idle": 0.0, "msg1_bytes": 2048, "state": "active", "timeout": 10.0, "depth": 0}
    return {**base, **fields}


def snap(*rows: dict[str, object], workers: tuple[str, ...] = ("w1@h",), **counters: int) -> Snapshot:
    return Snapshot(
        groups={str(r["group"]): r for r in rows},
        workers={name: {"hostname": name, "groups": len(rows), "executions": 0} for name in workers},
        counters={name: counters.get(name, 0) for name in COUNTERS},
    )


# -- queue depth ------------------------------------------------------------------


def test_queue_depth_on_redis_counts_the_priority_lists(app, rdb, uid) -> None:
    name = f"depth-{uid}"
    missing = f"missing-{uid}"
    publish(app, name, [0, 0, 9])
    try:
        # kombu's Redis transport keeps priority 9 in its own list: a plain LLEN misses it.
        assert rdb.llen(name) == 2
        assert rdb.llen(f"{name}\x06\x169") == 1
        assert queue_depths(app, [name, missing]) == {name: 3, missing: 0}
    finally:
        rdb.delete(name, f"{name}\x06\x169")


def _rabbitmq_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.rabbitmq
@pytest.mark.skipif(not _rabbitmq_up(), reason="RabbitMQ is not reachable at 127.0.0.1:5672")
def test_queue_depth_on_amqp_uses_the_passive_declare() -> None:
    app = Celery("depth-amqp", broker=AMQP_URL)
    name = f"depth-{uuid.uuid4().hex[:10]}"
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    publish(app, name, [0, 5])
    try:
        # RabbitMQ counts a published message a moment later: poll.
        wait_until(lambda: queue_depths(app, [name])[name] == 2, timeout=5, message="RabbitMQ to count 2 messages")
        # A missing AMQP queue is not "0 messages": the passive declare says it does not exist.
        assert queue_depths(app, [missing, name]) == {missing: None, name: 2}
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(name)


# -- rendering and diffs -------------------------------------------------------------


def test_render_shows_groups_workers_and_counters() -> None:
    lines = render(snap(row("g-a", executions=3, idle=1.25, depth=4), row("g-b", static=True), executions=7))
    assert lines[0].split() == ["GROUP", "WORKER", "QUEUE", "DEPTH", "MSG1", "EXECUTIONS", "IDLE", "MODE", "STATE"]
    assert lines[1].split() == ["g-a", "w1@h", "persistent.g-a", "4", "2.0", "KiB", "3", "1.2s", "rolling", "active"]
    assert lines[2].split()[-2:] == ["static", "active"]
    assert any(line.startswith("w1@h") for line in lines)
    assert lines[-1].startswith("counters: executions 7  coalesced 0")


def test_render_says_when_there_is_nothing() -> None:
    lines = render(snap(workers=()))
    assert "no hosted groups" in lines
    assert "no live persistent workers" in lines


def test_diff_reports_only_what_changed() -> None:
    old = snap(row("g-a"), row("g-gone", executions=5), executions=1)
    new = snap(row("g-a", executions=2, idle=0.1, depth=3), row("g-new"), workers=("w1@h", "w2@h"),
               executions=3, coalesced=1)
    lines = diff(old, new)
    assert "+ group g-new on w1@h (queue persistent.g-new, depth 0, rolling, Msg1 2.0 KiB)" in lines
    assert "- group g-gone (was on w1@h, 5 executions)" in lines
    assert "~ group g-a: executions 0 -> 2, depth 0 -> 3, idle 0.1s" in lines
    assert "+ worker w2@h" in lines
    assert "counters: executions +2, coalesced +1" in lines
    assert diff(new, new) == []


def test_diff_reports_idle_once_past_half_the_timeout() -> None:
    young, older, oldest = (snap(row("g", idle=idle)) for idle in (4.0, 5.5, 8.0))
    assert diff(young, older) == ["~ group g: idle 5.5s of 10.0s"]
    assert diff(older, oldest) == []  # still idle: nothing new to say

