"""Property test: install/upgrade/uninstall/rollback/enable/disable/gc/rollback to a generation/crash/recover against a model.

Hypothesis drives random sequences of operations, some of them killed with
SIGKILL at a random crash point (in a forked child) and then recovered; after
every step the observable state (registry, addon links, tables) must equal
the model's, and a crashed operation must have left exactly the old or the
new model state. The model also remembers the state each generation showed:
``rollback --generation N`` must bring exactly that back, for every
generation gc kept, and gc must change nothing observable.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from atomicplug.config import Config
from atomicplug.errors import AtomicplugError
from atomicplug.installer import Installer
from atomicplug.testing import PluginSpec, build_package, crash_at, make_home, make_keypair, snapshot

IDS = ("alpha", "beta")
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")


def _migrations(plugin_id: str, version: str) -> dict[str, tuple[str, str]]:
    """Each version adds one table: 1.0.0 → t1, 1.1.0 → t1+t2, 2.0.0 → t1+t2+t3."""
    count = VERSIONS.index(version) + 1
    return {
        f"000{n}_t{n}": (f"CREATE TABLE {plugin_id}_t{n} (id INTEGER PRIMARY KEY);", f"DROP TABLE {plugin_id}_t{n};")
        for n in range(1, count + 1)
    }


def _tables(plugin_id: str, version: str) -> set[str]:
    return {f"{plugin_id}_t{n}" for n in range(1, VERSIONS.index(version) + 2)}


_PACKAGES: dict[tuple[str, str], Path] = {}
_KEYS: dict[str, Path] = {}


def packages() -> dict[tuple[str, str], Path]:
    """Build every (id, version) package once per test session."""
    if not _PACKAGES:
        root = Path(tempfile.mkdtemp(prefix="atomicplug-sm-"))
        keys = make_keypair(root / "keys")
        _KEYS["public"] = keys.public_path
        for plugin_id in IDS:
            for version in VERSIONS:
                spec = PluginSpec(id=plugin_id, version=version, migrations=_migrations(plugin_id, version))
                _PACKAGES[(plugin_id, version)] = build_package(spec, root / "packages", keys.secret)
    return _PACKAGES


@attrs.frozen
class ModelPlugin:
    version: str
    enabled: bool
    previous: str | None


class InstallerMachine(RuleBasedStateMachine):
    """The model: plugin id → (version, enabled, previous version)."""

    @initialize()
    def setup(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="atomicplug-home-"))
        config_path = make_home(self.root, [packages() and _KEYS["public"]])
        self.config = Config.load(config_path)
        self.installer = Installer(self.config)
        self.model: dict[str, ModelPlugin] = {}
        self.shown: dict[int, dict[str, ModelPlugin]] = {}  # generation number → the model it showed

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "root", "/nonexistent"), ignore_errors=True)

    # -- the model's view of each operation -----------------------------------
    def _after(self, op: str, plugin_id: str, version: str | None) -> dict[str, ModelPlugin] | None:
        """The model state after ``op``, or None when the operation must be refused."""
        model = dict(self.model)
        current = model.get(plugin_id)
        if op == "install":
            assert version is not None
            if current is None:
                model[plugin_id] = ModelPlugin(version, True, None)
            elif VERSIONS.index(version) > VERSIONS.index(current.version):
                model[plugin_id] = ModelPlugin(version, current.enabled, current.version)
            elif version == current.version:
                return model
            else:
                return None  # downgrade without --allow-downgrade
        elif op == "uninstall":
            if current is None:
                return None
            del model[plugin_id]
        elif op == "rollback":
            if current is None or current.previous is None:
                return None
            model[plugin_id] = ModelPlugin(current.previous, current.enabled, current.version)
        elif op in ("enable", "disable"):
            if current is None:
                return None
            model[plugin_id] = attrs.evolve(current, enabled=op == "enable")
        return model

    def _perform(self, op: str, plugin_id: str, version: str | None) -> None:
        installer = Installer(self.config)
        if op == "install":
            installer.install_file(packages()[(plugin_id, version)])
        elif op == "uninstall":
            installer.uninstall(plugin_id)
        else:
            getattr(installer, op)(plugin_id)

    def _record_generation(self) -> None:
        """Remember what the live generation shows (its number is the implementation's to choose)."""
        from atomicplug import generations

        live = generations.current_number(self.config)
        if live is not None:
            self.shown[live] = dict(self.model)

    def _observed(self) -> dict[str, object]:
        state = snapshot(self.config)
        return {"plugins": state["plugins"], "tables": set(state["tables"]), "links": state["links"]}

    def _expected(self, model: dict[str, ModelPlugin]) -> dict[str, object]:
        plugins = {pid: (p.version, p.enabled) for pid, p in sorted(model.items())}
        tables = set().union(*(_tables(pid, p.version) for pid, p in model.items())) if model else set()
        links = {}
        for pid, p in model.items():
            if p.enabled:
                tree = next(t for t in (self.config.store_dir / pid).iterdir() if t.name.startswith(f"{p.version}-"))
                links[f"backend/{pid}"] = links[f"frontend/{pid}"] = tree.name
        return {"plugins": plugins, "tables": tables, "links": dict(sorted(links.items()))}

    # -- rules ----------------------------------------------------------------
    ops = st.sampled_from(["install", "install", "uninstall", "rollback", "enable", "disable"])

    @rule(op=ops, plugin_id=st.sampled_from(IDS), version=st.sampled_from(VERSIONS))
    def operate(self, op: str, plugin_id: str, version: str) -> None:
        expected = self._after(op, plugin_id, version if op == "install" else None)
        try:
            self._perform(op, plugin_id, version)
        except AtomicplugError:
            assert expected is None, f"{op} {plugin_id} {version} was refused but the model allows it"
            return
        assert expected is not None, f"{op} {plugin_id} {version} succeeded but the model refuses it"
        self.model = expected
        self._record_generation()

    @rule()
    def collect(self) -> None:
        """gc: nothing observable changes; generations it removes can no longer be rolled back to."""
        before = self._observed()
        Installer(self.config).gc()
        assert self._observed() == before
        assert all(report.ok for report in Installer(self.config).verify())

    @rule(data=st.data())
    def rollback_generation(self, data: st.DataObject) -> None:
        from atomicplug import generations

        live = generations.current_number(self.config)
        kept = set(generations.numbers(self.config))
        if live is None or kept == {live}:
            return
        # Any generation kept but the live one, or one gc removed (refused).
        target = data.draw(st.sampled_from(sorted(kept - {live}) + [min(kept) - 1]), label="generation")
        expected = self.shown.get(target) if target in kept else None
        try:
            Installer(self.config).rollback(generation=target)
        except AtomicplugError:
            assert expected is None, f"rollback to kept generation {target} was refused"
            return
        assert expected is not None, f"rollback to generation {target} succeeded but it was not kept"
        self.model = dict(expected)
        self._record_generation()

    @rule(op=ops, plugin_id=st.sampled_from(IDS), version=st.sampled_from(VERSIONS), point=st.integers(1, 120))
    def crash_and_recover(self, op: str, plugin_id: str, version: str, point: int) -> None:
        expected = self._after(op, plugin_id, version if op == "install" else None)
        if expected is None:
            return
        crash_at(lambda: self._perform(op, plugin_id, version), point)
        Installer(self.config).recover()
        observed = self._observed()
        old, new = self._expected(self.model), None
        if observed == old:
            return
        self.model = expected
        new = self._expected(self.model)
        assert observed == new, f"crash at point {point} of {op} {plugin_id}: neither old nor new state"
        self._record_generation()

    @invariant()
    def matches_model(self) -> None:
        if hasattr(self, "config"):
            assert self._observed() == self._expected(self.model)


InstallerMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_installer_state_machine = InstallerMachine.TestCase
