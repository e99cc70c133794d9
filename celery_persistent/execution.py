"""Running a device key: the one place where user code is called, under the recursion stack."""

from __future__ import annotations

from typing import Any

from .context import executing
from .errors import InfiniteRecursionError
from .messages import encode
from .planning import Plan
from .store import MessageStore, is_ref


def execute(store: MessageStore, plan: Plan, check_result: bool = True) -> Any:
    """Call the device key; check that Msg3 is a message value.

    ``check_result=False`` for a caller that validates Msg3 itself anyway
    (a rolling persistent worker checkpoints it), so it is encoded once.
    """
    msg1 = store.get(plan.msg1) if is_ref(plan.msg1) else plan.msg1
    with executing(plan.stack, plan.group):
        msg3 = plan.method(msg1, plan.msg2, plan.opts)
    if check_result:
        encode(msg3, "msg3")
    return msg3


def recursion_error(group: str) -> InfiniteRecursionError:
    return InfiniteRecursionError(
        f"group {group} requested from inside its own execution; waiting would deadlock "
        "(set allow_infinite to allow it)",
        group,
    )
