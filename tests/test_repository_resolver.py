"""Dependency resolution over a manifest: closure, highest versions, order, refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from packaging.version import Version

from atomicplug.errors import DependencyError, UsageError
from atomicplug.repository.manifest import Manifest, ManifestEntry
from atomicplug.repository.resolver import resolve


def _manifest(*items: tuple[str, str, tuple[str, ...]]) -> Manifest:
    entries = tuple(
        ManifestEntry(id=i, version=v, download_url=f"/download/{i}/{v}", sha256="0" * 64, size=1, requires=r)
        for i, v, r in items
    )
    return Manifest(version=1, expires=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1), plugins=entries)


def _ids(entries: list[ManifestEntry]) -> list[tuple[str, str]]:
    return [(e.id, e.version) for e in entries]


def test_picks_highest_version() -> None:
    m = _manifest(("crm", "1.0", ()), ("crm", "1.10", ()), ("crm", "1.9", ()))
    assert _ids(resolve(m, ["crm"], {})) == [("crm", "1.10")]


def test_pins_and_ranges_are_honoured() -> None:
    m = _manifest(("crm", "1.0", ()), ("crm", "1.5", ()), ("crm", "2.0", ()))
    assert _ids(resolve(m, ["crm==1.0"], {})) == [("crm", "1.0")]
    assert _ids(resolve(m, ["crm>=1.2,<2"], {})) == [("crm", "1.5")]


def test_prefers_final_releases_over_prereleases() -> None:
    m = _manifest(("crm", "1.0", ()), ("crm", "2.0rc1", ()))
    assert _ids(resolve(m, ["crm"], {})) == [("crm", "1.0")]
    assert _ids(resolve(m, ["crm>=2.0rc1"], {})) == [("crm", "2.0rc1")]


def test_diamond_dependencies_in_topological_order() -> None:
    m = _manifest(
        ("app", "1.0", ("left", "right")),
        ("left", "1.0", ("base>=1.0",)),
        ("right", "1.0", ("base<2",)),
        ("base", "1.0", ()),
        ("base", "1.5", ()),
        ("base", "2.0", ()),
    )
    result = _ids(resolve(m, ["app"], {}))
    assert sorted(result) == [("app", "1.0"), ("base", "1.5"), ("left", "1.0"), ("right", "1.0")]
    order = [i for i, _ in result]
    assert order.index("base") < order.index("left") < order.index("app")
    assert order.index("base") < order.index("right") < order.index("app")
    assert order.count("base") == 1


def test_cycle_is_refused_with_chain() -> None:
    m = _manifest(("aa", "1.0", ("bb",)), ("bb", "1.0", ("cc",)), ("cc", "1.0", ("aa",)))
    with pytest.raises(DependencyError, match=r"cycle: aa -> bb -> cc -> aa"):
        resolve(m, ["aa"], {})


def test_unsatisfiable_version_names_what_exists() -> None:
    m = _manifest(("xx", "1.0", ("yy>=2",)), ("yy", "1.0", ()), ("yy", "1.5", ()))
    with pytest.raises(DependencyError, match=r"xx requires yy>=2 but the repository has yy 1.0, 1.5"):
        resolve(m, ["xx"], {})


def test_conflicting_constraints_name_both_chains() -> None:
    m = _manifest(("app", "1.0", ("left", "right")), ("left", "1.0", ("base>=2",)), ("right", "1.0", ("base<2",)),
                  ("base", "1.0", ()), ("base", "2.0", ()))
    with pytest.raises(DependencyError) as info:
        resolve(m, ["app"], {})
    message = str(info.value)
    assert "app -> left requires base>=2" in message and "app -> right requires base<2" in message


def test_missing_dependency_is_refused() -> None:
    m = _manifest(("crm", "1.0", ("email_core",)))
    with pytest.raises(DependencyError, match="the repository has no email_core"):
        resolve(m, ["crm"], {})


def test_unknown_request_is_refused() -> None:
    with pytest.raises(DependencyError, match="you asked for nothing_here"):
        resolve(_manifest(), ["nothing_here"], {})


def test_malformed_request_is_usage_error() -> None:
    with pytest.raises(UsageError):
        resolve(_manifest(), ["Bad Name!"], {})


def test_installed_dependency_that_satisfies_is_skipped() -> None:
    m = _manifest(("crm", "1.0", ("email_core>=1.0",)), ("email_core", "1.0", ()), ("email_core", "1.2", ()))
    assert _ids(resolve(m, ["crm"], {"email_core": Version("1.0")})) == [("crm", "1.0")]


def test_installed_dependency_too_old_is_upgraded() -> None:
    m = _manifest(("crm", "1.0", ("email_core>=1.2",)), ("email_core", "1.0", ()), ("email_core", "1.2", ()))
    assert _ids(resolve(m, ["crm"], {"email_core": "1.0"})) == [("email_core", "1.2"), ("crm", "1.0")]


def test_installed_request_is_skipped_unless_upgrading() -> None:
    m = _manifest(("crm", "1.0", ()), ("crm", "1.1", ()))
    assert resolve(m, ["crm"], {"crm": "1.0"}) == []
    assert _ids(resolve(m, ["crm"], {"crm": "1.0"}, upgrade=True)) == [("crm", "1.1")]
    assert resolve(m, ["crm"], {"crm": "1.1"}, upgrade=True) == []


def test_upgrade_of_plugin_not_in_repository_keeps_it() -> None:
    m = _manifest(("crm", "1.1", ()))
    assert resolve(m, ["crm", "local_only"], {"crm": "1.0", "local_only": "3.0"}, upgrade=True) == [m.plugins[0]]


def test_explicit_pin_different_from_installed_is_chosen() -> None:
    m = _manifest(("crm", "1.0", ()), ("crm", "1.1", ()))
    assert _ids(resolve(m, ["crm==1.0"], {"crm": "1.1"})) == [("crm", "1.0")]


def test_dependencies_of_the_chosen_version_only() -> None:
    # crm 2.0 needs fancy, which is absent; a pin to 1.0 avoids it.
    m = _manifest(("crm", "1.0", ()), ("crm", "2.0", ("fancy",)))
    assert _ids(resolve(m, ["crm==1.0"], {})) == [("crm", "1.0")]
    with pytest.raises(DependencyError, match="crm requires fancy"):
        resolve(m, ["crm"], {})
