"""Structured progress (issue 16 phase 2): frozen events whose ``str()`` is the CLI's line.

A local install passes verify → plan → stage → health → database → switch →
done; a repository install reports each package's download bytes (from 0 to
its size) through the fetcher's progress callback; the CLI's verbose output
is the lines it always printed. A dry run of a repository install downloads
but records nothing (the trust state is untouched).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicplug.config import Config
from atomicplug.installer import Installer
from atomicplug.progress import ProgressEvent
from atomicplug.testing import PluginSpec, build_package, build_repository, served_repository

CONTACTS = {"0001_contacts": ("CREATE TABLE crm_contacts (id INTEGER);", "DROP TABLE crm_contacts;")}


def test_a_local_install_reports_each_stage_with_its_plugin_and_the_clis_line(home: Any) -> None:
    events: list[ProgressEvent] = []
    Installer(home.config, progress=events.append).install_file(home.package("crm", migrations=CONTACTS))
    assert [e.stage for e in events] == ["verify", "plan", "stage", "health", "database", "switch", "done"]
    assert [str(e) for e in events] == [
        "verifying crm-1.0.0.zip",
        "install crm 1.0.0",
        "staging crm 1.0.0",
        "health check: importing crm in a fresh interpreter",
        "database: migrations and ledger in one transaction",
        "switching to generation 1: install crm 1.0.0",
        "",
    ]
    stage = next(e for e in events if e.stage == "stage")
    assert (stage.plugin_id, stage.version) == ("crm", "1.0.0")
    assert next(e for e in events if e.stage == "health").plugins == ("crm",)
    assert {e.operation for e in events if e.stage in ("database", "switch", "done")} == {"install"}
    events.clear()
    Installer(home.config, progress=events.append).disable("crm")
    assert [(e.stage, e.operation) for e in events if e.stage == "database"] == [("database", "disable")]


@pytest.fixture
def repository(tmp_path: Path, home_factory: Any, publisher: Any) -> Iterator[Any]:
    """crm 1.0.0 (about 300 kB of incompressible data, so it arrives in several reads) and reports requiring it."""
    import os

    big = {"backend/blob.bin": os.urandom(300_000)}
    packages = [
        build_package(PluginSpec(id="crm", files=big), tmp_path / "pkgs", publisher.secret),
        build_package(PluginSpec(id="reports", requires=("crm",)), tmp_path / "pkgs", publisher.secret),
    ]
    repo = build_repository(tmp_path / "repo", packages, publisher.secret)
    with served_repository(repo) as url:
        yield home_factory(repository=url)


def test_download_bytes_arrive_as_events_per_package(repository: Any) -> None:
    events: list[ProgressEvent] = []
    Installer(repository.config, progress=events.append).install("reports")
    downloads = [e for e in events if e.stage == "download"]
    crm = [(e.received, e.total) for e in downloads if e.plugin_id == "crm"]
    total = crm[0][1]
    assert crm[0] == (0, total) and crm[-1] == (total, total) and total > 300_000
    assert len(crm) > 3 and all(a[0] <= b[0] for a, b in zip(crm, crm[1:])), "bytes arrive in steps, never backwards"
    assert {e.plugin_id for e in downloads} == {"crm", "reports"} and all(str(e) == "" for e in downloads)
    assert [(e.plugin_id, e.version) for e in events if e.stage == "verify"] == [("crm", "1.0.0"), ("reports", "1.0.0")]
    assert events[-1].stage == "done"


def test_a_dry_run_of_a_repository_install_downloads_but_records_nothing(repository: Any) -> None:
    state = repository.config.home / "repository_state.json"
    events: list[ProgressEvent] = []
    preview = Installer(repository.config, progress=events.append).preview("install", "reports")
    assert [p.change.describe() for p in preview.plugins] == ["install crm 1.0.0", "install reports 1.0.0"]
    assert not state.exists() and not (repository.config.home / "addon_registry.json").exists()
    assert any(e.stage == "download" for e in events)
    Installer(repository.config).install("reports")
    assert state.exists()


def test_the_clis_verbose_output_is_the_lines_it_always_printed(home: Any) -> None:
    zip_path = home.package("crm", migrations=CONTACTS)
    proc = subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "install", str(zip_path), "--verbose"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "  verifying crm-1.0.0.zip",
        "  install crm 1.0.0",
        "  staging crm 1.0.0",
        "  health check: importing crm in a fresh interpreter",
        "  database: migrations and ledger in one transaction",
        "  switching to generation 1: install crm 1.0.0",
    ]
    assert proc.stdout == "install crm 1.0.0\n"
    assert Config.load(home.config_path).registry_path.exists()


@pytest.mark.parametrize("stage", ["switch", "done"])
@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), RuntimeError("callback bug")])
def test_a_callback_that_raises_after_commit_does_not_stop_the_change(home: Any, caplog: Any, stage: str, error: Exception) -> None:
    """Found from outside (the billing backend's websocket gone, a bug in its callback): raised at
    `switch`, after COMMIT, the change stayed committed but not switched (tables at 1.1.0, files and
    registry at 1.0.0, a journal pending), reported as a disk failure or as the bare exception; raised
    at `done`, a finished change was reported as a failure. Past COMMIT a callback cannot stop it."""
    from atomicplug.testing import snapshot

    first = {"0001_contacts": CONTACTS["0001_contacts"]}
    Installer(home.config).install_file(home.package("crm", "1.0.0", migrations=first))
    second = dict(first, **{"0002_notes": ("CREATE TABLE crm_notes (id INTEGER);", "DROP TABLE crm_notes;")})

    def progress(event: ProgressEvent) -> None:
        if event.stage == stage:
            raise error

    result = Installer(home.config, progress=progress).install_file(home.package("crm", "1.1.0", migrations=second))
    assert result.changes == ("upgrade crm 1.0.0 -> 1.1.0",)
    state = snapshot(home.config)
    assert state["plugins"]["crm"] == ("1.1.0", True) and state["links"]["backend/crm"].startswith("1.1.0") and "crm_notes" in state["tables"]
    assert [name for name in (home.config.home / "journal").iterdir() if name.name != "finished"] == []
    assert f"progress callback failed at {stage}" in caplog.text
