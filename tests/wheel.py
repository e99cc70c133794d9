"""Build the project's wheel and sdist with its own build backend (hatchling), offline.

Used by the packaging tests (what the artifacts contain) and by the
fresh-virtualenv install test.  hatchling is part of the test extras, so no
build isolation, and no package index, is needed to build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def build(target: str, outdir: Path) -> Path:
    """Build ``target`` ("wheel" or "sdist") of the working tree into ``outdir``; the artifact's path."""
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(outdir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"hatchling build -t {target} failed:\n{done.stdout}\n{done.stderr}"
    pattern = "*.whl" if target == "wheel" else "*.tar.gz"
    built = sorted(outdir.glob(pattern))
    assert len(built) == 1, f"expected one {pattern} in {outdir}, found {built}"
    return built[0]
