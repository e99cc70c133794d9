"""A ``redis-server`` of the suite's own: its port, its data dir, started and stopped by its pid.

Never the Redis at 127.0.0.1:6379 that other tests use: every instance here
listens on a free port and keeps its data in the run's directory.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from chaos.ledger import Ledger
from chaos.ports import free_port


class RedisServer:
    """One ``redis-server``; ``appendonly`` decides whether a restart keeps its data."""

    def __init__(self, workdir: Path, ledger: Ledger, name: str, *, appendonly: bool,
                 binds: Sequence[str] = ("127.0.0.1",)) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.name = name
        self.ledger = ledger
        self.appendonly = appendonly
        self.binds = list(binds)
        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self._entry = ""

    def url(self, host: str = "127.0.0.1", db: int = 0) -> str:
        return f"redis://{host}:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def start(self, timeout: float = 20.0) -> float:
        """Start on this server's port and data dir; returns when it answers PING (that time)."""
        cmd = ["redis-server", "--port", str(self.port), "--bind", *self.binds, "--dir", str(self.dir),
               "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--protected-mode", "no",
               "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self._entry = self.ledger.add("process", pid=self.proc.pid, mark=str(self.port), what=f"redis {self.name}")
        return self.wait_up(timeout)

    def wait_up(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis {self.name} exited: see {self.dir / 'redis.log'}")
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return time.time()
            time.sleep(0.05)
        raise RuntimeError(f"redis {self.name} did not answer on port {self.port} in {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> float:
        """Signal exactly this server (SIGTERM: shutdown, flushing the AOF) and wait; returns when it was gone."""
        if self.proc is None:
            return time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.ledger.release(self._entry)
        self.proc = None
        return time.time()

    def restart(self, down: float) -> tuple[float, float]:
        """Stop, stay down ``down`` seconds, start again on the same port and dir: (stopped, up again)."""
        stopped = self.stop()
        time.sleep(down)
        return stopped, self.start()
