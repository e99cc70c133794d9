"""`celery persistent status / inspect / release / monitor --json` during live coalescing, with real workers.

The scene of issue 11: 4 identical requests (one running, held by the
``until`` device parameter until the test sets an evidence key, and 3
coalesced onto it) and 2 other requests of the same group queued behind.
An ordinary prefork worker with 2 processes runs them: while the first
process is stuck in the held execution, the second is free, so a release
shows the group moving on at once.

The commands run in this process through Celery's own ``celery`` command
(click's test runner: a subprocess costs seconds of imports each), except
the release, which an operator runs from a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.bin.celery import celery
from click.testing import CliRunner

from celery_persistent.errors import Released
from tests.conftest import evidence_key
from tests.support import ROOT, Worker, wait_until

ARGS = ["-A", "tests.apps.basic", "persistent"]


def cli(*args: str) -> tuple[int, str, str]:
    """``celery -A tests.apps.basic persistent ARGS``, in this process: exit status, stdout, stderr."""
    result = CliRunner().invoke(celery, [*ARGS, *args])
    return result.exit_code, result.stdout, result.stderr


def in_a_process(*args: str) -> tuple[int, str, str]:
    """The same command as an operator runs it: a process of its own."""
    done = subprocess.run([sys.executable, "-m", "celery", *ARGS, *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def ok(*args: str, run: Callable[..., tuple[int, str, str]] = cli) -> str:
    status, out, err = run(*args)
    assert status == 0, f"{args} failed ({status}):\n{out}\n{err}"
    return out


def fails(*args: str) -> str:
    """A command that must fail: non-zero status and one line on stderr, no traceback."""
    status, out, err = cli(*args)
    assert status != 0, f"{args} succeeded:\n{out}"
    assert "Traceback" not in err
    message = err.strip()
    assert len(message.splitlines()) == 1 and message.startswith("Error: "), message
    return message


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    """An ordinary worker with two processes (the test app's default queue)."""
    started = Worker(pool="prefork", concurrency=2, logdir=tmp_path_factory.mktemp("cli-groups")).wait_ready()
    yield started
    started.stop()


def scene(persistent: Any, rdb: Any, uid: str) -> tuple[Any, list[Any], list[Any]]:
    """Start the held leader, then coalesce 3 callers onto it and queue 2 others behind it."""
    msg1 = {"device": "serial", "id": uid}
    held = {"path": "run", "until": uid, "n": 0}
    leader = persistent.resolve.delay(msg1, held)
    wait_until(lambda: rdb.get(evidence_key("runs", uid)) == b"1", timeout=20, message="the leader to start")
    waiters = [persistent.resolve.delay(msg1, held) for _ in range(3)]
    queued = [persistent.resolve.delay(msg1, {"path": "run", "n": n}) for n in (1, 2)]
    return leader, waiters, queued


def test_status_inspect_and_release_during_live_coalescing(worker, persistent, rdb, uid) -> None:
    group = f"serial-{uid}"
    leader, waiters, queued = scene(persistent, rdb, uid)
    try:
        # status --json: the group in flight, with its leader, waiters and queue.
        report = json.loads(ok("status", "--json", "--group", group))
        [row] = report["inflight"]
        assert (row["group"], row["mode"], row["state"], row["leader"]) == (group, "leader", "running", leader.id)
        assert (row["waiters"], row["queued"]) == (3, 2)
        assert 0 < row["lease_remaining"] <= 60 and row["lease_age"] >= 0
        assert report["groups"] == [] and report["parked"] == []
        # The table says the same.
        table = ok("status", "--group", group)
        line = next(line for line in table.splitlines() if line.startswith(group + " "))
        assert line.split()[1:3] == [leader.id, "running"] and line.split()[-2:] == ["3", "2"]
        assert "no hosted groups" in table and "no parked groups" in table

        # inspect: the owner token, the waiters' ids and the queue, in order.
        detail = json.loads(ok("inspect", group, "--json"))
        token = detail["owner"]["token"]
        assert detail["leader"]["id"] == leader.id and detail["owner"]["state"] == "running"
        assert detail["waiters"][detail["leader"]["key"]] == [w.id for w in waiters]
        assert [r["id"] for r in detail["queued"]] == [q.id for q in queued]
        text = ok("inspect", group)
        assert f"owner token   {token}" in text.splitlines()

        # monitor --json: one JSON object per refresh and line.
        lines = ok("monitor", "--json", "--count", "2", "--interval", "0.1", "--group", group).splitlines()
        assert len(lines) == 2
        assert all(json.loads(line)["inflight"][0]["leader"] == leader.id for line in lines)

        # release: refused with another token, nothing changes; done with the one inspect showed.
        assert "is not owned by token not-it" in fails("release", group, "--token", "not-it")
        assert not leader.ready()
        done = json.loads(ok("release", group, "--token", token, "--json", run=in_a_process))
        assert (done["mode"], done["request"], done["state"]) == ("leader", leader.id, "running")
        assert done["answered"] == [leader.id] + [w.id for w in waiters]
        assert done["next_request"] == queued[0].id

        # Every caller is answered: Released for the held execution's, and the queue moves on
        # while that execution is still stuck in the worker's other process.
        for result in (leader, *waiters):
            with pytest.raises(Released):
                result.get(timeout=10)
        assert [q.get(timeout=20)["n"] for q in queued] == [1, 2]
        assert rdb.get(evidence_key("release", uid)) is None  # still held
    finally:
        rdb.set(evidence_key("release", uid), 1)

    # The held execution ends: fenced (its finish finds another token), it answers nobody again.
    wait_until(lambda: f"group {group} was taken over before its leader finished" in worker.log(), timeout=20,
               message="the held execution to end, fenced")
    assert rdb.llen(evidence_key("intervals", uid)) == 3
    assert isinstance(persistent.app.AsyncResult(leader.id).result, Released)
    assert "unknown group" in fails("inspect", group)
    assert json.loads(ok("status", "--json", "--group", group))["inflight"] == []


def test_resolve_json_and_release_of_an_unknown_group(worker, persistent, uid, tmp_path) -> None:
    """resolve --json names the request and its Msg3; release of a group nothing owns is refused."""
    msg1, msg2 = tmp_path / "msg1.json", tmp_path / "msg2.json"
    msg1.write_text(json.dumps({"device": "counter", "id": uid, "count": 1}))
    msg2.write_text(json.dumps({"path": "add", "by": 2}))
    answer = json.loads(ok("resolve", str(msg1), str(msg2), "--json"))
    assert answer["msg3"] == {"device": "counter", "id": uid, "count": 3}
    assert persistent.app.AsyncResult(answer["id"]).get(timeout=10) == answer["msg3"]
    assert f"unknown group counter-{uid}-none: nothing owns it" in fails("release", f"counter-{uid}-none")
