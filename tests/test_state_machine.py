"""Property test: install/upgrade/uninstall/rollback/enable/disable/gc/rollback to a generation/crash/recover against a model.

Hypothesis drives random sequences of operations, some of them killed with
SIGKILL at a random crash point (in a forked child) and then recovered; after
every step the observable state (registry, addon links, tables) must equal
the model's, and a crashed operation must have left exactly the old or the
new model state. The model also remembers the state each generation showed:
``rollback --generation N`` and ``rollback --transaction TXID`` must bring
exactly that back, for every generation gc kept, and gc must change nothing
observable. Both plugins installed in one transaction change together, crashed
or not; a flipped byte in an installed file is reported by ``verify`` and
repaired by installing the same package again. A module planted in a store
tree that is not live (a rollback target, an uninstalled version's) never goes
live: a rollback to that tree is refused, and installing its package repairs
it first. Half the homes start with real addon folders, which the first
operation (crashed or not) converts.

Kept data (docs/design.md "Kept data and downgrades"): ``uninstall --keep-data``
leaves the plugin's tables; installing an older version over them is refused
unless ``--allow-downgrade``, which also downgrades an installed plugin, and
must find the downs it needs whatever gc removed meanwhile. While any plugin's
data is kept, the two whole-view rollbacks are not drawn: what they do with
kept data is not modelled.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from atomicplug.config import Config
from atomicplug.errors import AtomicplugError
from atomicplug.installer import Installer, TransactionResult
from atomicplug.registry import Registry
from atomicplug.testing import PluginSpec, build_package, crash_at, make_home, make_keypair, snapshot

IDS = ("alpha", "beta")
VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
#: A module nobody signed, put into a store tree that is not live.
PLANTED = "backend/planted.py"


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
        atexit.register(shutil.rmtree, root, ignore_errors=True)  # it outlives every test of the session
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


#: The model's state: plugin id → its entry, and plugin id → the version whose tables are kept.
Model = tuple[dict[str, ModelPlugin], dict[str, str]]


class InstallerMachine(RuleBasedStateMachine):
    """The model: plugin id → (version, enabled, previous version)."""

    @initialize(existing_folders=st.booleans())
    def setup(self, existing_folders: bool) -> None:
        """A new home; with ``existing_folders`` its addon folders exist as real (empty) folders, converted on first use."""
        self.root = Path(tempfile.mkdtemp(prefix="atomicplug-home-"))
        config_path = make_home(self.root, [packages() and _KEYS["public"]])
        self.config = Config.load(config_path)
        if existing_folders:
            self.config.backend_addons.mkdir(parents=True)
            self.config.frontend_addons.mkdir(parents=True)
        self.installer = Installer(self.config)
        self.model: dict[str, ModelPlugin] = {}
        self.kept: dict[str, str] = {}  # plugin id → the version whose tables an uninstall --keep-data left
        self.shown: dict[int, dict[str, ModelPlugin]] = {}  # generation number → the model it showed
        self.made_by: dict[str, int] = {}  # txid → the generation it made (rollback --transaction)

    def teardown(self) -> None:
        shutil.rmtree(getattr(self, "root", "/nonexistent"), ignore_errors=True)

    # -- the model's view of each operation -----------------------------------
    def _after(self, op: str, plugin_id: str, version: str | None) -> Model | None:
        """The model state (plugins, kept data) after ``op``, or None when the operation must be refused."""
        model, kept = dict(self.model), dict(self.kept)
        current = model.get(plugin_id)
        if op in ("install", "install --allow-downgrade"):
            assert version is not None
            allowed = op != "install"
            if current is None:
                if plugin_id in kept and VERSIONS.index(version) < VERSIONS.index(kept[plugin_id]) and not allowed:
                    return None  # a downgrade of the kept data
                kept.pop(plugin_id, None)
                model[plugin_id] = ModelPlugin(version, True, None)
            elif version == current.version:
                return model, kept
            elif VERSIONS.index(version) > VERSIONS.index(current.version) or allowed:
                model[plugin_id] = ModelPlugin(version, current.enabled, current.version)
            else:
                return None  # downgrade without --allow-downgrade
        elif op in ("uninstall", "uninstall --keep-data"):
            if current is None:
                return None
            del model[plugin_id]
            if op != "uninstall":
                kept[plugin_id] = current.version
        elif op == "rollback":
            if current is None or current.previous is None or self._planted(plugin_id, current.previous):
                return None
            model[plugin_id] = ModelPlugin(current.previous, current.enabled, current.version)
        elif op in ("enable", "disable"):
            if current is None:
                return None
            model[plugin_id] = attrs.evolve(current, enabled=op == "enable")
        return model, kept

    def _tree(self, plugin_id: str, version: str) -> Path | None:
        folder = self.config.store_dir / plugin_id
        return next((t for t in folder.iterdir() if t.name.startswith(f"{version}-")), None) if folder.is_dir() else None

    def _planted(self, plugin_id: str, version: str) -> bool:
        tree = self._tree(plugin_id, version)
        return tree is not None and (tree / PLANTED).exists()

    def _view_refused(self, shown: dict[str, ModelPlugin]) -> bool:
        """A whole-view rollback to ``shown`` would make a tree with a planted module live."""
        return any(self._planted(pid, p.version) for pid, p in shown.items() if pid not in self.model or self.model[pid].version != p.version)

    def _after_all(self, installs: list[tuple[str, str]]) -> Model | None:
        """The model after installing every (id, version) in one transaction; None when any is refused."""
        saved = self.model, self.kept
        try:
            for plugin_id, version in installs:
                after = self._after("install", plugin_id, version)
                if after is None:
                    return None
                self.model, self.kept = after
            return self.model, self.kept
        finally:
            self.model, self.kept = saved

    def _perform(self, op: str, plugin_id: str, version: str | None) -> None:
        installer = Installer(self.config)
        if op.startswith("install"):
            allowed = op == "install --allow-downgrade"
            self._remembering(lambda: installer.install_file(packages()[(plugin_id, version)], allow_downgrade=allowed))
        elif op.startswith("uninstall"):
            self._remembering(lambda: installer.uninstall(plugin_id, keep_data=op == "uninstall --keep-data"))
        else:
            self._remembering(lambda: getattr(installer, op)(plugin_id))

    def _perform_all(self, installs: list[tuple[str, str]]) -> None:
        installer = Installer(self.config)
        taken = [installer.take_in(packages()[install]) for install in installs]
        self._remembering(lambda: installer.install_packages(taken))

    def _remembering(self, transaction: Callable[[], TransactionResult]) -> None:
        """Run ``transaction``; when it switched to a new generation, remember that its txid made it."""
        from atomicplug import generations

        before = generations.current_number(self.config)
        txid = transaction().txid
        live = generations.current_number(self.config)
        if live != before and live is not None:
            self.made_by[txid] = live

    def _record_generation(self) -> None:
        """Remember what the live generation shows (its number is the implementation's to choose)."""
        from atomicplug import generations

        live = generations.current_number(self.config)
        if live is not None:
            self.shown[live] = dict(self.model)

    def _observed(self) -> dict[str, object]:
        state = snapshot(self.config)
        return {"plugins": state["plugins"], "tables": set(state["tables"]), "links": state["links"]}

    def _expected(self, model: dict[str, ModelPlugin], kept: dict[str, str]) -> dict[str, object]:
        plugins = {pid: (p.version, p.enabled) for pid, p in sorted(model.items())}
        versions = [*((pid, p.version) for pid, p in model.items()), *kept.items()]
        tables = set().union(*(_tables(pid, version) for pid, version in versions)) if versions else set()
        links = {}
        for pid, p in model.items():
            if p.enabled:
                tree = next(t for t in (self.config.store_dir / pid).iterdir() if t.name.startswith(f"{p.version}-"))
                links[f"backend/{pid}"] = links[f"frontend/{pid}"] = tree.name
        return {"plugins": plugins, "tables": tables, "links": dict(sorted(links.items()))}

    def _check(self, what: str, expected: Model | None, perform: Callable[[], object]) -> None:
        """``perform()`` is refused exactly when the model refuses ``what``; else the model follows it."""
        try:
            perform()
        except AtomicplugError as exc:
            assert expected is None, f"{what} was refused but the model allows it: {exc}"
            return
        assert expected is not None, f"{what} succeeded but the model refuses it"
        self.model, self.kept = dict(expected[0]), dict(expected[1])
        self._record_generation()

    def _check_crash(self, what: str, expected: Model | None, perform: Callable[[], object], point: int) -> None:
        """``perform()`` killed at crash point ``point``, then recovered: exactly the old or the new model state."""
        if expected is None:
            return
        crash_at(perform, point)
        Installer(self.config).recover()
        observed = self._observed()
        if observed == self._expected(self.model, self.kept):
            return
        self.model, self.kept = dict(expected[0]), dict(expected[1])
        assert observed == self._expected(self.model, self.kept), f"crash at point {point} of {what}: neither old nor new state"
        self._record_generation()

    # -- rules ----------------------------------------------------------------
    ops = st.sampled_from(
        ["install", "install", "install --allow-downgrade", "uninstall", "uninstall --keep-data", "rollback", "enable", "disable"]
    )

    @rule(op=ops, plugin_id=st.sampled_from(IDS), version=st.sampled_from(VERSIONS))
    def operate(self, op: str, plugin_id: str, version: str) -> None:
        expected = self._after(op, plugin_id, version if op.startswith("install") else None)
        self._check(f"{op} {plugin_id} {version}", expected, lambda: self._perform(op, plugin_id, version))

    @rule(first=st.sampled_from(VERSIONS), second=st.sampled_from(VERSIONS))
    def install_both(self, first: str, second: str) -> None:
        """alpha and beta in one transaction: both change, or neither."""
        installs = [("alpha", first), ("beta", second)]
        self._check(f"installing {installs} in one transaction", self._after_all(installs), lambda: self._perform_all(installs))

    @rule(first=st.sampled_from(VERSIONS), second=st.sampled_from(VERSIONS), point=st.integers(1, 160))
    def crash_installing_both(self, first: str, second: str, point: int) -> None:
        installs = [("alpha", first), ("beta", second)]
        self._check_crash(f"installing {installs}", self._after_all(installs), lambda: self._perform_all(installs), point)

    @rule(data=st.data())
    def rollback_transaction(self, data: st.DataObject) -> None:
        """``rollback --transaction TXID``: only the live generation's transaction, back to the view before it."""
        from atomicplug import generations

        if not self.made_by or self.kept:
            return
        txid = data.draw(st.sampled_from(sorted(self.made_by)), label="txid")
        made = self.made_by[txid]
        live = generations.current_number(self.config)
        kept = set(generations.numbers(self.config))
        before = max((n for n in kept if n < made), default=None)
        shown = self.shown.get(before) if made == live and before is not None else None
        expected = (shown, {}) if shown is not None and not self._view_refused(shown) else None
        what = f"rollback --transaction {txid} (made generation {made}, {live} live, {sorted(kept)} kept)"
        self._check(what, expected, lambda: Installer(self.config).rollback(transaction=txid))

    @rule(data=st.data())
    def damage_and_reinstall(self, data: st.DataObject) -> None:
        """A flipped byte in an installed file: verify names it, the same package installed again repairs it."""
        if not self.model:
            return
        plugin_id = data.draw(st.sampled_from(sorted(self.model)), label="damaged plugin")
        tree = self.config.home / Registry.load(self.config.registry_path).plugins[plugin_id].current.tree
        files = sorted(str(f.relative_to(tree)) for f in tree.rglob("*") if f.is_file() and not f.name.startswith(".atomicplug"))
        relative = data.draw(st.sampled_from(files), label="damaged file")
        _flip_a_byte(tree / relative)
        reports = {r.plugin_id: r for r in Installer(self.config).verify()}
        assert relative in reports[plugin_id].changed, f"verify missed the flipped {relative} of {plugin_id}"
        Installer(self.config).install_file(packages()[(plugin_id, self.model[plugin_id].version)])
        assert all(report.ok for report in Installer(self.config).verify()), "reinstalling left damage"

    @rule(data=st.data())
    def plant_a_module_in_a_tree_that_is_not_live(self, data: st.DataObject) -> None:
        """An added module in a store tree no installed plugin uses now: verify does not look there."""
        trees = [
            tree
            for plugin_id in IDS
            if (self.config.store_dir / plugin_id).is_dir()
            for tree in sorted((self.config.store_dir / plugin_id).iterdir())
            if plugin_id not in self.model or not tree.name.startswith(f"{self.model[plugin_id].version}-")
        ]
        if trees:
            tree = data.draw(st.sampled_from(trees), label="tree planted in")
            (tree / PLANTED).write_text("PLANTED = True\n")

    @rule()
    def collect(self) -> None:
        """gc: nothing observable changes; generations it removes can no longer be rolled back to; a
        plugin whose tables are kept keeps its store trees (a later downgrade takes their downs)."""
        before = self._observed()
        Installer(self.config).gc()
        assert self._observed() == before
        assert all(report.ok for report in Installer(self.config).verify())
        for plugin_id, version in self.kept.items():
            trees = [t.name for t in (self.config.store_dir / plugin_id).iterdir()] if (self.config.store_dir / plugin_id).is_dir() else []
            assert any(name.startswith(f"{version}-") for name in trees), f"gc removed {plugin_id} {version}'s tree; its tables are kept"

    @rule(data=st.data())
    def rollback_generation(self, data: st.DataObject) -> None:
        from atomicplug import generations

        live = generations.current_number(self.config)
        kept = set(generations.numbers(self.config))
        if live is None or kept == {live} or self.kept:
            return
        # Any generation kept but the live one, or one gc removed (refused).
        target = data.draw(st.sampled_from(sorted(kept - {live}) + [min(kept) - 1]), label="generation")
        shown = self.shown.get(target) if target in kept else None
        expected = (shown, {}) if shown is not None and not self._view_refused(shown) else None
        what = f"rollback --generation {target} ({sorted(kept)} kept)"
        self._check(what, expected, lambda: Installer(self.config).rollback(generation=target))

    @rule(op=ops, plugin_id=st.sampled_from(IDS), version=st.sampled_from(VERSIONS), point=st.integers(1, 120))
    def crash_and_recover(self, op: str, plugin_id: str, version: str, point: int) -> None:
        expected = self._after(op, plugin_id, version if op.startswith("install") else None)
        self._check_crash(f"{op} {plugin_id}", expected, lambda: self._perform(op, plugin_id, version), point)

    @invariant()
    def matches_model(self) -> None:
        if hasattr(self, "config"):
            assert self._observed() == self._expected(self.model, self.kept)

    @invariant()
    def no_planted_module_is_live(self) -> None:
        if hasattr(self, "config"):
            live = Registry.load(self.config.registry_path).plugins.values() if self.config.registry_path.exists() else ()
            assert not [p.id for p in live if (self.config.home / p.current.tree / PLANTED).exists()]


def _flip_a_byte(path: Path) -> None:
    """What an editor or a stray script does: make it writable, write into it (through the link: the object)."""
    import os

    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        byte = handle.read(1)
        handle.seek(0)
        handle.write(bytes([(byte[0] if byte else 0) ^ 0x01]))


InstallerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_installer_state_machine = pytest.mark.slow(InstallerMachine.TestCase)
