"""Stage 2, plan: decide every plugin's before and after state, or refuse.

docs/design.md "One transaction" step 2. The planners turn a request and the
live registry into a :class:`~atomicplug.change.Plan` of
:class:`~atomicplug.change.Change` values, or refuse; nothing on disk changes
while planning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from packaging.version import Version

from atomicplug.errors import (
    DependencyError,
    NotInstalledError,
    OperationError,
    UsageError,
)
from atomicplug.change import Action, Change, Plan
from atomicplug.intake import Package
from atomicplug.registry import InstalledPlugin, Registry, TreeRef
from atomicplug.store import tree_name

if TYPE_CHECKING:
    from atomicplug.metadata import PluginRequirement

__all__ = [
    "check_dependencies",
    "plan_install",
    "plan_generation",
    "plan_uninstall",
    "plan_rollback",
    "plan_toggle",
]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_requirement(text: str) -> PluginRequirement:
    from atomicplug.metadata import PluginRequirement

    return PluginRequirement.parse(text)


def check_dependencies(registry: Registry) -> None:
    """Every installed plugin's ``requires`` holds in ``registry`` (the state after a plan)."""
    problems = []
    disabled: list[str] = []  # requirements installed but disabled: --with-requirements resolves those
    for entry in sorted(registry.plugins.values(), key=lambda e: e.id):
        for text in entry.requires:
            requirement = _parse_requirement(text)
            dep = registry.plugins.get(requirement.id)
            if dep is None:
                problems.append(f"{entry.id} requires {text}, which would not be installed")
            elif not requirement.is_satisfied_by(dep.version):
                problems.append(f"{entry.id} requires {text}, but {requirement.id} would be {dep.version}")
            elif entry.enabled and not dep.enabled:
                # The state `disable` refuses to create must not be reached by enable or install either.
                problems.append(f"{entry.id} requires {requirement.id}, which is disabled (enable it too: --with-requirements)")
                disabled.append(entry.id)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        only_disabled = len(disabled) == len(problems)
        raise DependencyError(
            problems[0] + more, option="with_requirements" if only_disabled else None, plugins=tuple(dict.fromkeys(disabled))
        )


def _disabled_requirements(registry: Registry, plugin_ids: Iterable[str]) -> list[str]:
    """Installed but disabled plugins that ``plugin_ids`` need, transitively, dependencies first."""
    order: list[str] = []

    def visit(pid: str, chain: tuple[str, ...]) -> None:
        entry = registry.plugins.get(pid)
        if entry is None or pid in chain:
            return
        for text in entry.requires:
            dep = registry.plugins.get(_parse_requirement(text).id)
            if dep is not None:
                visit(dep.id, (*chain, pid))
                if not dep.enabled and dep.id not in order:
                    order.append(dep.id)

    for pid in plugin_ids:
        visit(pid, ())
    return order


def _enable_changes(registry: Registry, plugin_ids: Iterable[str], txid: str) -> list[Change]:
    """Steps enabling the disabled requirements of ``plugin_ids`` (``--with-requirements``)."""
    return [
        Change(plugin_id=pid, action="none", before=registry.plugins[pid], after=attrs.evolve(registry.plugins[pid], enabled=True, txid=txid))
        for pid in _disabled_requirements(registry, plugin_ids)
    ]


def _with_requirements_enabled(changes: list[Change], enabling: list[Change]) -> list[Change]:
    """``enabling`` (``--with-requirements``) merged into ``changes``: a requirement the plan also
    installs or upgrades comes enabled by that change, not by a second change for the same id."""
    changing = {change.plugin_id for change in changes}
    enabled = {change.plugin_id for change in enabling}
    merged = [
        attrs.evolve(change, after=attrs.evolve(change.after, enabled=True)) if change.plugin_id in enabled and change.after else change
        for change in changes
    ]
    return [change for change in enabling if change.plugin_id not in changing] + merged


def in_dependency_order(changes: Sequence[Change], *, refuse_cycles: bool = False) -> list[Change]:
    """``changes`` in the order their migrations and hooks run: what comes (install, upgrade,
    downgrade, enable) after the plugins it requires; then what goes (uninstall), dependents first.

    Otherwise the given order holds (the resolver's, the user's). A cycle among what comes is
    refused with ``refuse_cycles`` (DependencyError), else left in the given order: a home whose
    plugins already require each other can still be rolled back.
    """
    coming = [change for change in changes if change.action != "uninstall"]
    going = [change for change in changes if change.action == "uninstall"]

    def requires(change: Change, entry_of: Callable[[Change], InstalledPlugin | None]) -> set[str]:
        entry = entry_of(change)
        return {_parse_requirement(text).id for text in entry.requires} if entry is not None else set()

    def ordered(group: list[Change], edges: Callable[[Change], set[str]], cycles: bool) -> list[Change]:
        by_id: dict[str, list[Change]] = {}
        for change in group:
            by_id.setdefault(change.plugin_id, []).append(change)
        result: list[Change] = []
        done: set[str] = set()

        def visit(pid: str, chain: tuple[str, ...]) -> None:
            if pid in done:
                return
            if pid in chain:
                if cycles:
                    raise DependencyError(f"dependency cycle: {' -> '.join((*chain[chain.index(pid):], pid))}")
                return
            for change in by_id[pid]:
                for dep in sorted(edges(change) & set(by_id)):
                    visit(dep, (*chain, pid))
            done.add(pid)
            result.extend(by_id[pid])

        for change in group:
            visit(change.plugin_id, ())
        return result

    first = ordered(coming, lambda c: requires(c, lambda c: c.after), refuse_cycles)
    # What goes: a plugin after those that require it (their downs may still use its tables).
    dependents = {c.plugin_id: {d.plugin_id for d in going if c.plugin_id in requires(d, lambda d: d.before)} for c in going}
    last = ordered(going, lambda c: dependents[c.plugin_id], False)
    return first + last


def _dependents(registry: Registry, plugin_id: str) -> list[str]:
    return sorted(e.id for e in registry.plugins.values() if any(_parse_requirement(r).id == plugin_id for r in e.requires))


def plan_install(
    registry: Registry,
    packages: Sequence[Package],
    txid: str,
    home: Path,
    *,
    allow_downgrade: bool = False,
    rehearse: bool = True,
    with_requirements: bool = False,
) -> Plan:
    """Install or upgrade ``packages`` (dependencies first) in one transaction.

    An equal version already installed is a no-op (no change); an older one needs
    ``allow_downgrade``. The result must leave every ``requires`` satisfied
    (and enabled: ``with_requirements`` enables disabled requirements in the same plan).
    """
    changes = []
    seen: set[str] = set()
    for package in packages:
        meta = package.metadata
        if meta.id in seen:
            raise UsageError(f"plugin {meta.id} is named twice in one transaction")
        seen.add(meta.id)
        before = registry.plugins.get(meta.id)
        version = meta.version
        wanted = meta.parsed_version
        if before is not None:
            installed = Version(before.version)
            if installed == wanted and before.current.sha256 == package.sha256:
                continue
            if installed == wanted:
                raise OperationError(
                    f"{meta.id} {version} is installed from a different package (sha256 {before.current.sha256[:12]}); "
                    "uninstall it first or publish a new version"
                )
            if wanted < installed and not allow_downgrade:
                raise UsageError(
                    f"{meta.id} {before.version} is installed; installing {version} is a downgrade (use --allow-downgrade)",
                    option="allow_downgrade",
                    plugins=(meta.id,),
                )
            action: Action = "upgrade" if wanted > installed else "downgrade"
        else:
            action = "install"
        tree = tree_name(meta.id, version, package.sha256)
        after = InstalledPlugin(
            id=meta.id,
            name=meta.name,
            current=TreeRef(version=version, tree=tree, sha256=package.sha256),
            enabled=before.enabled if before else True,
            requires=tuple(str(r) for r in meta.requires),
            previous=before.current if before else None,
            txid=txid,
            installed_at=_now(),
            signed_by=package.signed_by,
        )
        changes.append(
            Change(
                plugin_id=meta.id,
                action=action,
                before=before,
                after=after,
                package=package.sha256,
                stage_tree=not (home / tree).is_dir(),
                allow_downgrade=allow_downgrade,
            )
        )
    operation = "upgrade" if changes and all(change.action == "upgrade" for change in changes) else "install"
    if changes and with_requirements:
        staged = Plan(txid=txid, operation=operation, changes=tuple(changes)).registry_after(registry)
        changes = _with_requirements_enabled(changes, _enable_changes(staged, [s.plugin_id for s in changes], txid))
    changes = in_dependency_order(changes, refuse_cycles=True)
    plan = Plan(txid=txid, operation=operation, changes=tuple(changes), rehearse=rehearse)
    if changes:
        check_dependencies(plan.registry_after(registry))
    return plan


def plan_uninstall(
    registry: Registry, plugin_ids: Iterable[str], txid: str, *, cascade: bool = False, keep_data: bool = False
) -> Plan:
    """Remove plugins; dependents block it unless ``cascade`` removes them first."""
    targets: list[str] = []

    def visit(pid: str, chain: tuple[str, ...]) -> None:
        if pid in targets:
            return
        if pid not in registry.plugins:
            raise NotInstalledError(f"{pid} is not installed")
        dependents = [d for d in _dependents(registry, pid) if d not in chain]
        if dependents and not cascade:
            raise DependencyError(
                f"{', '.join(dependents)} require(s) {pid}; uninstall them first or use --cascade", option="cascade", plugins=tuple(dependents)
            )
        for dependent in dependents:
            visit(dependent, chain + (pid,))
        targets.append(pid)  # dependents were appended before us

    for pid in plugin_ids:
        visit(pid, ())
    changes = tuple(
        Change(plugin_id=pid, action="uninstall", before=registry.plugins[pid], after=None, keep_data=keep_data) for pid in targets
    )
    return Plan(txid=txid, operation="uninstall", changes=changes)


def plan_rollback(
    registry: Registry, plugin_id: str, txid: str, home: Path, *, fetched: Package | None = None, signed_by: str | None = None
) -> Plan:
    """Go back to the version the current one replaced: its tree in the store, else ``fetched``.

    ``fetched`` is that version's package, verified (a cluster node that synced
    past it never made its tree): the transaction stages the tree from it.
    ``signed_by``: who signed the package of the tree in the store (a kept generation knows;
    None: unknown), so the entry does not keep the signer of the version it leaves.
    """
    before = registry.plugins.get(plugin_id)
    if before is None:
        raise NotInstalledError(f"{plugin_id} is not installed")
    if before.previous is None:
        raise OperationError(f"{plugin_id} {before.version} has no previous version to roll back to")
    target = before.previous
    from atomicplug.metadata import Metadata

    if (home / target.tree).is_dir():
        meta, package = Metadata.from_json_bytes((home / target.tree / "metadata.json").read_bytes()), None
    elif fetched is not None and fetched.sha256 == target.sha256:
        meta, package, signed_by = fetched.metadata, fetched.sha256, fetched.signed_by
    else:
        raise OperationError(
            f"{plugin_id} {target.version} is no longer in the store ({target.tree}); "
            f"install its package again (atomicplug install --allow-downgrade)"
        )
    after = attrs.evolve(
        before,
        current=target,
        previous=before.current,
        name=meta.name,
        requires=tuple(str(r) for r in meta.requires),
        txid=txid,
        installed_at=_now(),
        signed_by=signed_by,
    )
    action: Action = "downgrade" if Version(target.version) < Version(before.version) else "upgrade"
    change = Change(plugin_id=plugin_id, action=action, before=before, after=after, package=package, stage_tree=package is not None)
    plan = Plan(txid=txid, operation="rollback", changes=(change,))
    check_dependencies(plan.registry_after(registry))
    return plan


def plan_generation(
    registry: Registry, target: Registry, txid: str, home: Path, *, keep_data: bool = False
) -> Plan:
    """Back to the view of an earlier generation (``rollback --generation``/``--transaction``).

    Each plugin whose entry differs goes to its entry in ``target``: installed,
    upgraded, downgraded, enabled, disabled or uninstalled (tables dropped unless
    ``keep_data``), all in one transaction; its store trees must still exist. An
    entry that differs only in its ``previous`` tree gets generation N's too, so
    a later per-plugin ``rollback`` does what it would have done in generation N.
    """
    from atomicplug.metadata import Metadata

    changes = []
    for pid in sorted(set(registry.plugins) | set(target.plugins)):
        before, wanted = registry.plugins.get(pid), target.plugins.get(pid)
        if wanted is None:
            assert before is not None
            changes.append(Change(plugin_id=pid, action="uninstall", before=before, after=None, keep_data=keep_data))
            continue
        same_tree = before is not None and before.current == wanted.current
        if same_tree and before is not None and (before.enabled, before.previous) == (wanted.enabled, wanted.previous):
            continue  # a changed ``previous`` alone is still a change: a later `rollback <id>` goes where N's would
        if not (home / wanted.current.tree).is_dir():
            raise OperationError(f"{pid} {wanted.version} is no longer in the store ({wanted.current.tree}); it was collected")
        Metadata.from_json_bytes((home / wanted.current.tree / "metadata.json").read_bytes())  # still a valid tree
        after = attrs.evolve(wanted, txid=txid, installed_at=_now())
        if before is None:
            action: Action = "install"
        elif same_tree:
            action = "none"
        else:
            action = "downgrade" if Version(wanted.version) < Version(before.version) else "upgrade"
        changes.append(Change(plugin_id=pid, action=action, before=before, after=after))
    # Dependencies first for what comes, dependents first for what goes (uninstall order).
    plan = Plan(txid=txid, operation="rollback", changes=tuple(in_dependency_order(changes)))
    check_dependencies(plan.registry_after(registry))
    return plan


def plan_toggle(registry: Registry, plugin_id: str, enabled: bool, txid: str, *, with_requirements: bool = False) -> Plan:
    """Enable or disable: the addon entries come or go; store and tables stay.

    Enabling needs every requirement enabled (``with_requirements`` enables them
    in the same transaction); disabling refuses while an enabled plugin needs it.
    """
    before = registry.plugins.get(plugin_id)
    if before is None:
        raise NotInstalledError(f"{plugin_id} is not installed")
    operation = "enable" if enabled else "disable"
    if before.enabled == enabled:
        return Plan(txid=txid, operation=operation, changes=())
    if not enabled:
        dependents = [d for d in _dependents(registry, plugin_id) if registry.plugins[d].enabled]
        if dependents:
            raise DependencyError(f"{', '.join(dependents)} require(s) {plugin_id}; disable them first", plugins=tuple(dependents))
    after = attrs.evolve(before, enabled=enabled, txid=txid)
    changes = [Change(plugin_id=plugin_id, action="none", before=before, after=after)]
    if enabled and with_requirements:
        changes = _enable_changes(registry, [plugin_id], txid) + changes
    plan = Plan(txid=txid, operation=operation, changes=tuple(changes))
    if enabled:
        check_dependencies(plan.registry_after(registry))
    return plan
