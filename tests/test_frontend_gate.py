"""The frontend gate before COMMIT (issue 17): npm dependencies against the host, frontend_check.

The host here is a package.json and a hand-made node_modules, and the check commands are
shell lines: no Node needed. tests/test_frontend_host.py runs the gate with real tsc.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from crash_harness import enumerate_crash_points
from test_cli_transactions import assert_one_line_error, run_cli

from atomicplug.frontend.host import HostPackages
from atomicplug.metadata import NpmDependency
from atomicplug.testing import snapshot

HOST_PACKAGES = {"react": "19.3.1", "react-dom": "19.3.1", "@scope/ui": "2.4.0"}


def make_host(folder: Path, packages: dict[str, str] = HOST_PACKAGES, declared: dict[str, str] | None = None) -> Path:
    """A host app folder: package.json declaring ``declared`` and node_modules holding ``packages``."""
    folder.mkdir(parents=True, exist_ok=True)
    declared = {name: f"^{version}" for name, version in packages.items()} if declared is None else declared
    (folder / "package.json").write_text(json.dumps({"name": "host", "dependencies": declared}))
    for name, version in packages.items():
        module = folder / "node_modules" / name
        module.mkdir(parents=True, exist_ok=True)
        (module / "package.json").write_text(json.dumps({"name": name, "version": version}))
    return folder


def frontend_deps(dependencies: dict[str, str]) -> dict[str, Any]:
    return {"metadata_extra": {"frontend": {"routes": [], "components": [], "dependencies": dependencies}}}


@pytest.fixture
def host_home(home_factory):
    """A home whose frontend_addons (web/src/addons) sits in a host app (web/package.json)."""

    def make(**overrides: Any):
        home = home_factory(**overrides)
        make_host(home.root / "web")
        return home

    return make


def _unchanged(home, before: dict[str, Any], index: bytes) -> None:
    assert snapshot(home.config) == before
    assert (home.config.frontend_addons / "index.ts").read_bytes() == index
    assert not (home.config.frontend_addons / "index.next.ts").exists()


def _state(home) -> tuple[dict[str, Any], bytes]:
    return snapshot(home.config), (home.config.frontend_addons / "index.ts").read_bytes()


# -- npm dependencies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "problem"),
    [
        ({"left-pad": "^1.3.0"}, "needs npm package left-pad ^1.3.0, but the host's package.json ({web}) does not declare it"),
        ({"react": "^18.2.0"}, "needs npm package react ^18.2.0, but the host has 19.3.1"),
        ({"@scope/ui": "~2.3.0"}, "needs npm package @scope/ui ~2.3.0, but the host has 2.4.0"),
        ({"react": "latest"}, "declares npm package react latest, expected an npm version range such as ^1.2.0"),
    ],
)
def test_a_plugin_whose_npm_dependency_the_host_lacks_is_refused_and_nothing_changes(host_home, wanted, problem):
    home = host_home()
    home.installer.install_file(home.package("shop"))
    before, index = _state(home)
    proc = run_cli(home, "install", str(home.package("needy", **frontend_deps(wanted))))
    assert_one_line_error(proc, 1, "needy 1.0.0: frontend " + problem.format(web=home.root / "web"))
    _unchanged(home, before, index)


def test_a_declared_package_missing_from_node_modules_is_refused(home_factory):
    home = home_factory()
    make_host(home.root / "web", packages={}, declared={"chart.js": "^4.0.0"})
    proc = run_cli(home, "install", str(home.package("needy", **frontend_deps({"chart.js": "^4.1"}))))
    assert_one_line_error(proc, 1, f"needs npm package chart.js ^4.1, but it is not installed in {home.root / 'web' / 'node_modules'}")


def test_every_problem_is_counted_in_the_one_line(host_home):
    home = host_home()
    proc = run_cli(home, "install", str(home.package("needy", **frontend_deps({"left-pad": "1", "react": "^17"}))))
    assert_one_line_error(proc, 1, "does not declare it (and 1 more)")


def test_dependencies_the_host_satisfies_install(host_home):
    home = host_home()
    wanted = {"react": "^19.0.0", "react-dom": ">=18 <20", "@scope/ui": "2.x"}
    home.installer.install_file(home.package("needy", **frontend_deps(wanted)))
    assert "addon_needy" in (home.config.frontend_addons / "index.ts").read_text()


def test_node_modules_of_a_parent_folder_count_as_node_resolves_them(home_factory):
    home = home_factory()
    make_host(home.root, packages={"react": "19.3.1"})  # a workspace root: node_modules hoisted here
    (home.root / "web").mkdir()
    (home.root / "web" / "package.json").write_text(json.dumps({"dependencies": {"react": "^19"}}))
    home.installer.install_file(home.package("needy", **frontend_deps({"react": "^19.1"})))


def test_no_host_package_json_is_refused_when_a_plugin_declares_npm_packages(home):
    proc = run_cli(home, "install", str(home.package("needy", **frontend_deps({"react": "^19"}))))
    assert_one_line_error(
        proc, 1, f"needy 1.0.0: frontend needs npm package react ^19, but no package.json was found above {home.config.frontend_addons}"
    )


def test_disable_and_uninstall_need_no_dependency_check(home_factory):
    home = home_factory()
    make_host(home.root / "web")
    home.installer.install_file(home.package("needy", **frontend_deps({"react": "^19"})))
    make_host(home.root / "web", packages={}, declared={})  # the host drops react
    (home.root / "web" / "node_modules" / "react" / "package.json").unlink()
    home.installer.disable("needy")
    with pytest.raises(Exception, match="does not declare it"):
        home.installer.enable("needy")
    home.installer.uninstall("needy")
    assert "addon_needy" not in (home.config.frontend_addons / "index.ts").read_text()


@pytest.mark.parametrize(
    ("npm_range", "version", "ok"),
    [
        ("^1.2.3", "1.9.0", True),
        ("^1.2.3", "2.0.0", False),
        ("^0.2.3", "0.3.0", False),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        (">=1.2 <2", "1.5.0", True),
        (">=1.2 <2", "2.0.0", False),
        ("1.x", "1.4.2", True),
        ("1.2.x", "1.3.0", False),
        ("*", "0.1.0", True),
        ("1.2.3 - 2.3", "2.3.9", True),
        ("1.2.3 - 2.3", "2.4.0", False),
        ("^1 || ^3", "3.1.0", True),
        ("^1 || ^3", "2.0.0", False),
        ("^1.0.0", "1.1.0-beta.1", False),
    ],
)
def test_npm_range_matching(tmp_path, npm_range, version, ok):
    host = HostPackages.load(make_host(tmp_path, packages={"pkg": version}))
    assert (host.problem(NpmDependency("pkg", npm_range)) is None) is ok


# -- frontend_check ---------------------------------------------------------------------


def test_the_check_command_runs_in_the_host_against_the_candidate_index(host_home):
    home = host_home(frontend_check='cp "$ATOMICPLUG_FRONTEND_INDEX" seen.ts && ls src/addons > seen-files.txt')
    home.installer.install_file(home.package("shop"))
    web = home.root / "web"
    assert (web / "seen.ts").read_bytes() == (home.config.frontend_addons / "index.ts").read_bytes()
    # no index.ts yet (`atomicplug init` never ran): the gate wrote what the candidate imports
    assert (web / "seen-files.txt").read_text().split() == ["index.next.ts", "types.ts"]
    assert not (home.config.frontend_addons / "index.next.ts").exists()
    home.installer.uninstall("shop")  # changes the index: checked too
    assert "addon_shop" not in (web / "seen.ts").read_text()


def test_a_failing_check_command_refuses_the_transaction_naming_the_plugin(host_home):
    # Reports an error on the candidate's line that lists addon_bad, as tsc would.
    check = (
        'echo "building..."; n=$(grep -n "^  addon_bad," "$ATOMICPLUG_FRONTEND_INDEX" | cut -d: -f1); '
        'echo "src/addons/index.next.ts($n,3): error TS2741: Property \'title\' is missing"; exit 2'
    )
    home = host_home()
    home.installer.install_file(home.package("shop"))
    home.config_path.write_text(home.config_path.read_text() + f"frontend_check = {json.dumps(check)}\n")
    before, index = _state(home)
    proc = run_cli(home, "install", str(home.package("bad")))
    assert_one_line_error(proc, 1, "failed for bad (exit 2): building... | src/addons/index.next.ts(")
    assert "error TS2741: Property 'title' is missing" in proc.stderr
    _unchanged(home, before, index)


def test_a_check_command_that_does_not_finish_is_stopped_and_refused(host_home):
    home = host_home(frontend_check="echo $$ > pid; exec sleep 60", frontend_check_timeout=0.5)
    proc = run_cli(home, "install", str(home.package("shop")))
    assert_one_line_error(proc, 1, "frontend check `echo $$ > pid; exec sleep 60` did not finish within 0.5s")
    pid = int((home.root / "web" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (home.config.frontend_addons / "index.next.ts").exists()


def test_the_check_command_is_not_run_when_the_addon_list_does_not_change(host_home):
    home = host_home()
    home.installer.install_file(home.package("shop"))
    home.config_path.write_text(home.config_path.read_text() + 'frontend_check = "exit 1"\n')
    from test_frontend_layout import _backend_only

    home.installer.install_file(_backend_only(home))


def test_frontend_check_without_a_host_is_refused(home_factory):
    home = home_factory(frontend_check="true")
    proc = run_cli(home, "install", str(home.package("shop")))
    assert_one_line_error(proc, 1, "frontend_check is set, but no package.json was found above")


@pytest.mark.slow
def test_a_crash_at_every_point_of_a_gated_install_leaves_no_candidate_index(host_home):
    """``frontend_files`` in the snapshot shows a leftover index.next.ts."""

    def setup(home) -> None:
        home.installer.install_file(home.package("shop"))

    enumerate_crash_points(
        lambda name: host_home(name=name, frontend_check="true"),
        setup,
        lambda home: home.installer.install_file(home.package("blog")),
        "frontend-gate",
    )
