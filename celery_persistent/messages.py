"""The message model: validation and a canonical, type-tagged encoding.

Group names and coalescing keys are hashes of this encoding, so it must be
identical in every process and must never confuse values that JSON or Python
equality would merge: ``1``, ``1.0``, ``"1"`` and ``True`` all encode apart,
``bytes`` differ from ``str``, and mapping order does not matter.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

# BLAKE3 (the reference implementation's Python binding, by BLAKE3's authors):
# 10 MB hash in 1.8 ms here against 11.3 ms for hashlib's BLAKE2b
# (docs/benchmarks.md, "Large messages by value").
from blake3 import blake3

from .errors import InvalidMessage

PRIVATE_KEY = "priv"
"""Top-level key that never takes part in grouping or equality."""

Message = Mapping[str, Any]


def strip_private(msg: Message) -> dict[str, Any]:
    """Drop the top-level ``priv`` key, which is outside equality."""
    return {k: v for k, v in msg.items() if k != PRIVATE_KEY}


def encode(value: Any, path: str = "$") -> bytes:
    """Canonical bytes of a message value; raises InvalidMessage on others."""
    out: list[bytes] = []
    _encode_into(value, path, out)
    return b"".join(out)


def _encode_into(value: Any, path: str, out: list[bytes]) -> None:
    # Exact-type dispatch first (the common case); bool is its own type, so
    # True never encodes like 1.  Subclasses fall back to the checks below.
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        encoder(value, path, out)
    elif isinstance(value, Mapping):
        _encode_mapping(value, path, out)
    elif isinstance(value, (list, tuple)):
        _encode_list(value, path, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _encode_bytes(value, path, out)
    elif isinstance(value, str):
        _encode_text(b"s", str(value), path, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _ENCODERS[float if isinstance(value, float) else int](value, path, out)
    else:
        raise InvalidMessage(
            f"{path}: values of type {type(value).__name__} cannot be part of a "
            "message (allowed: None, bool, int, float, str, bytes, list, mapping)",
            path,
        )


def _encode_float(value: float, path: str, out: list[bytes]) -> None:
    if not math.isfinite(value):
        raise InvalidMessage(f"{path}: {value!r} is not a finite float", path)
    out.append(b"d" + value.hex().encode("ascii") + b";")


def _encode_bytes(value: bytes | bytearray | memoryview, path: str, out: list[bytes]) -> None:
    raw = bytes(value)
    out.append(b"b%d:" % len(raw))
    out.append(raw)


def _encode_list(value: list[Any] | tuple[Any, ...], path: str, out: list[bytes]) -> None:
    out.append(b"l%d:" % len(value))
    for i, item in enumerate(value):
        _encode_into(item, f"{path}[{i}]", out)


def _encode_text(tag: bytes, text: str, path: str, out: list[bytes]) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessage(f"{path}: string is not valid UTF-8 ({exc.reason})", path) from exc
    out.append(tag + b"%d:" % len(raw))
    out.append(raw)


def _encode_mapping(value: Mapping[Any, Any], path: str, out: list[bytes]) -> None:
    items: list[tuple[bytes, Any, str]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidMessage(
                f"{path}: key {key!r} is a {type(key).__name__}; message keys must be str",
                path,
            )
        key_bytes: list[bytes] = []
        _encode_text(b"k", key, path, key_bytes)
        items.append((b"".join(key_bytes), item, f"{path}.{key}"))
    items.sort(key=lambda entry: entry[0])
    out.append(b"m%d:" % len(items))
    for key_bytes_joined, item, item_path in items:
        out.append(key_bytes_joined)
        _encode_into(item, item_path, out)


_ENCODERS: dict[type, Callable[[Any, str, list[bytes]], None]] = {
    type(None): lambda v, p, out: out.append(b"N"),
    bool: lambda v, p, out: out.append(b"T" if v else b"F"),
    int: lambda v, p, out: out.append(b"i%d;" % v),
    float: _encode_float,
    str: lambda v, p, out: _encode_text(b"s", v, p, out),
    bytes: _encode_bytes,
    list: _encode_list,
    tuple: _encode_list,
    dict: lambda v, p, out: _encode_mapping(v, p, out),
}


def validate(msg: Any, name: str, max_bytes: int) -> bytes:
    """Check that ``msg`` is a message within ``max_bytes``.

    Returns the canonical encoding without ``priv`` so that callers hash it
    without walking the message a second time.
    """
    if not isinstance(msg, Mapping):
        raise InvalidMessage(
            f"{name} must be a mapping with str keys, not {type(msg).__name__}", name
        )
    encoded = encode(strip_private(msg), name)
    size = len(encoded)
    if PRIVATE_KEY in msg:
        size += len(encode(msg[PRIVATE_KEY], f"{name}.{PRIVATE_KEY}"))
    if size > max_bytes:
        raise InvalidMessage(
            f"{name} is {size} bytes, over persistent_max_message_bytes={max_bytes}",
            name,
        )
    return encoded


DIGEST_BYTES = 16
"""128-bit digests (32 hex characters): collisions ~2**-64; keys, refs and group names assume the length."""


def new_hasher() -> blake3:
    """Every digest of this package starts here (one place to change, or to count in tests)."""
    return blake3()


def digest(*parts: bytes) -> str:
    """A 128-bit hex digest of length-prefixed parts (collisions ~2**-64)."""
    h = new_hasher()
    for part in parts:
        h.update(b"%d:" % len(part))
        h.update(part)
    return h.hexdigest(DIGEST_BYTES)


def encoded_digest(encoded: bytes) -> str:
    """The digest of one canonical encoding: what names a message.

    Not length-prefixed: an encoding is self-delimiting, and it starts with a
    type tag (a letter) where the input of ``digest()`` starts with a digit,
    so the two never hash the same bytes.
    """
    h = new_hasher()
    h.update(encoded)
    return h.hexdigest(DIGEST_BYTES)


class Fingerprint(NamedTuple):
    digest: str  # of the canonical encoding without priv
    size: int  # bytes of that encoding (a message loaded from the store: its Ref's size, or its JSON's)


def fingerprint(msg: Any, name: str, max_bytes: int) -> Fingerprint:
    """``validate()`` and the digest of its result in one pass, without building the encoding.

    The encoding is hashed in pieces as it is produced, so a 10 MB message
    costs no 10 MB buffer.  A ``KnownMessage`` that was not changed is not
    walked at all.
    """
    if isinstance(msg, KnownMessage):
        known = msg.known()
        if known is not None:
            return known
    if not isinstance(msg, Mapping):
        raise InvalidMessage(f"{name} must be a mapping with str keys, not {type(msg).__name__}", name)
    sink = _Sink()
    out: list[bytes] = []
    try:
        _walk(strip_private(msg), out, sink)
        sink.flush(out)
    except (InvalidMessage, UnicodeEncodeError, _Fallback):
        # The reference encoder names the bad value's path (or takes what the fast walk does not).
        encoded = validate(msg, name, max_bytes)
        return Fingerprint(encoded_digest(encoded), len(encoded))
    size = sink.size
    if PRIVATE_KEY in msg:
        size += len(encode(msg[PRIVATE_KEY], f"{name}.{PRIVATE_KEY}"))
    if size > max_bytes:
        raise InvalidMessage(f"{name} is {size} bytes, over persistent_max_message_bytes={max_bytes}", name)
    return Fingerprint(sink.hasher.hexdigest(DIGEST_BYTES), sink.size)


def message_digest(msg: Message | None) -> str:
    """Digest of a message without its private part; None has its own."""
    if msg is None:
        return encoded_digest(b"N")
    return fingerprint(msg, "$", 1 << 62).digest


# -- the fast walk ----------------------------------------------------------------------------------
#
# The same bytes as ``_encode_into``, for the exact built-in types only, with
# no path kept (the reference encoder is run again to name a bad value's
# path) and hashed every FLUSH_PARTS pieces: the pieces are small and
# short-lived, and the hash sees large blocks (BLAKE3 hashes several 1 KB
# chunks at once only when given them together).

FLUSH_PARTS = 256
BIG = 64 * 1024  # a str or bytes this large is hashed as is, not joined with its neighbours


class _Fallback(Exception):
    """A value the fast walk leaves to the reference encoder."""


class _Sink:
    __slots__ = ("hasher", "size")

    def __init__(self) -> None:
        self.hasher = new_hasher()
        self.size = 0

    def flush(self, out: list[bytes]) -> None:
        if out:
            chunk = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.size += len(chunk)
            self.hasher.update(chunk)

    def raw(self, out: list[bytes], data: bytes) -> None:
        """A large piece: what is pending first, then the piece itself, uncopied."""
        self.flush(out)
        self.size += len(data)
        self.hasher.update(data)


def _walk(value: Any, out: list[bytes], sink: _Sink) -> None:
    kind = type(value)
    if kind is str:
        _piece(b"s", value.encode("utf-8"), out, sink)
    elif kind is dict:
        _walk_dict(value, out, sink)
    elif kind is list or kind is tuple:
        _walk_list(value, out, sink)
    elif kind is bytes:
        _piece(b"b", value, out, sink)
    else:
        scalar = _SCALARS.get(kind)
        if scalar is None:
            _encode_into(value, "$", out)  # subclasses, bytearray, memoryview; raises on the rest
        else:
            out.append(scalar(value))


def _piece(tag: bytes, raw: bytes, out: list[bytes], sink: _Sink) -> None:
    out.append(tag + b"%d:" % len(raw))
    if len(raw) >= BIG:
        sink.raw(out, raw)
    else:
        out.append(raw)


def _finite(value: float) -> bytes:
    if not math.isfinite(value):
        raise _Fallback
    return b"d" + value.hex().encode("ascii") + b";"


_SCALARS: dict[type, Callable[[Any], bytes]] = {
    int: lambda v: b"i%d;" % v,
    type(None): lambda v: b"N",
    bool: lambda v: b"T" if v else b"F",
    float: _finite,
}


def _walk_list(value: list[Any] | tuple[Any, ...], out: list[bytes], sink: _Sink) -> None:
    out.append(b"l%d:" % len(value))
    # Runs of strings, the common large message, are joined as text and
    # encoded a run at a time: one allocation per run instead of two per string.
    text: list[str] = []
    for item in value:
        if type(item) is str and len(item) < BIG:
            size = len(item) if item.isascii() else len(item.encode("utf-8"))
            text.append(_TEXT_HEADS.get(size) or f"s{size}:")
            text.append(item)
            if len(text) >= FLUSH_PARTS:
                out.append("".join(text).encode("utf-8"))
                text.clear()
                sink.flush(out)
            continue
        if text:
            out.append("".join(text).encode("utf-8"))
            text.clear()
        _walk(item, out, sink)
        if len(out) >= FLUSH_PARTS:
            sink.flush(out)
    if text:
        out.append("".join(text).encode("utf-8"))


_TEXT_HEADS = {size: f"s{size}:" for size in range(4096)}


def _walk_dict(value: dict[Any, Any], out: list[bytes], sink: _Sink) -> None:
    items: list[tuple[bytes, Any]] = []
    for key, item in value.items():
        if type(key) is not str:
            raise _Fallback
        raw = key.encode("utf-8")
        items.append((b"k%d:" % len(raw) + raw, item))
    items.sort(key=_first)
    out.append(b"m%d:" % len(items))
    for key_bytes, item in items:
        out.append(key_bytes)
        _walk(item, out, sink)
        if len(out) >= FLUSH_PARTS:
            sink.flush(out)


def _first(entry: tuple[bytes, Any]) -> bytes:
    return entry[0]


# -- messages whose digest is known -----------------------------------------------------------------


def _shape(msg: Mapping[str, Any]) -> tuple[int, ...]:
    """The lengths of the top-level containers: a cheap check that none grew or shrank in place."""
    return tuple(len(v) if isinstance(v, (list, dict)) else -1 for v in msg.values())


class KnownMessage(dict):  # type: ignore[type-arg]
    """A message this process stored, loaded or just hashed, carrying its digest.

    The store hands these out, so that a grouper calling ``default_grouper``
    on a stored Msg1 does not hash it again.  Messages must not be changed
    after they are sent (docs/guarantees.md); what can be seen cheaply drops
    the digest all the same: any change through the mapping itself, and a
    top-level list or dict that changed length.  A copy (``dict(m)``,
    ``copy.deepcopy``, pickle) is a plain dict, hashed anew.
    """

    __slots__ = ("_digest", "_shape", "_size")

    def __init__(self, msg: Mapping[str, Any], digest: str, size: int) -> None:
        super().__init__(msg)
        self._digest: str | None = digest
        self._size = size
        self._shape = _shape(self)

    def known(self) -> Fingerprint | None:
        """(digest, size) if the message still looks as it did when hashed."""
        if self._digest is not None and _shape(self) != self._shape:
            self._digest = None
        return None if self._digest is None else Fingerprint(self._digest, self._size)

    def _changed(self) -> None:
        self._digest = None

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> KnownMessage:  # type: ignore[override,misc]
        self._changed()
        super().__ior__(other)
        return self

    def pop(self, *args: Any) -> Any:
        self._changed()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return super().popitem()

    def clear(self) -> None:
        self._changed()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self),)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)
