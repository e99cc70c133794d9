"""Turning an observation and the devices' evidence into a measured row.

Every number is counted from what really happened: the callers' final
states (``Load``), the answers the backend published (``AnswerWatch``), and
the executions the devices logged in the evidence Redis.  Overlaps in which
one execution ran in a process that was frozen (SIGSTOP) across the
other's are counted apart: that is the documented limit of leases.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import redis

from chaos import evidence
from chaos.calls import Call
from chaos.evidence import Execution
from chaos.observation import Observation
from chaos.result import RunResult
from chaos.settings import ANSWER_BOUND, KEEP_APPLIED

MAX_DETAILS = 4
"""How many examples of each kind of miss a row's notes name."""


def evaluate(scenario: str, run: int, obs: Observation, ev: redis.Redis) -> RunResult:
    res = RunResult(scenario, run, fault=obs.fault, notes=list(obs.notes))
    calls = obs.calls
    res.sent = len(calls)
    res.answered = sum(c.status == "ok" for c in calls)
    res.typed = dict(Counter(c.error for c in calls if c.status == "error" and c.typed))
    res.untyped = dict(Counter(c.error for c in calls if c.status == "error" and not c.typed))
    odd = [c for c in calls if c.status == "error" and not c.typed]
    for c in odd[:MAX_DETAILS]:
        res.notes.append(f"{c.error} {'raised by the send' if c.at_send else 'stored as the answer'}: {c.rid}")
    lost = [c for c in calls if c.status == "lost"]
    res.lost = len(lost)
    if lost:
        res.notes.append("lost: " + ", ".join(f"{c.rid} ({c.task_id[:8]})" for c in lost[:MAX_DETAILS]))
    _timing(res, calls, obs.fault_end)
    res.answered_twice = len(obs.answered_twice)
    for tid, seen in list(obs.answered_twice.items())[:MAX_DETAILS]:
        res.notes.append(f"answered twice: {tid[:8]} {'→'.join(seen)}")
    _overlaps(res, obs, ev)
    _serial(res, obs, ev)
    _tally(res, obs, ev)
    return res.judge()


def _timing(res: RunResult, calls: list[Call], fault_end: float) -> None:
    """Wait of each caller past the fault's end (or past its send, if it was sent later)."""
    waits = [c.done_at - max(c.sent_at, fault_end) for c in calls if c.done_at is not None and c.done_at > fault_end]
    res.recovery = round(max(waits), 2) if waits else 0.0
    res.late = sum(w > ANSWER_BOUND for w in waits)


def _end(e: Execution, obs: Observation) -> float:
    """An execution whose process died ended with it; one with no known end lasted no time."""
    if e.end is not None:
        return e.end
    return obs.deaths.get(e.pid, e.start)


def _frozen_across(e: Execution, end: float, obs: Observation) -> bool:
    return any(t0 < end and e.start < t1 for t0, t1 in obs.frozen.get(e.pid, []))


def _overlaps(res: RunResult, obs: Observation, ev: redis.Redis) -> None:
    for group in [*obs.serial_groups, *obs.tally_groups]:
        execs = sorted(evidence.executions(ev, group), key=lambda e: e.start)
        for i, a in enumerate(execs):
            a_end = _end(a, obs)
            for b in execs[i + 1:]:
                if b.start >= a_end:
                    break
                b_end = _end(b, obs)
                if _frozen_across(a, a_end, obs) or _frozen_across(b, b_end, obs):
                    res.frozen_overlaps += 1
                    continue
                res.overlaps += 1
                if res.overlaps <= MAX_DETAILS:
                    res.notes.append(f"overlap in {group}: {a.rid} pid {a.pid} [{a.start:.2f}, {a_end:.2f}] and "
                                     f"{b.rid} pid {b.pid} [{b.start:.2f}, {b_end:.2f}]")


def _by_rid(calls: list[Call], kind: str) -> dict[str, list[Call]]:
    out: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        if c.kind == kind:
            out[c.rid].append(c)
    return out


def _first_error(calls: list[Call]) -> float | None:
    """When a request's callers were all told it failed: the first such answer (None if any succeeded)."""
    if any(c.status != "error" for c in calls):
        return None
    return min(c.done_at for c in calls if c.done_at is not None)


def _serial(res: RunResult, obs: Observation, ev: redis.Redis) -> None:
    counts = evidence.runs(ev)
    twice = {rid: n for rid, n in counts.items() if n > 1}
    res.executed_twice = len(twice)
    for rid, n in list(twice.items())[:MAX_DETAILS]:
        res.notes.append(f"executed {n} times: {rid}")
    starts: dict[str, list[float]] = defaultdict(list)
    for group in obs.serial_groups:
        for e in evidence.executions(ev, group):
            starts[e.rid].append(e.start)
    for rid, calls in _by_rid(obs.calls, "serial").items():
        failed_at = _first_error(calls)
        if failed_at is not None and any(s > failed_at for s in starts.get(rid, [])):
            res.run_after_error += 1
            if res.run_after_error <= MAX_DETAILS:
                res.notes.append(f"executed after its callers got {calls[0].error}: {rid}")


def _tally(res: RunResult, obs: Observation, ev: redis.Redis) -> None:
    reapplied = evidence.reapplied(ev)
    if reapplied:
        res.notes.append(f"a device was given a state that had its update already: {sorted(reapplied)[:4]}")
    by_rid = _by_rid(obs.calls, "tally")
    for group in obs.tally_groups:
        state = obs.final_states.get(group)
        if not isinstance(state, dict):
            res.problems.append(f"final state of {group} unreadable ({state})")
            continue
        _tally_group(res, group, state, {rid: calls for rid, calls in by_rid.items() if calls[0].group == group})


def _tally_group(res: RunResult, group: str, state: dict[str, Any], by_rid: dict[str, list[Call]]) -> None:
    """Hold one rolling group's final state against what its callers were told."""
    applied: list[str] = list(state.get("applied") or [])
    count = int(state.get("count", 0))
    where = {rid: i for i, rid in enumerate(applied)}
    res.applied_twice += len(applied) - len(where)
    complete = count == len(applied) < KEEP_APPLIED
    if not complete:
        res.notes.append(f"{group}: count {count} but {len(applied)} ids in the state")
    diverged = 0
    for rid, calls in by_rid.items():
        ok = [c for c in calls if c.status == "ok"]
        if ok and rid not in where:
            res.updates_lost += 1
            if res.updates_lost <= MAX_DETAILS:
                res.notes.append(f"answered, not in the final state: {rid}")
        elif ok and complete and _answered_count(ok[0].value) != where[rid] + 1:
            diverged += 1
        elif not ok and rid in where and _first_error(calls) is not None:
            res.run_after_error += 1
            if res.run_after_error <= MAX_DETAILS:
                res.notes.append(f"applied though its callers got {calls[0].error}: {rid}")
    if diverged:
        res.problems.append(f"{diverged} answers of {group} show a state that is not in its final history")


def _answered_count(value: Any) -> int:
    return int(value.get("count", -1)) if isinstance(value, dict) else -1
