"""Portable pycs for the object store (atomicplug.pycs): one pyc per source and interpreter, wherever it lies.

The tree-mode compiler (real paths, byte-identical to py_compile) is tested in test_stage.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atomicplug.errors import OperationError, PackageError
from atomicplug.package_record import RecordEntry
from atomicplug.pycs import IN_PROCESS_BYTES, PYC_FILENAME, SourceCompiler, build_pyc, pyc_name, pyc_sources

SOURCE = b'''"""A module whose code objects nest."""


class Greeter:
    def greet(self, name):
        def shout(text):
            raise RuntimeError("boom " + text)
        return shout(name)


VALUE = [n * n for n in range(5)]
'''

_COMPILE_ELSEWHERE = """
import sys
sys.path.insert(0, sys.argv[1])
{preload}
from atomicplug.pycs import build_pyc
sys.stdout.buffer.write(build_pyc(open(sys.argv[2], 'rb').read()))
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def compile_in_a_fresh_process(source: Path, preload: str = "") -> bytes:
    src = str(Path(__file__).resolve().parent.parent / "src")
    code = _COMPILE_ELSEWHERE.format(preload=preload)
    return subprocess.run([sys.executable, "-c", code, src, str(source)], capture_output=True, check=True).stdout


def test_the_pyc_depends_only_on_the_source_not_on_its_path_or_the_process(tmp_path: Path) -> None:
    for folder in ("one", "other/deeper"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "mod.py").write_bytes(SOURCE)
    here = build_pyc(SOURCE)
    assert compile_in_a_fresh_process(tmp_path / "one" / "mod.py") == here
    busy = "import json, email.message, http.client, asyncio, sqlite3, decimal"  # other interned strings around
    assert compile_in_a_fresh_process(tmp_path / "other/deeper" / "mod.py", busy) == here
    assert PYC_FILENAME.encode() in here and b"mod.py" not in here


def test_the_pyc_of_one_character_strings_does_not_depend_on_what_the_process_interned(tmp_path: Path) -> None:
    """Found from outside: a one-character string (or the empty one) is a singleton, and marshal marks it
    interned when anything in the process interned it, so the same source gave other pyc bytes in the
    billing backend than in the CLI, and `verify --deep` reported the backend's pycs as changed."""
    source = tmp_path / "mod.py"
    source.write_bytes(b'SEP = " "\nLINE = "-" * 20 + "\\n" + "\\xa7"\nNONE = ""\n')
    here = build_pyc(source.read_bytes())
    assert compile_in_a_fresh_process(source) == here
    assert compile_in_a_fresh_process(source, "sys.intern(' '); sys.intern('-'); sys.intern(chr(0xa7)); sys.intern('')") == here


def test_a_pyc_compiled_under_another_name_shows_the_real_path_in_tracebacks(tmp_path: Path) -> None:
    """SourceLoader fixes co_filename up to the real path at load time (``_imp._fix_co_filename``),
    nested code objects included; ``-v`` proves the code came from our pyc, not from the source."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_bytes(b"")
    module = package / "mod.py"
    module.write_bytes(SOURCE)
    pyc = package / pyc_name("mod.py")
    pyc.parent.mkdir()
    pyc.write_bytes(build_pyc(SOURCE))
    code = "import pkg.mod as m; print(m.Greeter.greet.__code__.co_filename); m.Greeter().greet('x')"
    done = subprocess.run([sys.executable, "-B", "-v", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"# code object from '{pyc}'" in done.stderr
    assert done.stdout.splitlines() == [str(module)]
    assert f'File "{module}", line 7, in shout' in done.stderr
    assert 'raise RuntimeError("boom " + text)' in done.stderr  # the source line, found through the real path
    assert PYC_FILENAME not in done.stderr.split("# code object from")[-1]
    assert pyc.read_bytes() == build_pyc(SOURCE)


def test_pyc_name_is_where_this_interpreter_looks() -> None:
    assert pyc_name("backend/sub/mod.py") == f"backend/sub/__pycache__/mod.{sys.implementation.cache_tag}.pyc"


def test_pyc_sources_map_each_backend_sources_pyc_to_the_source() -> None:
    source, pyc = b"x = 1\n", build_pyc(b"x = 1\n")
    files = [
        RecordEntry("backend/a.py", len(source), sha(source)),
        RecordEntry(pyc_name("backend/a.py"), len(pyc), sha(pyc)),
        RecordEntry("backend/no_pyc.py", 3, "c" * 64),
        RecordEntry("backend/__pycache__/a.cpython-0.pyc", 1, "d" * 64),  # another interpreter's
        RecordEntry("frontend/x.py", len(source), sha(source)),  # not compiled by staging: its pyc is not ours
        RecordEntry(pyc_name("frontend/x.py"), 1, "e" * 64),
    ]
    assert pyc_sources(files) == {pyc_name("backend/a.py"): sha(source)}


def test_the_source_compiler_compiles_each_unknown_source_once() -> None:
    a, b, known = b"A = 1\n", b"B = 2\n", b"K = 3\n"
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__, known={sha(known)})
    try:
        assert compiler.wants("backend/x.py") and not compiler.wants("frontend/x.py") and not compiler.wants("backend/x.txt")
        compiler.take("backend/a.py", sha(a), a)
        compiler.take("backend/copy_of_a.py", sha(a), a)
        compiler.take("backend/k.py", sha(known), known)
        compiler.take("backend/b.py", sha(b), b)
        assert compiler.known(sha(a)) and compiler.known(sha(known)) and not compiler.known(sha(b"other"))
        compiler.finish()
        assert pycs == {sha(a): build_pyc(a), sha(b): build_pyc(b)}
    finally:
        compiler.close()


def test_a_few_small_sources_are_compiled_here_without_a_worker() -> None:
    sources = {f"backend/m{i}.py": f"V = {i}\n".encode() for i in range(5)}
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__)
    for relative, data in sources.items():
        compiler.take(relative, sha(data), data)
    compiler.finish()
    assert pycs == {sha(d): build_pyc(d) for d in sources.values()}
    assert compiler._proc is None


def test_past_the_in_process_limit_the_worker_gets_the_held_sources_too() -> None:
    big = [f"X{i} = '{'x' * (IN_PROCESS_BYTES // 3)}'\n".encode() for i in range(4)]
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__)
    try:
        for i, data in enumerate(big):
            compiler.take(f"backend/big{i}.py", sha(data), data)
        assert compiler._proc is not None
        compiler.finish()
        assert pycs == {sha(d): build_pyc(d) for d in big}
    finally:
        compiler.close()


def test_the_worker_starts_before_the_first_source_when_more_than_the_limit_is_expected() -> None:
    """Its start-up then overlaps the extraction of the first sources, instead of following them."""
    big = [f"E{i} = '{'e' * (IN_PROCESS_BYTES // 3)}'\n".encode() for i in range(4)]
    started: list[str] = []
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__, before_worker=lambda: started.append("gate stopped"))
    try:
        compiler.expect(sum(len(d) for d in big))
        assert compiler._proc is not None and started == ["gate stopped"]
        for i, data in enumerate(big):
            compiler.take(f"backend/early{i}.py", sha(data), data)
        compiler.finish()
        assert pycs == {sha(d): build_pyc(d) for d in big}
    finally:
        compiler.close()
    small = SourceCompiler(pycs.__setitem__)
    small.expect(IN_PROCESS_BYTES)  # no more than compiling here costs: no worker, as before
    assert small._proc is None


def test_no_worker_is_started_when_every_source_is_known() -> None:
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__, known={sha(b"K = 3\n")})
    compiler.take("backend/k.py", sha(b"K = 3\n"), b"K = 3\n")
    compiler.finish()
    assert pycs == {}
    assert compiler._proc is None


_NOISY = """
import hashlib, sys
from pathlib import Path
from atomicplug.pycs import SourceCompiler
noisy = b"x = 1\\n" + "".join(f"y{i} = x is {i}\\n" for i in range(3000)).encode()  # a SyntaxWarning a line
pycs = {}
compiler = SourceCompiler(pycs.__setitem__)
for k in range(12):  # past IN_PROCESS_BYTES: the worker compiles them
    data = noisy + f"# {k}\\n".encode()
    compiler.take(f"backend/m{k}.py", hashlib.sha256(data).hexdigest(), data)
compiler.finish()
print(len(pycs))
"""


def test_compile_warnings_neither_block_the_worker_nor_reach_stderr(tmp_path: Path) -> None:
    """A backend full of SyntaxWarnings used to fill the worker's stderr pipe: the worker blocked
    writing it, the installer blocked writing the next source, and the install hung for ever."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _NOISY], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "12"
    assert "SyntaxWarning" not in done.stderr


_STREAMED = """
import hashlib
from atomicplug.pycs import SourceCompiler
kept = []
compiler = SourceCompiler(lambda source, pyc: kept.append(len(pyc)))
for k in range(40):  # 8 MiB of sources and as much of pycs: far past both pipes' capacity
    data = f"S{k} = '{'s' * 200_000}'\\n".encode()
    compiler.take(f"backend/s{k}.py", hashlib.sha256(data).hexdigest(), data)
before_finish = len(kept)
compiler.finish()
print(before_finish, len(kept), max(kept))
"""


def test_the_workers_answers_are_kept_while_sources_are_still_being_sent(tmp_path: Path) -> None:
    """Each pyc is handed to ``keep`` as it arrives, not held until the end (issue 14, memory flat in size):
    the worker cannot read on while its answers are unread, so most of them arrive before finish()."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    done = subprocess.run([sys.executable, "-c", _STREAMED], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    before_finish, total, largest = map(int, done.stdout.split())
    assert total == 40 and largest > 200_000
    assert before_finish >= 30  # all but the few in the two pipes (64 KiB each) and in the worker's hands; all at the end before


def test_a_worker_that_dies_is_an_operation_error() -> None:
    big = [f"D{i} = '{'d' * IN_PROCESS_BYTES}'\n".encode() for i in range(2)]
    compiler = SourceCompiler(lambda *_: None)
    try:
        for i, data in enumerate(big):
            compiler.take(f"backend/d{i}.py", sha(data), data)
        assert compiler._proc is not None
        compiler._proc.kill()
        compiler._proc.wait()
        compiler.take("backend/after.py", sha(b"A = 1\n"), b"A = 1\n")
        with pytest.raises(OperationError, match="^compiling the backend failed: "):
            compiler.finish()
    finally:
        compiler.close()


@pytest.mark.parametrize(("source", "detail"), [(b"def nope(:\n", r"\(line 1\)"), (b"x = 1\0\n", "null bytes")])
def test_a_source_that_does_not_compile_is_named_by_its_first_path(source: bytes, detail: str) -> None:
    compiler = SourceCompiler(lambda *_: None)
    try:
        compiler.take("backend/broken.py", sha(source), source)
        with pytest.raises(PackageError, match=rf"^backend/broken.py does not compile: .*{detail}"):
            compiler.finish()
    finally:
        compiler.close()


def test_the_worker_imports_only_what_compiling_needs() -> None:
    """The worker runs beside every large install: the package (typing, pathlib, subprocess) cost it ~3 MiB."""
    worker = Path(__file__).resolve().parent.parent / "src" / "atomicplug" / "pyc_worker.py"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(worker)], input=b"", capture_output=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == b""
    imported = {line.split("|")[-1].strip() for line in done.stderr.decode().splitlines() if line.startswith("import time:")}
    assert "marshal" in imported or "importlib.util" in imported
    assert not imported & {"atomicplug", "typing", "pathlib", "subprocess"}


_ASSERTS = "def f():\n    assert False, 'asserts are on'\n    return 'no assert ran'\n"


def test_pycs_are_built_and_reused_at_optimization_level_0_whatever_runs_atomicplug(home):
    """Found from outside: a tree staged by `python -O` held pycs of optimized code (asserts gone); an
    upgrade by a plain interpreter reused them as the plain pyc, and a large backend under -O got plain
    code in its .opt-1 pycs from the compile worker. The store's pycs are level 0, named and built so."""
    import glob
    import hashlib

    from atomicplug.pycs import build_pyc

    env = {**os.environ, "ATOMICPLUG_RESIDENT": "off"}
    run = lambda *args, **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
        env={**env, **extra}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    files = {"backend/chk.py": _ASSERTS}
    assert run("install", str(home.package("alpha", "1.0.0", files=files)), PYTHONOPTIMIZE="1").returncode == 0
    [first] = glob.glob(str(home.config.store_dir / "alpha" / "1.0.0-*"))
    assert sorted(os.listdir(Path(first) / "backend" / "__pycache__")) == sorted(
        [f"__init__.{sys.implementation.cache_tag}.pyc", f"chk.{sys.implementation.cache_tag}.pyc"]
    )
    assert run("install", str(home.package("alpha", "1.1.0", files=files))).returncode == 0
    [second] = glob.glob(str(home.config.store_dir / "alpha" / "1.1.0-*"))
    pyc = Path(second) / "backend" / "__pycache__" / f"chk.{sys.implementation.cache_tag}.pyc"
    assert hashlib.sha256(pyc.read_bytes()).digest() == hashlib.sha256(build_pyc(_ASSERTS.encode())).digest()
    proc = run("verify", "--deep")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_pyc_compiled_under_its_staging_path_is_the_same_code() -> None:
    """Found from outside: atomicplug before the object store compiled pycs under their staging path
    (`staging/<txid>/...`, the code's co_filename), so `verify --deep` called every pyc of every tree
    it made changed, and rollback and enable refused those trees as damaged. The import system sets
    co_filename when it loads a pyc: that name is not the code. Other code still differs."""
    from atomicplug.verification import same_code

    source = b"def f():\n    def g():\n        return 'x'\n    return g\n"
    ours = build_pyc(source)
    assert same_code(ours, build_pyc(source, "/home/site/state/staging/tx-1/backend/mod.py"))
    assert not same_code(ours, build_pyc(source.replace(b"'x'", b"'y'")))
