"""A prefork child never inherits a lock held by its parent's lease thread (the cause of a child that hung).

The parent's lease thread takes the keeper's lock on every beat; a child
forked at that instant used to inherit it locked and hang on its first
``keeper.hold``.  Each test forks while holding the parent's locks and
checks that the child can still lead a group.
"""

from __future__ import annotations

import os
import signal

import pytest


def run_in_child(body) -> int:
    """Fork; run ``body`` in the child with a 10 s alarm; the child's exit status (124: it hung)."""
    pid = os.fork()
    if pid == 0:  # the child
        signal.signal(signal.SIGALRM, lambda *_: os._exit(124))
        signal.alarm(10)
        try:
            body()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.timeout(30)
def test_a_child_forked_while_the_parent_holds_its_locks_can_lead(persistent, uid) -> None:
    persistent.keeper.hold(f"fork-{uid}", "t-parent")  # the parent's runtime and keeper exist
    locks = [persistent.keeper._lock, persistent._lock]
    for lock in locks:
        lock.acquire()
    try:
        def child() -> None:
            keeper = persistent.keeper  # the child's own runtime
            keeper.hold(f"fork-{uid}", "t-child")
            keeper.drop("t-child")
            keeper.stop()
            assert persistent.registry.owner(f"fork-{uid}") == {}

        status = run_in_child(child)
    finally:
        for lock in locks:
            lock.release()
        persistent.keeper.drop("t-parent")
    assert status == 0, "the child hung on a lock inherited from its parent" if status == 124 else status
