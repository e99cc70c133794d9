"""Counting answers as the result backend publishes them, to find a request answered twice.

Celery's Redis backend publishes every stored result on the channel named
after its key (``celery-task-meta-<id>``), and never overwrites a SUCCESS.
A request with two final-state publications was answered twice (say a
LeaderDied, then a late success).  The subscription reconnects after a
Redis restart; what is published while it is down is not seen, so this can
only under-count.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict

import redis
from celery import states

PATTERN = "celery-task-meta-*"


class AnswerWatch:
    def __init__(self, url: str) -> None:
        self.url = url
        self.finals: dict[str, list[str]] = defaultdict(list)
        self.reconnects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="answer-watch", daemon=True)

    def start(self) -> AnswerWatch:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def twice(self, task_ids: set[str]) -> dict[str, list[str]]:
        """Our requests with more than one final state published: their states, in order."""
        with self._lock:
            return {tid: list(seen) for tid, seen in self.finals.items() if tid in task_ids and len(seen) > 1}

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(PATTERN)
                self._ready.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._note(message["channel"], message["data"])
            except (redis.RedisError, OSError):
                self.reconnects += 1
                time.sleep(0.2)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
                    client.close()

    def _note(self, channel: bytes, data: bytes) -> None:
        try:
            status = json.loads(data).get("status")
        except ValueError:
            return
        if status not in states.READY_STATES:
            return
        task_id = channel.decode().removeprefix("celery-task-meta-")
        with self._lock:
            self.finals[task_id].append(str(status))
