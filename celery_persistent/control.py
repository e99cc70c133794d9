"""Celery's ``add_consumer`` and ``cancel_consumer`` remote-control commands, made safe for group queues.

A group queue (``<prefix>.<group>``) must be consumed only by the persistent
worker hosting its group: anywhere else its requests would run without the
group's Msg1, and on RabbitMQ a plain declaration of it (without
``x-single-active-consumer``) is refused and takes the worker down.  This
module registers, through Celery's public ``control_command``, an
``add_consumer`` that refuses group queues with a clear reply, and a
``cancel_consumer`` that, on the worker hosting the group, hands the group on
(to another persistent worker, else back to ordinary execution) instead of
leaving it registered with nobody consuming its queue.  Every other queue
goes to Celery's own commands.  This module is imported by the plugin's
worker bootstep, so only workers register them.
"""

from __future__ import annotations

from typing import Any

from celery.worker import control
from celery.worker.control import control_command

from .discovery import installed

_celery_add_consumer = control.Panel.data["add_consumer"]
_celery_cancel_consumer = control.Panel.data["cancel_consumer"]


def group_queue_owner(state: Any, queue: str) -> str | None:
    """Why ``queue`` may not be consumed here (None: it may)."""
    plugin = installed(state.consumer.app)
    if plugin is None or not queue.startswith(f"{plugin.settings.queue_prefix}."):
        return None
    if plugin.host is not None and plugin.host.hosts_queue(queue):
        return None
    return (f"{queue} is a celery_persistent group queue: only the persistent worker hosting its group "
            "consumes it (groups are placed on `celery worker --persistent` workers automatically)")


@control_command(
    name="add_consumer",
    args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
    signature="<queue> [exchange [type [routing_key]]]",
)
def add_consumer(state: Any, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                 routing_key: str | None = None, **options: Any) -> Any:
    """Tell worker(s) to consume from task queue by name (group queues: only their host)."""
    refusal = group_queue_owner(state, queue)
    if refusal is not None:
        return {"error": refusal}
    return _celery_add_consumer(state, queue, exchange, exchange_type, routing_key, **options)


@control_command(name="cancel_consumer", args=[("queue", str)], signature="<queue>")
def cancel_consumer(state: Any, queue: str, **options: Any) -> Any:
    """Tell worker(s) to stop consuming from task queue by name (a hosted group's queue: hand the group on)."""
    plugin = installed(state.consumer.app)
    host = plugin.host if plugin is not None else None
    if host is not None and host.hosts_queue(queue):
        state.consumer.call_soon(host.give_up_queue, queue)
        return {"ok": f"handing on the group of {queue}: it is no longer consumed here"}
    return _celery_cancel_consumer(state, queue, **options)
