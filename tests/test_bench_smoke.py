"""The benchmark script runs end to end at a tiny size (issue 8). No timing assertions:
figures belong in the benchmark's output, never in tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("unzip", "sha256sum", "minisign")),
    reason="the floor needs unzip, sha256sum and minisign",
)


def test_bench_runs_and_ends_with_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--sizes", "tiny", "--repeat", "1", "--scale", "1,2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    data = json.loads(last)
    assert {"sizes", "scaling", "startup", "targets", "machine", "repeat"} <= set(data)
    tiny = data["sizes"]["tiny"]
    assert {"floor_s", "naive_s", "atomicplug_s", "ratios", "atomicplug_peak_rss_mb", "zip_bytes"} <= set(tiny)
    assert set(tiny["naive_s"]) == {"install", "upgrade", "rollback", "uninstall"}
    assert set(tiny["atomicplug_s"]) == {"install", "upgrade", "rollback", "uninstall", "recover"}
    assert {"install_vs_floor", "upgrade_vs_floor", "install_vs_naive", "upgrade_vs_naive", "rollback_vs_naive", "uninstall_vs_naive"} <= set(
        tiny["ratios"]
    )
    assert set(data["scaling"]) == {"1", "2"}
    for level in data["scaling"].values():
        assert {"install_small_s", "list_json_s", "recover_s", "fill_s"} <= set(level)
    assert {"python_startup_s", "recover_nothing_pending_s", "recover_vs_startup", "recover_heavy_imports"} <= set(data["startup"])
    assert "recover_lazy_imports" in data["targets"]
    assert "size" in proc.stdout and "atomicplug" in proc.stdout  # the table comes first
