"""Celery's send path for a request that is not sent: a coalesced caller.

A coalesced caller is answered by the execution it joined, so no message is
published for it, yet its caller sent a task.  It goes through Celery's
``Task.apply_async`` as any task does, so ``before_task_publish`` and
``after_task_publish`` fire with the arguments Celery passes (and
opentelemetry-instrumentation-celery makes its producer span from them), the
``task-sent`` event goes out when ``task_send_sent_event`` is on, and the
result joins its parent task's trail.  Only the task message itself is
dropped, by the producer below (see ``celery.app.amqp`` ``send_task_message``:
it publishes the message between the two signals).  When nothing observes a
send (``send_observed``), the caller gets what that path leaves behind (its
result, subscribed, in its parent's trail) without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery.signals import after_task_publish, before_task_publish

from .dispatch import HEADER

MARK = "unsent"
"""Key of the plugin's header that marks a message never to be published."""


def send_observed(task: Any) -> bool:
    """Whether anything watches ``task``'s sends: publish-signal receivers, task-sent events, a wrapped send path.

    The instrumentation (opentelemetry-instrumentation-celery) connects to
    both signals; other tools wrap ``Task.apply_async`` or ``Celery.send_task``
    (docs/events.md).  When none of these is so, a coalesced caller skips the
    send path (``PersistentTask.publish_unsent``): it would only build a
    message to drop it.
    """
    if task.app.conf.task_send_sent_event:
        return True
    if before_task_publish.has_listeners(task.name) or after_task_publish.has_listeners(task.name):
        return True
    return not (_celerys_own(_next_apply_async(type(task)), "celery/app/task.py")
                and _celerys_own(getattr(type(task.app), "send_task", None), "celery/app/base.py"))


def _next_apply_async(cls: type) -> Any:
    """The ``apply_async`` that ``PersistentTask.publish`` reaches through ``super()``."""
    from .task import PersistentTask

    mro = cls.__mro__
    after = mro[mro.index(PersistentTask) + 1:] if PersistentTask in mro else mro
    return next((klass.__dict__["apply_async"] for klass in after if "apply_async" in klass.__dict__), None)


def _celerys_own(fn: Any, path: str) -> bool:
    """``fn`` is Celery's own code, not a subclass's override nor a tool's wrapper."""
    code = getattr(fn, "__code__", None)
    return (code is not None and code.co_filename.replace("\\", "/").endswith(path)
            and not hasattr(fn, "__wrapped__"))


def is_unsent(headers: Mapping[str, Any] | None) -> bool:
    header = (headers or {}).get(HEADER)
    return isinstance(header, Mapping) and bool(header.get(MARK))


class UnsentProducer:
    """A kombu Producer that publishes everything (events) except task messages marked unsent.

    ``on_skip`` runs where the message would have been published: between
    the publish signals, while the instrumentation's producer span is current.
    """

    def __init__(self, producer: Any, on_skip: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._producer = producer
        self._on_skip = on_skip

    def publish(self, body: Any, **kwargs: Any) -> Any:
        headers = kwargs.get("headers")
        if is_unsent(headers):
            if self._on_skip is not None:
                self._on_skip(dict(headers or {}))
            return None
        return self._producer.publish(body, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)
