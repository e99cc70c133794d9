"""The Prometheus exporter against a real Redis: histograms, gauges, labels, Redis down, the CLI's extra.

Observations are recorded the way workers record them (``Metrics.observe``,
and the real execution paths: ``Coalescer.run`` for an ordinary leader,
``Host.run`` for a hosted request) and read back from the exposition that
prometheus-client renders, parsed with its own parser.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import celery_persistent
from celery_persistent import Persistent, prometheus
from celery_persistent.dispatch import HEADER
from celery_persistent.hosting.lifecycle import FULL_EVERY
from celery_persistent.metrics import COUNTERS, EXECUTION, QUEUE_WAIT, Metrics, Mode, waited
from tests.support import ROOT
from tests.unit.conftest import FakeTask, PersistentEnv, trace
from tests.unit.test_hosting import Counter, adopt, counter, make_host

DEVICES = {"counter": Counter}


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the text format."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def scrape(env: PersistentEnv, per_group: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(prometheus.exposition(env.persistent, per_group))


# -- histograms -------------------------------------------------------------------------------


def test_observations_land_in_their_buckets_sum_and_count(env: PersistentEnv) -> None:
    metrics = env.runtime.metrics
    metrics.observe(Mode.ORDINARY, 0.003, wait=2.0)
    metrics.observe(Mode.ORDINARY, 0.2)
    metrics.observe(Mode.HOSTED, 0.7, wait=4000.0)
    found = scrape(env)
    execution = "celery_persistent_execution_seconds"
    assert value(found, f"{execution}_bucket", mode="ordinary", le="0.005") == 1
    assert value(found, f"{execution}_bucket", mode="ordinary", le="0.1") == 1
    assert value(found, f"{execution}_bucket", mode="ordinary", le="0.25") == 2
    assert value(found, f"{execution}_bucket", mode="ordinary", le="+Inf") == 2
    assert value(found, f"{execution}_count", mode="ordinary") == 2
    assert value(found, f"{execution}_sum", mode="ordinary") == pytest.approx(0.203)
    assert value(found, f"{execution}_bucket", mode="hosted", le="0.5") == 0
    assert value(found, f"{execution}_bucket", mode="hosted", le="1.0") == 1
    wait = "celery_persistent_queue_wait_seconds"
    assert value(found, f"{wait}_bucket", mode="ordinary", le="1.0") == 0
    assert value(found, f"{wait}_bucket", mode="ordinary", le="2.5") == 1
    assert value(found, f"{wait}_count", mode="ordinary") == 1, "an observation without a wait adds none"
    assert value(found, f"{wait}_bucket", mode="hosted", le=repr(QUEUE_WAIT.bounds[-1])) == 0
    assert value(found, f"{wait}_bucket", mode="hosted", le="+Inf") == 1
    # The status counters stay counters: histogram fields are not among them.
    assert set(metrics.read()) == set(COUNTERS)


def test_bucket_bounds_are_inclusive_upper_bounds() -> None:
    assert EXECUTION.bucket(0.005) == 0 and EXECUTION.bucket(0.0051) == 1
    assert EXECUTION.bucket(1e9) == len(EXECUTION.bounds)


@pytest.mark.parametrize(("sent", "expected"), [(100.0, 5.0), ("100", 5.0), (200.0, 0.0), (None, None),
                                                ("soon", None), (True, None), (float("nan"), None), (0, None)])
def test_waited_reads_a_header_time_and_never_raises(sent: Any, expected: float | None) -> None:
    assert waited(sent, 105.0) == expected


def test_recording_never_fails_when_redis_is_down(closed_port: int) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(port=closed_port, retry=Retry(NoBackoff(), 0))  # fail at once: no retries to wait out
    metrics = Metrics(client, "nowhere:metrics")
    metrics.observe(Mode.HOSTED, 0.1, wait=0.2)  # logged, not raised
    assert metrics.timed(Mode.ORDINARY, time.time(), lambda: "msg3") == "msg3"


def test_an_ordinary_leaders_execution_and_queue_wait_are_observed(env: PersistentEnv) -> None:
    sent = env.submit(counter("ord"), {"path": "peek", "n": 1})
    message = env.message(None, sent.id)
    assert message.header is not None and message.header["sent"] <= time.time()
    task = FakeTask(sent.id)
    task.request.headers = {HEADER: message.header}  # where a worker's request carries it
    plan = env.persistent.plan(message.args[0], message.msg2, message.opts, stack=())
    outcome = env.wiring.coalescer.run(task, plan, message.header, list(message.args))
    trace(env, task, outcome)
    found = scrape(env)
    assert value(found, "celery_persistent_execution_seconds_count", mode="ordinary") == 1
    assert value(found, "celery_persistent_queue_wait_seconds_count", mode="ordinary") == 1
    assert value(found, "celery_persistent_execution_seconds_count", mode="hosted") == 0
    assert value(found, "celery_persistent_executions_total") == 1


def test_a_hosted_requests_execution_and_queue_wait_are_observed(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    h = adopt(env, host, counter("hst"))
    sent = env.submit(counter("hst"), {"path": "add", "by": 1})
    message = env.message(h.queue, sent.id)
    assert message.header is not None and message.header["sent"] <= time.time()
    task = FakeTask(sent.id)
    trace(env, task, host.run(task, message.header, message.msg2, message.opts))
    found = scrape(env)
    assert value(found, "celery_persistent_execution_seconds_count", mode="hosted") == 1
    assert value(found, "celery_persistent_queue_wait_seconds_count", mode="hosted") == 1
    assert value(found, "celery_persistent_queue_wait_seconds_sum", mode="hosted") < 60
    assert value(found, "celery_persistent_execution_seconds_count", mode="ordinary") == 0


# -- gauges and labels --------------------------------------------------------------------------


def test_groups_in_flight_waiters_and_queued_requests(env: PersistentEnv) -> None:
    msg1 = counter("busy")
    for _ in range(3):
        env.submit(msg1, {"path": "peek", "n": 1})  # one leader, two waiters (nobody runs them)
    env.submit(msg1, {"path": "peek", "n": 2})  # another Msg2: queued behind the leader
    found = scrape(env)
    assert value(found, "celery_persistent_up") == 1
    assert value(found, "celery_persistent_inflight_groups", mode="ordinary") == 1
    assert value(found, "celery_persistent_waiters", mode="ordinary") == 2
    assert value(found, "celery_persistent_queued_requests", mode="ordinary") == 1
    assert value(found, "celery_persistent_inflight_groups", mode="hosted") == 0
    assert value(found, "celery_persistent_parked_groups") == 0
    assert value(found, "celery_persistent_coalesced_total") == 2
    assert value(found, "celery_persistent_queued_total") == 1
    assert not any(dict(labels).get("group") for _, labels in found), "no group label by default"

    group = env.persistent.group(msg1)
    per_group = scrape(env, per_group=True)
    assert value(per_group, "celery_persistent_group_waiters", group=group) == 2
    assert value(per_group, "celery_persistent_group_queued_requests", group=group) == 1


def test_the_per_group_setting_is_the_default(env: PersistentEnv) -> None:
    env.app.conf.persistent_metrics_per_group = True  # before the plugin reads its settings (first use)
    env.submit(counter("set"), {"path": "peek", "n": 1})
    assert f'group="{env.persistent.group(counter("set"))}"' in prometheus.exposition(env.persistent)
    assert 'group="' not in prometheus.exposition(env.persistent, per_group=False)


def test_hosted_groups_workers_and_cache(env: PersistentEnv) -> None:
    host, _ = make_host(env, cache_bytes=4096)
    h = adopt(env, host, counter("cache"))
    sent = env.submit(counter("cache"), {"path": "add", "by": 1})
    task = FakeTask(sent.id)
    message = env.message(h.queue, sent.id)
    trace(env, task, host.run(task, message.header, message.msg2, message.opts))
    for _ in range(FULL_EVERY):  # heartbeats: groups; cache bytes are summed on the full beat among them
        host.tick()
    found = scrape(env, per_group=True)
    assert value(found, "celery_persistent_workers") == 1
    assert value(found, "celery_persistent_draining_workers") == 0
    assert value(found, "celery_persistent_hosted_groups", worker=host.hostname) == 1
    assert value(found, "celery_persistent_inflight_groups", mode="hosted") == 1
    assert value(found, "celery_persistent_cache_limit_bytes", worker=host.hostname) == 4096
    assert 0 < value(found, "celery_persistent_cache_bytes", worker=host.hostname) <= 4096
    assert value(found, "celery_persistent_group_executions_total", group=h.group) == 1
    # The test read the message without taking it off the queue (no consumer here): it is still there.
    assert value(found, "celery_persistent_group_queue_depth", group=h.group) == 1


def test_every_series_has_a_help_text_of_its_own(env: PersistentEnv) -> None:
    env.submit(counter("help"), {"path": "peek", "n": 1})
    families = list(text_string_to_metric_families(prometheus.exposition(env.persistent, per_group=True)))
    assert len(families) >= 20
    texts = [family.documentation for family in families]
    for family in families:
        assert family.name.startswith("celery_persistent_"), family.name
        assert len(family.documentation) > 30 and family.name not in family.documentation, family
    assert len(set(texts)) == len(texts), "each series explains itself"


# -- Redis down, the HTTP server, the CLI without the extra --------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(closed_port: int) -> Iterator[Persistent]:
    app = Celery("down", broker=f"redis://127.0.0.1:{closed_port}/0", set_as_current=False)
    app.conf.update(persistent_redis_url=f"redis://127.0.0.1:{closed_port}/0")
    yield Persistent(app)
    app.close()


def test_redis_down_serves_up_0_with_http_200(unreachable: Persistent) -> None:
    server = prometheus.serve(unreachable, 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    found = samples(text)
    assert value(found, "celery_persistent_up") == 0
    assert [name for name, _ in found] == ["celery_persistent_up"]


def test_the_address_comes_from_the_setting(env: PersistentEnv) -> None:
    env.app.conf.persistent_metrics_address = "127.0.0.2"
    server = prometheus.serve(env.persistent, 0)
    try:
        assert server.server_address[0] == "127.0.0.2"
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.bin.celery import celery

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "celery_persistent.prometheus")
    monkeypatch.delattr(celery_persistent, "prometheus")
    result = CliRunner().invoke(celery, ["-A", "tests.apps.basic", "persistent", "metrics"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "pip install 'celery-persistent[metrics]'" in lines[0]


# -- the Grafana dashboard ---------------------------------------------------------------------

DASHBOARD = ROOT / "docs" / "grafana" / "celery-persistent.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, and the metric of each label_values variable."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else ""
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text)
        if found:
            exprs.append(f"{found.group(1)}{{{found.group(2)}!=\"\"}}")
    return exprs


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression reads, and the label names it matches or groups by."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", "".join(re.findall(r"\{[^}]*\}", text))))
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {word.strip() for word in clause.split(",") if word.strip()}
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text)
    names = {word for word, call in words if not call and word.lower() not in PROMQL_WORDS}
    return names, labels


def test_the_expression_parser_sees_names_and_labels() -> None:
    names, labels = names_and_labels(
        'histogram_quantile(0.9, sum by (le, mode) (rate(a_bucket{job=~"$job",mode="x"}[$__rate_interval])))'
        " / on(mode) b_total offset 5m")
    assert names == {"a_bucket", "b_total"}
    assert labels == {"le", "mode", "job"}


def test_every_dashboard_expression_names_a_series_the_exporter_emits(env: PersistentEnv) -> None:
    """Against a live exporter with its default settings (no per-group series) on the test Redis.

    A persistent worker's heartbeat is there, so that the per-worker series have samples.
    """
    host, _ = make_host(env)
    host.tick()
    env.submit(counter("dash"), {"path": "peek", "n": 1})
    emitted: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(prometheus.exposition(env.persistent)):
        for sample in family.samples:
            emitted.setdefault(sample.name, set()).update(sample.labels)
    queries = dashboard_queries()
    assert len(queries) >= 20
    used: set[str] = set()
    for expr in queries:
        names, labels = names_and_labels(expr)
        assert names, f"no series in {expr}"
        missing = names - set(emitted)
        assert not missing, f"{expr} reads {missing}, which the exporter does not emit"
        known = set().union(*(emitted[name] for name in names)) | TARGET_LABELS
        assert labels <= known, f"{expr} uses labels {labels - known} that {names} do not have"
        used |= names
    assert {"celery_persistent_up", "celery_persistent_execution_seconds_bucket",
            "celery_persistent_queue_wait_seconds_bucket", "celery_persistent_inflight_groups"} <= used
