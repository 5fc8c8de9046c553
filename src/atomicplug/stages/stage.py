"""Stage 3c, stage: turn an extracted folder into an immutable store tree.

Precompile the backend to .pyc (so the store is never written again by an
import), record every file's sha256 (for ``verify``), fsync, then rename the
whole folder into ``store/<id>/<version>-<sha12>`` in one step.
"""

from __future__ import annotations

import os
import py_compile
from pathlib import Path

from atomicplug.errors import PackageError
from atomicplug.fsutil import fsync_dir, make_dirs, replace
from atomicplug.store import FileRecord, sha256_file, write_record

__all__ = ["compile_backend", "install_tree"]


def compile_backend(tree: Path) -> list[FileRecord]:
    """Byte-compile backend/**.py with hash-checked pycs; returns the pyc records.

    Hash-based pycs stay valid whatever the mtimes, and a syntax error is a
    refused package now rather than a broken import after the switch.
    (Compiling in worker processes was measured (issue 8) and was slower on
    two busy cores than this loop, so it stays serial.)
    """
    backend = tree / "backend"
    records: list[FileRecord] = []
    if not backend.is_dir():
        return records
    for source in sorted(backend.rglob("*.py")):
        try:
            compiled = py_compile.compile(
                str(source),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
        except py_compile.PyCompileError as exc:
            relative = source.relative_to(tree)
            detail = str(exc.exc_value).splitlines()[0] if exc.exc_value else exc.msg
            raise PackageError(f"{relative} does not compile: {detail}") from exc
        pyc = Path(compiled)
        records.append(FileRecord(path=pyc.relative_to(tree).as_posix(), size=pyc.stat().st_size, sha256=sha256_file(pyc)))
    return records


def _fsync_files(paths: list[Path]) -> None:
    """fsync each file, several at once (fsync releases the GIL; the disk batches them)."""
    def sync(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if len(paths) < 4:
        for path in paths:
            sync(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="atomicplug-fsync") as pool:
        for _ in pool.map(sync, paths):
            pass


def _fsync_tree(tree: Path, files: list[FileRecord]) -> None:
    """fsync the files this stage wrote and the folders whose entries it changed, bottom-up.

    Extraction already made every extracted file and folder durable; this stage
    adds only ``__pycache__`` folders (and their pycs) and the record at the top.
    """
    _fsync_files([tree / record.path for record in files])
    changed = {tree}
    for record in files:
        folder = (tree / record.path).parent
        if folder != tree:
            changed.add(folder)  # the new __pycache__ (its pyc entries)
            changed.add(folder.parent)  # the folder that gained __pycache__
    for folder in sorted(changed, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)


def install_tree(staged: Path, store_tree: Path, extracted: list[FileRecord]) -> None:
    """Compile, record, fsync and rename ``staged`` into the store (durably)."""
    compiled = compile_backend(staged)
    write_record(staged, extracted + compiled)
    from atomicplug.store import RECORD_NAME

    _fsync_tree(staged, compiled + [FileRecord(path=RECORD_NAME, size=0, sha256="")])
    make_dirs(store_tree.parent)
    if store_tree.exists():
        # Same id, version and sha: an identical tree is already there (immutable), reuse it.
        return
    replace(staged, store_tree)
