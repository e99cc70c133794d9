"""A rolling group's state in Redis, as its host reads and writes it between requests.

The state is its latest checkpoint plus, in order, the journal of requests
applied since (``finish_hosted`` appends to it when the policy writes no
checkpoint).  ``load`` reads the checkpoint and replays the journal (after an
adoption, or when the Msg1 cache had dropped the state); ``flush`` writes
the state as a new checkpoint and drops the journal it covers (the policy's
interval, and before a group is handed off or parked).

Replay runs the device keys again on the same Msg1 and Msg2, so it needs
deterministic devices (``Device.deterministic``; a device that is not gets a
checkpoint after every request and never has a journal).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from ..checkpoints import encode_state
from ..device import has_own_grouper
from ..errors import PersistentError, RegistryUnavailable
from ..execution import execute
from ..planning import Planner
from ..protocol import CheckpointStatus
from ..records import RequestRecord
from ..registry import Registry
from ..store import REF_KEY, MessageStore, Ref
from .hosted import Hosted

logger = logging.getLogger(__name__)


class GroupState:
    def __init__(self, registry: Registry, store: MessageStore, planner: Planner, max_message_bytes: int) -> None:
        self.registry = registry
        self.store = store
        self.planner = planner
        self.max_message_bytes = max_message_bytes

    def load(self, h: Hosted) -> Mapping[str, Any]:
        """The group's state from Redis: its checkpoint, then its journal replayed in order."""
        state = self.store.get(Ref({REF_KEY: h.ref, "device": h.device}), cache=False)
        if h.static:
            return state
        records = self.registry.journal(h.group)
        for record in records:
            state = self.apply(h, state, record)
        h.journaled = len(records)
        if records and not h.journaled_at:
            h.journaled_at = time.monotonic()
        if records:
            logger.info("group %s: replayed %d journaled request(s) on its checkpoint", h.group, len(records))
        return state

    def apply(self, h: Hosted, state: Mapping[str, Any], record: RequestRecord) -> Mapping[str, Any]:
        """Run one journaled request again on ``state`` (no answer: its callers were answered)."""
        args = list(record.args or [])
        msg2 = args[1] if len(args) > 1 else None
        opts = args[2] if len(args) > 2 else None
        msg1 = Ref({REF_KEY: h.ref, "device": h.device})
        msg1.value = state
        try:
            plan = self.planner.plan(msg1, msg2, opts, stack=tuple(record.stack))
            msg3 = plan.device.worker(state, plan.msg2, plan.opts, partial(execute, self.store, plan,
                                                                          check_result=False))
        except Exception:
            logger.exception("group %s: replaying journaled request %s failed; it is skipped (replay needs a "
                             "deterministic device)", h.group, record.id)
            return state
        return msg3 if isinstance(msg3, Mapping) else state

    def flush(self, h: Hosted, state: Mapping[str, Any]) -> bool:
        """Write the state as the group's checkpoint if requests were journaled since the last one.

        True when Redis holds the state as a checkpoint afterwards; False when
        it could not be written (the journal still holds the requests, so
        nothing is lost: a new owner replays them).
        """
        if h.static or h.journaled == 0:
            return True
        try:
            exact = not has_own_grouper(self.planner.devices.for_message({"device": h.device}))
            encoded = encode_state(state, self.max_message_bytes, h.group, f"flush-{uuid.uuid4().hex}", exact=exact)
            status = self.registry.steady(lambda: self.registry.checkpoint(
                h.group, h.token, encoded.storage_id, encoded.size, encoded.data, h.ref, h.journaled))
        except (PersistentError, RegistryUnavailable) as exc:
            logger.warning("group %s: could not checkpoint its state (%s); its journal keeps the requests",
                           h.group, exc)
            return False
        if status is not CheckpointStatus.OK:
            logger.warning("group %s: checkpoint not written: %s", h.group, status.value)
            return False
        h.ref, h.size = encoded.storage_id, encoded.size
        h.journaled, h.journaled_at = 0, 0.0
        return True
