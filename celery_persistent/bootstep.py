"""The worker bootstep: lease renewal for reserved requests, and the reaper.

Runs in the worker's main process (the one that reserves messages), so it
keeps renewing a request's lease from the moment the worker takes it until
Celery reports it done, whatever the pool.  Every worker with the plugin
reaps, so recovery does not depend on any single process surviving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.worker import state

from .coalescing import HEADER

if TYPE_CHECKING:
    from .plugin import Persistent


def reserved_leases() -> Iterator[tuple[str, str]]:
    """(group, token) of every request this worker holds and has not finished."""
    for request in list(state.requests.values()):
        header = request.request_dict.get(HEADER)
        if header and header.get("token"):
            yield header["group"], header["token"]


def make_step(persistent: Persistent) -> type[bootsteps.StartStopStep]:
    class PersistentStep(bootsteps.StartStopStep):
        """Starts the plugin's background upkeep in a worker."""

        label = "persistent"

        def start(self, worker: Any) -> None:
            keeper = persistent.keeper
            keeper.add_source(reserved_leases)
            keeper.add_tick(persistent.coalescer.reap)
            keeper.start()

        def stop(self, worker: Any) -> None:
            persistent.keeper.stop()

    return PersistentStep
