"""observe.lua: an execution's histogram fields and counter, added to the metrics hash in one step."""

from __future__ import annotations

from celery_persistent.metrics import Mode, observation


def observe(scripts, ks, fields):
    return scripts["observe"](keys=[ks.metrics()], args=[part for pair in fields for part in pair])


def test_sums_add_as_floats_and_buckets_and_counters_as_integers(db, ks, scripts):
    fields = [*observation(Mode.HOSTED, 0.003, 0.25), ("executions", 1)]

    assert observe(scripts, ks, fields) == 5
    assert observe(scripts, ks, [*observation(Mode.HOSTED, 0.5), ("executions", 1)]) == 3

    got = db.hgetall(ks.metrics())
    assert float(got["h:execution:hosted:sum"]) == 0.503
    assert float(got["h:wait:hosted:sum"]) == 0.25
    assert got["h:execution:hosted:0"] == "1" and got["h:execution:hosted:6"] == "1"
    assert got["executions"] == "2"
    assert len(got) == 6


def test_nothing_to_add_writes_nothing(db, ks, scripts, state):
    before = state()

    assert observe(scripts, ks, []) == 0

    assert state() == before
