"""``python -m bench``: run every scenario against its baseline and write the report.

    python -m bench                 # full run (~10 min); also updates docs/benchmarks.md
    python -m bench --quick         # short smoke run (~2 min); never touches docs/
    python -m bench --out DIR       # where results.json, results.md and the plots go
    python -m bench --only coalescing,registry

Needs a Redis at BENCH_REDIS_URL (default: the local one's database 12, else an embedded Valkey).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (fewer iterations and groups)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="output directory")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/ after a full run")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite the report, plots (and docs) from DIR/results.json")
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report_only:
        return report_only(args)
    prefix = f"cpbench{uuid.uuid4().hex[:6]}"
    # Before bench.app is imported, here and in every worker subprocess.
    os.environ["BENCH_PREFIX"] = prefix
    if "BENCH_REDIS_URL" not in os.environ:
        from celery_persistent.embedded import local_or_embedded_redis

        # The local Redis, or on a machine without one an embedded Valkey (it lives as long as this process).
        os.environ["BENCH_REDIS_URL"] = local_or_embedded_redis(db=12)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from bench import report
    from bench.scenarios import Context
    from bench.workers import wipe

    logdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-logs-"))
    ctx = Context(quick=args.quick, logdir=logdir, prefix=prefix)
    print(f"bench: prefix {prefix}, {'quick' if args.quick else 'full'} run, worker logs in {logdir}", flush=True)
    started = time.time()
    results = []
    try:
        for name in args.only:
            results.append(run_one(name, ctx))
            wipe(prefix)
    finally:
        wipe(prefix)
    meta = report.machine(args.quick, started, time.time())
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, meta, args.out)
    if not args.quick and not args.no_docs and args.only == list(SCENARIOS):
        report.write_docs(results, meta, args.out, ROOT / "docs")
    print(f"bench: done in {time.time() - started:.0f}s; results in {args.out}", flush=True)
    return 0


def report_only(args: argparse.Namespace) -> int:
    from bench import report

    meta, results = report.load(args.out / "results.json")
    report.write(results, meta, args.out)
    if not meta["quick"] and not args.no_docs and [r.name for r in results] == list(SCENARIOS):
        report.write_docs(results, meta, args.out, ROOT / "docs")
    print(f"bench: report rewritten from {args.out / 'results.json'}")
    return 0


def run_one(name: str, ctx: object) -> object:
    module = importlib.import_module(f"bench.scenarios.{name}")
    print(f"bench: {name} ...", flush=True)
    load_before = Path("/proc/loadavg").read_text().split()[0]
    start = time.perf_counter()
    result = module.run(ctx)
    result.seconds = round(time.perf_counter() - start, 1)
    result.loadavg = [load_before, Path("/proc/loadavg").read_text().split()[0]]
    for row in result.rows:
        noisy = " (noisy)" if row.noisy else ""
        print(f"  {row.measure}: {row.ratio_text} [target {row.target or '-'}]{noisy}", flush=True)
    print(f"  {name} took {result.seconds}s", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
