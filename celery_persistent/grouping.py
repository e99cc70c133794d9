"""Group names: the default grouper and the normalisation of custom ones.

A group name becomes part of a queue name (``<prefix>.<group>``) and of
Redis keys, so it is restricted to a short, safe alphabet.  Custom grouper
output outside it is normalised, keeping a hash of the original so that two
different unsafe names never collide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidOptions
from .messages import digest, encode, strip_private

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.\-]+")


def default_group(msg1_digest: str, msg2: Mapping[str, Any] | None) -> str:
    """Hash of (Msg1, Msg2) without ``priv``: 128 bits, not the seed's 27.

    Msg1 enters by its digest, so a stored message (a Ref) groups without
    being fetched or hashed again.
    """
    msg2_encoded = b"N" if msg2 is None else encode(strip_private(msg2), "msg2")
    return "g" + digest(msg1_digest.encode("ascii"), msg2_encoded)


def normalise(name: Any) -> str:
    """Make any grouper output a safe group name (idempotent on safe names)."""
    text = name if isinstance(name, str) else repr(name)
    if SAFE_NAME.fullmatch(text):
        return text
    cleaned = _UNSAFE_CHARS.sub("_", text).strip("_.-")[:64] or "group"
    return f"{cleaned}-{digest(text.encode('utf-8', 'surrogatepass'))[:16]}"


def check_group_name(name: Any) -> str:
    """An explicit group name (``start_worker(group=...)``, ``forward_work``): used as given, so it must be safe."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise InvalidOptions(
            f"group name {name!r} is not allowed: use 1-96 characters of A-Z a-z 0-9 _ . - starting with a "
            f"letter or digit (for example {normalise(name)!r})",
            "group",
        )
    return name
