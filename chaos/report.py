"""The measured table, as markdown: printed, and kept in docs/reliability.md between marker comments.

Only the text between the markers is replaced, so the page's own prose
stays as written; the scenario list is generated from ``chaos.scenarios``
so it cannot drift from what runs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from chaos.manifest import Manifest
from chaos.result import RunResult, Summary
from chaos.scenarios import SCENARIOS
from chaos.settings import ANSWER_BOUND, GRACE, LEASE_TTL, ROOT, SMOKE_GRACE

DOC = ROOT / "docs" / "reliability.md"
TABLE = ("<!-- chaos:table:begin -->", "<!-- chaos:table:end -->")
LIST = ("<!-- chaos:scenarios:begin -->", "<!-- chaos:scenarios:end -->")

HEADER = ["scenario", "runs", "sent", "answered", "typed errors", "other errors", "lost", "executed twice",
          "run after error", "answered twice", "overlaps", "updates lost", "applied twice", "to last answer (s)",
          "target"]


def _classes(counts: Iterable[tuple[str, int]]) -> str:
    items = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {name}" for name, n in items) if items else "0"


def _target(s: Summary) -> str:
    if not s.runs:
        return "not run"
    if all(r.skipped for r in s.runs):
        return f"skipped: {s.runs[0].skipped}"
    if s.met:
        return "met"
    kinds: Counter[str] = Counter()
    for r in s.runs:
        kinds.update({_kind(m) for m in (f"harness failed: {r.failed}" if r.failed else "", *r.misses) if m})
    failing = sum(not r.met for r in s.runs)
    return f"**missed** ({failing}/{len(s.runs)} runs): " + "; ".join(
        f"{kind} ({n} run{'s' if n > 1 else ''})" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def _kind(miss: str) -> str:
    """A miss without its count ("3 lost callers" -> "lost callers"), to tally runs by kind."""
    return re.sub(r"^\d+ ", "", miss)


def row(s: Summary) -> list[str]:
    if not s.measured:
        return [f"`{s.scenario}`", str(len(s.runs)), *["-"] * (len(HEADER) - 3), _target(s)]
    overlaps = str(s.total("overlaps"))
    if s.total("frozen_overlaps"):
        overlaps += f" (+{s.total('frozen_overlaps')} frozen)"
    recovery = "-" if s.recovery is None else f"{s.recovery:.1f}"
    if s.total("late"):
        recovery += f" ({s.total('late')} late)"
    return [f"`{s.scenario}`", str(len(s.measured)), str(s.total("sent")), str(s.total("answered")),
            _classes(s.classes("typed").items()), _classes(s.classes("untyped").items()), str(s.total("lost")),
            str(s.total("executed_twice")), str(s.total("run_after_error")), str(s.total("answered_twice")),
            overlaps, str(s.total("updates_lost")), str(s.total("applied_twice")), recovery, _target(s)]


def table(summaries: list[Summary]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row(s)) + " |" for s in summaries]
    return "\n".join(lines)


def details(summaries: list[Summary]) -> str:
    out = []
    for s in summaries:
        for r in s.runs:
            out.append(f"- `{r.scenario}` run {r.run}: {_run_line(r)}")
    return "\n".join(out)


def _run_line(r: RunResult) -> str:
    if r.skipped:
        return f"skipped: {r.skipped}"
    if r.failed:
        return f"harness failed: {r.failed}"
    parts = [r.fault, f"{r.sent} sent, {r.answered} answered, {r.lost} lost",
             f"last answer {r.recovery}s after the fault's end", f"seed {r.seed}"]
    parts += [m for m in r.misses]
    parts += r.notes
    return "; ".join(p for p in parts if p)


def block(summaries: list[Summary], manifest: Manifest) -> str:
    code = " then ".join(f"`{r}`" for r in manifest.revisions)
    return "\n".join([
        f"Measured {manifest.started} on {code} with `{manifest.command}` ({manifest.runs} run(s) per scenario; "
        f"lease TTL {LEASE_TTL:g} s, so the "
        f"answer bound is {ANSWER_BOUND:g} s after the fault's end; a caller with no answer "
        f"{SMOKE_GRACE if manifest.smoke else GRACE:g} s after "
        "it is lost).",
        "",
        table(summaries),
        "",
        "<details><summary>Each run: the fault, the misses and what the evidence showed</summary>",
        "",
        details(summaries),
        "",
        "</details>",
    ])


def scenario_list() -> str:
    return "\n".join(f"- **`{s.name}`**: {s.title}. {s.what}" + (" *In the smoke subset.*" if s.smoke else "")
                     for s in SCENARIOS.values())


def _replace(text: str, markers: tuple[str, str], body: str) -> str:
    begin, end = markers
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    replacement = f"{begin}\n{body}\n{end}"
    if pattern.search(text):
        return pattern.sub(lambda _: replacement, text)
    return text.rstrip() + "\n\n" + replacement + "\n"


def write(summaries: list[Summary], manifest: Manifest, path: Path = DOC) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n"
    text = _replace(text, LIST, scenario_list())
    text = _replace(text, TABLE, block(summaries, manifest))
    path.write_text(text)
