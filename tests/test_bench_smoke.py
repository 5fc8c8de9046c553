"""The benchmark script runs end to end at a tiny size (issues 8 and 14). No timing assertions:
figures belong in the benchmark's output, never in tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench_runner import run_bench


pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("unzip", "sha256sum", "minisign")),
    reason="the floor needs unzip, sha256sum and minisign",
)


@pytest.mark.slow
def test_bench_runs_every_part_and_ends_with_json(tmp_path: Path) -> None:
    proc, data = run_bench(
        "run.py", "--sizes", "tiny", "--repeat", "1", "--scale", "1,2", "--history", "1,3", "--disk-size", "tiny",
        "--disk-versions", "3", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert {"sizes", "api", "imports", "scaling", "history", "disk", "targets", "machine", "repeat", "load"} <= set(data)
    tiny = data["sizes"]["tiny"]
    assert {"floor_s", "python_floor_s", "verify_1pct_zip_s", "naive_s", "atomicplug_s", "ratios", "paired_ratios", "peak_memory_mib", "zip_bytes"} <= set(tiny)
    ops = {"install", "upgrade_1pct", "upgrade", "rollback", "uninstall"}
    assert set(tiny["naive_s"]) == ops
    assert set(tiny["atomicplug_s"]) == ops | {"recover"}
    assert set(tiny["atomicplug_resident_s"]) == ops | {"recover"}  # the same commands through the resident server
    assert all(value > 0 for value in tiny["atomicplug_resident_s"].values())
    assert {"upgrade_1pct_vs_install", "upgrade_1pct_vs_naive_upgrade_1pct", "install_vs_floor", "install_vs_python_floor"} <= set(tiny["paired_ratios"])
    assert set(tiny["peak_memory_mib"]["install"]) == {"largest_process_mib", "tree_rss_mib", "tree_pss_mib"}
    assert tiny["peak_memory_mib"]["install"]["tree_pss_mib"] > 0
    assert data["api"]["fresh_home_tiny"]["size"] == "tiny"  # a first install in a warm process, at the smallest size chosen
    for label in ("reinstall", "fresh_tree", "fresh_home_tiny"):
        api = data["api"][label]
        assert {"install_s", "uninstall_s", "floor_s", "install_vs_floor_per_run"} <= set(api)
        stages = {row["stage"]: row for row in api["profile"]["stages"]}
        assert stages["whole install_file"]["calls"] == 1.0  # the profile saw every install
    assert data["imports"]["install_imports"]["modules"] > 0
    assert data["imports"]["cli_install_small_resident_s"] > 0
    assert data["resident_commands_served"] == 6 + 2 * 5  # sizes: six commands; imports: five install + uninstall pairs
    assert {"small_cli_install_ms_resident", "medium_install_vs_floor_resident"} & set(data["targets"]) == {"small_cli_install_ms_resident"}
    assert set(data["scaling"]["vs_fewest"]) == {"install", "disable", "enable", "rollback_generation", "list", "recover", "install_new"}
    for level in ("1", "2"):
        assert {"install_s", "list_s", "recover_s", "rollback_generation_s", "fill_s"} <= set(data["scaling"][level])
    assert data["history"]["vs_fewest_counts"] == [1, 3] and data["history"]["3"]["install_s"] > 0
    assert data["history"]["3"]["api_install_s"] > 0 and data["history"]["api_vs_fewest"] > 0
    disk = data["disk"]
    assert disk["versions"] == 3 and disk["du_bytes"]["all_versions"]["total"] > disk["du_bytes"]["one_version"]["total"] > 0
    assert {"small_api_install_vs_floor", "small_cli_install_ms", "recover_lazy_imports"} <= set(data["targets"])
    assert "size" in proc.stdout and "atomicplug" in proc.stdout  # the tables come first
    creation = data["file_creation"]
    assert creation["removed_before"] == 0 and creation["start_us"] > 0 and creation["end_us"] > 0
    assert not any((tmp_path / "scratch").iterdir()), "every folder the runs used is removed at the end"


def test_bench_can_measure_after_removals(tmp_path: Path) -> None:
    """``--after-removals N``: the sizes part's contenders each start in a folder where N files were just
    removed, and the imports part's installs in a home where they were."""
    _, data = run_bench("run.py", "--parts", "imports", "--repeat", "1", "--after-removals", "50", "--workdir", str(tmp_path))
    assert data["file_creation"]["removed_before"] == 50
    assert data["file_creation"]["removals"] == 15  # before each of 5 one-shot, 5 resident and 5 typed installs
    assert data["targets"]["small_cli_install_ms"]["value"] > 0
    # typed at a terminal: the first install started the server, which ran the other 4 and the 5 uninstalls
    assert data["imports"]["cli_install_small_terminal_served"] == 9 and data["targets"]["small_cli_install_ms_terminal"]["value"] > 0
    _, data = run_bench("run.py", "--parts", "sizes", "--sizes", "tiny", "--repeat", "1", "--after-removals", "50", "--workdir", str(tmp_path))
    assert data["file_creation"]["removed_before"] == 50 and data["file_creation"]["removals"] > 0
    assert data["sizes"]["tiny"]["floor_s"] > 0 and data["sizes"]["tiny"]["python_floor_s"] > 0 and data["sizes"]["tiny"]["atomicplug_s"]["install"] > 0
    assert not any((tmp_path / "scratch").iterdir())


def test_bench_runs_one_part(tmp_path: Path) -> None:
    _, data = run_bench("run.py", "--parts", "disk", "--disk-size", "tiny", "--disk-versions", "2", "--workdir", str(tmp_path))
    assert data["parts"] == ["disk"] and "sizes" not in data and data["disk"]["versions"] == 2
