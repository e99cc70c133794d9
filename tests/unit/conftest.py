"""Unit-test fixtures: an in-process Celery app with the plugin, and a fake Celery consumer."""

from __future__ import annotations

# -- persistent_env: an in-process app on its own prefixes (test_hosting, test_coalescing) --------
#
# A real Redis and a real Celery app (nothing consumes its broker: published
# messages stay in their Redis lists, where tests read them).  Each test gets
# its own key prefix, queue prefix, default queue and result key prefix, all
# containing one uuid, and every key holding it is deleted at teardown.  The
# only fakes are for Celery's consumer (FakeConsumer, FakeHub) and the task
# object a worker would pass in (FakeTask).
import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery
from celery.app.task import Context
from celery.result import AsyncResult

from celery_persistent import Device, Persistent
from celery_persistent.dispatch import HEADER
from celery_persistent.embedded import local_or_embedded_redis
from celery_persistent.hosting.naps import Bell
from celery_persistent.keys import KeySpace
from celery_persistent.plugin import Wiring
from celery_persistent.queues import queue_name
from celery_persistent.records import RequestRecord
from celery_persistent.registry import Registry
from celery_persistent.runtime import Runtime
from celery_persistent.store import MessageStore

UNIT_REDIS_URL = os.environ.get("CP_TEST_REDIS_URL") or local_or_embedded_redis(db=13)


class FakeHub:
    """The worker's event loop as hosting uses it: ``call_soon`` queues, the test runs them."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], Any]] = []

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.pending.append(fn)

    def run(self) -> int:
        """Run what was queued (and what that queues); return how many calls ran."""
        ran = 0
        while self.pending:
            self.pending.pop(0)()
            ran += 1
        return ran


class FakeTaskConsumer:
    """kombu's task consumer: which queues it consumes, and how often consume() was called."""

    def __init__(self) -> None:
        self.queues: list[Any] = []
        self.consume_calls = 0

    def consuming_from(self, name: str) -> bool:
        return name in self.names()

    def add_queue(self, queue: Any) -> None:
        self.queues.append(queue)

    def consume(self) -> None:
        self.consume_calls += 1

    def names(self) -> list[str]:
        return [q.name for q in self.queues]


class FakeConsumer:
    """Celery's worker consumer, as ``GroupQueues`` sees it."""

    def __init__(self, app: Celery, hub: FakeHub | None = None) -> None:
        self.app = app
        self.hub = hub
        self.task_consumer = FakeTaskConsumer()
        self.cancelled: list[str] = []

    def cancel_task_queue(self, name: str) -> None:
        self.cancelled.append(name)
        self.task_consumer.queues = [q for q in self.task_consumer.queues if q.name != name]


class UnreadBell(Bell):
    """A host's bell that no thread reads: a test reads it (``host.naps.rings``) when it chooses, so that
    no ring wakes a group behind its back."""

    def start(self) -> None:
        return None


class FakeTask:
    """The bound task a worker passes to ``Runner.run`` / ``Coalescer.run``."""

    def __init__(self, task_id: str, name: str = "persistent.resolve", publish: Any = None) -> None:
        self.request = Context(id=task_id)
        self.name = name
        if publish is not None:
            self.publish = publish


@dataclass
class Published:
    """One message the app put on the broker, decoded."""

    id: str
    header: dict[str, Any] | None
    args: list[Any]

    @property
    def msg2(self) -> Any:
        return self.args[1]

    @property
    def opts(self) -> Any:
        return self.args[2] if len(self.args) > 2 else None


@dataclass
class PersistentEnv:
    uid: str
    app: Celery
    persistent: Persistent
    client: redis.Redis
    default_queue: str
    prefix: str
    queue_prefix: str

    @property
    def wiring(self) -> Wiring:
        return self.persistent.wiring

    @property
    def runtime(self) -> Runtime:
        return self.persistent.runtime

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def keys(self) -> KeySpace:
        return self.runtime.keys

    @property
    def store(self) -> MessageStore:
        return self.runtime.store

    def queue(self, group: str) -> str:
        return queue_name(self.queue_prefix, group)

    def submit(self, msg1: Any, msg2: Any, opts: Any = None) -> AsyncResult:
        """Send a request the ordinary way (``apply_async``: register, then publish)."""
        args = [msg1, msg2] if opts is None else [msg1, msg2, opts]
        return self.persistent.resolve.apply_async(args=args)

    def messages(self, queue: str | None = None) -> list[Published]:
        """The messages waiting in a queue (the default queue if None), oldest first."""
        raw = self.client.lrange(queue or self.default_queue, 0, -1)
        return [decode(r) for r in reversed(raw)]

    def message(self, queue: str | None, task_id: str) -> Published:
        found = [m for m in self.messages(queue) if m.id == task_id]
        assert len(found) == 1, f"expected one message {task_id} in {queue or self.default_queue}, got {found}"
        return found[0]

    def result(self, task_id: str) -> AsyncResult:
        return self.app.AsyncResult(task_id)

    def metric(self, name: str) -> int:
        return self.runtime.metrics.read()[name]

    def worker_hostname(self, name: str) -> str:
        return f"{name}-{self.uid}@unit"

    def reap(self) -> int:
        """One reaper beat (``Reaper.reap``) on a registry that has been reachable all along.

        The first pulse of a fresh key space counts as the registry resuming
        after a gap, and owners then get one lease of grace before expire.lua
        takes anything (pulse.lua): a recent pulse is noted first, so that what
        a test expired is reaped at once.
        """
        self.client.hset(self.keys.pulse(), mapping={"last": self.registry.server_ms(), "resumed": 1})
        return self.wiring.reaper.reap()

    def deliveries(self) -> list[str]:
        """Members ("<group> <token>") of the deliveries not settled yet, earliest deadline first."""
        return [m.decode() for m in self.client.zrange(self.keys.deliveries(), 0, -1)]

    def delivery(self, member: str) -> dict[str, str]:
        """The fields of one delivery (empty once it is settled)."""
        group, _, token = member.partition(" ")
        return {k.decode(): v.decode() for k, v in self.client.hgetall(self.keys.delivery(group, token)).items()}

    def delivery_waiters(self, member: str) -> list[str]:
        """Ids of the waiters a delivery still holds."""
        group, _, token = member.partition(" ")
        return [RequestRecord.loads(r).id for r in self.client.lrange(self.keys.delivery_waiters(group, token), 0, -1)]


def trace(env: PersistentEnv, task: FakeTask, outcome: Any) -> None:
    """What Celery's tracer does once the task returned or raised (not after ``Ignore``).

    It stores the request's own answer, then calls ``after_return`` with the
    task's request context, which carries the delivery the plugin left open
    for it (``persistent_delivery``): ``PersistentTask.after_return`` settles it.
    """
    if isinstance(outcome, BaseException):
        env.app.backend.mark_as_failure(task.request.id, outcome)
        status = "FAILURE"
    else:
        env.app.backend.mark_as_done(task.request.id, outcome)
        status = "SUCCESS"
    resolve = env.persistent.resolve
    resolve.request_stack.push(task.request)
    try:
        resolve.after_return(status, outcome, task.request.id, [], {}, None)
    finally:
        resolve.request_stack.pop()


def decode(raw: bytes) -> Published:
    message = json.loads(raw)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return Published(message["headers"]["id"], message["headers"].get(HEADER), args)


@pytest.fixture
def persistent_env(request: pytest.FixtureRequest) -> Iterator[PersistentEnv]:
    """An app with ``Persistent(app)`` and the test module's ``DEVICES``, on prefixes of its own."""
    uid = uuid.uuid4().hex[:12]
    prefix, queue_prefix, default_queue = f"cpunit{uid}", f"cpunitq{uid}", f"cpunitq{uid}-default"
    app = Celery("unit", broker=UNIT_REDIS_URL, backend=UNIT_REDIS_URL, set_as_current=False)
    app.conf.update(
        persistent_redis_url=UNIT_REDIS_URL,
        persistent_key_prefix=prefix,
        persistent_queue_prefix=queue_prefix,
        task_default_queue=default_queue,
        result_backend_transport_options={"global_keyprefix": f"cpunitr{uid}:"},
        broker_connection_retry_on_startup=False,
    )
    persistent = Persistent(app)
    devices: dict[str, type[Device]] = getattr(request.module, "DEVICES", {})
    for name, cls in devices.items():
        persistent.device(name)(cls)
    client = redis.Redis.from_url(UNIT_REDIS_URL)
    env = PersistentEnv(uid, app, persistent, client, default_queue, prefix, queue_prefix)
    try:
        yield env
    finally:
        if persistent._wired is not None:
            persistent.runtime.keeper.stop()
        stale = list(client.scan_iter(match=f"*{uid}*", count=1000))
        if stale:
            client.delete(*stale)
        if persistent._wired is not None:
            persistent.runtime.client.close()
        app.close()
        client.close()
