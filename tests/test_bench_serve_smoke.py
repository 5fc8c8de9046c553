"""bench/serve.py runs end to end with tiny counts (issue 16). No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve.py"


def test_serve_bench_runs_and_ends_with_json() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--requests", "5", "--clients", "5", "--client-calls", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["burst"]["errors"] == 0
    assert set(figures["client"]) == {"full_fetch", "revalidated_304", "cached"}
