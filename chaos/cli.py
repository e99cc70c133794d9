"""``python -m chaos``: run the scenarios, print the table, keep it in docs/reliability.md.

``--smoke`` runs the short subset once each (Redis broker only) and exits
non-zero unless every one of them meets the target; it leaves the page alone
unless ``--write`` is given.  A full run writes the page unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from chaos import report
from chaos.manifest import Manifest, load_summaries
from chaos.result import RunResult
from chaos.runner import run_all
from chaos.scenarios import SCENARIOS


def _progress(r: RunResult) -> None:
    if r.skipped:
        status = f"skipped: {r.skipped}"
    elif r.failed:
        status = f"HARNESS FAILED: {r.failed} (see {r.workdir})"
    else:
        status = "met" if r.met else f"MISSED: {'; '.join(r.misses)} (see {r.workdir})"
    print(f"[chaos] {r.scenario} #{r.run} ({r.seconds:g}s): {status}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 5; 1 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="the short subset, for CI")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only this scenario (repeatable, or comma-separated): {', '.join(SCENARIOS)}")
    parser.add_argument("--write", dest="write", action="store_true", default=None, help="write docs/reliability.md")
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument("--from", dest="source", type=Path, metavar="DIR",
                        help="measure nothing: print (and write) the results kept in DIR by an earlier invocation")
    args = parser.parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    chosen = [SCENARIOS[n] for n in names] if names else list(SCENARIOS.values())
    if args.smoke and not names:
        chosen = [s for s in chosen if s.smoke]
    runs = args.runs if args.runs is not None else (1 if args.smoke else 5)
    if args.source is not None:
        manifest = Manifest.load(args.source)
        summaries = [s for s in load_summaries(args.source) if s.scenario in {c.name for c in chosen}]
    else:
        command = "python -m chaos " + shlex.join(argv if argv is not None else sys.argv[1:])
        manifest = Manifest(command.strip(), runs, args.smoke)
        summaries = run_all(chosen, manifest, _progress)
    print()
    print(report.table(summaries))
    write = args.write if args.write is not None else not manifest.smoke
    if write:
        report.write(summaries, manifest)
        print(f"\nwritten to {report.DOC}")
    if manifest.smoke:
        missed = [s.scenario for s in summaries if not s.met]
        if missed:
            print(f"\nsmoke targets missed: {', '.join(missed)}", file=sys.stderr)
            return 1
    return 0
