"""Keeping leases alive: one background thread per process.

A lease lives only as long as its holder renews it, so a killed process
stops renewing and its groups become recoverable after ``lease_ttl``.  The
thread renews every lease held in this process plus those of ``sources``
(in a worker's main process: every request it has reserved), and runs the
``ticks`` (the reaper, persistent-worker upkeep) on the same beat.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

from .registry import Registry

logger = logging.getLogger(__name__)

LeaseSource = Callable[[], Iterable[tuple[str, str]]]
Tick = Callable[[], object]


class LeaseKeeper:
    def __init__(self, registry: Registry, interval: float) -> None:
        self._registry = registry
        self.interval = interval
        self._held: dict[str, str] = {}  # token -> group
        self._sources: list[LeaseSource] = []
        self._ticks: list[Tick] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, group: str, token: str) -> None:
        with self._lock:
            self._held[token] = group
        self.start()

    def drop(self, token: str) -> None:
        with self._lock:
            self._held.pop(token, None)

    def token_for(self, group: str) -> str | None:
        with self._lock:
            for token, held_group in self._held.items():
                if held_group == group:
                    return token
        return None

    def add_source(self, source: LeaseSource) -> None:
        self._sources.append(source)

    def add_tick(self, tick: Tick) -> None:
        self._ticks.append(tick)

    def start(self) -> None:
        if self._pid != os.getpid():
            # A forked child (a prefork pool process) inherits the parent's
            # table but not its thread; the parent keeps its own duties.
            self._pid = os.getpid()
            self._thread = None
            self._sources.clear()
            self._ticks.clear()
            with self._lock:
                self._held.clear()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="persistent-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def beat(self) -> None:
        """One renewal pass and one round of ticks (also used by tests).

        Each part is guarded on its own: a failing source or a Redis error
        while renewing never keeps the held leases or the ticks from running.
        """
        with self._lock:
            leases = [(group, token) for token, group in self._held.items()]
        for source in self._sources:
            try:
                leases.extend(source())
            except Exception:
                logger.exception("lease source %r failed", source)
        try:
            self._renew(leases)
        except Exception:
            logger.exception("lease renewal failed; retrying on the next beat")
        for tick in self._ticks:
            try:
                tick()
            except Exception:
                logger.exception("persistent background tick %r failed", tick)

    def _renew(self, leases: list[tuple[str, str]]) -> None:
        if not leases:
            return
        lost = [lease for lease, ok in zip(leases, self._registry.renew(leases), strict=True) if not ok]
        for group, token in lost:
            if token in self._held:
                logger.warning("lease on group %s lost (token %s)", group, token[:8])

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.beat()
            except Exception:
                logger.exception("lease renewal failed; retrying")
            self._wake.wait(self.interval)
            self._wake.clear()
