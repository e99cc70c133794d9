"""Rolling state: when a hosted group writes its state to Redis, and how a written state is encoded.

A rolling group's state (its Msg1, which each successful Msg3 replaces)
lives in memory on its persistent worker.  Redis keeps its latest checkpoint
and, between two checkpoints, a journal of the requests applied since; a new
owner loads the checkpoint and replays the journal (``hosting/state.py``).
``CheckpointPolicy`` says when a checkpoint is written: after every request
(the default), every N requests, or once the oldest journaled request is T
seconds old; and always before a group is handed off or parked.

A checkpoint is encoded once (``encode_state``): a walk that checks its
types, and one JSON encoding to store it; only a group whose name is the
digest of its state also gets the canonical encoding that digest needs.  A
journaled request's Msg3 is not encoded at all: ``check_state`` only checks
its types and estimates its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidMessage, InvalidOptions
from .messages import digest, validate
from .store import checkpoint_id, content_id, dumps

MAX_JOURNAL = 10_000
"""Requests journaled at most between two checkpoints, whatever the policy: replay stays bounded."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a rolling group writes a checkpoint (``checkpoint_every`` / ``checkpoint_interval`` options).

    ``every``: at the latest with the N-th request since the last checkpoint
    (1: every request; 0: no count); ``interval``: once the oldest request
    journaled is that many seconds old (0: no time bound), checked at each
    request and on the worker's beat.  At least one of them is set.
    """

    every: int = 1
    interval: float = 0.0

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> CheckpointPolicy:
        return cls(int(opts.get("checkpoint_every", 1)), float(opts.get("checkpoint_interval", 0.0)))

    def encode(self) -> str:
        """The owner hash's ``ckpt`` field: every host of the group applies the same policy."""
        return f"{self.every}:{self.interval:g}"

    @classmethod
    def decode(cls, text: str) -> CheckpointPolicy:
        """The policy an owner hash records ("" before this field existed: every request)."""
        every, _, interval = (text or "1:0").partition(":")
        try:
            return cls(int(every), float(interval or 0))
        except ValueError:
            return cls()

    @property
    def every_request(self) -> bool:
        return self.every == 1

    def due(self, journaled: int, age: float) -> bool:
        """A checkpoint is due with ``journaled`` requests applied since the last one (this one
        included), the oldest ``age`` seconds ago."""
        if journaled >= MAX_JOURNAL or self.every_request:
            return True
        return (self.every > 0 and journaled >= self.every) or (self.interval > 0 and age >= self.interval)


def check_policy_options(every: Any, interval: Any) -> tuple[int, float]:
    """Checked ``checkpoint_every`` and ``checkpoint_interval``; a policy that never checkpoints is refused."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise InvalidOptions(f"checkpoint_every must be an int >= 0 (1: every request), not {every!r}",
                             "checkpoint_every")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 <= interval < math.inf:
        raise InvalidOptions(f"checkpoint_interval must be a number of seconds >= 0, not {interval!r}",
                             "checkpoint_interval")
    if every == 0 and interval == 0:
        raise InvalidOptions("checkpoint_every=0 needs a checkpoint_interval > 0: the state would never be "
                             "checkpointed", "checkpoint_every")
    return every, float(interval)


@dataclass(frozen=True)
class EncodedState:
    """A state ready to be written as a checkpoint: its storage id, canonical size and stored form."""

    storage_id: str
    size: int
    data: bytes  # JSON, as the message store keeps messages


def encode_state(msg: Any, max_bytes: int, group: str, writer: str, name: str = "msg3",
                 exact: bool = True) -> EncodedState:
    """Validate ``msg`` as a group's next state and encode it for its checkpoint.

    ``exact``: the checkpoint's id starts with the digest of the state's
    canonical encoding, as a ``ref()`` does, which costs a second encoding
    (the canonical one, in Python).  Only a group whose name is a digest of
    its state needs it (a device without a grouper of its own); otherwise
    the state is walked once (``check_state``) and encoded once (JSON), its
    size is that of its JSON, and the id's first part is a digest of the
    group and writer, which grouping never reads (the device's grouper names
    the group).
    """
    if not isinstance(msg, Mapping):
        raise InvalidMessage(f"a rolling worker needs {name} to be a message, not {type(msg).__name__}", name)
    if exact:
        content, size = content_id(msg, validate(msg, name, max_bytes))
        return EncodedState(checkpoint_id(content, group, writer), size, dumps(msg))
    check_state(msg, max_bytes, name)
    data = dumps(msg)
    if len(data) > max_bytes:
        raise InvalidMessage(f"{name} is {len(data)} bytes of JSON, over persistent_max_message_bytes={max_bytes}",
                             name)
    content = digest(group.encode("utf-8"), writer.encode("utf-8", "surrogatepass"))
    return EncodedState(checkpoint_id(content, group, writer), len(data), data)


SCALAR_SIZE = 9
"""What ``check_state`` counts for a number, bool or None (about its canonical size)."""


def check_state(msg: Any, max_bytes: int, name: str = "msg3") -> int:
    """Check a journaled Msg3 (types, keys, finite floats) without encoding it; its estimated size.

    The estimate counts characters, not UTF-8 bytes: the exact size is
    checked when the state is checkpointed.  A bad value is reported by
    ``messages.validate``, with its path.
    """
    if not isinstance(msg, Mapping):
        raise InvalidMessage(f"a rolling worker needs {name} to be a message, not {type(msg).__name__}", name)
    try:
        size = _estimate(msg)
    except _NotAMessage:
        validate(msg, name, max_bytes)  # raises InvalidMessage naming the bad value's path
        raise InvalidMessage(f"{name} is not a message", name) from None
    if size > max_bytes:
        raise InvalidMessage(f"{name} is about {size} bytes, over persistent_max_message_bytes={max_bytes}", name)
    return size


class _NotAMessage(Exception):
    pass


def _estimate(value: Any) -> int:
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) + 4
    if kind is int or kind is bool or value is None:
        return SCALAR_SIZE
    if kind is float:
        if not math.isfinite(value):
            raise _NotAMessage
        return SCALAR_SIZE
    if isinstance(value, (list, tuple)):
        return 4 + sum(map(_estimate, value))
    if isinstance(value, Mapping):
        return _estimate_mapping(value)
    return _estimate_other(value)


def _estimate_mapping(value: Mapping[Any, Any]) -> int:
    total = 4
    for key, item in value.items():
        if not isinstance(key, str):
            raise _NotAMessage
        total += len(key) + 4 + _estimate(item)
    return total


def _estimate_other(value: Any) -> int:
    """Subclasses of the allowed types, and the types that are not allowed."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        return len(value) + 4
    if isinstance(value, float):
        return _estimate(float(value))
    if isinstance(value, int):
        return SCALAR_SIZE
    raise _NotAMessage
