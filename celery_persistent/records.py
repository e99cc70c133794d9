"""Requests and waiters as they are kept in Redis while a group is busy.

A record holds what Celery would have put on the wire for the request (its
publish options: links, errbacks, chain, chord membership, ids) so that a
request that never reached a worker can later be answered or published
exactly as Celery would have done it.  Waiter records carry no arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery.app.task import Context
from kombu.utils import json

# Publish options kept with a record; the rest (producer, connection, result
# class, ...) are process-local and are never stored.
KEPT_OPTIONS = (
    "link",
    "link_error",
    "chain",
    "chord",
    "group_id",
    "group_index",
    "root_id",
    "parent_id",
    "shadow",
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "expires",
    "time_limit",
    "soft_time_limit",
    "ignore_result",
    "reply_to",
    "serializer",
)


def keep_options(options: dict[str, Any]) -> dict[str, Any]:
    """The storable subset of ``apply_async`` options."""
    kept: dict[str, Any] = {}
    for name in KEPT_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        if name in ("link", "link_error") and not isinstance(value, (list, tuple)):
            value = [value]
        if name == "queue" and not isinstance(value, str):
            value = getattr(value, "name", None)
            if value is None:
                continue
        kept[name] = value
    return kept


@dataclass
class RequestRecord:
    """One request of a group (leader, queued request or waiter)."""

    id: str
    key: str
    task: str
    options: dict[str, Any] = field(default_factory=dict)
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    stack: list[str] = field(default_factory=list)
    sent: float | None = None  # Unix time of its apply_async: the queue-wait histogram starts there

    def dumps(self) -> str:
        """``id\\nkey\\njson``: Lua reads id and key without decoding JSON."""
        body = json.dumps(
            {
                "task": self.task,
                "options": self.options,
                "args": self.args,
                "kwargs": self.kwargs,
                "stack": self.stack,
                "sent": self.sent,
            }
        )
        return f"{self.id}\n{self.key}\n{body}"

    @classmethod
    def loads(cls, raw: str | bytes) -> RequestRecord:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        task_id, key, body = text.split("\n", 2)
        data = json.loads(body)
        return cls(
            id=task_id,
            key=key,
            task=data["task"],
            options=data.get("options") or {},
            args=data.get("args"),
            kwargs=data.get("kwargs"),
            stack=list(data.get("stack") or []),
            sent=data.get("sent"),
        )

    def waiter(self) -> RequestRecord:
        """The same request without its arguments, for a waiter list."""
        return RequestRecord(self.id, self.key, self.task, self.options, None, None, self.stack)

    def context(self) -> Context:
        """A Celery request context, as the worker would have built it."""
        opts = self.options
        return Context(
            id=self.id,
            task=self.task,
            callbacks=opts.get("link"),
            errbacks=opts.get("link_error"),
            chain=opts.get("chain"),
            chord=opts.get("chord"),
            group=opts.get("group_id"),
            group_index=opts.get("group_index"),
            root_id=opts.get("root_id") or self.id,
            parent_id=opts.get("parent_id"),
            reply_to=opts.get("reply_to"),
            ignore_result=bool(opts.get("ignore_result", False)),
            args=self.args,
            kwargs=self.kwargs,
        )


def options_from_context(request: Any) -> dict[str, Any]:
    """Publish options of a request that reached a worker without our client."""
    return keep_options(
        {
            "link": request.callbacks,
            "link_error": request.errbacks,
            "chain": request.chain,
            "chord": request.chord,
            "group_id": request.group,
            "group_index": request.group_index,
            "root_id": request.root_id,
            "parent_id": request.parent_id,
            "reply_to": request.reply_to,
            "ignore_result": request.ignore_result or None,
        }
    )
