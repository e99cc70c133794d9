"""`celery persistent metrics --port` served for real, scraped while real workers execute requests.

The unit tests (tests/unit/test_prometheus.py) drive the execution paths in
process; here the requests go through real workers (an ordinary prefork
worker and a persistent worker), so the send time travels in real message
headers and the observations are written from the workers' processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import Site, hosted
from tests.support import ROOT, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def exporter() -> Iterator[str]:
    """The exporter as an operator runs it, on a free port; yields its /metrics URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.apps.basic", "persistent", "metrics", "--port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server listens
        found = re.search(r"(http://\S+/metrics)", line)
        assert found, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def count(samples: Samples, histogram: str, mode: str) -> float:
    return samples.get((f"celery_persistent_{histogram}_count", (("mode", mode),)), 0.0)


def test_real_executions_show_in_the_served_histograms(redis_cluster: Site, exporter: str) -> None:
    persistent = redis_cluster.persistent
    redis_cluster.start(persistent=1, ordinary=1)
    _, before = scrape(exporter)
    uid = uuid.uuid4().hex[:8]

    # An ordinary leader, on the prefork worker's child.
    counter = {"device": "counter", "id": uid, "count": 0}
    assert persistent.resolve.delay(counter, {"path": "add", "by": 2}).get(timeout=20)["count"] == 2
    # A hosted request, on the persistent worker.
    state = {"device": "state", "id": uid, "count": 0}
    handle = persistent.start_worker(state, {"static_worker": True})
    wait_until(lambda: (hosted(persistent, handle.group) or {}).get("state") == "active", timeout=20,
               message="the group to be adopted")
    assert persistent.resolve.delay(state, {"path": "peek", "n": 1}).get(timeout=20)["n"] == 1

    text, after = scrape(exporter)
    assert after[("celery_persistent_up", ())] == 1
    for mode in ("ordinary", "hosted"):
        for histogram in ("execution_seconds", "queue_wait_seconds"):
            assert count(after, histogram, mode) >= count(before, histogram, mode) + 1, (histogram, mode)
    assert after[("celery_persistent_workers", ())] >= 1
    assert after[("celery_persistent_hosted_groups", (("worker", handle.hostname),))] >= 1
    assert 'group="' not in text, "no series labelled by group unless asked"
    persistent.stop_worker(handle.group)
