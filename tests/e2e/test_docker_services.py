"""docker/compose.yaml's service settings, run as real processes (no Docker engine here).

The healthcheck commands of the workers and of Flower, and Flower's
authentication, are what a container would run; here they run against a
real worker and a real Flower on the test broker.  tests/unit/test_packaging.py
reads the compose files themselves.
"""

from __future__ import annotations

import base64
import os
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, Worker, wait_until

COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))
APP = "tests.apps.basic"


def healthcheck(service: str, node: str) -> list[str]:
    """The service's healthcheck command, as its container's shell would run it, aimed at worker ``node``."""
    kind, line = COMPOSE["services"][service]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # A container's worker has Celery's default node name, celery@<its hostname>.
    assert "celery@$$HOSTNAME" in line
    words = shlex.split(line.replace("$$PROJ", APP).replace("celery@$$HOSTNAME", node))
    words = words[: words.index(">")] if ">" in words else words
    assert words[0] == "celery"
    return [sys.executable, "-m", *words]


def test_the_worker_healthcheck_pings_its_own_worker(solo_worker: Worker) -> None:
    # Both worker services run the same check (tests/unit/test_packaging.py reads it).
    ok = subprocess.run(healthcheck("worker", solo_worker.hostname), cwd=ROOT, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    missing = healthcheck("worker", f"celery@nobody-{os.getpid()}")
    missing[missing.index("--timeout") + 1] = "1"  # no answer is awaited for its full 10 s here
    assert subprocess.run(missing, cwd=ROOT, capture_output=True, timeout=60).returncode != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[str]:
    """Flower with the environment docker/compose.yaml gives it (credentials set); yields its base URL."""
    env = {**os.environ, **{k: str(v) for k, v in COMPOSE["services"]["flower"]["environment"].items()
                            if k.startswith("FLOWER_")}}
    env["FLOWER_BASIC_AUTH"] = "ops:secret"
    port = free_port()
    with open(tmp_path / "flower.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", APP, "flower", f"--port={port}",
                                 "--address=127.0.0.1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: status(base + "/healthcheck") == 200 or proc.poll() is not None, timeout=30,
                   message="Flower to answer")
        assert proc.poll() is None, (tmp_path / "flower.log").read_text()[-2000:]
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def status(url: str, auth: str | None = None) -> int | None:
    headers: dict[str, Any] = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return None


def test_flower_needs_its_credentials_and_its_api_takes_them(flower: str) -> None:
    assert status(flower + "/healthcheck") == 200, "the container healthcheck needs no credentials"
    assert status(flower + "/api/workers") == 401
    assert status(flower + "/api/workers", "ops:wrong") == 401
    assert status(flower + "/api/workers", "ops:secret") == 200
    assert status(flower + "/", "ops:secret") == 200
