"""The message model: validation and a canonical, type-tagged encoding.

Group names and coalescing keys are hashes of this encoding, so it must be
identical in every process and must never confuse values that JSON or Python
equality would merge: ``1``, ``1.0``, ``"1"`` and ``True`` all encode apart,
``bytes`` differ from ``str``, and mapping order does not matter.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

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


def digest(*parts: bytes) -> str:
    """A 128-bit hex digest of length-prefixed parts (collisions ~2**-64)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(b"%d:" % len(part))
        h.update(part)
    return h.hexdigest()


def message_digest(msg: Message | None) -> str:
    """Digest of a message without its private part; None has its own."""
    if msg is None:
        return digest(b"N")
    return digest(encode(strip_private(msg)))
