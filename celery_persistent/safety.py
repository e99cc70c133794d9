"""Refuse task messages that were not sent with a safe serializer.

Only JSON and msgpack reach a device: pickle runs code on decode, so a
pickled request is never executed, whatever the app's ``accept_content``.
The caller gets an ``InvalidMessage`` instead of a request that hangs, and
the worker goes on.  This hooks Celery through the public ``Task.Request``
extension point.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request

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


class SafeRequest(Request):
    """A worker request that answers unsafe payloads with InvalidMessage."""

    _unsafe: str | None = None

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        content_type = getattr(message, "content_type", None)
        unsafe = content_type is not None and content_type not in SAFE_CONTENT_TYPES
        if unsafe:
            # Answer first: if the app does not accept this content type at
            # all, Celery refuses the message inside __init__ and the caller
            # would otherwise never hear back.
            self._answer_unsafe(message, kwargs.get("app"), kwargs.get("task"), content_type)
        super().__init__(message, *args, **kwargs)
        if unsafe:
            self._unsafe = content_type

    @staticmethod
    def _answer_unsafe(message: Any, app: Any, task: Any, content_type: str) -> None:
        task_id = (getattr(message, "headers", None) or {}).get("id")
        backend = getattr(task, "backend", None) or getattr(app, "backend", None)
        if not task_id or backend is None:
            return
        error = InvalidMessage(
            f"task message of content type {content_type!r} refused: "
            "celery_persistent accepts only JSON or msgpack",
            "content_type",
        )
        try:
            backend.store_result(task_id, error, "FAILURE")
        except Exception:  # the refusal itself must not take the worker down
            logger.exception("could not store the refusal of task %s", task_id)

    def revoked(self) -> bool:
        if self._unsafe is not None:
            logger.error("refused task %s[%s]: unsafe content type %s", self.name, self.id, self._unsafe)
            self.acknowledge()
            self.send_event("task-rejected", requeue=False)
            return True
        return bool(super().revoked())
