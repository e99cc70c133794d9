"""Content-addressed message store, and references to stored messages.

``persistent.ref(msg)`` stores a message once under the digest of its
canonical encoding and returns a ``Ref``: a small mapping that is accepted
wherever a message is.  A Ref made in this process also keeps the message
itself, so neither hashing nor a fetch is repeated; a Ref that arrives from
elsewhere is loaded from Redis once and kept in a small local cache.

The messages the store hands out (``Ref.value``, ``get``) are
``KnownMessage``s: they carry their digest, so that a grouper calling
``default_grouper`` on a stored Msg1 costs no hashing.  Checkpoints are the
exception (their id need not be their content's digest).

A rolling group's checkpoints are stored apart (``checkpoint_id``): under a
key of their own group, never shared, deleted by the script that takes their
last holder away (see keys.KeySpace.checkpoint).  A Ref names them like any
stored message, so every process loads them the same way.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import redis
from kombu.utils import json

try:  # optional (the "fast" extra): see dumps()
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None  # type: ignore[assignment]

from .errors import InvalidMessage, StateLost
from .keys import KeySpace
from .messages import PRIVATE_KEY, KnownMessage, encode, encoded_digest, fingerprint
from .messages import digest as digest_of

REF_KEY = "$persistent-ref"


class Ref(dict):  # type: ignore[type-arg]
    """``{"$persistent-ref": id, "device": name, "bytes": size}``.

    A dict, so it serializes as one; ``value`` (not serialized) holds the
    message (a ``KnownMessage``) when this process made or loaded it.  The id is the digest of the
    message without ``priv`` (what grouping and equality see), followed, for a
    message with a ``priv`` part, by ``-`` and a digest of that part: two
    messages that differ only in ``priv`` are stored apart.
    """

    value: Mapping[str, Any] | None = None

    @property
    def storage_id(self) -> str:
        return str(self[REF_KEY])

    @property
    def digest(self) -> str:
        """The digest of the message without ``priv``."""
        return self.storage_id[:32]

    @property
    def size(self) -> int:
        return int(self.get("bytes", 0))


def is_ref(obj: Any) -> bool:
    return isinstance(obj, Mapping) and REF_KEY in obj


CONTENT_ID = r"[0-9a-f]{32}(?:-[0-9a-f]{32})?"
CHECKPOINT_ID = re.compile(rf"({CONTENT_ID})~([A-Za-z0-9][A-Za-z0-9_.\-]{{0,95}})~([0-9a-f]{{16}})")
REF_ID = re.compile(rf"{CONTENT_ID}(?:~[A-Za-z0-9][A-Za-z0-9_.\-]{{0,95}}~[0-9a-f]{{16}})?")


def writer_key(writer: str) -> str:
    """The short name of the step that wrote a checkpoint (a request's task id, which may be any text)."""
    return digest_of(writer.encode("utf-8", "surrogatepass"))[:16]


def checkpoint_id(content: str, group: str, writer: str) -> str:
    """The storage id of a checkpoint: ``<content id>~<group>~<writer key>``.

    The content id keeps ``Ref.digest`` (grouping) working; the group and the
    writer make the entry the group's own, and name its key (``checkpoint_key``).
    """
    return f"{content}~{group}~{writer_key(writer)}"


def checkpoint_of(storage_id: str) -> tuple[str, str] | None:
    """(group, writer key) of a checkpoint id; None for a content-addressed id."""
    found = CHECKPOINT_ID.fullmatch(storage_id)
    return (found.group(2), found.group(3)) if found else None


def stored_key(keys: KeySpace, storage_id: str) -> str:
    """The Redis key holding a stored message: its checkpoint HASH, or its content-addressed STRING."""
    checkpoint = checkpoint_of(storage_id)
    return keys.checkpoint(*checkpoint) if checkpoint else keys.store(storage_id)


def dumps(msg: Any) -> bytes:
    """A message as the store keeps it: JSON, read back by kombu's ``json.loads`` in any process.

    orjson (the ``fast`` extra) encodes a 10 MB state several times faster
    than the standard library; a message it cannot encode (bytes, integers
    beyond 64 bits) goes through kombu's encoder, which can.
    """
    if orjson is not None:
        try:
            return orjson.dumps(msg)
        except TypeError:
            pass
    text: str = json.dumps(msg)
    return text.encode("utf-8")


def content_id(msg: Any, encoded: bytes) -> tuple[str, int]:
    """(storage id, size) of a message from its canonical encoding without ``priv``."""
    return with_private(msg, encoded_digest(encoded), len(encoded))


def with_private(msg: Any, digest: str, size: int) -> tuple[str, int]:
    """(storage id, size) of a message from the digest and size of its part without ``priv``."""
    if PRIVATE_KEY in msg:
        private = encode(msg[PRIVATE_KEY], f"message.{PRIVATE_KEY}")
        return f"{digest}-{encoded_digest(private)}", size + len(private)
    return digest, size


def known(msg: Mapping[str, Any], storage_id: str, size: int) -> Mapping[str, Any]:
    """``msg`` carrying its digest, when its storage id starts with it (content addressed, not a checkpoint)."""
    if checkpoint_of(storage_id):
        return msg
    if isinstance(msg, KnownMessage) and msg.known() is not None:
        return msg
    return KnownMessage(msg, storage_id[:32], size)


def as_ref(obj: Mapping[str, Any]) -> Ref:
    """A Ref from its serialized form, checked."""
    ref = obj if isinstance(obj, Ref) else Ref(obj)
    if not isinstance(ref.get(REF_KEY), str) or not REF_ID.fullmatch(ref[REF_KEY]):
        raise InvalidMessage("malformed message reference", "ref")
    return ref


SEND_ALWAYS_BYTES = 16 * 1024
"""A message this small is sent with its renewal (one round trip) instead of after a failed one."""


class MessageStore:
    """Stored messages in Redis, with a per-process LRU of decoded ones."""

    def __init__(self, client: redis.Redis, keys: KeySpace, max_bytes: int, ttl: float,
                 cache_bytes: int = 64 << 20) -> None:
        self._client = client
        self._keys = keys
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._cache: OrderedDict[str, tuple[Mapping[str, Any], int]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        self._lock = threading.Lock()

    @property
    def ttl(self) -> float:
        """Seconds a stored message lives unless renewed (``touch``)."""
        return self._ttl

    def put(self, msg: Any, encoded: bytes | None = None, digest: str | None = None, size: int = 0) -> Ref:
        """Store ``msg`` (once: content addressed); return its Ref.

        Pass ``encoded`` (or ``digest`` and ``size``) when the caller already
        validated the message, so that it is not encoded again.
        """
        if digest is None:
            if encoded is None:
                digest, size = fingerprint(msg, "message", self._max_bytes)
            else:
                digest, size = encoded_digest(encoded), len(encoded)
        public_size = size
        storage_id, size = with_private(msg, digest, size)
        ref = Ref({REF_KEY: storage_id, "device": msg.get("device"), "bytes": size})
        ref.value = msg = known(msg, storage_id, public_size)
        key = self._keys.store(storage_id)
        ttl_ms = int(self._ttl * 1000)
        client = self._client
        if size <= SEND_ALWAYS_BYTES:
            # Small: written (if absent) and renewed in one round trip; sending it again costs less than a
            # second round trip (start_worker places 10,000 groups at once, issue 12).
            pipe = client.pipeline(transaction=False)
            pipe.set(key, json.dumps(msg), nx=True, px=ttl_ms)
            pipe.pexpire(key, ttl_ms)
            written, renewed = pipe.execute()
            if written or renewed:
                self._remember(storage_id, msg, size)
                return ref
        # Content addressed: a copy already stored only has its TTL renewed,
        # and the message is neither serialized nor sent again.
        if not client.pexpire(key, ttl_ms):
            client.set(key, json.dumps(msg), nx=True, px=ttl_ms)
        self._remember(storage_id, msg, size)
        return ref

    def get(self, ref: Mapping[str, Any], cache: bool = True) -> Mapping[str, Any]:
        """The message a Ref names (local copy, cache, or Redis).

        ``cache=False`` for callers that keep the message themselves under
        their own bound (a persistent worker), so it is not held twice.
        """
        ref = as_ref(ref)
        if ref.value is not None:
            return ref.value
        with self._lock:
            hit = self._cache.get(ref.storage_id)
            if hit is not None:
                self._cache.move_to_end(ref.storage_id)
                return hit[0]
        key = stored_key(self._keys, ref.storage_id)
        raw = self._client.hget(key, "state") if checkpoint_of(ref.storage_id) else self._client.get(key)
        if raw is None:
            raise StateLost(f"stored message {ref.storage_id} is gone (expired or never stored)", "", "")
        msg = known(json.loads(raw), ref.storage_id, ref.size or len(raw))
        if cache:
            self._remember(ref.storage_id, msg, len(raw))
        return msg

    def touch(self, digests: list[str]) -> None:
        """Renew the TTL of messages still in use (hosted Msg1s); checkpoints have no TTL (their holders keep them)."""
        digests = [d for d in digests if not checkpoint_of(d)]
        if not digests:
            return
        ttl_ms = int(self._ttl * 1000)
        pipe = self._client.pipeline(transaction=False)
        for d in digests:
            pipe.pexpire(self._keys.store(d), ttl_ms)
        pipe.execute()

    def _remember(self, key: str, msg: Mapping[str, Any], size: int) -> None:
        if size > self._cache_bytes // 4:
            return  # large messages are cached by their owner (a host), not here
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = (msg, size)
            self._cached += size
            while self._cached > self._cache_bytes and self._cache:
                _, (_, old) = self._cache.popitem(last=False)
                self._cached -= old
