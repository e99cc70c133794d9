"""Redis round trips per request on each path, counted on the plugin's own connections.

The per-request floor (docs/benchmarks.md, "Round trips per request") is the
number of times a process waits for Redis.  These tests count them the way
the registry benchmark does: a redis-py connection class that counts each
write of one or more commands (one round trip) and names the commands, on the
plugin's client (registry, store, metrics) and, apart, on the result
backend's client.  Only the test's own thread is counted (the lease keeper's
beats are not part of a request).  Each path's count is pinned, so a change
that adds a round trip fails here and must say why in the table.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.exceptions import Ignore

from celery_persistent import Device
from celery_persistent.bootstep import ReceptionMark
from celery_persistent.hosting import Host, build_host
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.testing import wait_until
from tests.unit.conftest import FakeConsumer, FakeTask, PersistentEnv, Published, UnreadBell


class Echo(Device):
    """The default grouper: identical requests share a group (leader and waiters)."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"x": msg2.get("x")}


class Serial(Echo):
    """One group per ``msg1["id"]``: a second Msg2 is queued behind the first."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])


DEVICES = {"echo": Echo, "serial": Serial}


@dataclass
class Trips:
    """What one thread sent on one client: round trips, and the commands in them."""

    thread: int = field(default_factory=threading.get_ident)
    round_trips: int = 0
    unawaited: int = 0  # steps written without waiting for their reply (Registry's Unawaited connection)
    commands: list[str] = field(default_factory=list)
    scripts: dict[str, str] = field(default_factory=dict)  # sha -> script name

    def name(self, args: tuple[Any, ...]) -> str:
        words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
        if words[0].upper() == "EVALSHA":
            return self.scripts.get(words[1], words[1][:8])
        if words[0].upper() == "EVAL":
            return self.scripts.get(hashlib.sha1(words[1].encode()).hexdigest(), "EVAL")
        return words[0].upper()


class Meter:
    """Counts what the test's thread sends on one client while ``counted`` is open."""

    def __init__(self, client: redis.Redis, scripts: dict[str, str], unawaited: Any = None) -> None:
        self.scripts = scripts
        self.unawaited = unawaited  # the Unawaited of the client's registry, if any
        self.current: Trips | None = None
        meter = self
        pool = client.connection_pool
        self._pool, self._base = pool, pool.connection_class

        class Counting(pool.connection_class):  # type: ignore[name-defined,misc]
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if (trips := meter.mine()) is not None:
                    if meter.unawaited is not None and self is meter.unawaited._connection:
                        trips.unawaited += 1
                    else:
                        trips.round_trips += 1
                super().send_packed_command(command, check_health)

            def send_command(self, *args: Any, **kwargs: Any) -> None:
                if (trips := meter.mine()) is not None:
                    trips.commands.append(trips.name(args))
                super().send_command(*args, **kwargs)

            def pack_commands(self, commands: Any) -> Any:
                commands = list(commands)
                if (trips := meter.mine()) is not None:
                    trips.commands += [trips.name(tuple(c)) for c in commands]
                return super().pack_commands(commands)

        pool.connection_class = Counting
        pool.reset()
        # Connected (HELLO, SELECT...) before anything is counted: a few, as the lease thread holds one at times.
        warm = [pool.get_connection() for _ in range(4)]
        for connection in warm:
            connection.connect()
            pool.release(connection)

    def mine(self) -> Trips | None:
        trips = self.current
        return trips if trips is not None and threading.get_ident() == trips.thread else None

    def close(self) -> None:
        self._pool.connection_class = self._base
        self._pool.reset()


METERS: dict[int, Meter] = {}


@contextmanager
def counted(client: redis.Redis, scripts: dict[str, str]) -> Iterator[Trips]:
    """Count what this thread sends on ``client`` (metered by the ``scripts`` fixture)."""
    meter = METERS[id(client)]
    trips = Trips(scripts=scripts)
    meter.current = trips
    try:
        yield trips
    finally:
        meter.current = None


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


@pytest.fixture
def scripts(env: PersistentEnv) -> Iterator[dict[str, str]]:
    """SHA1 -> name of every registry script, each loaded once (a first EVALSHA would also SCRIPT LOAD);
    the plugin's client and the result backend's are metered meanwhile."""
    out = {}
    for name, script in env.registry._scripts.items():
        source = str(script.script)
        env.runtime.client.script_load(source)
        out[hashlib.sha1(source.encode()).hexdigest()] = name
    clients = (env.runtime.client, env.app.backend.client)
    METERS[id(env.runtime.client)] = Meter(env.runtime.client, out, env.registry._unawaited)
    METERS[id(env.app.backend.client)] = Meter(env.app.backend.client, out)
    try:
        yield out
    finally:
        for client in clients:
            METERS.pop(id(client)).close()


class Worker:
    """What a worker does with one published request, step by step, each step's round trips counted."""

    def __init__(self, env: PersistentEnv, scripts: dict[str, str]) -> None:
        self.env = env
        self.scripts = scripts

    def receive(self, sent: Published) -> list[str]:
        """The worker's main process receives the message (``task_received``: ``ReceptionMark``).

        Its one step (``reserve``) is sent without waiting: no round trip.
        """
        consumer = SimpleNamespace(app=self.env.app)
        request = SimpleNamespace(id=sent.id, request_dict={"headers": {}, **{"persistent_request": sent.header}})
        with counted(self.env.runtime.client, self.scripts) as trips:
            ReceptionMark(self.env.app)(sender=consumer, request=request)
        assert trips.round_trips == 0 and trips.unawaited == len(trips.commands)
        group = sent.header["group"] if sent.header else ""
        wait_until(lambda: self.env.registry.owner(group)["state"] == "reserved", timeout=5)
        return trips.commands

    def execute(self, sent: Published) -> tuple[list[str], list[str], int]:
        """Claim, run, finish and answer the waiters (``Coalescer.run``), then the tracer's part.

        Returns the registry commands of the run, those of the tracer's part
        (``after_return``), and the result backend's round trips during the run
        (the waiters' answers).
        """
        task = FakeTask(sent.id)
        assert sent.header is not None
        plan = self.env.persistent.plan(sent.args[0], sent.msg2, sent.opts, stack=tuple(sent.header["stack"]))
        client, backend = self.env.runtime.client, self.env.app.backend.client
        with counted(client, self.scripts) as run, counted(backend, self.scripts) as answers:
            outcome = self.env.wiring.coalescer.run(task, plan, sent.header, list(sent.args))
        self.env.app.backend.mark_as_done(task.request.id, outcome)  # the tracer stores the leader's own answer
        with counted(client, self.scripts) as after:
            trace_after_return(self.env, task)
        assert run.round_trips == len(run.commands) and run.unawaited == 0
        # The delivery is closed without waiting (Dispatcher.settle): no round trip.
        assert after.round_trips == 0 and after.unawaited == len(after.commands)
        return run.commands, after.commands, answers.round_trips


def trace_after_return(env: PersistentEnv, task: FakeTask) -> None:
    """The tracer's ``after_return`` alone (``trace`` without storing the answer again)."""
    resolve = env.persistent.resolve
    resolve.request_stack.push(task.request)
    try:
        resolve.after_return("SUCCESS", None, task.request.id, [], {}, None)
    finally:
        resolve.request_stack.pop()


def send(env: PersistentEnv, scripts: dict[str, str], msg1: Any, msg2: Any) -> tuple[Any, list[str], int]:
    """``apply_async`` from a client; its registry commands, and the round trips they took (waited for)."""
    with counted(env.runtime.client, scripts) as trips:
        result = env.persistent.resolve.apply_async(args=[msg1, msg2])
    assert trips.round_trips + trips.unawaited == len(trips.commands)
    return result, trips.commands, trips.round_trips


# -- the table of docs/benchmarks.md, pinned -------------------------------------------------------


def test_a_leader_takes_one_round_trip_to_send_and_two_on_its_worker(env: PersistentEnv,
                                                                      scripts: dict[str, str]) -> None:
    result, commands, round_trips = send(env, scripts, {"device": "echo"}, {"path": "run", "x": 1})
    # Registered on send (submit), then marked published once the broker took it (its lease lengthens),
    # without waiting for that reply.
    assert commands == ["submit", "published"] and round_trips == 1
    sent = env.message(None, result.id)

    worker = Worker(env, scripts)
    assert worker.receive(sent) == ["reserve"]  # a worker has it: its death is noticed within a lease
    run, after, answers = worker.execute(sent)
    # Fenced (claim); released with its outcome, waiters, delivery and histograms in one step (finish).
    assert run == ["claim", "finish"]
    assert answers == 0  # no waiter to answer
    assert after == ["deliver"]  # every caller answered: the delivery is closed (not waited for)
    assert result.get(timeout=5) == {"x": 1}


@pytest.mark.parametrize("waiters", [1, 5])
def test_a_waiter_takes_one_round_trip_to_send_and_none_of_its_own_on_the_worker(
        env: PersistentEnv, scripts: dict[str, str], waiters: int) -> None:
    leader, _, _ = send(env, scripts, {"device": "echo"}, {"path": "run", "x": 2})
    sent = env.message(None, leader.id)
    joined = []
    for _ in range(waiters):
        result, commands, round_trips = send(env, scripts, {"device": "echo"}, {"path": "run", "x": 2})
        assert commands == ["submit"] and round_trips == 1  # no message, no published mark
        joined.append(result)
    assert [m.id for m in env.messages()] == [leader.id]

    run, after, answers = Worker(env, scripts).execute(sent)
    # The waiters come back with finish; one read tells which of them were revoked (they get REVOKED).
    assert run == ["claim", "finish", "ZMSCORE"] and after == ["deliver"]
    # Their answers go to the result backend: one pipeline for them all (one Celery store for a lone one).
    assert answers == (2 if waiters == 1 else 1)
    assert all(r.get(timeout=5) == {"x": 2} for r in joined)


def test_a_queued_request_takes_one_round_trip_to_send_and_is_published_by_the_leaders_finish(
        env: PersistentEnv, scripts: dict[str, str]) -> None:
    first, _, _ = send(env, scripts, {"device": "serial", "id": "q"}, {"path": "run", "x": 1})
    queued, commands, round_trips = send(env, scripts, {"device": "serial", "id": "q"}, {"path": "run", "x": 2})
    assert commands == ["submit"] and round_trips == 1
    worker = Worker(env, scripts)

    run, after, _ = worker.execute(env.message(None, first.id))
    # finish hands the group to the queued request (already marked published): no step of its own.
    assert run == ["claim", "finish"] and after == ["deliver"]
    sent = env.message(None, queued.id)
    assert worker.receive(sent) == ["reserve"]
    run, after, _ = worker.execute(sent)
    assert run == ["claim", "finish"] and after == ["deliver"]
    assert queued.get(timeout=5) == {"x": 2}


def host_of(env: PersistentEnv, msg1: dict[str, Any]) -> tuple[Host, str]:
    """A persistent worker hosting the group of ``msg1`` (placed and adopted, as ``start_worker`` does)."""
    w = env.wiring
    host = build_host(env.app, env.worker_hostname("rt"), env.runtime, w.planner, w.placer, env.persistent.devices,
                      w.answer, w.dispatcher, cache_bytes=1 << 20, default_timeout=30.0)
    host.bell = UnreadBell(host.naps, host.ring)
    host.bind(FakeConsumer(env.app))
    group = env.persistent.group(msg1)
    assert group is not None
    ref = env.store.put(msg1)
    where = Placement(group, host.hostname, env.queue(group), ref.storage_id, True, 30.0, msg1["device"],
                      ref.size, "ignore")
    assert env.registry.place(where).status is PlaceStatus.PLACED
    host.tick()
    assert host.table.lookup(group) is not None
    return host, group


def test_a_hosted_request_takes_one_round_trip_to_send(env: PersistentEnv, scripts: dict[str, str]) -> None:
    msg1 = {"device": "serial", "id": "h"}
    host, group = host_of(env, msg1)

    result, commands, round_trips = send(env, scripts, msg1, {"path": "run", "x": 3})
    # Accepted by its host in the submit itself; the message goes to the group's queue, Msg1 by reference.
    assert commands == ["submit"] and round_trips == 1
    sent = env.message(env.queue(group), result.id)

    task = FakeTask(result.id)
    assert sent.header is not None
    task.request.delivery_info = {"routing_key": env.queue(group)}
    with counted(env.runtime.client, scripts) as run:
        try:
            outcome = host.run(task, sent.header, sent.msg2, sent.opts)
        except Ignore:  # pragma: no cover - would fail the assertion below
            outcome = None
    # Fenced (start_hosted) and finished (finish_hosted), waited for; its histograms (observe) sent
    # without waiting, as nothing after them needs their reply.
    assert run.commands == ["start_hosted", "observe", "finish_hosted"]
    assert (run.round_trips, run.unawaited) == (2, 1), run.commands
    env.app.backend.mark_as_done(task.request.id, outcome)
    with counted(env.runtime.client, scripts) as after:
        trace_after_return(env, task)
    assert after.commands == ["deliver"] and (after.round_trips, after.unawaited) == (0, 1)
    assert result.get(timeout=5) == {"x": 3}


def test_a_request_with_no_group_waits_for_no_registry_step(env: PersistentEnv, scripts: dict[str, str]) -> None:
    """``await_inprogress=False``: no registration; its worker only records the histograms, not waited for."""
    with counted(env.runtime.client, scripts) as sent:
        result = env.persistent.resolve.apply_async(args=[{"device": "echo"}, {"path": "run", "x": 5},
                                                          {"await_inprogress": False}])
    assert sent.commands == []
    message = env.message(None, result.id)
    task = FakeTask(result.id)
    plan = env.persistent.plan(message.args[0], message.msg2, message.opts, stack=())
    with counted(env.runtime.client, scripts) as run:
        outcome = env.wiring.coalescer.run(task, plan, message.header, list(message.args))
    assert outcome == {"x": 5}
    assert run.commands == ["observe"] and (run.round_trips, run.unawaited) == (0, 1)


def test_a_registry_script_unknown_to_the_server_is_loaded_and_run(env: PersistentEnv) -> None:
    """After a Redis restart (its script cache empty) a step answers NOSCRIPT once: the script is loaded again."""
    script = env.registry._scripts["published"]
    right = script.sha
    script.sha = "0" * 40  # as if the server had never seen it
    assert env.registry.published("no-such-group", "no-token") is False
    assert script.sha == right


# -- steps sent without waiting (Registry's Unawaited) ---------------------------------------------


def leaders(env: PersistentEnv, n: int) -> list[tuple[str, str]]:
    """(group, token) of ``n`` registered leaders, as published."""
    out = []
    for i in range(n):
        result = env.persistent.resolve.apply_async(args=[{"device": "echo"}, {"path": "run", "x": 100 + i}])
        header = env.message(None, result.id).header
        assert header is not None
        out.append((header["group"], header["token"]))
    return out


def test_steps_sent_without_waiting_are_applied_and_their_replies_read_later(
        env: PersistentEnv, caplog: pytest.LogCaptureFixture) -> None:
    unawaited = env.registry._unawaited
    held = leaders(env, 10)
    for group, token in held:
        env.registry.reserve_unawaited(group, token)
        assert unawaited._unread  # one step unanswered at most: the last one
    wait_until(lambda: all(env.registry.owner(g)["state"] == "reserved" for g, _ in held), timeout=5)
    # A step Redis refuses is logged when its reply is read (by the next step), never raised to the caller.
    group, token = held[1]
    unawaited.run(env.registry._scripts["reserve"], [env.keys.owner(group), env.keys.leases()],
                  [group, token, "soon"])  # not a lease: the script fails
    env.registry.reserve_unawaited(*held[0])
    assert "a registry step sent without waiting failed" in caplog.text


def test_a_step_after_the_connection_dropped_goes_out_on_a_new_one(env: PersistentEnv) -> None:
    (first, first_token), (second, second_token) = leaders(env, 2)
    env.registry.reserve_unawaited(first, first_token)
    wait_until(lambda: env.registry.owner(first)["state"] == "reserved", timeout=5)
    host, port = env.registry._unawaited._connection._sock.getsockname()[:2]
    assert env.client.client_kill(f"{host}:{port}")  # the server closes it (a restart, a timeout)

    env.registry.reserve_unawaited(second, second_token)

    wait_until(lambda: env.registry.owner(second)["state"] == "reserved", timeout=5)
