"""Refuse task messages that were not sent with a safe serializer.

Only JSON and msgpack reach a device: pickle runs code on decode, so a
pickled request is never executed, whatever the app's ``accept_content``.
The caller gets an ``InvalidMessage`` instead of a request that hangs, and
the worker goes on.  This hooks Celery through the public ``Task.Strategy``
extension point.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.strategy import default as default_strategy
from kombu.exceptions import DecodeError
from kombu.serialization import prepare_accept_content

from .errors import InvalidMessage

logger = logging.getLogger(__name__)

SAFE_CONTENT_TYPES = frozenset({"application/json", "application/x-msgpack", "application/msgpack"})
SAFE_SERIALIZERS = frozenset({"json", "msgpack"})


def check_serializer(serializer: str | None) -> None:
    """Client-side check of an ``apply_async(serializer=...)`` choice."""
    if serializer is not None and serializer not in SAFE_SERIALIZERS:
        raise InvalidMessage(
            f"serializer {serializer!r} is not accepted by celery_persistent "
            "(use 'json' or 'msgpack')",
            "serializer",
        )


CONTENT_TYPES = {"json": "application/json", "msgpack": "application/x-msgpack"}


def choose_serializer(requested: str | None, app_default: str | None, accept_content: Any) -> str:
    """The serializer a request is sent with: the caller's, else the app's, never an unsafe one.

    Refused before anything is registered when the app's workers would not
    accept it (``accept_content``): a registered request that no worker runs
    would block its group.  An app whose ``task_serializer`` is unsafe
    (pickle) gets JSON for the plugin's requests.
    """
    check_serializer(requested)
    chosen = requested or (app_default if app_default in SAFE_SERIALIZERS else "json")
    accepted = prepare_accept_content(accept_content) if accept_content is not None else None
    if accepted is not None and CONTENT_TYPES[chosen] not in accepted and chosen not in accepted:
        raise InvalidMessage(
            f"serializer {chosen!r} is not in the app's accept_content ({', '.join(sorted(accepted))}): "
            "workers would refuse the request",
            "serializer",
        )
    return chosen


def _answer(message: Any, app: Any, task: Any, error: InvalidMessage) -> None:
    """Store ``error`` as the result of the refused message's task id."""
    task_id = (getattr(message, "headers", None) or {}).get("id")
    backend = getattr(task, "backend", None) or getattr(app, "backend", None)
    if not task_id or backend is None:
        return
    try:
        backend.store_result(task_id, error, "FAILURE")
    except Exception:  # the refusal itself must not take the worker down
        logger.exception("could not store the refusal of task %s", task_id)


def _misrouted(message: Any, app: Any, consumer: Any) -> bool:
    """A hosted group's request reached a worker that hosts no groups: put it back, stop consuming its queue.

    Only an operator's ``-Q`` or ``add_consumer`` makes an ordinary worker
    consume a group queue; running the request there would skip the group's
    Msg1 and its serialization, so it goes back to the queue for its host.
    """
    from .discovery import installed
    from .dispatch import HEADER

    header = (getattr(message, "headers", None) or {}).get(HEADER) or {}
    plugin = installed(app)
    if not header.get("hosted") or plugin is None or plugin.host is not None:
        return False
    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key") or ""
    logger.warning("request %s of group %s reached a worker without --persistent (queue %s): "
                   "requeued, and this worker stops consuming that queue",
                   message.headers.get("id"), header.get("group"), queue)
    message.reject(requeue=True)
    if queue:
        consumer.call_soon(consumer.cancel_task_queue, queue)
    return True


def _release(message: Any, app: Any, error: InvalidMessage) -> None:
    """A refused request registered with a group must not hold it: its waiters get the refusal too."""
    from .discovery import installed
    from .dispatch import HEADER
    from .records import RequestRecord

    header = (getattr(message, "headers", None) or {}).get(HEADER) or {}
    plugin = installed(app)
    task_id = (getattr(message, "headers", None) or {}).get("id")
    if plugin is None or not header.get("group") or not task_id:
        return
    try:
        if header.get("token"):
            plugin.dispatcher.complete(header["group"], str(header.get("key", "")), header["token"], error)
        elif header.get("hosted"):
            record = RequestRecord(task_id, str(header.get("key", "")), "")
            plugin.dispatcher.withdraw(header["group"], record, error)
    except Exception:  # the refusal must not take the worker down
        logger.exception("could not release the group of refused task %s", task_id)


def _accepted(app: Any, content_type: str) -> bool:
    accept = getattr(getattr(app, "conf", None), "accept_content", None)
    return accept is None or content_type in prepare_accept_content(accept)


def safe_strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """Celery's default strategy, behind a check of the message's content type.

    A message the plugin will not run is answered with InvalidMessage under
    its own task id; Celery alone would only log it, and its caller would
    wait for ever.
    """
    handle = default_strategy(task, app, consumer, **kwargs)
    accepted = prepare_accept_content(app.conf.accept_content)

    def guarded(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        content_type = message.content_type
        if content_type not in SAFE_CONTENT_TYPES or content_type not in accepted:
            error = InvalidMessage(
                f"task message of content type {content_type!r} refused: celery_persistent "
                "accepts only JSON or msgpack, and only what the app's accept_content allows",
                "content_type",
            )
            _answer(message, app, task, error)
            _release(message, app, error)
            if content_type in accepted:
                # Celery would decode and run it; the plugin never does.
                logger.error("refused task %s: unsafe content type %s", message.headers.get("id"), content_type)
                ack(logger, consumer.connection_errors)
                return None
        if _misrouted(message, app, consumer):
            return None
        try:
            return handle(message, body, ack, reject, callbacks, **kw)
        except DecodeError as exc:
            error = InvalidMessage(f"task message could not be decoded: {exc}", "body")
            _answer(message, app, task, error)
            _release(message, app, error)
            raise

    return guarded
