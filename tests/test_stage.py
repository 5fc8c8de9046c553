"""Staging a tree: pycs compiled in the worker must be exactly what the import system expects."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from atomicplug.errors import PackageError
from atomicplug.pycs import BackgroundCompiler
from atomicplug.stages.stage import install_tree
from atomicplug.store import RECORD_NAME, FileRecord, sha256_file

SOURCES = {
    "backend/__init__.py": "from .routes import answer\n",
    "backend/routes.py": "def answer():\n    return 'é' * 2 + str(sum(range(10)))\n",
    "backend/sub/deep.py": "VALUE = [i * i for i in range(5)]\n",
    "frontend/index.ts": "export {}\n",
}
PY_SOURCES = [p for p in SOURCES if p.endswith(".py")]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def compile_through_worker(tree: Path) -> list[tuple[Path, bytes]]:
    """What the extractor does: hand every file the compiler wants to it, then finish."""
    compiler = BackgroundCompiler(tree)
    try:
        for relative in sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()):
            if compiler.wants(relative):
                compiler.take(tree / relative, (tree / relative).read_bytes())
        return compiler.finish()
    finally:
        compiler.close()


def test_pycs_are_byte_identical_to_py_compile_checked_hash(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", SOURCES)
    pycs = compile_through_worker(tree)
    assert sorted(path.relative_to(tree).as_posix() for path, _ in pycs) == sorted(
        f"{Path(p).parent}/__pycache__/{Path(p).stem}.{sys.implementation.cache_tag}.pyc" for p in PY_SOURCES
    )
    for path, data in pycs:
        source = tree / path.relative_to(tree).parent.parent / (path.name.split(".")[0] + ".py")
        expected = py_compile.compile(str(source), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        assert Path(expected) == path
        assert path.read_bytes() == data


def test_the_import_system_uses_the_pycs_without_writing(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", SOURCES)
    install_tree(tree, tmp_path / "store" / "t", [], compile_through_worker(tree))
    (tmp_path / "store" / "t" / "backend").rename(tmp_path / "pkg")
    pyc = next((tmp_path / "pkg" / "__pycache__").glob("routes.*.pyc"))
    before = pyc.read_bytes()
    code = "import pkg, sys; print(pkg.answer()); print(sys.modules['pkg.routes'].__cached__)"
    out = subprocess.run([sys.executable, "-B", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["éé45", str(pyc)]
    assert pyc.read_bytes() == before


@pytest.mark.parametrize(("source", "detail"), [("def nope(:\n", "line 1"), ("x = 1\0\n", "null bytes")])
def test_a_source_that_does_not_compile_is_named(tmp_path: Path, source: str, detail: str) -> None:
    tree = write_tree(tmp_path / "tree", {**SOURCES, "backend/broken.py": source})
    with pytest.raises(PackageError, match=rf"^backend/broken.py does not compile: .*{detail}"):
        compile_through_worker(tree)


def test_no_worker_without_python_sources(tmp_path: Path) -> None:
    compiler = BackgroundCompiler(tmp_path)
    assert compiler.finish() == []
    assert compiler._proc is None


def test_close_stops_a_worker_that_was_never_finished(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", SOURCES)
    compiler = BackgroundCompiler(tree)
    compiler.take(tree / "backend/routes.py", (tree / "backend/routes.py").read_bytes())
    worker = compiler._proc
    assert worker is not None and worker.poll() is None
    compiler.close()
    assert worker.poll() is not None


def test_record_lists_extracted_files_and_pycs_once(tmp_path: Path) -> None:
    shipped = f"backend/__pycache__/routes.{sys.implementation.cache_tag}.pyc"
    staged = write_tree(tmp_path / "staged", {**SOURCES, shipped: "shipped, replaced by ours"})
    extracted = [FileRecord(path=p, size=(staged / p).stat().st_size, sha256=sha256_file(staged / p)) for p in [*SOURCES, shipped]]
    pycs = compile_through_worker(staged)
    store_tree = tmp_path / "store" / "p" / "1.0.0-abc"
    install_tree(staged, store_tree, extracted, pycs)
    assert not staged.exists()
    listed = json.loads((store_tree / RECORD_NAME).read_text())["files"]
    paths = [entry["path"] for entry in listed]
    assert len(paths) == len(set(paths)) == len(SOURCES) + len(PY_SOURCES)
    for entry in listed:
        assert sha256_file(store_tree / entry["path"]) == entry["sha256"]
