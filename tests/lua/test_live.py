"""live.lua: the workers placement may pick (heartbeat not expired on the server's clock, not draining)."""

from __future__ import annotations

from tests.lua.support import server_ms


def live(scripts, ks):
    reply = scripts["live"](keys=[ks.workers()], args=[ks.worker("")])
    return sorted(zip(reply[::2], reply[1::2], strict=True))


def test_live_workers_come_with_their_group_count(db, ks, scripts):
    now = server_ms(db)
    db.zadd(ks.workers(), {"a": now + 60_000, "b": now + 60_000})
    db.hset(ks.worker("a"), mapping={"groups": "7", "draining": "0"})
    db.hset(ks.worker("b"), mapping={"groups": "2"})

    assert live(scripts, ks) == [("a", "7"), ("b", "2")]


def test_a_stale_or_draining_worker_is_left_out(db, ks, scripts):
    now = server_ms(db)
    db.zadd(ks.workers(), {"stale": now - 1, "draining": now + 60_000, "fresh": now + 60_000})
    db.hset(ks.worker("stale"), mapping={"groups": "0"})
    db.hset(ks.worker("draining"), mapping={"groups": "0", "draining": "1"})

    assert live(scripts, ks) == [("fresh", "0")]  # a worker with no load HASH yet counts 0 groups


def test_no_worker_no_reply(db, ks, scripts):
    assert live(scripts, ks) == []
