"""Stage 3c, stage: turn an extracted folder into an immutable store tree.

Precompile the backend to .pyc (so the store is never written again by an
import), record every file's sha256 (for ``verify``), fsync, then rename the
whole folder into ``store/<id>/<version>-<sha12>`` in one step.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import sys
from pathlib import Path

from atomicplug.errors import PackageError
from atomicplug.fsutil import fsync_dir, make_dirs, replace
from atomicplug.store import FileRecord, sha256_file, write_record

__all__ = ["compile_backend", "install_tree"]


#: With at least this many backend modules, compile them in worker processes too.
PARALLEL_COMPILE_MIN = 64
_MAX_COMPILE_WORKERS = 4

# A worker is a bare interpreter (-I -S: no site, no user paths) running this; it never
# imports the caller's code (multiprocessing's spawn would re-import its __main__).
_WORKER = """
import json, py_compile, sys
out = []
for source, cfile, optimize in json.load(sys.stdin):
    try:
        py_compile.compile(source, cfile=cfile, doraise=True, optimize=optimize,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        out.append(None)
    except py_compile.PyCompileError as exc:
        out.append(str(exc.exc_value).splitlines()[0] if exc.exc_value else exc.msg)
json.dump(out, sys.stdout)
"""


def _compile_one(source: str, cfile: str, optimize: int) -> str | None:
    """Compile one module to a hash-checked pyc; return the error's first line, or None."""
    try:
        py_compile.compile(
            source,
            cfile=cfile,
            doraise=True,
            optimize=optimize,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
    except py_compile.PyCompileError as exc:
        return str(exc.exc_value).splitlines()[0] if exc.exc_value else exc.msg
    return None


def _compile_in_workers(jobs: list[tuple[str, str, int]], workers: int) -> list[str | None] | None:
    """Compile ``jobs`` in ``workers - 1`` child interpreters and this process; None if a child failed."""
    import json
    import subprocess
    import sys

    groups = [jobs[i::workers] for i in range(workers)]
    procs = []
    try:
        for group in groups[1:]:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            procs.append((proc, json.dumps(group).encode()))
    except OSError:
        for proc, _ in procs:
            proc.kill()
            proc.wait()
        return None
    mine = [_compile_one(*job) for job in groups[0]]
    results: list[list[str | None]] = [mine]
    ok = True
    for proc, data in procs:
        try:
            out, _ = proc.communicate(data)
            answer = json.loads(out) if proc.returncode == 0 else None
        except (OSError, ValueError):
            answer = None
        if not isinstance(answer, list) or len(answer) != len(groups[len(results)]):
            ok = False
            answer = []
        results.append(answer)
    if not ok:
        return None
    ordered: list[str | None] = [None] * len(jobs)
    for w, answer in enumerate(results):
        for i, error in enumerate(answer):
            ordered[w + i * workers] = error
    return ordered


def _compile_all(sources: list[Path]) -> list[str | None]:
    """The compile error (or None) of each source, in order; on several cores when many."""
    optimize = sys.flags.optimize
    jobs = [(str(s), importlib.util.cache_from_source(str(s)), optimize) for s in sources]
    workers = min(_MAX_COMPILE_WORKERS, os.cpu_count() or 1, max(1, len(jobs) // (PARALLEL_COMPILE_MIN // 2)))
    if len(jobs) >= PARALLEL_COMPILE_MIN and workers > 1:
        results = _compile_in_workers(jobs, workers)
        if results is not None:
            return results
    return [_compile_one(*job) for job in jobs]


def compile_backend(tree: Path) -> list[FileRecord]:
    """Byte-compile backend/**.py with hash-checked pycs; returns the pyc records.

    Hash-based pycs stay valid whatever the mtimes, and a syntax error is a
    refused package now rather than a broken import after the switch.
    """
    backend = tree / "backend"
    records: list[FileRecord] = []
    if not backend.is_dir():
        return records
    sources = sorted(backend.rglob("*.py"))
    for source, error in zip(sources, _compile_all(sources), strict=True):
        if error is not None:
            raise PackageError(f"{source.relative_to(tree)} does not compile: {error}")
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))  # where _compile_one wrote it
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
