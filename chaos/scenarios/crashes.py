"""(c) A process dies at each named crash point of the plugin (``celery_persistent.faults``).

Worker points arm one victim worker beside an unarmed survivor; the victim
exits (as abruptly as SIGKILL) the first time it reaches the point.
``after-submit`` is reached by the sending process, so there the victim is a
client: it dies between registering a request and publishing it, and other
callers coalesce onto that registered request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from celery_persistent.faults import ENV as CRASH_ENV
from chaos.observation import Observation
from chaos.scenarios.base import Context, Fault, drive, host_tallies, standard_load, wait_death
from chaos.settings import ROOT
from chaos.stage import Stage

SERIAL = ["a", "b", "c"]
IDLE = "d"
TALLY = ["x", "y"]
ORDINARY_POINTS = ("before-reception", "before-claim", "after-execute", "after-finish")
HOSTED_POINTS = ("after-execute-hosted", "after-finish-hosted")


def crash_ordinary(point: str) -> Callable[[Stage, Context], Observation]:
    def body(stage: Stage, ctx: Context) -> Observation:
        victim = stage.worker("o1", crash=point)
        survivor = stage.worker("o2")
        stage.ready(victim, survivor)

        def fault() -> Fault:
            died = wait_death(victim, 60)
            return Fault(f"{victim.name} exits at {point}", died, died, deaths={victim.pid: died})

        return drive(stage, ctx, standard_load(stage, ctx, SERIAL, []), fault, SERIAL, [])

    return body


def crash_hosted(point: str) -> Callable[[Stage, Context], Observation]:
    def body(stage: Stage, ctx: Context) -> Observation:
        victim = stage.worker("p1", persistent=True, ordinary_queue=False, crash=point)
        stage.ready(victim)
        host_tallies(stage, victim, TALLY)
        survivor = stage.worker("p2", persistent=True, ordinary_queue=False)
        stage.ready(survivor)

        def fault() -> Fault:
            died = wait_death(victim, 60)
            return Fault(f"{victim.name} exits at {point}", died, died, deaths={victim.pid: died})

        return drive(stage, ctx, standard_load(stage, ctx, [], TALLY), fault, [], TALLY)

    return body


def crash_after_submit(stage: Stage, ctx: Context) -> Observation:
    workers = [stage.worker("o1"), stage.worker("o2")]
    stage.ready(*workers)
    load = standard_load(stage, ctx, SERIAL, [])
    msg1 = {"device": "serial", "id": IDLE}  # a group of its own, idle: the dead client's request leads it
    msg2 = {"path": "run", "sleep": 0.15}

    def fault() -> Fault:
        rid = "crashed-sender"
        task_id = str(uuid.uuid4())
        sender = subprocess.run(
            [sys.executable, "-m", "chaos.sender", json.dumps(msg1), json.dumps({**msg2, "rid": rid}), task_id],
            cwd=ROOT, env={**os.environ, CRASH_ENV: "after-submit"}, capture_output=True, text=True, timeout=60)
        died = time.time()
        if sender.returncode != 137:
            raise RuntimeError(f"the sender did not die at after-submit (rc {sender.returncode}): {sender.stderr}")
        # Callers of the same Msg2 now coalesce onto the registered, never published request,
        # and two others queue behind it in its group.
        load.burst("serial", f"s-{IDLE}", rid, msg1, msg2, copies=3)
        for n in range(2):
            load.burst("serial", f"s-{IDLE}", f"behind-{n}", msg1, msg2, copies=1)
        return Fault("client exits at after-submit; 3 callers coalesce onto its request, 2 queue behind it",
                     died, died, notes=[f"the dead client's own request: {task_id[:8]} ({rid})"])

    return drive(stage, ctx, load, fault, [*SERIAL, IDLE], [])
