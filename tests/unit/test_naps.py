"""Napping groups in ``Host`` (celery_persistent/hosting/naps.py): leases, rings, the sweep.

A real Redis and a real Celery app on a Redis broker; the worker's consumer is
the fake of tests/unit/conftest.py, marked lazy (as kombu's Redis transport
makes it) or not (as a broker that pushes, RabbitMQ, leaves it), and an event
loop whose ``call_soon`` queue the test runs itself.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from celery_persistent import Device
from celery_persistent.errors import RequestLost
from celery_persistent.hosting import Host, Hosted, build_host
from celery_persistent.hosting.naps import NAP_LEASE
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.records import RequestRecord
from tests.unit.conftest import FakeConsumer, FakeHub, FakeTask, FakeTaskConsumer, PersistentEnv, UnreadBell, trace


class Echo(Device):
    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "echo-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return msg2


DEVICES = {"echo": Echo}


class TaskConsumer(FakeTaskConsumer):
    def cancel_by_queue(self, name: str) -> None:
        self.queues = [q for q in self.queues if q.name != name]


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def napping_host(env: PersistentEnv, lazy: bool = True) -> tuple[Host, FakeConsumer, FakeHub]:
    """A host whose idle groups nap at once; ``lazy``: their queues nap too (kombu's Redis transport)."""
    w = env.wiring
    host = build_host(env.app, env.worker_hostname("n"), env.runtime, w.planner, w.placer, env.persistent.devices,
                      w.answer, w.dispatcher, cache_bytes=1 << 20, default_timeout=600.0)
    host.bell = UnreadBell(host.naps, host.ring)
    hub = FakeHub()
    consumer = FakeConsumer(env.app, hub)
    consumer.task_consumer = TaskConsumer()
    host.bind(consumer)
    host.queues.lazy = lazy  # True: what kombu's Redis transport makes it (the fake has no transport)
    host.nap_after = 0.0
    return host, consumer, hub


def hosted(env: PersistentEnv, host: Host, hub: FakeHub, uid: str) -> Hosted:
    msg1 = {"device": "echo", "id": uid}
    group = env.persistent.group(msg1)
    assert group is not None
    ref = env.store.put(msg1)
    where = Placement(group, host.hostname, env.queue(group), ref.storage_id, True, 600.0, "echo", ref.size, "ignore")
    assert env.registry.place(where).status is PlaceStatus.PLACED
    host.tick()
    hub.run()
    h = host.table.lookup(group)
    assert h is not None
    return h


def napped(env: PersistentEnv, host: Host, hub: FakeHub, uid: str) -> Hosted:
    """A hosted group, napping: at adoption on Redis, after one more beat elsewhere (``nap_after`` is 0)."""
    h = hosted(env, host, hub, uid)
    host.tick()
    hub.run()
    assert h.asleep
    return h


def lease_left(env: PersistentEnv, group: str) -> float:
    """Seconds until the group's lease runs out (server clock)."""
    score = env.client.zscore(env.keys.leases(), group)
    assert score is not None
    return (score - env.registry.server_ms()) / 1000


def test_an_adopted_idle_group_naps_and_is_not_renewed_on_every_beat(env: PersistentEnv) -> None:
    host, consumer, hub = napping_host(env)
    h = hosted(env, host, hub, "a")
    assert h.asleep and env.queue(h.group) not in consumer.task_consumer.names()
    assert lease_left(env, h.group) > NAP_LEASE - 5
    env.client.zadd(env.keys.leases(), {h.group: env.registry.server_ms() + 200_000})
    host.tick()
    hub.run()
    assert lease_left(env, h.group) <= 200, "a napping group's lease is renewed every third of it, not per beat"


def test_a_ring_wakes_the_group_and_its_queue_is_consumed(env: PersistentEnv) -> None:
    host, consumer, hub = napping_host(env)
    h = hosted(env, host, hub, "b")
    record = RequestRecord("r1", "k1", "persistent.resolve", args=[{"device": "echo", "id": "b"}, {}])
    env.registry.submit(h.group, record)
    [rung] = env.registry.client.lrange(env.keys.bell(host.hostname), 0, -1)
    assert rung.decode() == h.group
    assert lease_left(env, h.group) <= env.runtime.settings.lease_ttl, "the ring cut the lease to one lease"
    host.ring(host.naps.rings(0.1))
    assert not h.asleep
    hub.run()
    assert env.queue(h.group) in consumer.task_consumer.names()
    # While its request is accepted it does not nap again, whatever its idle time.
    host.tick()
    hub.run()
    assert not h.asleep and env.queue(h.group) in consumer.task_consumer.names()
    host.tick()
    assert lease_left(env, h.group) <= env.runtime.settings.lease_ttl + 1, "awake: an ordinary lease"


def test_after_a_gap_in_the_beats_napping_groups_are_renewed(env: PersistentEnv) -> None:
    """pulse.lua cuts long leases to one lease after an outage: the host renews them all at once."""
    host, _, hub = napping_host(env)
    h = hosted(env, host, hub, "c")
    env.client.zadd(env.keys.leases(), {h.group: env.registry.server_ms() + 5_000})
    host.tick()
    assert lease_left(env, h.group) < 10, "no gap: not renewed yet"
    host._kept_at = time.monotonic() - 10 * host.gap
    host.tick()
    assert lease_left(env, h.group) > NAP_LEASE - 5


def test_when_the_registry_resumed_after_a_gap_napping_groups_are_renewed(env: PersistentEnv) -> None:
    """Another worker's pulse may see the gap this host's beats did not: the host watches pulse.lua's field."""
    host, _, hub = napping_host(env)
    h = hosted(env, host, hub, "f")
    host.tick()
    env.client.zadd(env.keys.leases(), {h.group: env.registry.server_ms() + 5_000})  # as pulse.lua cuts it
    env.client.hset(env.keys.pulse(), "resumed", str(env.registry.server_ms()))
    host.tick()
    assert lease_left(env, h.group) > NAP_LEASE - 5


def test_the_sweep_wakes_a_napping_queue_holding_a_message(env: PersistentEnv) -> None:
    host, consumer, hub = napping_host(env)
    h = hosted(env, host, hub, "d")
    quiet = hosted(env, host, hub, "e")
    with env.app.connection_for_write() as conn:
        conn.default_channel.client.lpush(h.queue, b"{}")  # as a hand-back would put it, with no ring
    host._swept_at = 0.0
    host.tick()
    hub.run()
    assert not h.asleep and env.queue(h.group) in consumer.task_consumer.names()
    assert quiet.asleep and env.queue(quiet.group) not in consumer.task_consumer.names()
    assert "bell" not in env.registry.owner(h.group), "woken by the sweep: its bell is down"


# -- a broker that pushes (RabbitMQ): only the lease naps ------------------------------------


def test_on_a_pushing_broker_an_idle_group_naps_but_its_queue_stays_consumed(env: PersistentEnv) -> None:
    """10,000 idle groups on RabbitMQ cost 17% of a core and 6.5% of Redis when every lease was renewed
    every beat: their leases nap as on Redis, while the broker keeps pushing to their consumed queues."""
    host, consumer, hub = napping_host(env, lazy=False)
    h = napped(env, host, hub, "p")
    assert h.asleep and env.queue(h.group) in consumer.task_consumer.names()
    assert lease_left(env, h.group) > NAP_LEASE - 5
    env.client.zadd(env.keys.leases(), {h.group: env.registry.server_ms() + 200_000})
    for _ in range(3):
        host.tick()
        hub.run()
    assert lease_left(env, h.group) <= 200, "a napping group's lease is renewed every third of it, not per beat"
    assert env.queue(h.group) in consumer.task_consumer.names(), "never cancelled: the broker pushes"
    # A consumer restart consumes napping groups' queues again too.
    again = FakeConsumer(env.app, hub)
    again.task_consumer = TaskConsumer()
    host.bind(again)
    assert env.queue(h.group) in again.task_consumer.names()


def test_on_a_pushing_broker_a_ring_wakes_the_group_without_touching_its_queue(env: PersistentEnv) -> None:
    host, consumer, hub = napping_host(env, lazy=False)
    h = napped(env, host, hub, "q")
    calls = consumer.task_consumer.consume_calls
    record = RequestRecord("rq", "kq", "persistent.resolve", args=[{"device": "echo", "id": "q"}, {}])
    env.registry.submit(h.group, record)
    host.ring(host.naps.rings(0.1))
    hub.run()
    assert not h.asleep
    assert consumer.task_consumer.consume_calls == calls, "consumed already: no consume() for a ring"
    host.tick()
    assert lease_left(env, h.group) <= env.runtime.settings.lease_ttl + 1, "awake: an ordinary lease"


def test_a_message_run_without_a_ring_wakes_its_napping_group(env: PersistentEnv) -> None:
    """A message that reached a napping group's consumed queue with no ring (a hand-back, a re-publish):
    running it under a napping lease would leave a death mid-run unnoticed for minutes."""
    host, _, hub = napping_host(env, lazy=False)
    msg1 = {"device": "echo", "id": "s"}
    h = napped(env, host, hub, "s")
    sent = env.submit(msg1, {"path": "run", "n": 1})
    env.client.delete(env.keys.bell(host.hostname))  # the ring is not read: as if there had been none
    env.client.hset(env.keys.owner(h.group), mapping={"bell": env.keys.bell(host.hostname), "bell_ms": 1})
    env.client.zadd(env.keys.leases(), {h.group: env.registry.server_ms() + int(NAP_LEASE * 1000)})
    task = FakeTask(sent.id)
    msg = env.message(env.queue(h.group), sent.id)
    task.request.args, task.request.delivery_info = msg.args, {"routing_key": env.queue(h.group)}
    outcome = host.run(task, msg.header, msg.msg2, msg.opts)
    trace(env, task, outcome)
    assert outcome == {"path": "run", "n": 1}
    assert not h.asleep, "woken: renewed on every beat"
    assert "bell" not in env.registry.owner(h.group), "its bell is down: the next nap sets it again"
    assert lease_left(env, h.group) <= env.runtime.settings.lease_ttl + 1, "an ordinary lease"
    assert sent.get(timeout=5) == {"path": "run", "n": 1}


# -- accepted requests whose message is gone ---------------------------------------------------


@pytest.mark.parametrize("lazy", [True, False], ids=["redis", "pushing"])
def test_an_idle_group_answers_an_accepted_request_whose_message_is_gone(env: PersistentEnv, lazy: bool) -> None:
    """A broker that stops just after taking a message without a publisher confirm can drop it (seen in
    the chaos run rabbit-restart: the caller waited past the idle timeout).  The group's refused naps
    look twice for accepted requests with no message, and answer them RequestLost."""
    host, _, hub = napping_host(env, lazy=lazy)
    uid = f"gone-{lazy}"
    h = napped(env, host, hub, uid)
    sent = env.submit({"device": "echo", "id": uid}, {"path": "run", "n": 1})
    with env.app.connection_for_write() as conn:
        assert conn.default_channel.queue_purge(h.queue) == 1  # the broker lost it
    host.ring(host.naps.rings(0.1))
    hub.run()
    host.tick()  # idle: its nap is refused (accepted), and a first look finds no message
    hub.run()
    assert [r.id for r in env.registry.accepted(h.group)] == [sent.id], "one look is not enough"
    host.tick()
    hub.run()
    with pytest.raises(RequestLost):
        sent.get(timeout=5)
    assert env.registry.accepted(h.group) == [], "withdrawn: no later owner runs it"
    assert host.table.lookup(h.group) is h, "the group goes on"


@pytest.mark.parametrize("lazy", [True, False], ids=["redis", "pushing"])
def test_refused_naps_are_looked_at_together(env: PersistentEnv, lazy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many groups refused a nap at once (a backlog over thousands of groups) cost one look, not one broker
    connection each: a look per group held the event loop for minutes in the bench's 10,000-group table.
    Only the request whose message is gone is answered; the one still queued waits for its turn."""
    from celery_persistent.hosting import lifecycle

    host, _, hub = napping_host(env, lazy=lazy)
    uids = [f"many-{lazy}-{i}" for i in range(3)]
    groups = [napped(env, host, hub, uid) for uid in uids]
    sent = [env.submit({"device": "echo", "id": uid}, {"path": "run", "n": i}) for i, uid in enumerate(uids)]
    with env.app.connection_for_write() as conn:
        assert conn.default_channel.queue_purge(groups[0].queue) == 1  # the broker lost this one
    looks: list[list[str]] = []
    real_depths, real_waiting = lifecycle.queue_depths, lifecycle.waiting
    monkeypatch.setattr(lifecycle, "queue_depths", lambda app, names: looks.append(list(names)) or
                        real_depths(app, names))
    monkeypatch.setattr(lifecycle, "waiting", lambda app, names: looks.append(list(names)) or
                        real_waiting(app, names))
    host.ring(host.naps.rings(0.1))
    hub.run()
    for _ in range(2):
        host.tick()  # idle: every nap is refused (accepted), and the three groups are looked at together
        hub.run()
    assert len(looks) == 2 and all(sorted(look) == sorted(h.queue for h in groups) for look in looks)
    with pytest.raises(RequestLost):
        sent[0].get(timeout=5)
    assert [r.id for r in env.registry.accepted(groups[1].group)] == [sent[1].id], "still queued: it waits"
    assert [r.id for r in env.registry.accepted(groups[2].group)] == [sent[2].id]


def run_request(env: PersistentEnv, host: Host, h: Hosted, sent: Any) -> None:
    """The worker takes ``sent`` from its group queue and runs it, as Celery would."""
    task = FakeTask(sent.id)
    msg = env.message(env.queue(h.group), sent.id)
    task.request.args, task.request.delivery_info = msg.args, {"routing_key": env.queue(h.group)}
    trace(env, task, host.run(task, msg.header, msg.msg2, msg.opts))


def test_woken_groups_beyond_the_consume_window_wait_their_turn(env: PersistentEnv,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On Redis each BRPOP names every consumed queue: a burst over 10,000 napping groups woke them all,
    and each fetch cost 60 ms.  Beyond the window, woken groups wait; consumed ones nap once idle (at once,
    while others wait), and the waiting are consumed in the order they woke."""
    from celery_persistent.hosting import lifecycle

    host, consumer, hub = napping_host(env)
    own = host.queues.consumed()
    monkeypatch.setattr(lifecycle, "CONSUME_WINDOW", own + 2)
    host.nap_after = 60.0  # only the window's turn makes an idle group nap at once
    groups = []
    for i in range(4):
        h = hosted(env, host, hub, f"turn-{i}")
        h.last = time.monotonic()
        groups.append(h)
    sent = []
    for i in range(len(groups)):
        sent.append(env.submit({"device": "echo", "id": f"turn-{i}"}, {"path": "run", "n": i}))
        host.ring(host.naps.rings(0.1))  # rung one after the other: woken in this order
        hub.run()
    names = consumer.task_consumer.names
    assert [h.queue in names() for h in groups] == [True, True, False, False]
    assert groups[2].waiting and groups[3].waiting and not groups[2].asleep, "awake: renewed, not napping"

    for h, s in zip(groups[:2], sent[:2], strict=True):
        run_request(env, host, h, s)
    host.tick()  # the two done nap at once (nap_after is 60 s), and the two waiting take their places
    hub.run()
    assert [h.queue in names() for h in groups] == [False, False, True, True]
    assert groups[0].asleep and groups[1].asleep and not groups[2].waiting
    for h, s in zip(groups[2:], sent[2:], strict=True):
        run_request(env, host, h, s)
    assert [s.get(timeout=5) for s in sent] == [{"path": "run", "n": i} for i in range(4)]
