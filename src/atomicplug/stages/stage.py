"""Stage 3c, stage: turn an extracted folder into an immutable store tree.

Precompile the backend to .pyc (so the store is never written again by an
import), record every file's sha256 (for ``verify``), sync, then rename the
whole folder into ``store/<id>/<version>-<sha12>`` in one step.
"""

from __future__ import annotations

import importlib.util
import marshal
from hashlib import sha256
from pathlib import Path

from atomicplug.errors import PackageError
from atomicplug.fsutil import make_dirs, replace, sync_tree
from atomicplug.store import FileRecord, write_record

__all__ = ["compile_backend", "install_tree"]

#: PEP 552 pyc header before the source hash: the magic number, then flags "hash-based,
#: check the source" (what py_compile writes for PycInvalidationMode.CHECKED_HASH).
_CHECKED_HASH_HEADER = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")


def compile_backend(tree: Path) -> list[FileRecord]:
    """Byte-compile backend/**.py into hash-checked pycs; returns the pyc records.

    Hash-based pycs stay valid whatever the mtimes, and a syntax error is a
    refused package now rather than a broken import after the switch. The pyc
    is built in memory (the layout py_compile writes: magic, flags "checked
    hash", the source's hash, the marshalled code) and written once into the
    fresh staging tree: py_compile's temp-file-and-rename per file and a second
    read for the record cost as much as compiling (issue 8). Durability comes
    from the tree's one sync in :func:`install_tree`.
    """
    backend = tree / "backend"
    records: list[FileRecord] = []
    if not backend.is_dir():
        return records
    for source in sorted(backend.rglob("*.py")):
        data = source.read_bytes()
        try:
            code = compile(data, str(source), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:  # ValueError: source with NUL bytes
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PackageError(f"{source.relative_to(tree)} does not compile: {detail}") from exc
        pyc_bytes = _CHECKED_HASH_HEADER + importlib.util.source_hash(data) + marshal.dumps(code)
        pyc = Path(importlib.util.cache_from_source(str(source)))
        pyc.parent.mkdir(exist_ok=True)
        pyc.write_bytes(pyc_bytes)
        records.append(FileRecord(path=pyc.relative_to(tree).as_posix(), size=len(pyc_bytes), sha256=sha256(pyc_bytes).hexdigest()))
    return records


def install_tree(staged: Path, store_tree: Path, extracted: list[FileRecord]) -> None:
    """Compile, record, sync and rename ``staged`` into the store (durably).

    One :func:`sync_tree` makes the extracted files, the pycs and the record
    durable together, before the rename publishes the tree.
    """
    compiled = compile_backend(staged)
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
