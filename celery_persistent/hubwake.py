"""The worker's event loop never sleeps while callbacks wait to run (the RabbitMQ stall of up to 10 s).

kombu's event loop (``Hub.create_loop`` in kombu/asynchronous/hub.py, kombu
5.x) runs the callbacks queued with ``call_soon`` once, at the top of each
iteration, then polls its file descriptors for as long as ``fire_timers``
returns: until the next timer, at most 10 s.  A callback queued during that
first phase, from the loop's own thread (which does not wake the poller),
waits for the poll to end.

On py-amqp this stalls a solo worker with a prefetch of 1.  kombu's reader
(``Transport._make_reader``) reads one message and queues itself again with
``call_soon``; Celery queues each ack with ``call_soon`` too
(``Consumer.call_soon_ack``).  When the ack runs before the reader in the
same phase, RabbitMQ sends the next message at once, the reader reads it
and the task runs there; its ack is then queued behind the poll, and the
broker, owed that ack, sends nothing: the worker sleeps until the next timer
(seen as gaps of exactly 10 s, docs/benchmarks.md, "RabbitMQ stalls").
Which of the two runs first follows the set's order of the two callbacks,
so it comes and goes with memory layout.  Upstream: celery/kombu#1587 and
celery/celery#7718 describe the same loop order delaying a Redis worker.

The guard wraps the hub's ``fire_timers``, whose value ``create_loop`` uses as
the poll's timeout: with callbacks queued it returns 0, so the poll only
collects what is ready and the next iteration runs them.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)

GUARDED = "_persistent_wakes"


def guard(hub: Any) -> bool:
    """Make ``hub`` poll without waiting while callbacks are queued; False if it is not kombu's Hub as known.

    Must run before the loop is made (``create_loop`` binds ``fire_timers``
    once): Celery makes it after the consumer's steps have started.
    """
    if getattr(hub, GUARDED, False):
        return True
    fire = getattr(hub, "fire_timers", None)
    if not callable(fire) or not isinstance(getattr(hub, "_ready", None), set):
        return False

    def fire_timers(*args: Any, **kwargs: Any) -> Any:
        timeout = fire(*args, **kwargs)
        return 0 if hub._ready else timeout

    hub.fire_timers = fire_timers
    setattr(hub, GUARDED, True)
    return True


class HubWakeStep(bootsteps.StartStopStep):
    """Guards the worker's event loop (every worker with the plugin, whatever its pool)."""

    label = "persistent-hub-wake"

    def start(self, consumer: Any) -> None:
        hub = getattr(consumer, "hub", None)
        if hub is not None and not guard(hub):
            logger.warning("kombu's event loop is not the one known: a worker on AMQP may wait up to 10 s "
                           "between messages (celery_persistent.hubwake)")
