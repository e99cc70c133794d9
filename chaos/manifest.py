"""What a whole invocation measured (command, runs, code revision), kept beside its results.

The runner writes it into the invocation's directory, so that
``python -m chaos --from DIR`` can print and write the same table again
later without measuring anew.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaos.child import RESULT
from chaos.result import RunResult, Summary
from chaos.scenarios import SCENARIOS
from chaos.settings import ROOT

NAME = "manifest.json"


def revision() -> str:
    """The commit of the work tree, marked if celery_persistent/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "celery_persistent"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+local changes" if dirty else "")


@dataclass
class Manifest:
    command: str
    runs: int
    smoke: bool
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))
    revisions: list[str] = field(default_factory=list)  # at the start and at the end, if it changed

    def note_revision(self) -> None:
        current = revision()
        if current not in self.revisions:
            self.revisions.append(current)

    def save(self, base: Path) -> None:
        (base / NAME).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, base: Path) -> Manifest:
        path = base / NAME
        if path.exists():
            return cls(**json.loads(path.read_text()))
        # Written before manifests existed: say what can still be known.
        runs = max((int(p.parent.name.rsplit("-", 1)[1]) + 1 for p in base.glob(f"*/{RESULT}")), default=0)
        started = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(base.stat().st_mtime))
        return cls(command=f"python -m chaos --runs {runs}", runs=runs, smoke=False, started=started,
                   revisions=["not recorded"])


def load_summaries(base: Path) -> list[Summary]:
    """The results of an earlier invocation, in the report's order of scenarios."""
    found: dict[str, list[RunResult]] = {}
    for path in base.glob(f"*/{RESULT}"):
        result = RunResult.from_json(json.loads(path.read_text()))
        found.setdefault(result.scenario, []).append(result)
    return [Summary(name, sorted(found[name], key=lambda r: r.run)) for name in SCENARIOS if name in found]
