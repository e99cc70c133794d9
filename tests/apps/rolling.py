"""The test app of rolling state (tests/e2e/test_rolling_state.py): a device whose state records every update.

``tape`` keeps, in its state, the ``n`` of every request applied to it, in
order, so a test reads from the final state which requests were applied and
how many times; its callers get a small reply (``Device.reply``), not the
state.  Same broker, backend and key prefix as ``tests.apps.basic``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery_persistent import Device, Persistent
from tests.apps.basic import BROKER, make_app
from tests.apps.devices import ekey, evidence

app = make_app("rolling", BROKER)
persistent = Persistent(app)


@persistent.device("tape")
class Tape(Device):
    """One group per msg1["id"]; ``apply`` appends msg2["n"] to the state's ``applied`` list."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "tape-" + str(msg1["id"])

    def apply(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        time.sleep(float(msg2.get("sleep", 0)))
        return {**msg1, "applied": [*msg1.get("applied", []), msg2["n"]]}

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return msg1  # the state unchanged: nothing to write

    def reply(self, msg1: Any, msg2: Any, msg3: Any, opts: Any) -> Any:
        applied = msg3.get("applied", [])
        if msg2.get("path") == "peek":
            return {"applied": applied, "pid": os.getpid()}
        return {"n": msg2.get("n"), "count": len(applied), "pid": os.getpid()}

    def on_idle(self, msg1: Any, opts: Any) -> None:
        evidence().rpush(ekey("idle", str(msg1["id"])), json.dumps(msg1.get("applied", [])))
