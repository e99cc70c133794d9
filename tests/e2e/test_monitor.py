"""The live Monitor (celery_persistent.monitor) against a real persistent worker."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator

import pytest

from celery_persistent.monitor import Monitor, snapshot
from tests.support import Worker, wait_until


@pytest.fixture(scope="module")
def persistent_worker(tmp_path_factory) -> Iterator[Worker]:
    worker = Worker(extra=["--persistent", "-Q", f"unused-{uuid.uuid4().hex[:8]}"],
                    logdir=tmp_path_factory.mktemp("monitor")).wait_ready()
    yield worker
    worker.stop()


def test_monitor_prints_groups_as_they_come_change_and_go(persistent_worker, persistent, uid) -> None:
    stream = io.StringIO()
    monitor = persistent.start_monitor(interval=0.2, stream=stream)
    try:
        wait_until(lambda: "counters: executions" in stream.getvalue(), message="the first sitrep")
        msg1 = {"device": "state", "id": uid, "count": 0}
        handle = persistent.start_worker(msg1, {"worker_timeout": 30})
        group = f"state-{uid}"
        assert handle.group == group
        wait_until(lambda: f"+ group {group} on {persistent_worker.hostname}" in stream.getvalue(),
                   message="the monitor to show the new group")

        assert persistent.resolve.delay(msg1, {"path": "add", "by": 2}).get(timeout=15)["count"] == 2
        changed = re.compile(rf"~ group {re.escape(group)}: .*executions 0 -> 1")
        wait_until(lambda: changed.search(stream.getvalue()), message="the monitor to show the execution")
        wait_until(lambda: re.search(r"counters: .*executions \+\d+", stream.getvalue()),
                   message="the counter delta")

        assert persistent.stop_worker(group)
        wait_until(lambda: f"- group {group} (was on {persistent_worker.hostname}, 1 executions)"
                   in stream.getvalue(), message="the monitor to show the group leave")
    finally:
        persistent.stop_monitor(monitor)
    assert not monitor.running


def test_monitor_of_one_group_and_snapshot_filter(persistent_worker, persistent, uid) -> None:
    msg1 = {"device": "state", "id": uid, "count": 0}
    group = persistent.start_worker(msg1, {"worker_timeout": 30, "static_worker": True}).group
    try:
        wait_until(lambda: group in snapshot(persistent, group).groups, message="the group in a snapshot")
        assert list(snapshot(persistent, group).groups) == [group]
        assert snapshot(persistent, group).groups[group]["static"] is True
        assert snapshot(persistent, "no-such-group").groups == {}

        only, other = io.StringIO(), io.StringIO()
        Monitor(persistent, group=group, stream=only).run(count=1)
        Monitor(persistent, group="no-such-group", stream=other).run(count=1)
        assert re.search(rf"^{re.escape(group)}\s+{re.escape(persistent_worker.hostname)}\s.*static",
                         only.getvalue(), re.MULTILINE)
        assert group not in other.getvalue()
        assert "no hosted groups" in other.getvalue()
    finally:
        persistent.stop_worker(group)
