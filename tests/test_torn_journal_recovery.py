"""A torn last journal record during recovery (issue 13 item 5), end to end."""

from __future__ import annotations

from crash_harness import find_interruption

from atomicplug.installer import Installer
from atomicplug.journal.reader import pending_journals
from atomicplug.testing import crash_at, snapshot


def test_recovery_after_a_torn_record_rolls_forward_once_and_gc_keeps_working(home_factory):
    packages = {}

    def make(label):
        site = home_factory(name=label)
        packages[label] = site.package("shop")
        return site

    def install(site):
        Installer(site.config).install_file(packages[site.root.name])

    point = find_interruption(make, lambda site: None, install, committed=True)
    site = make("torn")
    assert crash_at(lambda: install(site), point)
    [pending] = pending_journals(site.config.journal_dir)
    with open(pending.path, "ab") as handle:
        handle.write(b'{"sum":"0123","type":"do')  # the next append was torn by the crash
    installer = Installer(site.config)
    assert [direction for _, direction in installer.recover()] == ["forward"]
    assert installer.recover() == []
    assert [entry["outcome"] for entry in installer.history()] == ["done"]
    installer.gc()
    installer.gc()
    assert snapshot(site.config)["plugins"] == {"shop": ("1.0.0", True)}
