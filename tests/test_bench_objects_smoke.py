"""bench/objects.py runs end to end at a tiny size (issue 14). No timing assertions: figures
belong in the benchmark's output, never in tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench_runner import run_bench



@pytest.mark.skipif(
    shutil.which("unzip") is None or not Path("/usr/bin/time").exists(), reason="the bench runs unzip and GNU time"
)
def test_objects_bench_runs_and_ends_with_json(tmp_path: Path) -> None:
    _, data = run_bench("objects.py", "--sizes", "tiny", "--repeat", "1", "--big", "3x1", "--workdir", str(tmp_path))
    tiny = data["tiny"]
    assert {"objects_empty_store", "objects_1pct_changed", "folder_today", "unzip", "ratio_1pct_vs_empty_extract"} <= set(tiny)
    assert tiny["objects_1pct_changed"]["reused"] > 0
    assert tiny["objects_1pct_changed"]["inflated_bytes"] < tiny["objects_empty_store"]["inflated_bytes"]
    assert data["few_big_files"]["files"] == 3 and data["few_big_files"]["peak_rss_mb"] > 0
