"""Typed errors of celery_persistent.

Celery stores a failed task's exception in the result backend as its type and
its ``args`` and rebuilds it with ``cls(*args)`` in the caller.  Every error
here therefore keeps all of its fields in ``args`` (message first) so that the
caller gets the same type, message and fields back from ``AsyncResult.get()``.
"""

from __future__ import annotations

from typing import Any


class PersistentError(Exception):
    """Base class of every error raised by celery_persistent."""

    def __init__(self, message: str, *fields: Any) -> None:
        super().__init__(message, *fields)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.message


class InvalidMessage(PersistentError, ValueError):
    """A message is not a mapping of the allowed types, is too large, or was
    sent with an unsafe serializer.  ``path`` names the offending part."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message, path)

    @property
    def path(self) -> str:
        return str(self.args[1])


class InvalidOptions(PersistentError, ValueError):
    """An option name or value that celery_persistent does not know."""

    def __init__(self, message: str, option: str = "") -> None:
        super().__init__(message, option)

    @property
    def option(self) -> str:
        return str(self.args[1])


class UnknownDevice(PersistentError, LookupError):
    """``msg1["device"]`` names no device registered on the app."""

    def __init__(self, message: str, device: str = "") -> None:
        super().__init__(message, device)

    @property
    def device(self) -> str:
        return str(self.args[1])


class UnknownKey(PersistentError, LookupError):
    """``msg2["path"]`` names no key (method) of the device."""

    def __init__(self, message: str, device: str = "", key: str = "") -> None:
        super().__init__(message, device, key)

    @property
    def device(self) -> str:
        return str(self.args[1])

    @property
    def key(self) -> str:
        return str(self.args[2])


class LeaderDied(PersistentError):
    """The execution this request waited on was lost (its lease expired)."""

    def __init__(self, message: str, group: str = "", leader_id: str = "") -> None:
        super().__init__(message, group, leader_id)

    @property
    def group(self) -> str:
        return str(self.args[1])

    @property
    def leader_id(self) -> str:
        return str(self.args[2])


class StateLost(LeaderDied):
    """A stored base message (or checkpoint) is gone, so the request cannot run."""


class InfiniteRecursionError(PersistentError):
    """An execution requested its own group again; waiting would deadlock."""

    def __init__(self, message: str, group: str = "") -> None:
        super().__init__(message, group)

    @property
    def group(self) -> str:
        return str(self.args[1])


class ConfigurationError(PersistentError):
    """The Celery app is configured in a way the plugin cannot work with."""


class RegistryUnavailable(PersistentError):
    """The registry's Redis could not be reached: nothing was registered for this call.

    Raised to callers instead of redis-py's connection errors, so that code
    catching ``PersistentError`` sees it; safe to retry once Redis is back.
    """


class BrokerUnavailable(PersistentError):
    """The broker could not take the request's message: nothing stays registered and nothing runs.

    Raised to callers instead of kombu's ``OperationalError`` (RabbitMQ or a
    Redis broker down), so that code catching ``PersistentError`` sees it;
    safe to retry once the broker is back.
    """


class RequestLost(PersistentError):
    """An accepted request's message left its group queue without being run (a ``purge``, most likely).

    The request will not run: its caller and its waiters get this instead of
    waiting for ever.
    """


class GroupParked(PersistentError):
    """A request to a parked rolling group waited ``persistent_parked_timeout`` seconds and did not run.

    A rolling group whose last persistent worker stopped, drained or died
    keeps its state in Redis ("parked") and takes requests; the next
    persistent worker that starts runs them.  A request that waits longer
    than the bound gets this error instead, and will not run.
    """

    def __init__(self, message: str, group: str = "") -> None:
        super().__init__(message, group)

    @property
    def group(self) -> str:
        return str(self.args[1])


class Released(LeaderDied):
    """An operator released the group (``celery persistent release``) while this request held it or waited on it.

    The request did not run, or its execution was cut off: it and the
    requests coalesced onto it get this error, and the group moved on to its
    next request.  A subclass of ``LeaderDied``: code that retries a lost
    execution retries this too.  ``group`` and ``leader_id`` as there.
    """


class ReleaseRefused(PersistentError):
    """``celery persistent release`` changed nothing: ``reason`` says why.

    ``unknown``: nothing owns the group; ``stale``: another token owns it
    than the one given (it moved on: inspect it again); ``moved``: a rolling
    group's old name (release the group it names); ``busy``: its requests
    kept changing while it was read.
    """

    def __init__(self, message: str, group: str = "", reason: str = "") -> None:
        super().__init__(message, group, reason)

    @property
    def group(self) -> str:
        return str(self.args[1])

    @property
    def reason(self) -> str:
        return str(self.args[2])
