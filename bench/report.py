"""results.json, results.md (a Markdown table), one PNG per scenario, and docs/benchmarks.md."""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from bench.scenarios import SCENARIOS, Result
from bench.stats import NOISE_THRESHOLD, Row

COMMAND = ".venv/bin/python -m bench"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _redis_server() -> str:
    from bench.app import counters

    return str(counters().info("server").get("redis_version", "unknown"))


def machine(quick: bool, started: float, ended: float) -> dict[str, Any]:
    versions = {"python": platform.python_version(), "redis-server": _redis_server()}
    for dist in ("celery", "kombu", "redis", "hiredis", "celery-singleton", "celery-persistent", "matplotlib"):
        try:
            versions[dist if dist != "redis" else "redis-py"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": round(ended - started, 1),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "versions": versions,
        "noise_threshold": NOISE_THRESHOLD,
        "command": COMMAND + (" --quick" if quick else ""),
    }


def _met(row: Row) -> str:
    return "" if row.met is None else ("yes" if row.met else "**no**")


def _noise(row: Row) -> str:
    if row.noise is None:
        return ""
    return f"{row.noise * 100:.0f}%" + (" **noisy**" if row.noisy else "")


def table(results: list[Result]) -> str:
    lines = ["| # | measurement | ours (p50 / p99) | baseline (p50 / p99) | ratio | target | met | noise (CV) |",
             "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result.rows:
            cells = [row.scenario, row.measure, row.ours, row.baseline, row.ratio_text, row.target, _met(row),
                     _noise(row)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def targets(results: list[Result]) -> list[str]:
    """One line per row that has a target: the measured value, the target, met or missed."""
    lines = []
    for result in results:
        for row in result.rows:
            if row.target:
                status = "met" if row.met else "**missed**"
                noisy = " (noisy)" if row.noisy else ""
                lines.append(f"- {row.measure}: {row.ratio_text}, target {row.target}: {status}{noisy}")
    return lines


def _machine_lines(meta: dict[str, Any]) -> list[str]:
    v = meta["versions"]
    return [
        f"- Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['memory']} RAM, Linux {meta['kernel']}; "
        "shared with other jobs while the benchmark ran (noisy).",
        f"- Versions: Python {v['python']}, Celery {v['celery']}, kombu {v['kombu']}, redis-py {v['redis-py']} "
        f"(hiredis {v['hiredis']}), redis-server {v['redis-server']}, celery-singleton {v['celery-singleton']}, "
        f"celery-persistent {v['celery-persistent']}.",
        f"- Run: {'quick' if meta['quick'] else 'full'}, started {meta['started']}, {meta['seconds']:.0f} s; "
        f"command `{meta['command']}`.",
        f"- Noise: CV of the per-round medians (ours and baseline, the larger); rows above "
        f"{meta['noise_threshold'] * 100:.0f}% are marked **noisy**.",
    ]


def _sections(results: list[Result], img: str) -> list[str]:
    out = []
    for result in results:
        out += [f"### {SCENARIOS.index(result.name) + 1}. {result.title}", "", result.setup, ""]
        out += [f"- {note}" for note in result.notes]
        out += ["", f"![{result.title}]({img}{result.name}.png)", ""]
    return out


def load(path: Path) -> tuple[dict[str, Any], list[Result]]:
    """The meta and results of an earlier run, from its results.json."""
    payload = json.loads(path.read_text())
    results = []
    for raw in payload["scenarios"]:
        rows = [Row(**{k: v for k, v in row.items() if k != "noisy"}) for row in raw["rows"]]
        results.append(Result(raw["name"], raw["title"], raw["setup"], rows, raw["data"], raw["notes"],
                              raw["seconds"], raw["loadavg"]))
    return payload["meta"], results


def write(results: list[Result], meta: dict[str, Any], out: Path) -> None:
    payload = {"meta": meta, "scenarios": [r.as_dict() for r in results]}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    for result in results:
        module = importlib.import_module(f"bench.scenarios.{result.name}")
        module.plot(result, out / f"{result.name}.png")
    md = ["# celery_persistent benchmark results", "", *_machine_lines(meta), "", "## Targets", "",
          *targets(results), "", "## All measurements", "", table(results), "", *_sections(results, "")]
    (out / "results.md").write_text("\n".join(md).rstrip() + "\n")


def write_docs(results: list[Result], meta: dict[str, Any], out: Path, docs: Path) -> None:
    """docs/benchmarks.md with the same table, and the plots copied to docs/img/bench/."""
    img = docs / "img" / "bench"
    img.mkdir(parents=True, exist_ok=True)
    for result in results:
        shutil.copy(out / f"{result.name}.png", img / f"{result.name}.png")
    here = Path(__file__).parent
    intro = (here / "docs_intro.md").read_text().rstrip()
    analysis = here / "analysis.md"
    md = [intro, "", "## Results", "", *_machine_lines(meta), "", "### Targets", "", *targets(results), "",
          "### All measurements", "", table(results), "", "## Scenarios", "", *_sections(results, "img/bench/")]
    if analysis.exists():
        md += ["", analysis.read_text().rstrip()]
    (docs / "benchmarks.md").write_text("\n".join(md).rstrip() + "\n")
