"""The pure parts of ``celery_persistent/safety.py``."""

from __future__ import annotations

import pytest

from celery_persistent import InvalidMessage
from celery_persistent.safety import SAFE_CONTENT_TYPES, SAFE_SERIALIZERS, check_serializer


@pytest.mark.parametrize("serializer", ["json", "msgpack", None])
def test_safe_serializers_are_accepted(serializer: str | None) -> None:
    assert check_serializer(serializer) is None


@pytest.mark.parametrize("serializer", ["pickle", "yaml", "auth", "", "JSON "])
def test_unsafe_serializers_are_refused(serializer: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_serializer(serializer)
    assert info.value.path == "serializer"
    assert repr(serializer) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_safe_sets() -> None:
    assert sorted(SAFE_SERIALIZERS) == ["json", "msgpack"]
    assert "application/json" in SAFE_CONTENT_TYPES
    assert "application/x-msgpack" in SAFE_CONTENT_TYPES
    assert not any("pickle" in t or "yaml" in t for t in SAFE_CONTENT_TYPES)
