"""Bad input gets a typed error on the client, before anything is sent (the worker side: tests/e2e)."""

from __future__ import annotations

import pytest

from celery_persistent import InvalidMessage, InvalidOptions, UnknownDevice, UnknownKey

GOOD1 = {"device": "counter", "id": "ok", "count": 1}
GOOD2 = {"path": "add", "by": 1}

CLIENT_CASES = [
    ("not a mapping", ["not", "a", "message"], GOOD2, InvalidMessage, "msg1 must be a mapping"),
    ("non-str key", {"device": "counter", 1: "x"}, GOOD2, InvalidMessage, "message keys must be str"),
    ("nested non-str key", GOOD1, {"path": "add", "by": {2: 3}}, InvalidMessage, "keys must be str"),
    ("unserialisable", GOOD1, {"path": "add", "by": object()}, InvalidMessage, "cannot be part of a message"),
    ("set value", GOOD1, {"path": "add", "by": {1, 2}}, InvalidMessage, "type set"),
    ("oversize", {**GOOD1, "blob": "x" * (9 * 1024 * 1024)}, GOOD2, InvalidMessage, "over persistent_max"),
    ("unknown device", {"device": "nope"}, GOOD2, UnknownDevice, "unknown device 'nope'"),
    ("no device", {"id": "x"}, GOOD2, UnknownDevice, "no 'device' key"),
    ("unknown key", GOOD1, {"path": "subtract"}, UnknownKey, "device 'counter' has no key 'subtract'"),
    ("private key", GOOD1, {"path": "_secret"}, UnknownKey, "has no key '_secret'"),
    ("hook as key", GOOD1, {"path": "grouper"}, UnknownKey, "has no key 'grouper'"),
]


@pytest.mark.parametrize(("case", "msg1", "msg2", "error", "text"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client_rejects_bad_input_before_sending(persistent, case, msg1, msg2, error, text) -> None:
    with pytest.raises(error, match=text):
        persistent.resolve.delay(msg1, msg2)


def test_bad_options_and_unsafe_serializer_on_the_client(persistent) -> None:
    with pytest.raises(InvalidOptions, match="unknown option"):
        persistent.resolve.delay(GOOD1, GOOD2, opts={"spawn": True})
    with pytest.raises(InvalidOptions, match="await_inprogress"):
        persistent.resolve.delay(GOOD1, GOOD2, opts={"await_inprogress": "sometimes"})
    with pytest.raises(InvalidMessage, match="serializer 'pickle'"):
        persistent.resolve.apply_async((GOOD1, GOOD2), serializer="pickle")
