"""A coalesced caller whose send nobody observes skips Celery's send path (unsent.send_observed)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

from celery_persistent import Device, unsent
from tests.unit.conftest import FakeTask, PersistentEnv, trace


class Echo(Device):
    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"x": msg2.get("x")}


DEVICES = {"echo": Echo}


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def leader_and_waiter(env: PersistentEnv) -> tuple[Any, Any]:
    leader = env.submit({"device": "echo"}, {"path": "run", "x": 1})
    waiter = env.submit({"device": "echo"}, {"path": "run", "x": 1})
    assert [m.id for m in env.messages()] == [leader.id]  # the waiter is coalesced: no message
    return leader, waiter


def answer(env: PersistentEnv, leader: Any) -> None:
    sent = env.message(None, leader.id)
    assert sent.header is not None
    task = FakeTask(sent.id)
    plan = env.persistent.plan(sent.args[0], sent.msg2, sent.opts, stack=())
    trace(env, task, env.wiring.coalescer.run(task, plan, sent.header, list(sent.args)))


def test_an_unobserved_coalesced_caller_gets_its_result_without_the_send_path(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = env.app.tasks[env.persistent.resolve.name]
    assert not unsent.send_observed(resolve)
    sent: list[str] = []
    real = type(resolve).publish
    monkeypatch.setattr(type(resolve), "publish", lambda self, *a, **k: sent.append(a[1]) or real(self, *a, **k))

    leader, waiter = leader_and_waiter(env)

    assert sent == [leader.id]  # the leader's message only: the waiter never entered Celery's send path
    # Subscribed to its answer at once, as a sent task is (Celery's on_task_call): none is missed.
    consumer = env.app.backend.result_consumer
    assert consumer._get_key_for_task(waiter.id) in consumer.subscribed_to
    answer(env, leader)
    assert waiter.get(timeout=5) == {"x": 1}


@pytest.mark.parametrize("watch", ["before", "after", "events"])
def test_an_observed_send_goes_through_the_send_path(env: PersistentEnv, monkeypatch: pytest.MonkeyPatch,
                                                      watch: str) -> None:
    resolve = env.persistent.resolve
    seen: list[str] = []

    def receiver(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen.append((headers or {}).get("id", ""))

    signal = signals.before_task_publish if watch == "before" else signals.after_task_publish
    if watch == "events":
        env.app.conf.task_send_sent_event = True
    else:
        signal.connect(receiver, sender=resolve.name, weak=False)
    try:
        assert unsent.send_observed(resolve)
        leader, waiter = leader_and_waiter(env)
    finally:
        signal.disconnect(receiver, sender=resolve.name)
    if watch != "events":
        assert seen == [leader.id, waiter.id]  # the coalesced caller's send is seen, its message dropped
    answer(env, leader)
    assert waiter.get(timeout=5) == {"x": 1}


def test_a_wrapped_send_path_counts_as_observed(env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that wraps Task.apply_async (or Celery.send_task) still sees every coalesced caller."""
    from celery.app.task import Task

    resolve = env.app.tasks[env.persistent.resolve.name]
    seen: list[str] = []
    real = Task.apply_async

    def wrapped(self: Any, args: Any = None, kwargs: Any = None, task_id: Any = None, **options: Any) -> Any:
        seen.append(task_id)
        return real(self, args, kwargs, task_id, **options)

    monkeypatch.setattr(Task, "apply_async", wrapped)
    assert unsent.send_observed(resolve)
    leader, waiter = leader_and_waiter(env)
    assert waiter.id in seen
    answer(env, leader)
    assert waiter.get(timeout=5) == {"x": 1}
