"""Shared fixtures: a publisher key, an atomicplug home, and a package factory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from atomicplug.config import Config
from atomicplug.installer import Installer
from atomicplug.testing import KeyPair, PluginSpec, build_package, make_home, make_keypair

import importlib.util

# A resident server a developer started would run the suite's CLI commands in its own children
# (and a crash test's SIGKILL would hit only the client): every test runs commands alone unless it
# starts its own server (test_resident.py).
os.environ["ATOMICPLUG_RESIDENT"] = "off"

pytest_plugins = ["db_fixtures"] if importlib.util.find_spec("db_fixtures") else []


@pytest.fixture
def publisher(tmp_path: Path) -> KeyPair:
    return make_keypair(tmp_path / "keys")


@attrs.frozen
class Home:
    """An atomicplug installation under tmp_path: config file, Config, Installer."""

    root: Path
    config_path: Path
    config: Config
    publisher: KeyPair

    @property
    def installer(self) -> Installer:
        return Installer(self.config)

    def package(self, plugin_id: str, version: str = "1.0.0", **fields: Any) -> Path:
        spec = PluginSpec(id=plugin_id, version=version, **fields)
        return build_package(spec, self.root / "packages", self.publisher.secret)


@pytest.fixture
def home_factory(tmp_path: Path, publisher: KeyPair) -> Callable[..., Home]:
    """``make(database_url=None, name="site", under=None, **config)``: a home in ``(under or tmp_path) / name``."""

    def make(database_url: str | None = None, name: str = "site", under: Path | None = None, **overrides: Any) -> Home:
        root = (under or tmp_path) / name
        if database_url:
            overrides["database_url"] = database_url
        config_path = make_home(root, [publisher.public_path], **overrides)
        return Home(root=root, config_path=config_path, config=Config.load(config_path), publisher=publisher)

    return make


@pytest.fixture
def memory_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A temporary folder on a memory file system (tmpfs /dev/shm) when there is one, else tmp_path.

    For suites that repeat whole transactions hundreds of times: there an fsync
    costs nothing, while every system call still happens for real.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="atomicplug-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def home(home_factory: Callable[..., Home]) -> Home:
    """A home on the embedded default: SQLite in <home>/app.db."""
    return home_factory()


@pytest.fixture
def any_db_home(home_factory: Callable[..., Home], database_url: str) -> Home:
    """A home on SQLite and, in a second run, on a fresh PostgreSQL database."""
    return home_factory(database_url=database_url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, each in collection order: with ``--maxschedchunk 1`` (.ci/run) the two
    workers then take the longest work first and the short tests fill in, so neither waits at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    """Say how many crash points the crash suites enumerated (and the disk-failure suites failed)."""
    from crash_harness import CHECKED, FAILURES_CHECKED

    try:
        from test_crash_syscalls import SYSCALL_CHECKED
    except ImportError:
        SYSCALL_CHECKED = {}
    try:
        from test_disk_failures_syscalls import SYSCALL_FAILURES_CHECKED
    except ImportError:
        SYSCALL_FAILURES_CHECKED = {}
    crashes = [("in-process SIGKILL", CHECKED, "crash points"), ("strace SIGKILL", SYSCALL_CHECKED, "system calls")]
    _summary(terminalreporter, "crash points checked", crashes, "crash points, every one recovered to the old or the new state")
    failures = [
        ("in-process OSError", FAILURES_CHECKED, "failing steps"),
        ("strace ENOSPC/EIO", SYSCALL_FAILURES_CHECKED, "failing system calls"),
    ]
    _summary(terminalreporter, "disk failures checked", failures, "failing steps, each one line, then old or new after recover")


def _summary(reporter: Any, title: str, parts: list[tuple[str, dict[str, int], str]], outcome: str) -> None:
    """A section with one line per (kind, label) counted, and the total."""
    if not any(counts for _, counts, _ in parts):
        return
    reporter.section(title)
    for kind, counts, unit in parts:
        for label, count in sorted(counts.items()):
            reporter.write_line(f"{kind:20}{label:28} {count:5d} {unit}")
    total = sum(sum(counts.values()) for _, counts, _ in parts)
    reporter.write_line(f"total: {total} {outcome}")
