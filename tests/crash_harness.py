"""Enumerate every crash point of an operation and check old-or-new after recovery.

Used by the in-process (fork + SIGKILL) suite; the strace suite reuses the
scenario definitions. Counts are collected for the terminal summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atomicplug.installer import Installer
from atomicplug.journal.reader import pending_journals
from atomicplug.testing import count_crash_points, crash_at, snapshot

#: scenario label → number of crash points checked (printed at the end of the run).
CHECKED: dict[str, int] = {}


def assert_clean(config: Any) -> None:
    """No unfinished journal, no staging leftovers, verify passes."""
    assert not pending_journals(config.journal_dir)
    staging = config.staging_dir
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert all(report.ok for report in Installer(config).verify())


def enumerate_crash_points(
    make_home: Callable[[str], Any],
    setup: Callable[[Any], None],
    operation: Callable[[Any], None],
    label: str,
) -> int:
    """Crash ``operation`` at each of its crash points in turn; all must recover to old or new."""
    reference = make_home(f"{label}-reference")
    setup(reference)
    old = snapshot(reference.config)
    total = count_crash_points(lambda: operation(reference))
    new = snapshot(reference.config)
    assert old != new, "the operation must change something observable"
    assert total > 0
    for point in range(1, total + 1):
        home = make_home(f"{label}-{point}")
        setup(home)
        assert crash_at(lambda: operation(home), point), f"{label}: no crash at point {point} of {total}"
        Installer(home.config).recover()
        state = snapshot(home.config)
        assert state in (old, new), f"{label}: crash point {point}/{total} left a mixed state: {state}"
        assert_clean(home.config)
        if state == old:
            operation(home)
        assert snapshot(home.config) == new, f"{label}: after crash point {point} the operation did not complete"
        assert_clean(home.config)
    CHECKED[label] = total
    return total
