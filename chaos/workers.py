"""``celery -A chaos.app worker`` subprocesses: started, killed, frozen and thawed by their own pid.

Like ``celery_persistent.testing.WorkerProcess``, each worker runs in a
session of its own, so a signal to its process group reaches the worker and
its pool children and nothing else.  This class adds what the chaos suite
needs besides: a command prefix (``ip netns exec``), an environment of its
own (the servers it talks to), SIGSTOP/SIGCONT, and a watch for its death.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from celery_persistent.testing import wait_until
from chaos.ledger import Ledger
from chaos.settings import ROOT


class Worker:
    def __init__(self, name: str, ledger: Ledger, logdir: Path, env: dict[str, str], *, persistent: bool = False,
                 queues: Sequence[str] = (), prefix: Sequence[str] = ()) -> None:
        self.name = name
        self.hostname = f"{name}@chaos"
        self.persistent = persistent
        self.logfile = logdir / f"worker-{name}.log"
        cmd = [*prefix, sys.executable, "-m", "celery", "-A", "chaos.app", "worker", "-P", "solo", "-c", "1",
               "-n", self.hostname, "--without-gossip", "--without-mingle", "-l", "info"]
        if queues:
            cmd += ["-Q", ",".join(queues)]
        if persistent:
            cmd += ["--persistent"]
        self._log = self.logfile.open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ledger = ledger
        self._entry = ledger.add("process", pid=self.proc.pid, mark=self.hostname, what=f"worker {self.hostname}")
        self.died_at: float | None = None
        self.frozen: list[tuple[float, float]] = []
        # A crash point ends the worker on its own: note the moment, not when someone next looks.
        threading.Thread(target=self._watch, name=f"watch-{name}", daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        if self.died_at is None:
            self.died_at = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"worker {self.name} exited ({self.proc.returncode}):\n{self.log()[-2000:]}")
            return " ready." in self.log()

        wait_until(ready, timeout, 0.1, f"worker {self.name} to be ready")
        return self

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> float:
        """SIGKILL the whole worker; returns the time of the kill."""
        killed = time.time()
        if self.died_at is None:
            self.died_at = killed
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        return killed

    def freeze(self) -> float:
        self.signal(signal.SIGSTOP)
        return time.time()

    def thaw(self, since: float) -> float:
        self.signal(signal.SIGCONT)
        thawed = time.time()
        self.frozen.append((since, thawed))
        return thawed

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown, then SIGKILL; the ledger forgets it once it is gone."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
        self._log.close()
        self.ledger.release(self._entry)
