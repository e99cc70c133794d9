"""Worker bootsteps: lease upkeep and reaping everywhere; hosting with ``--persistent``.

The worker-level step runs in the worker's main process (the one that
reserves messages), so it renews a request's lease from the moment the
worker takes it until Celery reports it done, whatever the pool.  Every
worker with the plugin reaps, so recovery does not depend on any single
process surviving.  With ``--persistent`` the worker also hosts groups.

Both steps are module-level classes that find the plugin on the worker's app
(``discovery.installed``), as Celery's own steps find what they need on the
worker or consumer they are given.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from celery import bootsteps
from celery.exceptions import ImproperlyConfigured
from celery.signals import task_received, task_revoked
from celery.worker import state

from . import faults
from .config import DEFAULT_CACHE_BYTES
from .discovery import installed
from .dispatch import HEADER
from .revocation import RevokeSync

if TYPE_CHECKING:
    from .plugin import Persistent

WORKER_OPTIONS = [
    click.Option(["--persistent"], is_flag=True, default=False,
                 help="Host celery_persistent groups: consume their queues, keep their Msg1 in memory "
                      "(needs the solo pool: -P solo)."),
    click.Option(["--persistent-cache-bytes"], type=int, default=None,
                 help=f"Bound of the in-memory Msg1 cache, in bytes (default: persistent_cache_bytes, "
                      f"else {DEFAULT_CACHE_BYTES})."),
    click.Option(["--persistent-timeout"], type=float, default=None,
                 help="Default idle timeout of hosted groups, in seconds (default: persistent_worker_timeout, "
                      "else 10)."),
]


def held_headers() -> Iterator[dict[str, Any]]:
    """The plugin's header of every request this worker holds (reserved or running)."""
    for request in list(state.requests.values()):
        header = request.request_dict.get(HEADER)
        if header:
            yield header


def reserved_leases() -> Iterator[tuple[str, str]]:
    """(group, token) of every request this worker holds and has not finished."""
    return ((h["group"], h["token"]) for h in held_headers() if h.get("token"))


logger = logging.getLogger(__name__)


class ReceptionMark:
    """On ``task_received`` (the worker's main process): a leader this worker holds gets a short lease.

    Until then a published leader may wait on the broker for the queue TTL;
    from the moment a worker has it, that worker's death must be noticed
    within one lease.  Connected by the bootstep, never at import time.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or getattr(sender, "app", None) is not self.app:
            return
        header = (getattr(request, "request_dict", None) or {}).get(HEADER) or {}
        if not header.get("token") or header.get("hosted"):
            return
        faults.point("before-reception")  # fetched (kombu's unacked hash on Redis), not yet reserved
        try:
            # Not waited for: Redis applies it as it arrives, the claim that follows is not held up.
            _plugin(self.app).registry.reserve_unawaited(header["group"], header["token"])
        except Exception:  # the lease beat renews it anyway: never break the consumer
            logger.warning("could not mark request %s reserved", getattr(request, "id", "?"), exc_info=True)


def reserved_groups() -> set[str]:
    """Groups of the hosted requests this worker holds (reserved or running): their messages are not lost."""
    return {str(h.get("group")) for h in held_headers() if h.get("hosted")}


def _plugin(app: Any) -> Persistent:
    plugin = installed(app)
    if plugin is None:  # the steps are only added by Persistent(app)
        raise ImproperlyConfigured("celery_persistent bootsteps on an app without Persistent(app)")
    return plugin


class PersistentStep(bootsteps.StartStopStep):
    """Starts the plugin's background upkeep in a worker (and its host, with --persistent)."""

    label = "persistent"

    def __init__(self, worker: Any, persistent: bool = False, persistent_cache_bytes: int | None = None,
                 persistent_timeout: float | None = None, **kwargs: Any) -> None:
        # Registers the group-aware add_consumer command, in workers only.
        importlib.import_module(f"{__package__}.control")
        self.hosting = persistent
        if persistent:
            # Made here, before any consumer step starts and binds to it.
            _plugin(worker.app).host_on(worker.hostname, cache_bytes=persistent_cache_bytes,
                                        default_timeout=persistent_timeout, reserved_groups=reserved_groups)
        super().__init__(worker, **kwargs)

    def start(self, worker: Any) -> None:
        if self.hosting and "solo" not in getattr(worker.pool_cls, "__module__", ""):
            raise ImproperlyConfigured(
                "celery worker --persistent runs one execution at a time per process: use -P solo "
                "(scale with more worker processes)"
            )
        plugin = _plugin(worker.app)
        self.reception = ReceptionMark(worker.app)
        task_received.connect(self.reception, weak=False)
        self.revocation = plugin.wiring.revocation
        task_revoked.connect(self.revocation, weak=False)
        keeper = plugin.runtime.keeper
        keeper.add_tick(RevokeSync(state.revoked, plugin.wiring.revoked, time.time))
        keeper.add_source(reserved_leases)
        keeper.add_tick(plugin.reaper.reap)
        if plugin.host is not None:
            keeper.add_tick(plugin.host.tick)
        keeper.start()

    def stop(self, worker: Any) -> None:
        plugin = _plugin(worker.app)
        for signal, name in ((task_received, "reception"), (task_revoked, "revocation")):
            receiver = getattr(self, name, None)
            if receiver is not None:
                signal.disconnect(receiver)
        # Stop the beat first: it would otherwise report this worker live
        # again, and take new groups, while it hands its own away.
        plugin.runtime.keeper.stop()
        if plugin.host is not None:
            plugin.host.shutdown()


class HostQueuesStep(bootsteps.StartStopStep):
    """Gives the host the consumer, to add and cancel group queues."""

    label = "persistent-queues"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        plugin = _plugin(consumer.app)
        if plugin.host is not None:
            plugin.host.bind(consumer)
