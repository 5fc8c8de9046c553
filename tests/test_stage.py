"""Staging a tree: pycs built in memory must be exactly what the import system expects."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from atomicplug.errors import PackageError
from atomicplug.stages.stage import compile_backend, install_tree
from atomicplug.store import FileRecord, RECORD_NAME, sha256_file

SOURCES = {
    "backend/__init__.py": "from .routes import answer\n",
    "backend/routes.py": "def answer():\n    return 'é' * 2 + str(sum(range(10)))\n",
    "backend/sub/deep.py": "VALUE = [i * i for i in range(5)]\n",
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_pycs_are_byte_identical_to_py_compile_checked_hash(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", SOURCES)
    records = compile_backend(tree)
    assert sorted(r.path for r in records) == sorted(
        f"{Path(p).parent}/__pycache__/{Path(p).stem}.{sys.implementation.cache_tag}.pyc" for p in SOURCES
    )
    for record in records:
        ours = (tree / record.path).read_bytes()
        assert (record.size, record.sha256) == (len(ours), sha256_file(tree / record.path))
        source = tree / record.path.replace("/__pycache__", "").rsplit(".", 2)[0]
        (tree / record.path).unlink()
        py_compile.compile(str(source.with_suffix(".py")), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        assert (tree / record.path).read_bytes() == ours


def test_the_import_system_uses_the_pycs_without_writing(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", SOURCES)
    compile_backend(tree)
    (tree / "backend").rename(tmp_path / "pkg")
    pyc = next((tmp_path / "pkg" / "__pycache__").glob("routes.*.pyc"))
    before = pyc.read_bytes()
    code = "import pkg, sys; print(pkg.answer()); print(sys.modules['pkg.routes'].__cached__)"
    out = subprocess.run([sys.executable, "-B", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["éé45", str(pyc)]
    assert pyc.read_bytes() == before


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree", {"backend/broken.py": "def nope(:\n"})
    with pytest.raises(PackageError, match=r"backend/broken.py does not compile: .*line 1"):
        compile_backend(tree)


def test_record_lists_extracted_files_and_pycs_once(tmp_path: Path) -> None:
    staged = write_tree(tmp_path / "staged", {**SOURCES, "backend/__pycache__/routes.cpython-311.pyc": "shipped"})
    extracted = [FileRecord(path=p, size=(staged / p).stat().st_size, sha256=sha256_file(staged / p)) for p in [*SOURCES, "backend/__pycache__/routes.cpython-311.pyc"]]
    store_tree = tmp_path / "store" / "p" / "1.0.0-abc"
    install_tree(staged, store_tree, extracted)
    assert not staged.exists()
    listed = json.loads((store_tree / RECORD_NAME).read_text())["files"]
    paths = [entry["path"] for entry in listed]
    assert len(paths) == len(set(paths)) == len(SOURCES) * 2 + (sys.implementation.cache_tag != "cpython-311")
    for entry in listed:
        assert sha256_file(store_tree / entry["path"]) == entry["sha256"]
