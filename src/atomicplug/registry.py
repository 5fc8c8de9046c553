"""The registry: what is installed and enabled, one per generation.

The registry is derivable (journal + store + ledger), but it is what readers
(``list``, the application's loader, the frontend index) consult. Each
generation holds its own (``generations/<n>/registry.json``, written once, when
the generation is built); ``<home>/addon_registry.json`` is a link to the live
one, so readers see the registry and the backend view switch together
(docs/design.md "Generations").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from atomicplug.errors import OperationError
from atomicplug.frontend.contract import CONFIG_NAMES

__all__ = ["TreeRef", "InstalledPlugin", "Registry"]

SCHEMA = 1
_KEEP_LOADED = 4


@attrs.frozen
class TreeRef:
    """One immutable store tree: a version of a plugin as installed."""

    version: str
    tree: str  # relative to home: store/<id>/<version>-<sha12>
    sha256: str  # of the package zip
    # What the tree holds: a ``backend/`` folder, a ``frontend/addon.config.ts(x)``. A tree never
    # changes, so each is probed once and kept here; None (an entry from a package, or a registry
    # written before) means not known yet (docs/design.md "Generations"). Not part of equality.
    backend: bool | None = attrs.field(default=None, eq=False)
    frontend: bool | None = attrs.field(default=None, eq=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TreeRef:
        return cls(
            version=data["version"], tree=data["tree"], sha256=data["sha256"],
            backend=data.get("backend"), frontend=data.get("frontend"),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": self.version, "tree": self.tree, "sha256": self.sha256}
        if self.backend is not None and self.frontend is not None:
            data.update(backend=self.backend, frontend=self.frontend)
        return data

    def with_parts_known(self, home: str) -> TreeRef:
        """This ref with ``backend`` and ``frontend`` probed in the tree if not known yet."""
        if self.backend is not None and self.frontend is not None:
            return self
        backend, frontend = probe_parts(home, self.tree)
        return attrs.evolve(self, backend=backend, frontend=frontend)

    def has_backend(self, home: str) -> bool:
        """Whether the tree has a ``backend/`` folder: as kept, else probed (one ``stat``)."""
        return self.backend if self.backend is not None else _has_backend_folder(f"{home}/{self.tree}")


@attrs.frozen
class InstalledPlugin:
    """A registry entry: the current tree, its state, and the tree it replaced."""

    id: str
    name: str
    current: TreeRef
    enabled: bool
    requires: tuple[str, ...] = ()
    previous: TreeRef | None = None
    txid: str = ""
    installed_at: str = ""
    signed_by: str | None = None  # the publisher key id (hex) that signed the package
    # This entry's JSON text in registry.json, as read or as last encoded: a transaction encodes
    # only the entries it changed (issue 14). Not an argument, so ``attrs.evolve`` (every change
    # of an entry) starts without it; not part of equality.
    _json: str | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @property
    def version(self) -> str:
        return self.current.version

    @classmethod
    def from_dict(cls, plugin_id: str, data: dict[str, Any], text: str | None = None) -> InstalledPlugin:
        """The entry ``data`` describes; ``text``: the JSON text it was read from (kept, see ``_json``)."""
        previous = data.get("previous")
        entry = cls(
            id=plugin_id,
            name=data.get("name", plugin_id),
            current=TreeRef.from_dict(data),
            enabled=bool(data.get("enabled", True)),
            requires=tuple(data.get("requires", ())),
            previous=TreeRef.from_dict(previous) if previous else None,
            txid=data.get("txid", ""),
            installed_at=data.get("installed_at", ""),
            signed_by=data.get("signed_by"),
        )
        if text is not None:
            object.__setattr__(entry, "_json", text)
        return entry

    def to_json(self) -> str:
        """This entry as one line of JSON (sorted keys), encoded once per entry."""
        text = self._json
        if text is None:
            text = json.dumps(self.to_dict(), sort_keys=True)
            object.__setattr__(self, "_json", text)  # a cache of a frozen value: same text for the same entry
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.current.to_dict(),
            "enabled": self.enabled,
            "requires": list(self.requires),
            "previous": self.previous.to_dict() if self.previous else None,
            "txid": self.txid,
            "installed_at": self.installed_at,
            "signed_by": self.signed_by,
        }


@attrs.frozen
class Registry:
    """The whole registry: plugins by id; the generation it describes, the txid that made it and its parent."""

    plugins: dict[str, InstalledPlugin] = attrs.field(factory=dict)
    generation: int = 0
    txid: str = ""
    parent: int | None = None

    @classmethod
    def load(cls, path: Path, *, required: bool = False) -> Registry:
        """The registry at ``path``; the same bytes are parsed once per process (a transaction
        reads the registry three times: ~5 ms of parsing each with 1000 plugins, against ~0.2 ms
        to read and hash the bytes). Keyed by the bytes themselves, so never stale.

        A missing file is the empty registry of a home with nothing installed, unless it is
        ``required`` (a generation's) or ``path`` is a link into a folder that lacks it (the live
        generation's): then it was removed, and reading it as "no plugins" would let gc remove
        the trees in use and a rollback uninstall everything (OperationError). A ``required`` one
        whose folder is gone too raises FileNotFoundError: gc removed that generation.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            target = path.resolve()
            if target.parent.is_dir() and (required or path.is_symlink()):
                raise OperationError(
                    f"registry {target} is missing (removed by hand?): atomicplug will not read its generation as one "
                    "without plugins; put the file back (from a backup)"
                ) from None
            if not required and path.is_symlink() and _into_a_dangling_link(path):  # `current`, to a generation gone whole
                raise OperationError(
                    f"the live generation {target.parent} is missing (removed by hand?): atomicplug will not read it as "
                    "one without plugins; put the folder back (from a backup)"
                ) from None
            if required:
                raise  # its generation is gone whole (a gc, seen by a reader without the lock)
            return cls()
        loaded = _LOADED.get(raw)
        if loaded is None:
            loaded = cls._parse(path, raw)
            _keep_loaded(raw, loaded)
        return attrs.evolve(loaded, plugins=dict(loaded.plugins))  # the caller's own dict

    @classmethod
    def _parse(cls, path: Path, raw: bytes) -> Registry:
        try:
            read = _read_lines(raw)
            if read is None:
                data = json.loads(raw)
                plugins = {pid: InstalledPlugin.from_dict(pid, entry) for pid, entry in data["plugins"].items()}
            else:
                data, plugins = read
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OperationError(
                f"registry {path} is damaged ({exc}): atomicplug will not guess what its generation holds; "
                "put the file back (from a backup)"
            ) from exc
        generation = data.get("generation", 0)
        if isinstance(generation, str):  # before generations, "generation" held the last txid
            return cls(plugins=plugins, generation=0, txid=generation)
        return cls(plugins=plugins, generation=int(generation), txid=data.get("txid", ""), parent=data.get("parent"))

    def to_json(self) -> bytes:
        """Sorted JSON, one plugin per line: ``indent`` would take the pure-Python encoder (7 ms
        for 1000 plugins, every transaction); each line is one call of the C encoder, made once
        per entry (an entry read from a registry keeps its line: :meth:`InstalledPlugin.to_json`)."""
        head = {"generation": self.generation, "parent": self.parent, "schema": SCHEMA, "txid": self.txid}
        lines = [json.dumps(head, sort_keys=True)[:-1] + _PLUGINS_OPEN]
        lines += [f"  {_json_string(pid)}: {self.plugins[pid].to_json()}," for pid in sorted(self.plugins)]
        if len(lines) > 1:
            lines[-1] = lines[-1][:-1]
        lines.append(_CLOSE)
        return ("\n".join(lines) + "\n").encode()

    def remember(self, raw: bytes) -> None:
        """Let :meth:`load` return this registry for ``raw`` (its :meth:`to_json`, just written)
        without parsing it: the transaction that wrote a generation reads it back after the switch."""
        _keep_loaded(raw, self)

    def with_parts_known(self, home: Path) -> Registry:
        """This registry with every current tree's parts known (probed only where they are not)."""
        root = str(home)
        plugins = {}
        for plugin_id, entry in self.plugins.items():
            known = entry.current.with_parts_known(root)
            plugins[plugin_id] = entry if known is entry.current else attrs.evolve(entry, current=known)
        return attrs.evolve(self, plugins=plugins)

    def with_entries(self, entries: dict[str, InstalledPlugin | None], *, generation: int, txid: str) -> Registry:
        """The registry of the next generation: ``entries`` applied (None removes), this one as parent."""
        plugins = dict(self.plugins)
        for plugin_id, entry in entries.items():
            if entry is None:
                plugins.pop(plugin_id, None)
            else:
                plugins[plugin_id] = entry
        return Registry(plugins=plugins, generation=generation, txid=txid, parent=self.generation or None)

    def dependents(self, changed: Iterable[str], within: Iterable[str]) -> list[str]:
        """The plugins of ``within`` that require one of ``changed``, directly or through others of
        ``within``: nearest first, each step in id order (what the loader re-imports, what the
        health gate imports after an upgrade)."""
        from atomicplug.metadata import PluginRequirement

        reached = set(changed)
        candidates = set(within) & set(self.plugins)
        result: list[str] = []
        frontier = set(reached)
        while frontier:
            found = sorted(
                pid
                for pid in candidates - reached
                if any(PluginRequirement.parse(text).id in frontier for text in self.plugins[pid].requires)
            )
            result += found
            reached.update(found)
            frontier = set(found)
        return result

    def referenced_trees(self) -> set[str]:
        """Store trees the current and previous generation need (gc keeps them)."""
        trees = set()
        for entry in self.plugins.values():
            trees.add(entry.current.tree)
            if entry.previous:
                trees.add(entry.previous.tree)
        return trees


_LOADED: dict[bytes, Registry] = {}  # by the file's bytes: see Registry.load
_PLUGINS_OPEN = ', "plugins": {'
_CLOSE = "}}"
_json_string = json.encoder.encode_basestring_ascii  # json.dumps of one str, without its per-call set-up
_decode = json.JSONDecoder().raw_decode


#: The entries of the registry last kept in _LOADED, by (id, JSON text): a registry read next
#: (the next generation's, the one `rollback --generation` goes back to) decodes only the lines
#: that differ from it.
_ENTRIES: dict[tuple[str, str], InstalledPlugin] = {}


def _keep_loaded(raw: bytes, registry: Registry) -> None:
    global _ENTRIES
    _LOADED[raw] = registry
    while len(_LOADED) > _KEEP_LOADED:
        del _LOADED[next(iter(_LOADED))]
    _ENTRIES = {(pid, text): entry for pid, entry in registry.plugins.items() if (text := entry._json) is not None}


def _read_lines(raw: bytes) -> tuple[dict[str, Any], dict[str, InstalledPlugin]] | None:
    """A registry in :meth:`Registry.to_json`'s layout, read line by line: its head and entries,
    each keeping its line (so an unchanged entry is not encoded again), a line seen in the
    registry read before decoded no more. None for any other layout (an older atomicplug's, a
    hand edit): the caller parses it whole. Accepts exactly what parsing the whole file would:
    each line is checked to end where its value ends, or is a line already known.

    Raises KeyError, TypeError or AttributeError for an entry that is not one (damaged)."""
    try:
        lines = raw.decode().split("\n")
        if len(lines) < 3 or lines[-1] or lines[-2] != _CLOSE or not lines[0].endswith(_PLUGINS_OPEN):
            return None
        head = json.loads(lines[0][: -len(_PLUGINS_OPEN)] + "}")
        plugins: dict[str, InstalledPlugin] = {}
        middle = lines[1:-2]
        if middle:
            middle[-1] += ","  # every plugin's line then ends with its comma
        for line in middle:
            end = line.find('": ', 3) + 3
            plugin_id = line[3 : end - 3]  # an identifier needs no escapes in JSON (anything else: parsed whole)
            if not line.startswith('  "') or end < 3 or not plugin_id.isidentifier():
                return None
            text = line[end:-1]
            entry = _ENTRIES.get((plugin_id, text))
            if entry is None:
                value, stop = _decode(line, end)
                if stop != len(line) - 1 or line[-1] != ",":
                    return None
                entry = InstalledPlugin.from_dict(plugin_id, value, text)
            plugins[plugin_id] = entry
    except ValueError:  # also UnicodeDecodeError: the whole parse says what is damaged
        return None
    if not isinstance(head, dict):
        return None
    return head, plugins


def probe_parts(home: str, tree: str) -> tuple[bool, bool]:
    """(has ``backend/``, has ``frontend/addon.config.ts(x)``) of the store tree ``tree`` (relative to ``home``)."""
    # os.path on strings: a third of pathlib's cost (issue 8)
    folder = f"{home}/{tree}"
    return _has_backend_folder(folder), any(os.path.isfile(f"{folder}/frontend/{name}") for name in CONFIG_NAMES)


def _has_backend_folder(tree_folder: str) -> bool:
    return os.path.isdir(f"{tree_folder}/backend")


def _into_a_dangling_link(path: Path) -> bool:
    """Whether the link ``path`` goes through a folder link that points at nothing: ``<home>/registry.json``
    → ``current/registry.json`` with ``current`` still there and its generation gone. (``current`` itself
    missing is what ``recover`` puts back: until then a reader sees no plugins.)"""
    folder = path.parent / Path(os.readlink(path)).parent
    return folder.is_symlink() and not folder.exists()
