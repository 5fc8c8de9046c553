"""Shared fixtures: a publisher key, an atomicplug home, and a package factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from atomicplug.config import Config
from atomicplug.installer import Installer
from atomicplug.testing import KeyPair, PluginSpec, build_package, make_home, make_keypair

import importlib.util

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
    def make(database_url: str | None = None, name: str = "site", **overrides: Any) -> Home:
        root = tmp_path / name
        if database_url:
            overrides["database_url"] = database_url
        config_path = make_home(root, [publisher.public_path], **overrides)
        return Home(root=root, config_path=config_path, config=Config.load(config_path), publisher=publisher)

    return make


@pytest.fixture
def home(home_factory: Callable[..., Home]) -> Home:
    """A home on the embedded default: SQLite in <home>/app.db."""
    return home_factory()


@pytest.fixture
def any_db_home(home_factory: Callable[..., Home], database_url: str) -> Home:
    """A home on SQLite and, in a second run, on a fresh PostgreSQL database."""
    return home_factory(database_url=database_url)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    """Say how many crash points the crash suites enumerated."""
    from crash_harness import CHECKED

    try:
        from test_crash_syscalls import SYSCALL_CHECKED
    except ImportError:
        SYSCALL_CHECKED = {}
    if CHECKED or SYSCALL_CHECKED:
        terminalreporter.section("crash points checked")
        for label, count in sorted(CHECKED.items()):
            terminalreporter.write_line(f"in-process SIGKILL  {label:28} {count:5d} crash points")
        for label, count in sorted(SYSCALL_CHECKED.items()):
            terminalreporter.write_line(f"strace SIGKILL      {label:28} {count:5d} system calls")
        total = sum(CHECKED.values()) + sum(SYSCALL_CHECKED.values())
        terminalreporter.write_line(f"total: {total} crash points, every one recovered to the old or the new state")
