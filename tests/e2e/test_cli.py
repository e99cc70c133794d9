"""`celery -A tests.apps.basic persistent ...` run for real against real workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_persistent.metrics import COUNTERS
from celery_persistent.monitor import snapshot
from tests.e2e.support import hosted
from tests.support import ROOT, Worker, wait_until

CELERY = [sys.executable, "-m", "celery", "-A", "tests.apps.basic", "persistent"]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CELERY, *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fails(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a command that must fail: non-zero status, one clear line on stderr, no traceback."""
    done = cli(*args, env=env)
    assert done.returncode != 0, f"{args} succeeded:\n{done.stdout}"
    message = done.stderr.strip()
    assert "Traceback" not in done.stderr
    assert len(message.splitlines()) == 1, message
    assert message.startswith("Error: ")
    return message


def write(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict[str, Worker]]:
    """Two persistent workers (they consume only group queues) and one ordinary worker."""
    logdir = tmp_path_factory.mktemp("cli")
    unused = ["-Q", f"unused-{uuid.uuid4().hex[:8]}"]
    started = {
        "p1": Worker(extra=["--persistent", *unused], logdir=logdir),
        "p2": Worker(extra=["--persistent", *unused], logdir=logdir),
        "plain": Worker(logdir=logdir),
    }
    try:
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.stop()


@pytest.fixture
def hosts(cluster) -> set[str]:
    return {cluster["p1"].hostname, cluster["p2"].hostname}


def start_group(tmp_path: Path, persistent, msg1: dict, *flags: str) -> dict:
    handle = json.loads(ok("start", write(tmp_path, "msg1.json", msg1), "--timeout", "30", "--json", *flags))
    wait_until(lambda: (hosted(persistent, handle["group"]) or {}).get("state") == "active",
               message=f"group {handle['group']} to be active")
    return handle


def test_status_table_and_json_show_a_started_group(cluster, hosts, persistent, uid, tmp_path) -> None:
    handle = start_group(tmp_path, persistent, {"device": "state", "id": uid, "count": 0})
    group = f"state-{uid}"
    assert handle == {"group": group, "queue": f"persistent.{group}", "hostname": handle["hostname"]}
    assert handle["hostname"] in hosts

    table = ok("status")
    line = next(line for line in table.splitlines() if line.startswith(group + " "))
    assert line.split()[:4] == [group, handle["hostname"], f"persistent.{group}", "0"]
    assert line.split()[-2:] == ["rolling", "active"]
    assert re.search(r"^counters: executions \d+  coalesced \d+", table, re.MULTILINE)

    report = json.loads(ok("status", "--json"))
    row = next(r for r in report["groups"] if r["group"] == group)
    assert row["hostname"] == handle["hostname"]
    assert row["depth"] == 0 and row["static"] is False and row["executions"] == 0
    assert hosts <= {w["hostname"] for w in report["workers"]}
    assert set(COUNTERS) <= set(report["counters"])
    assert report["counters"]["placements"] >= 1

    only = json.loads(ok("status", "--json", "--group", group))
    assert [r["group"] for r in only["groups"]] == [group]


def test_start_static_then_stop(cluster, persistent, uid, tmp_path) -> None:
    group = start_group(tmp_path, persistent, {"device": "state", "id": uid}, "--static")["group"]
    assert hosted(persistent, group)["static"] is True
    assert ok("status", "--group", group).splitlines()[1].split()[-2:] == ["static", "active"]

    assert ok("stop", group).strip() == f"stopping group {group}"
    wait_until(lambda: hosted(persistent, group) is None, message=f"group {group} to be let go")
    assert "unknown group" in fails("stop", group)


def test_resolve_prints_msg3_as_json(cluster, persistent, uid, tmp_path) -> None:
    # An ordinary request, run by the plain worker.
    counter = write(tmp_path, "counter.json", {"device": "counter", "id": uid, "count": 40})
    add = write(tmp_path, "add.json", {"path": "add", "by": 2})
    assert json.loads(ok("resolve", counter, add)) == {"device": "counter", "id": uid, "count": 42}

    # A request of a hosted group, run by its persistent worker against the cached Msg1.
    msg1 = {"device": "state", "id": uid, "count": 0}
    group = start_group(tmp_path, persistent, msg1)["group"]
    state = write(tmp_path, "state.json", msg1)
    assert json.loads(ok("resolve", state, add, "--timeout", "15"))["count"] == 2
    assert json.loads(ok("resolve", state, add))["count"] == 4  # rolling: Msg3 became Msg1
    assert hosted(persistent, group)["executions"] == 2


def test_status_counts_requests_waiting_in_a_group_queue(cluster, persistent, uid, tmp_path) -> None:
    msg1 = {"device": "state", "id": uid, "count": 0}
    group = start_group(tmp_path, persistent, msg1)["group"]
    blocker = persistent.resolve.delay(msg1, {"path": "add", "by": 1, "sleep": 3, "n": 0})
    waiting = [persistent.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in range(1, 5)]
    wait_until(lambda: (snapshot(persistent, group).groups[group]["depth"] or 0) >= 2,
               message="requests to wait in the group queue")
    row = json.loads(ok("status", "--json", "--group", group))["groups"][0]
    assert row["depth"] >= 1
    assert blocker.get(timeout=20)["count"] == 1
    assert [r.get(timeout=20)["count"] for r in waiting] == [2, 3, 4, 5]


def test_drain_moves_the_group_to_the_other_worker(cluster, hosts, persistent, uid, tmp_path) -> None:
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = start_group(tmp_path, persistent, msg1)
    before = handle["hostname"]
    assert persistent.resolve.delay(msg1, {"path": "add", "by": 1}).get(timeout=15)["count"] == 1

    assert ok("drain", before).startswith(f"draining {before}")
    after = wait_until(lambda: (hosted(persistent, handle["group"]) or {}).get("hostname") not in (None, before),
                       message="the group to move")
    assert after
    assert hosted(persistent, handle["group"])["hostname"] in hosts - {before}
    # The new owner carries on from the rolled state.
    assert persistent.resolve.delay(msg1, {"path": "add", "by": 1}).get(timeout=15)["count"] == 2

    # The worker reports that it drains with its next heartbeat; from then on it takes no new groups.
    wait_until(lambda: any(w["hostname"] == before and w.get("draining") for w in persistent.workers()),
               message=f"{before} to report that it drains")
    assert f"{before} is already draining" in fails("drain", before)
    assert "no live persistent worker named nobody@nowhere" in fails("drain", "nobody@nowhere")


def test_monitor_count_exits_on_its_own(cluster, persistent, uid, tmp_path) -> None:
    group = start_group(tmp_path, persistent, {"device": "state", "id": uid})["group"]
    done = cli("monitor", "--count", "2", "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^{re.escape(group)}\s", done.stdout, re.MULTILINE)
    assert "counters: executions" in done.stdout


def test_monitor_shows_changes_live_and_stops_on_ctrl_c(cluster, persistent, uid, tmp_path) -> None:
    msg1 = {"device": "state", "id": uid, "count": 0}
    group = start_group(tmp_path, persistent, msg1)["group"]
    proc = subprocess.Popen([*CELERY, "monitor", "--interval", "0.2", "--group", group], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith(group + " ") for line in lines), timeout=20,
                   message="the first sitrep")
        assert persistent.resolve.delay(msg1, {"path": "add", "by": 1}).get(timeout=15)["count"] == 1
        wait_until(lambda: any(re.search(rf"~ group {re.escape(group)}: .*executions 0 -> 1", line)
                               for line in lines), message="the monitor to print the execution")
        persistent.stop_worker(group)
        wait_until(lambda: any(f"- group {group}" in line for line in lines), message="the group to leave")
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(15)
    reader.join(5)
    assert status == 0
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("case", ["bad-json", "missing-file", "not-a-message", "unknown-device", "bad-opts",
                                  "unknown-key"])
def test_errors_are_one_clear_line(cluster, case, uid, tmp_path) -> None:
    msg2 = write(tmp_path, "msg2.json", {"path": "add", "by": 1})
    counter = write(tmp_path, "counter.json", {"device": "counter", "id": uid, "count": 0})
    args, expected = {
        "bad-json": (["resolve", write(tmp_path, "bad.json", "{nope"), msg2], "is not valid JSON"),
        "missing-file": (["start", str(tmp_path / "absent.json")], "cannot read"),
        "not-a-message": (["resolve", write(tmp_path, "list.json", [1, 2]), msg2], "InvalidMessage"),
        "unknown-device": (["start", write(tmp_path, "dev.json", {"device": f"nope-{uid}"})], "UnknownDevice"),
        "bad-opts": (["resolve", counter, msg2, "--opts", "{spawn"], "--opts is not valid JSON"),
        "unknown-key": (["resolve", counter, write(tmp_path, "key.json", {"path": "nope"})], "UnknownKey"),
    }[case]
    assert expected in fails(*args)


def test_start_without_any_persistent_worker_fails_clearly(tmp_path) -> None:
    # Another key prefix: a registry where no persistent worker ever registered.
    msg1 = write(tmp_path, "msg1.json", {"device": "state", "id": "x"})
    message = fails("start", msg1, env={"CP_PREFIX": f"empty{uuid.uuid4().hex[:8]}"})
    assert "no live persistent worker" in message


def test_metrics_in_prometheus_text_format(cluster, persistent, tmp_path) -> None:
    msg1 = {"device": "state", "id": f"prom-{uuid.uuid4().hex[:6]}", "count": 0}
    persistent.start_worker(msg1, {"static_worker": True})
    persistent.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)
    text = ok("metrics", "--per-group")  # series labelled by group are opt-in
    executions = re.search(r"^celery_persistent_executions_total (\S+)$", text, re.M)
    assert executions and float(executions.group(1)) >= 1
    group = f"state-{msg1['id']}"
    assert re.search(rf'^celery_persistent_group_executions_total{{group="{group}"}} 1\.0$', text, re.M), text
    assert "celery_persistent_hosted_groups{" in text
