"""One run of one scenario, in a process of its own: ``python -m chaos.child NAME RUN DIR [--smoke]``.

A process per run keeps the Celery app, its connections and threads from
one run out of the next, and gives the runner one pid to stop if a run
hangs.  Whatever happens, the stage is closed and a result is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chaos.measure import evaluate
from chaos.netns import NetnsUnavailable
from chaos.rabbit_node import RabbitUnavailable
from chaos.result import RunResult
from chaos.scenarios import SCENARIOS, Context
from chaos.stage import Stage

RESULT = "result.json"


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the stage is closed


def run(name: str, run_index: int, workdir: Path, smoke: bool) -> RunResult:
    scenario = SCENARIOS[name]
    stage = Stage(workdir, broker=scenario.broker, appendonly=scenario.appendonly, partition=scenario.partition)
    try:
        try:
            stage.open()
        except (RabbitUnavailable, NetnsUnavailable) as exc:
            return RunResult(name, run_index, skipped=str(exc))
        seed = random.SystemRandom().randrange(1 << 30)
        logging.getLogger("chaos").info("%s run %d, seed %d", name, run_index, seed)
        observation = scenario.body(stage, Context(run_index, smoke, random.Random(seed)))
        with (workdir / "calls.jsonl").open("w") as out:
            for call in observation.calls:
                out.write(json.dumps(asdict(call), default=str) + "\n")
        result = evaluate(name, run_index, observation, stage.evidence.client())
        result.seed, result.fault_window = seed, (observation.fault_start, observation.fault_end)
        return result
    except Exception as exc:
        logging.getLogger("chaos").exception("run failed")
        tail = traceback.format_exc().strip().splitlines()[-1]
        return RunResult(name, run_index, failed=f"{exc.__class__.__name__}: {tail[-300:]}")
    finally:
        stage.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.child")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("run", type=int)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=args.workdir / "child.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminated)
    started = time.time()
    result = run(args.scenario, args.run, args.workdir, args.smoke)
    result.seconds = round(time.time() - started, 1)
    result.workdir = str(args.workdir)
    (args.workdir / RESULT).write_text(json.dumps(result.as_json(), indent=1))
    sys.stdout.flush()
    os._exit(0)  # caller threads stuck on a dead server must not keep this process alive


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
