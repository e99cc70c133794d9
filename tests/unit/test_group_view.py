"""The operator's view of groups (``groupview.GroupView``, ``monitor.snapshot``) and ``releasing.Releaser``.

A real Redis and a real Celery app whose broker nobody consumes (see
tests/unit/conftest.py): requests are sent with ``apply_async``, so the
registry holds what a live cluster would, and executions are driven by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from celery.exceptions import Ignore

from celery_persistent import Device, LeaderDied
from celery_persistent.errors import Released, ReleaseRefused
from celery_persistent.groupview import GroupView
from celery_persistent.monitor import Monitor, Snapshot, diff, render, render_group, snapshot
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.releasing import Releaser
from celery_persistent.testing import wait_until
from tests.unit.conftest import FakeTask, PersistentEnv, Published, trace

during: list[Callable[[], None]] = []
"""Probes the device runs while it executes (to act on the registry mid-execution)."""


class Serial(Device):
    """One group per ``msg1["id"]``: identical requests coalesce, different ones queue."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        for probe in during:
            probe()
        return {"x": msg2.get("x")}


DEVICES = {"serial": Serial}
GROUP = "serial-a"
MSG1 = {"device": "serial", "id": "a"}


@pytest.fixture(autouse=True)
def _no_probes() -> None:
    during.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def releaser(env: PersistentEnv) -> Releaser:
    w = env.wiring
    return Releaser(env.registry, w.answer, w.dispatcher, w.placer)


def coalescing(env: PersistentEnv) -> tuple[Any, list[Any], list[Any]]:
    """The issue's scene: 4 identical requests (a leader and 3 waiters), then 2 others queued behind."""
    same = {"path": "run", "x": 1}
    leader = env.submit(MSG1, same)
    waiters = [env.submit(MSG1, same) for _ in range(3)]
    queued = [env.submit(MSG1, {"path": "run", "x": x}) for x in (2, 3)]
    return leader, waiters, queued


def execute(env: PersistentEnv, sent: Published) -> Any:
    """What a worker does with a published request: ``Coalescer.run``, then the tracer (not after Ignore)."""
    task = FakeTask(sent.id)
    plan = env.persistent.plan(sent.args[0], sent.msg2, sent.opts)
    outcome = env.wiring.coalescer.run(task, plan, sent.header, list(sent.args))
    trace(env, task, outcome)
    return outcome


def error_of(env: PersistentEnv, task_id: str) -> BaseException:
    result = env.result(task_id)
    wait_until(result.ready, timeout=5, message=f"an answer for {task_id}")
    assert result.state == "FAILURE", result.state
    assert isinstance(result.result, BaseException)
    return result.result


# -- the view ------------------------------------------------------------------------------------


def test_rows_show_an_ordinary_group_in_flight_with_its_leader_waiters_and_queue(env: PersistentEnv) -> None:
    leader, _, _ = coalescing(env)
    view = GroupView(env.registry)

    [row] = view.rows()
    assert (row.group, row.mode, row.state, row.leader, row.host) == (GROUP, "leader", "published", leader.id, "")
    assert (row.waiters, row.queued) == (3, 2)
    # Published: it may wait on the broker up to the queue TTL, measured on the server's clock.
    queue_ttl = env.registry.queue_ms / 1000
    assert row.lease_remaining is not None and row.lease_age is not None
    assert queue_ttl - 5 < row.lease_remaining <= queue_ttl
    assert 0 <= row.lease_age < 5
    assert row.key == env.registry.owner(GROUP)["key"]

    # Running: the lease is one lease TTL from the claim.
    assert env.registry.claim(GROUP, env.registry.owner(GROUP)["token"])
    [row] = view.rows(GROUP)
    assert row.state == "running"
    assert env.registry.lease_ms / 1000 - 5 < row.lease_remaining <= env.registry.lease_ms / 1000
    assert view.rows("serial-none") == []


def test_rows_of_a_hosted_group_count_its_accepted_requests_and_waiters(env: PersistentEnv) -> None:
    token = place(env)
    first = env.submit(MSG1, {"path": "run", "x": 1})
    env.submit(MSG1, {"path": "run", "x": 1})  # coalesces onto the first
    env.submit(MSG1, {"path": "run", "x": 2})
    env.registry.start_hosted(GROUP, token, first.id)
    assert env.client.hget(env.keys.owner(GROUP), "running") == first.id.encode()

    [row] = GroupView(env.registry).rows()
    assert (row.mode, row.host, row.leader, row.waiters, row.queued) == ("hosted", "w1@unit", first.id, 1, 1)


def test_detail_holds_everything_about_one_group(env: PersistentEnv) -> None:
    leader, waiters, queued = coalescing(env)
    owner = env.registry.owner(GROUP)
    detail = GroupView(env.registry).detail(GROUP)

    assert detail.known and detail.group == GROUP
    assert detail.owner["token"] == owner["token"] and "request" not in detail.owner
    assert detail.leader == {"id": leader.id, "key": owner["key"], "task": "persistent.resolve"}
    assert detail.inflight[owner["key"]] == leader.id and len(detail.inflight) == 3
    assert detail.waiters[owner["key"]] == [w.id for w in waiters]
    assert [r["id"] for r in detail.queued] == [q.id for q in queued]
    assert detail.lease is not None and detail.lease["deadline_ms"] > detail.server_ms
    assert detail.hosting is None and detail.checkpoint is None and detail.deliveries == []

    lines = render_group(detail)
    assert lines[0] == f"group {GROUP} (leader, published)"
    assert f"owner token   {owner['token']}" in lines
    assert any(line.startswith(f"in flight     {leader.id}") and "3 waiting" in line for line in lines)
    assert f"  {queued[1].id} (key {detail.queued[1]['key']})" in lines

    assert not GroupView(env.registry).detail("serial-nothing").known


def test_detail_of_a_hosted_group_names_its_host_checkpoint_and_accepted_requests(env: PersistentEnv) -> None:
    place(env)
    sent = env.submit(MSG1, {"path": "run", "x": 1})
    detail = GroupView(env.registry).detail(GROUP)

    assert detail.hosting is not None and detail.checkpoint is not None
    assert (detail.hosting["worker"], detail.hosting["worker_live"]) == ("w1@unit", False)  # no heartbeat
    assert detail.checkpoint["stored"] is True and detail.checkpoint["ttl"] > 0
    assert detail.accepted == [{"id": sent.id, "key": detail.accepted[0]["key"], "task": "persistent.resolve",
                                "running": False}]
    assert detail.counters == {"seq": 1}


def test_status_shows_groups_in_flight_beside_the_hosted_ones(env: PersistentEnv) -> None:
    leader, _, _ = coalescing(env)
    snap = snapshot(env.persistent)

    assert snap.groups == {}
    assert snap.inflight[GROUP]["leader"] == leader.id
    assert (snap.inflight[GROUP]["waiters"], snap.inflight[GROUP]["queued"]) == (3, 2)
    assert snap.parked == {}
    assert [row["group"] for row in snap.as_json()["inflight"]] == [GROUP]
    lines = render(snap)
    header = next(i for i, line in enumerate(lines) if line.startswith("GROUP ") and "LEADER" in line)
    assert lines[header].split() == ["GROUP", "LEADER", "STATE", "LEASE", "LEFT", "LEASE", "AGE", "WAITERS", "QUEUED"]
    assert lines[header - 2:header] == ["no hosted groups", ""]
    assert lines[header + 1].split()[:3] == [GROUP, leader.id, "published"]
    assert lines[header + 1].split()[-2:] == ["3", "2"]
    assert "no parked groups" in lines


def test_monitor_reports_groups_in_flight_changing_and_prints_json_lines(env: PersistentEnv) -> None:
    def flying(leader: str, state: str, waiters: int, queued: int) -> Snapshot:
        row = {"group": GROUP, "leader": leader, "state": state, "waiters": waiters, "queued": queued}
        return Snapshot(inflight={GROUP: row})

    assert diff(Snapshot(), flying("a", "published", 0, 1)) == [f"+ in flight {GROUP}: leader a published, "
                                                                 "0 waiting, 1 queued"]
    assert diff(flying("a", "running", 2, 1), flying("b", "published", 0, 0)) == [
        f"~ in flight {GROUP}: leader a -> b, state running -> published, waiters 2 -> 0, queued 1 -> 0"]
    assert diff(flying("b", "running", 0, 0), Snapshot()) == [f"- in flight {GROUP} (done)"]

    leader, _, _ = coalescing(env)
    watcher = Monitor(env.persistent, as_json=True)
    for _ in range(2):  # every refresh is the full status, not a diff
        [line] = watcher.poll()
        assert [row["leader"] for row in json.loads(line)["inflight"]] == [leader.id]


# -- release: an ordinary group --------------------------------------------------------------------


def test_releasing_an_ordinary_group_answers_its_callers_and_publishes_the_next(env: PersistentEnv) -> None:
    leader, waiters, queued = coalescing(env)
    token = env.registry.owner(GROUP)["token"]

    report = releaser(env).release(GROUP, token)

    assert (report.mode, report.request, report.state, report.token) == ("leader", leader.id, "published", token)
    assert report.answered == [leader.id] + [w.id for w in waiters]
    for request in (leader, *waiters):
        error = error_of(env, request.id)
        assert isinstance(error, Released) and isinstance(error, LeaderDied)
        assert (error.group, error.leader_id) == (GROUP, leader.id)
    # The group moved on: the first queued request owns it and is on the broker with its token.
    assert report.next_request == queued[0].id
    owner = env.registry.owner(GROUP)
    assert owner["task_id"] == queued[0].id and owner["token"] != token
    nxt = env.message(None, queued[0].id)
    assert nxt.header is not None and nxt.header["token"] == owner["token"]
    assert env.deliveries() == []

    # The released leader's message, when a worker gets it, is a stale copy: skipped, not run.
    with pytest.raises(Ignore):
        execute(env, env.message(None, leader.id))
    assert isinstance(error_of(env, leader.id), Released)
    # The next one runs as usual, and so does the last.
    assert execute(env, nxt) == {"x": 2}
    assert execute(env, env.message(None, queued[1].id)) == {"x": 3}
    assert env.registry.owner(GROUP) == {}


def test_a_running_leader_released_mid_execution_is_fenced(env: PersistentEnv) -> None:
    """The stuck execution ends after the release: its Msg3 is dropped, the callers keep Released."""
    same = {"path": "run", "x": 1}
    leader = env.submit(MSG1, same)
    waiter = env.submit(MSG1, same)
    reports = []
    during.append(lambda: reports.append(releaser(env).release(GROUP)))

    with pytest.raises(Ignore):
        execute(env, env.message(None, leader.id))

    [report] = reports
    assert (report.state, report.answered, report.next_request) == ("running", [leader.id, waiter.id], "")
    assert isinstance(error_of(env, leader.id), Released)
    assert isinstance(error_of(env, waiter.id), Released)
    assert env.registry.owner(GROUP) == {}  # nothing queued: the group is free
    assert env.client.zscore(env.keys.leases(), GROUP) is None


def test_release_refuses_a_stale_token_an_unknown_group_and_a_moved_name(env: PersistentEnv) -> None:
    leader, _, _ = coalescing(env)
    before = GroupView(env.registry).detail(GROUP)

    with pytest.raises(ReleaseRefused) as stale:
        releaser(env).release(GROUP, "not-the-token")
    assert stale.value.reason == "stale" and "not-the-token" in str(stale.value)
    assert GroupView(env.registry).detail(GROUP).owner == before.owner
    assert not env.result(leader.id).ready()

    with pytest.raises(ReleaseRefused) as unknown:
        releaser(env).release("serial-nobody")
    assert (unknown.value.reason, unknown.value.group) == ("unknown", "serial-nobody")

    env.client.hset(env.keys.owner("serial-old"), mapping={"mode": "moved", "token": "t", "target": GROUP})
    with pytest.raises(ReleaseRefused) as moved:
        releaser(env).release("serial-old", "t")
    assert moved.value.reason == "moved" and f"release {GROUP} instead" in str(moved.value)


# -- release: a hosted group -----------------------------------------------------------------------


def place(env: PersistentEnv, host: str = "w1@unit", static: bool = True) -> str:
    """Host the group of MSG1 on ``host`` (no such worker runs: the test plays it); its token."""
    ref = env.store.put(MSG1)
    where = Placement(GROUP, host, env.queue(GROUP), ref.storage_id, static, 30.0, "serial", ref.size, "ignore")
    assert env.registry.place(where).status is PlaceStatus.PLACED
    return env.registry.owner(GROUP)["token"]


def test_releasing_a_hosted_static_group_answers_the_running_request_and_hands_on_the_rest(
        env: PersistentEnv) -> None:
    token = place(env)
    running = env.submit(MSG1, {"path": "run", "x": 1})
    onto = env.submit(MSG1, {"path": "run", "x": 1})  # coalesced onto the running one
    rest = [env.submit(MSG1, {"path": "run", "x": x}) for x in (2, 3)]
    env.registry.start_hosted(GROUP, token, running.id)
    assert env.client.hget(env.keys.owner(GROUP), "running") == running.id.encode()

    report = releaser(env).release(GROUP, token)

    assert (report.mode, report.host, report.request) == ("hosted", "w1@unit", running.id)
    assert report.answered == [running.id, onto.id]
    assert isinstance(error_of(env, running.id), Released)
    assert isinstance(error_of(env, onto.id), Released)
    # The rest run as ordinary requests, in order, against the group's last state.
    assert report.handed_on == [r.id for r in rest]
    assert env.client.zscore(env.keys.hosts(), GROUP) is None
    owner = env.registry.owner(GROUP)
    assert (owner["mode"], owner["task_id"]) == ("leader", rest[0].id)
    assert execute(env, env.message(None, rest[0].id)) == {"x": 2}
    assert execute(env, env.message(None, rest[1].id)) == {"x": 3}
    assert env.registry.owner(GROUP) == {}
    # The old host is fenced: it can neither renew nor run anything of the group.
    assert env.registry.renew([(GROUP, token)]) == [False]


def test_releasing_a_rolling_group_parks_it_with_its_other_requests(env: PersistentEnv) -> None:
    """A rolling group's state is not dropped by a release: the next persistent worker takes it up."""
    token = place(env, static=False)
    running = env.submit(MSG1, {"path": "run", "x": 1})
    rest = [env.submit(MSG1, {"path": "run", "x": x}) for x in (2, 3)]
    env.registry.start_hosted(GROUP, token, running.id)

    report = releaser(env).release(GROUP, token)

    assert (report.mode, report.request, report.answered, report.handed_on) == ("parked", running.id, [running.id], [])
    assert isinstance(error_of(env, running.id), Released)
    owner = env.registry.owner(GROUP)
    assert (owner["mode"], owner["state"], owner["host"]) == ("hosted", "parked", "")
    assert [r.id for r in env.registry.accepted(GROUP)] == [r.id for r in rest]
    assert env.registry.parked() == [GROUP]
    assert env.registry.renew([(GROUP, token)]) == [False]  # the old host is fenced

