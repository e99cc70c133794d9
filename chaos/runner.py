"""Running scenarios: each run in a child process, under a watchdog, with its leftovers cleaned up.

The child closes its own stage.  If it overruns its budget it gets SIGTERM
(it then closes its stage) and, failing that, SIGKILL; either way the
runner then ends whatever the run's ledger still lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chaos.child import RESULT
from chaos.ledger import clean_up
from chaos.manifest import Manifest
from chaos.result import RunResult, Summary
from chaos.scenarios import Scenario
from chaos.settings import ROOT

TERM_GRACE = 60.0


def run_once(scenario: Scenario, index: int, workdir: Path, smoke: bool) -> RunResult:
    cmd = [sys.executable, "-m", "chaos.child", scenario.name, str(index), str(workdir)]
    if smoke:
        cmd.append("--smoke")
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "child.out").open("w") as out:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        overrun = ""
        try:
            child.wait(scenario.budget)
        except subprocess.TimeoutExpired:
            overrun = f"the run took longer than its budget of {scenario.budget:g}s and was stopped"
            child.terminate()
            try:
                child.wait(TERM_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
    cleaned = clean_up(workdir / "ledger.jsonl")
    path = workdir / RESULT
    if path.exists():
        result = RunResult.from_json(json.loads(path.read_text()))
    else:
        result = RunResult(scenario.name, index, failed=overrun or f"the run exited ({child.returncode}) "
                           f"without a result; see {workdir}/child.out")
    if overrun and not result.failed:
        result.failed = overrun
    if cleaned:
        result.notes.append("cleaned up after the run: " + "; ".join(cleaned))
    return result


def run_all(scenarios: list[Scenario], manifest: Manifest,
            progress: Callable[[RunResult], None] = lambda r: None) -> list[Summary]:
    """Every run of every scenario, one after the other (they share the machine's two cores)."""
    base = Path(tempfile.mkdtemp(prefix=f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-"))
    print(f"[chaos] results and logs in {base}", flush=True)
    manifest.note_revision()
    manifest.save(base)
    runs, smoke = manifest.runs, manifest.smoke
    summaries = []
    for scenario in scenarios:
        results = []
        for index in range(runs):
            result = run_once(scenario, index, base / f"{scenario.name}-{index}", smoke)
            progress(result)
            results.append(result)
            if result.skipped:
                break  # it will not run here on the next attempt either
        summaries.append(Summary(scenario.name, results))
    manifest.note_revision()
    manifest.save(base)
    return summaries
