"""``verify``: installed files against the sha256 recorded when the tree was staged.

A tree whose record cannot be trusted (malformed, or the package RECORD it names
differs: docs/design.md "The tree record") is reported damaged, with what the
record still vouches for checked, not raised.

The pycs staging built are checked against their record lines like any file,
but no signature covers those lines: ``deep`` also compiles each one's source
again and compares, so a pyc rewritten together with its line is found.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from atomicplug.frontend.layout import frontend_entry_problems
from atomicplug.store import sha256_file
from atomicplug.tree_record import RECORD_NAME, TreeRecord, TreeRecordError

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.package_record import RecordEntry
    from atomicplug.registry import InstalledPlugin

__all__ = ["VerifyReport", "kept_tree_damage", "tree_sealed", "verify_plugin"]


@attrs.frozen
class VerifyReport:
    """Installed files against the store's record, for one plugin."""

    plugin_id: str
    version: str
    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    bad_links: tuple[str, ...] = ()

    @property
    def files_damaged(self) -> bool:
        """Files changed, missing or added: what installing the package again repairs (a wrong link is not)."""
        return bool(self.changed or self.missing or self.extra)

    @property
    def ok(self) -> bool:
        return not (self.files_damaged or self.bad_links)

    def damage(self, shown: int = 3) -> str:
        """The damaged files on one line, at most ``shown`` of each kind: "changed: a, b; added: c"."""
        kinds = (("changed", self.changed), ("missing", self.missing), ("added", self.extra))
        return "; ".join(f"{kind}: {', '.join(paths[:shown])}{', ...' if len(paths) > shown else ''}" for kind, paths in kinds if paths)




def verify_plugin(config: Config, entry: InstalledPlugin, *, deep: bool = False) -> VerifyReport:
    """``entry``'s tree against its record; ``deep``: its pycs against their sources compiled again."""
    tree = config.home / entry.current.tree
    if not tree.is_dir():
        return VerifyReport(entry.id, entry.version, missing=(entry.current.tree,))
    damaged: TreeRecordError | None = None
    sources: Mapping[str, str] = {}
    try:
        record = TreeRecord.read(tree)
        listed, sources = record.files(tree), record.sources
    except TreeRecordError as exc:  # the record, or the package RECORD it names: check what it still vouches for
        damaged, listed = exc, list(exc.trusted)
    recorded = {r.path: r for r in listed}
    changed, missing = [], []
    for path, file_record in sorted(recorded.items()):
        file = tree / path
        if not file.is_file():
            missing.append(path)
        elif file.stat().st_size != file_record.size or sha256_file(file) != file_record.sha256:
            changed.append(path)
    if deep and damaged is None:
        rebuilt_differ = _pycs_not_of_their_source(tree, sources, recorded, {*changed, *missing})
        if rebuilt_differ:  # the record vouches for bytes its sources do not compile to: it is damaged too
            changed = [RECORD_NAME, *sorted({*changed, *rebuilt_differ})]
    if damaged is not None and damaged.path not in changed + missing:
        (changed if (tree / damaged.path).exists() else missing).insert(0, damaged.path)  # the tree record itself
    extra = sorted(_present(tree) - set(recorded) - {RECORD_NAME}) if damaged is None else []  # unknown without the full list
    return VerifyReport(
        entry.id, entry.version, changed=tuple(changed), missing=tuple(missing), extra=tuple(extra), bad_links=_bad_links(config, entry, tree)
    )


def tree_sealed(config: Config, tree_name: str) -> bool:
    """The store tree ``tree_name`` passes the check staging makes of each object it links into a new tree
    (size, mode and mtime stamp: ``objects.sealed``), its record reads, and it holds no file beyond it.

    What an install checks of a tree the store already holds before it makes that tree live
    (docs/design.md "The tree record"): as much as a tree staged again would be checked, at
    the cost of an ``lstat`` per file. False asks for the full check, ``verify_plugin(deep=True)``.
    """
    from atomicplug.objects import sealed

    tree = config.home / tree_name
    try:
        files = TreeRecord.read(tree).files(tree)
        root = os.fspath(tree)
        if not all(sealed(os.lstat(f"{root}/{f.path}"), f.size) for f in files):
            return False
    except (TreeRecordError, OSError):
        return False
    return not _present(tree) - {f.path for f in files} - {RECORD_NAME}


def kept_tree_damage(config: Config, entry: InstalledPlugin) -> VerifyReport | None:
    """What ``verify --deep`` finds damaged in ``entry``'s tree, a tree the store kept that a rollback
    would make live; None when it is intact. Hashed only when ``tree_sealed`` fails."""
    if tree_sealed(config, entry.current.tree):
        return None
    report = verify_plugin(config, entry, deep=True)
    return report if report.files_damaged else None


def _present(tree: Path) -> set[str]:
    """Everything under ``tree`` but its folders, relative to it: a symlink to a folder is an entry
    (never followed). ``os.walk``, where ``Path.rglob`` took ~6x as long for the large bench plugin."""
    root = os.fspath(tree)
    found: set[str] = set()
    for folder, folders, files in os.walk(root):
        prefix = folder[len(root) + 1 :] + "/" if folder != root else ""
        found.update(prefix + name for name in files)
        found.update(prefix + name for name in folders if os.path.islink(f"{folder}/{name}"))
    return found


def _pycs_not_of_their_source(tree: Path, sources: Mapping[str, str], recorded: Mapping[str, RecordEntry], damaged: Collection[str]) -> list[str]:
    """The pycs staging built (``sources``: pyc → its source's sha256) whose source, compiled again by
    this interpreter, gives other bytes than the record says, or whose line names another source.

    A pyc of another interpreter (another cache tag) or optimization level is left alone: this one
    builds level-0 pycs only.
    Damaged pycs and sources (already reported) are skipped.
    """
    from atomicplug.pyc_worker import PYC_FILENAME, compile_source
    from atomicplug.pycs import is_plain_pyc

    wrong = []
    for pyc, source_sha256 in sorted(sources.items()):
        if not is_plain_pyc(pyc):  # another interpreter's, or another optimization level's (an earlier -O staging)
            continue
        source = importlib.util.source_from_cache(pyc)
        entry = recorded.get(source)
        if pyc in damaged or source in damaged or pyc not in recorded or entry is None:
            continue
        _, refused, rebuilt = compile_source(pyc, PYC_FILENAME, (tree / source).read_bytes())  # as staging compiles it
        if entry.sha256 != source_sha256 or refused:
            wrong.append(pyc)
        elif hashlib.sha256(rebuilt).hexdigest() != recorded[pyc].sha256 and not same_code(rebuilt, (tree / pyc).read_bytes()):
            wrong.append(pyc)
    return wrong


def same_code(pyc: bytes, other: bytes) -> bool:
    """Two pycs hold the same code, written alike but for which strings are marked interned
    and which file name the code carries.

    An earlier atomicplug built pycs whose one-character strings were marked interned or
    not as the building process had them (``pyc_worker._intern_the_shared_strings``):
    read back and written again here, both carry this process's marks. One from before the
    object store compiled them under their staging path (``staging/<txid>/…``), not
    ``PYC_FILENAME``: the import system replaces ``co_filename`` when it loads a pyc, so that
    name is not the code. The header (flags, source hash) must be the very same bytes.
    """
    import marshal

    if pyc[:16] != other[:16]:
        return False
    try:
        return marshal.dumps(_named_alike(marshal.loads(pyc[16:]))) == marshal.dumps(_named_alike(marshal.loads(other[16:])))
    except (EOFError, ValueError, TypeError):  # not a marshalled object: not the same code
        return False


def _named_alike(code: object) -> object:
    """``code`` with every nested code object's ``co_filename`` set to one name."""
    import types

    if not isinstance(code, types.CodeType):
        return code
    return code.replace(co_filename="", co_consts=tuple(_named_alike(const) for const in code.co_consts))


def _bad_links(config: Config, entry: InstalledPlugin, tree: Path) -> tuple[str, ...]:
    """Addon entries that do not point where the registry says: the live generation's backend
    entry (and the backend folder's link to it), and the frontend index's import of it."""
    from atomicplug import generations

    bad = []
    view = config.home / generations.CURRENT / generations.BACKEND
    if config.backend_addons.is_dir() and not config.backend_addons.is_symlink():
        view = config.backend_addons  # the layout before generations, until its next transaction converts it
    elif not (config.backend_addons.is_symlink() and Path(os.readlink(config.backend_addons)) == view):
        bad.append(str(config.backend_addons))
    for folder, part in ((view, "backend"),):
        link = folder / entry.id
        wanted = tree / part if entry.enabled and (tree / part).is_dir() else None
        # Resolve the folder first: `current` is itself a link, so `..` in an entry is relative to its target.
        actual = Path(os.path.normpath(os.path.join(os.path.realpath(folder), os.readlink(link)))) if link.is_symlink() else None
        if wanted != actual or (os.path.lexists(link) and not link.is_symlink()):
            bad.append(str(link))
    if config.frontend_index:
        bad.extend(frontend_entry_problems(config, entry))
    return tuple(bad)
