"""Stage 3c, stage: turn an extracted folder into an immutable store tree.

Write the backend's pycs (compiled by :mod:`atomicplug.pycs` while the zip was
unpacked, so the store is never written again by an import), record every
file's sha256 (for ``verify``), sync, then rename the whole folder into
``store/<id>/<version>-<sha12>`` in one step.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

from atomicplug.fsutil import make_dirs, replace, sync_tree
from atomicplug.store import FileRecord, write_record

__all__ = ["install_tree"]


def _write_pycs(tree: Path, pycs: list[tuple[Path, bytes]]) -> list[FileRecord]:
    records = []
    for path, data in pycs:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)  # durable with the tree's one sync below
        records.append(FileRecord(path=path.relative_to(tree).as_posix(), size=len(data), sha256=sha256(data).hexdigest()))
    return records


def install_tree(staged: Path, store_tree: Path, extracted: list[FileRecord], pycs: list[tuple[Path, bytes]]) -> None:
    """Write the pycs, record, sync and rename ``staged`` into the store (durably).

    One :func:`sync_tree` makes the extracted files, the pycs and the record
    durable together, before the rename publishes the tree.
    """
    compiled = _write_pycs(staged, pycs)
    # A pyc shipped in the zip (packing skips them, a hand-made zip may not) is replaced by ours.
    records = {record.path: record for record in extracted}
    records.update((record.path, record) for record in compiled)
    write_record(staged, list(records.values()))
    sync_tree(staged)
    make_dirs(store_tree.parent)
    if store_tree.exists():
        # Same id, version and sha: an identical tree is already there (immutable), reuse it.
        return
    replace(staged, store_tree)
