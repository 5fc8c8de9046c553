"""Plugin dependency resolution over a manifest (docs/design.md "One transaction", step 2).

All or nothing: the whole ``requires`` closure of the requested plugins is
chosen at the highest versions that satisfy every constraint on them, in
topological order (dependencies first). Installed plugins that already satisfy
their constraints are kept and left out of the result. Cycles and
unsatisfiable requirements raise :class:`DependencyError` naming the chain.

The algorithm is a fixpoint: pick versions, collect the constraints the picks
impose, pick again, until nothing changes. It does not backtrack over a
dependency's own requirements (a plugin graph is small and shallow); a
conflict it cannot settle is reported, never papered over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from atomicplug.errors import DependencyError, UsageError
from atomicplug.metadata import PluginRequirement
from atomicplug.repository.manifest import Manifest, ManifestEntry

__all__ = ["resolve", "parse_request"]

_MAX_ROUNDS = 50

#: One constraint on an id: its specifier and the chain that led to it (root first).
_Constraint = tuple[SpecifierSet, tuple[str, ...]]


def parse_request(text: str) -> PluginRequirement:
    """``"id"``, ``"id==1.0"``, ``"id>=1.2,<2"``; UsageError otherwise."""
    try:
        return PluginRequirement.parse(text)
    except ValueError:
        raise UsageError(f"expected a plugin id with an optional version specifier like 'crm>=1.2', got {text!r}") from None


def resolve(
    manifest: Manifest,
    requests: Sequence[str],
    installed: Mapping[str, Version | str],
    upgrade: bool = False,
) -> list[ManifestEntry]:
    """The manifest entries to install, dependencies first.

    ``requests`` are ``"id"``/``"id<spec>"`` strings; ``installed`` maps
    installed ids to versions. A requested or required id whose installed
    version satisfies every constraint is kept (not returned) unless it is a
    requested id and ``upgrade`` is true, in which case the highest satisfying
    repository version is chosen (and nothing is returned when that is the
    installed version). Raises UsageError (malformed request) and
    DependencyError (unknown id, unsatisfiable, cycle).
    """
    roots = [parse_request(r) for r in requests]
    have = {k: Version(str(v)) for k, v in installed.items()}
    upgrading = {r.id for r in roots} if upgrade else set()
    choice: dict[str, Version] = {}
    for _ in range(_MAX_ROUNDS):
        constraints = _collect(manifest, roots, choice)
        new_choice = {pid: _pick(manifest, pid, cons, have, pid in upgrading) for pid, cons in constraints.items()}
        if new_choice == choice:
            break
        choice = new_choice
    else:  # pragma: no cover - needs a pathological manifest
        raise DependencyError(f"dependency resolution did not settle after {_MAX_ROUNDS} rounds: {', '.join(sorted(choice))}")
    order = _topological(manifest, [r.id for r in roots], choice)
    result = []
    for pid in order:
        if have.get(pid) == choice[pid]:
            continue
        entry = manifest.find(pid, choice[pid])
        assert entry is not None  # _pick only chooses installed or listed versions
        result.append(entry)
    return result


def _requires_of(manifest: Manifest, pid: str, version: Version) -> tuple[PluginRequirement, ...]:
    entry = manifest.find(pid, version)
    # An installed version the repository no longer lists had its requirements met when installed.
    return entry.requirements if entry else ()


def _collect(manifest: Manifest, roots: Iterable[PluginRequirement], choice: Mapping[str, Version]) -> dict[str, list[_Constraint]]:
    """Every constraint reachable from the roots through the current choices."""
    constraints: dict[str, list[_Constraint]] = {}

    def visit(req: PluginRequirement, chain: tuple[str, ...]) -> None:
        if req.id in chain:
            raise DependencyError(f"dependency cycle: {' -> '.join((*chain, req.id))}")
        here = (*chain, req.id)
        constraints.setdefault(req.id, []).append((req.specifier, here))
        if req.id in choice:
            for dep in _requires_of(manifest, req.id, choice[req.id]):
                visit(dep, here)

    for root in roots:
        visit(root, ())
    return constraints


def _describe(cons: Sequence[_Constraint]) -> str:
    parts = []
    for spec, chain in cons:
        target = f"{chain[-1]}{spec}" if str(spec) else chain[-1]
        if len(chain) == 1:
            parts.append(f"you asked for {target}")
        else:
            parts.append(f"{' -> '.join(chain[:-1])} requires {target}")
    return " and ".join(parts)


def _pick(manifest: Manifest, pid: str, cons: Sequence[_Constraint], have: Mapping[str, Version], upgrade: bool) -> Version:
    def ok(version: Version) -> bool:
        return all(spec.contains(version, prereleases=True) for spec, _ in cons)

    installed = have.get(pid)
    if installed is not None and not upgrade and ok(installed):
        return installed
    listed = [e.parsed_version for e in manifest.versions_of(pid)]
    fitting = [v for v in listed if ok(v)]
    if installed is not None and ok(installed):
        fitting.append(installed)
    if not fitting:
        offered = ", ".join(str(v) for v in listed)
        has = f"the repository has {pid} {offered}" if listed else f"the repository has no {pid}"
        if installed is not None:
            has += f" and {installed} is installed"
        raise DependencyError(f"{_describe(cons)} but {has}")
    finals = [v for v in fitting if not v.is_prerelease]
    return max(finals or fitting)


def _topological(manifest: Manifest, roots: Sequence[str], choice: Mapping[str, Version]) -> list[str]:
    """Dependencies before dependents (post-order DFS); cycles were refused in _collect."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(pid: str) -> None:
        if pid in seen:
            return
        seen.add(pid)
        for dep in _requires_of(manifest, pid, choice[pid]):
            visit(dep.id)
        order.append(pid)

    for root in roots:
        visit(root)
    return order
