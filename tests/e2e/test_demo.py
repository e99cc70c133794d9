"""The README's first command: the demo runs end to end and shows what it claims."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def test_demo_shows_coalescing_and_persistent_workers(redis_url) -> None:
    base = redis_url.rsplit("/", 1)[0]
    env = {**os.environ, "CELERY_BROKER_URL": f"{base}/11"}
    out = subprocess.run([sys.executable, "-m", "celery_persistent.demo"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "20 callers, 20 task ids, 1 execution(s)" in text
    assert "one in-memory Msg1 object: True" in text
    assert "balances [105, 110, 115, 120, 125, 130, 135, 140, 145, 150]" in text
    assert "static" in text and "rolling" in text
