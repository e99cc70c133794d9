"""A RabbitMQ node of the suite's own, beside (never instead of) the one at 127.0.0.1:5672.

Its name (``chaos-<pid>@localhost``), its ports, its data, logs and Erlang
cookie are its own: the node's environment points every RabbitMQ file at
the run's directory, so it reads none of ``/etc/rabbitmq`` (whose listener
is the shared node's 5672).  It is started and stopped by node name with
``rabbitmqctl -n``, never by a broad process name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from chaos.ledger import Ledger, kill_group
from chaos.ports import free_port

LIB = Path("/usr/lib/rabbitmq/bin")


class RabbitUnavailable(RuntimeError):
    """This machine cannot run a RabbitMQ node of ours (the scenario is skipped with this reason)."""


def _tool(name: str) -> str:
    # The /usr/sbin wrappers switch to the rabbitmq user and drop our environment: call the real scripts.
    if (LIB / name).exists():
        return str(LIB / name)
    found = shutil.which(name)
    if found is None:
        raise RabbitUnavailable(f"{name} is not installed")
    return found


class RabbitNode:
    def __init__(self, workdir: Path, ledger: Ledger) -> None:
        self.server = _tool("rabbitmq-server")
        self.ctl = _tool("rabbitmqctl")
        self.ledger = ledger
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos-{os.getpid()}@localhost"
        self.dir = workdir / "rabbit"
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text("")
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[].\n")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        self.env = {
            **base,
            "HOME": str(home),  # the node and rabbitmqctl share this cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "node.pid"),
            "RABBITMQ_SERVER_START_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._entry = ""
        self._log = self.dir / "server.out"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.ctl, "-n", self.node, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, timeout: float = 120.0) -> float:
        """Start the node and wait for ``await_startup``; returns when it was up."""
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen([self.server], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.dir)
        self._entry = self.ledger.add("rabbit", pid=self.proc.pid, mark="rabbitmq-server", node=self.node,
                                      ctl=self.ctl, env=self.env, what=f"rabbit {self.node}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._log.read_text(errors="replace")[-1500:]
                self._forget()
                raise RabbitUnavailable(f"node {self.node} exited during start-up: {tail.strip()[-600:]}")
            # await_startup fails at once while epmd does not know the node yet: poll it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                if self._ctl("await_startup", "--timeout", "10", timeout=20).returncode == 0:
                    return time.time()
            time.sleep(0.3)
        self.stop()
        raise RabbitUnavailable(f"node {self.node} did not start in {timeout}s")

    def stop(self, timeout: float = 60.0) -> float:
        """``rabbitmqctl -n <node> stop``, then wait for the server process; returns when it was gone."""
        if self.proc is None:
            return time.time()
        if self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._ctl("stop", timeout=timeout)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid, "rabbitmq-server", signal.SIGKILL)
                self.proc.wait(10)
        stopped = time.time()
        self._forget()
        return stopped

    def _forget(self) -> None:
        if self.proc is not None:
            # The Erlang VM runs in the script's process group: make sure nothing of it is left.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.ledger.release(self._entry)
        self.proc = None

    def restart(self, down: float) -> tuple[float, float]:
        """Stop, stay down ``down`` seconds, start again with the same data: (stopped, up again)."""
        stopped = self.stop()
        time.sleep(down)
        return stopped, self.start()
