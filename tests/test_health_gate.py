"""The health gate: a backend that does not import in a fresh interpreter is refused before COMMIT."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Home

from atomicplug.errors import OperationError
from atomicplug.packing import pack
from atomicplug.stages import gate_interpreter, health
from atomicplug.testing import PluginSpec, snapshot, write_plugin_source

USERS_TABLE = {"0001_init": ("CREATE TABLE gate_users (id INTEGER PRIMARY KEY);", "DROP TABLE gate_users;")}


def _backend(code: str) -> dict[str, str | bytes]:
    return {"backend/__init__.py": code}


@pytest.fixture(autouse=True)
def _no_spare_interpreter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These tests count the interpreters a transaction starts: none kept from earlier tests, none kept after."""
    health.drop_spare()
    monkeypatch.setattr(health, "KEEP_SPARE", False)
    monkeypatch.setattr(health, "_gates_started", 0)
    yield
    health.drop_spare()


def _count_children(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    real = health._start_child

    def counting() -> subprocess.Popen[bytes]:
        calls.append(())
        return real()

    monkeypatch.setattr(health, "_start_child", counting)
    return calls


def _store_files(home: Home) -> list[str]:
    store = home.config.store_dir
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())


def test_missing_module_is_refused_and_nothing_changes(home: Home) -> None:
    home.installer.install_file(home.package("keeper"))
    before = snapshot(home.config)
    store_before = _store_files(home)
    package = home.package("broken", migrations=USERS_TABLE, files=_backend("import does_not_exist\n"))
    with pytest.raises(OperationError) as caught:
        home.installer.install_file(package)
    message = str(caught.value)
    assert message == "broken 1.0.0: backend does not import: ModuleNotFoundError: No module named 'does_not_exist'"
    assert "\n" not in message
    assert snapshot(home.config) == before  # registry, links and tables (no gate_users)
    assert [p["id"] for p in home.installer.list()] == ["keeper"]
    assert sorted(p.name for p in home.config.backend_addons.iterdir()) == ["keeper"]
    assert _store_files(home) == store_before
    assert home.installer.history()[-1]["outcome"] == "aborted"


def test_exception_at_import_is_refused_with_its_message(home: Home) -> None:
    package = home.package("raiser", files=_backend('raise RuntimeError("no API key configured")\n'))
    with pytest.raises(OperationError, match=r"^raiser 1\.0\.0: backend does not import: RuntimeError: no API key configured$"):
        home.installer.install_file(package)
    assert home.installer.list() == []


def test_exit_at_import_is_refused(home: Home) -> None:
    package = home.package("quitter", files=_backend("import sys\nsys.exit(3)\n"))
    with pytest.raises(OperationError, match="quitter 1.0.0: backend does not import: SystemExit: 3"):
        home.installer.install_file(package)


def test_backend_that_hangs_at_import_is_refused_after_the_timeout(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "IMPORT_TIMEOUT", 1.0)
    package = home.package("sleeper", files=_backend("import time\ntime.sleep(60)\n"))
    with pytest.raises(OperationError, match=r"sleeper: backend import did not finish within 1s"):
        home.installer.install_file(package)
    assert home.installer.list() == []


def test_backend_killing_the_interpreter_is_refused(home: Home) -> None:
    package = home.package("killer", files=_backend("import os\nos._exit(9)\n"))
    with pytest.raises(OperationError, match=r"killer: backend import killed the interpreter \(exit code 9\)"):
        home.installer.install_file(package)


def test_dependency_installed_in_the_same_transaction_is_importable(home: Home) -> None:
    from atomicplug.intake import take_in_file

    core = home.package("email_core", files=_backend("NAME = 'core'\n"))
    user = home.package("newsletter", requires=("email_core",), files=_backend("from addons.email_core import NAME\n"))
    home.installer.install_packages([take_in_file(home.config, core, None), take_in_file(home.config, user, None)])
    assert [p["id"] for p in home.installer.list()] == ["email_core", "newsletter"]


def test_upgrade_to_a_broken_backend_keeps_the_old_version(home: Home) -> None:
    home.installer.install_file(home.package("shop", "1.0.0"))
    before = snapshot(home.config)
    with pytest.raises(OperationError, match="shop 2.0.0: backend does not import"):
        home.installer.install_file(home.package("shop", "2.0.0", files=_backend("1 / 0\n")))
    assert snapshot(home.config) == before


def test_an_upgrade_that_breaks_an_unchanged_dependents_import_is_refused(home: Home) -> None:
    """The gate imported only what the plan changes: newsletter's `from addons.email_core import send`
    broke after the switch. The enabled plugins requiring a changed one are imported too."""
    home.installer.install_file(home.package("email_core", files=_backend("def send(to):\n    return to\n")))
    home.installer.install_file(home.package("newsletter", requires=("email_core",), files=_backend("from addons.email_core import send\n")))
    before = snapshot(home.config)
    renamed = home.package("email_core", "2.0.0", files=_backend("def deliver(to):\n    return to\n"))
    said = r"newsletter 1.0.0 \(unchanged, but it requires a plugin this transaction changes\): backend does not import: ImportError: cannot import name 'send'"
    with pytest.raises(OperationError, match=said):
        home.installer.install_file(renamed)
    assert snapshot(home.config) == before


def test_a_dependent_that_did_not_import_before_either_does_not_block_an_upgrade_of_what_it_requires(home: Home) -> None:
    """Left alone in stops 24: importing unchanged dependents made a plugin broken for its own reasons block every
    upgrade of what it requires. It is imported in the live generation too: failing there as well, it is only said."""
    import attrs

    from atomicplug.installer import Installer

    home.installer.install_file(home.package("email_core", files=_backend("def send(to):\n    return to\n")))
    broken = home.package("newsletter", requires=("email_core",), files=_backend("import a_module_nobody_installed\n"))
    Installer(attrs.evolve(home.config, health_check=False)).install_file(broken)  # as an admin may have, gate off
    notes: list[str] = []
    upgraded = Installer(home.config, progress=lambda e: notes.append(str(e)) if e.stage == "note" else None)
    upgraded.install_file(home.package("email_core", "1.1.0", files=_backend("def send(to):\n    return to.strip()\n")))
    assert {p["id"]: p["version"] for p in home.installer.list()} == {"email_core": "1.1.0", "newsletter": "1.0.0"}
    said = "newsletter 1.0.0 (unchanged) did not import before this change either (ModuleNotFoundError: No module named 'a_module_nobody_installed'): not blocking it"
    assert said in notes, notes


def test_a_dependent_broken_before_but_broken_anew_by_the_upgrade_still_blocks_it(home: Home) -> None:
    """Found in review: failing before for one reason must not hide a new failure this change adds
    (the missing module installed later, newsletter would still not import)."""
    import attrs

    from atomicplug.installer import Installer

    home.installer.install_file(home.package("email_core", files=_backend("def send(to):\n    return to\n")))
    broken = home.package("newsletter", requires=("email_core",), files=_backend("from addons.email_core import send\nimport a_module_nobody_installed\n"))
    Installer(attrs.evolve(home.config, health_check=False)).install_file(broken)
    before = snapshot(home.config)
    renamed = home.package("email_core", "2.0.0", files=_backend("def deliver(to):\n    return to\n"))
    said = (r"newsletter 1.0.0 \(unchanged, but it requires a plugin this transaction changes\): backend does not import: "
            r"ImportError: cannot import name 'send' .*\(before this change: ModuleNotFoundError: No module named 'a_module_nobody_installed'\)")
    with pytest.raises(OperationError, match=said):
        home.installer.install_file(renamed)
    assert snapshot(home.config) == before


def test_good_backend_is_installed_and_store_gets_no_new_bytecode(home: Home) -> None:
    package = home.package("fine", files={"backend/__init__.py": "from .helpers import VALUE\n", "backend/helpers.py": "VALUE = 1\n"})
    home.installer.install_file(package)
    assert [p["id"] for p in home.installer.list()] == ["fine"]
    tree = next(home.config.store_dir.glob("fine/*"))
    pycs = sorted(p.name for p in tree.rglob("*.pyc"))
    assert pycs == sorted(f"{n}.{sys.implementation.cache_tag}.pyc" for n in ("__init__", "helpers"))  # only the stage's own pycs


def test_backend_may_import_an_installed_dependency_as_addons_id(home: Home) -> None:
    home.installer.install_file(home.package("email_core", files=_backend("def send(to):\n    return f'sent to {to}'\n")))
    user = home.package("newsletter", requires=("email_core",), files=_backend("from addons.email_core import send\n"))
    home.installer.install_file(user)
    assert [p["id"] for p in home.installer.list()] == ["email_core", "newsletter"]


def test_import_of_a_disabled_plugin_is_refused(home: Home) -> None:
    """A disabled plugin has no link in backend_addons, so the gate must not offer one either."""
    home.installer.install_file(home.package("lib_a", files=_backend("X = 1\n")))
    home.installer.disable("lib_a")
    with pytest.raises(OperationError, match="No module named 'addons.lib_a'"):
        home.installer.install_file(home.package("user_b", files=_backend("from addons.lib_a import X\n")))


def test_uninstall_disable_and_backendless_plugins_spawn_no_interpreter(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    home.installer.install_file(home.package("plain"))
    calls = _count_children(monkeypatch)
    home.installer.disable("plain")
    home.installer.uninstall("plain")
    home.installer.install_file(_frontend_only(home))
    assert calls == []
    home.installer.install_file(home.package("checked"))
    assert len(calls) == 1


def _frontend_only(home: Home) -> Path:
    """A package without backend/ (PluginSpec always writes one, so remove it from the source)."""
    source = write_plugin_source(PluginSpec(id="frontend_only"), home.root / "src-frontend-only")
    shutil.rmtree(source / "backend")
    return pack(source, home.publisher.secret, home.root / "frontend_only-1.0.0.zip").zip_path


@pytest.mark.parametrize("backend", ["VALUE = 1\n", "import does_not_exist\n"], ids=["passes", "refused"])
def test_scratch_folder_lives_in_staging_and_is_gone_afterwards(home: Home, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not in the system temp folder: a kill during the check must leave nothing that recovery does not delete."""
    seen: list[Path] = []
    real = health._send_job

    def recording(child: subprocess.Popen[bytes], scratch: Path, search: list[Path], targets: list[str]) -> None:
        seen.append(scratch)
        # The child imports the plan's new generation, complete but not live yet.
        [view] = search
        assert view.parent.parent == home.config.home / "generations" and (view / "gate").is_symlink()
        assert not (home.config.home / "current").exists()
        real(child, scratch, search, targets)

    monkeypatch.setattr(health, "_send_job", recording)
    try:
        home.installer.install_file(home.package("gate", files=_backend(backend)))
    except OperationError:
        pass
    assert len(seen) == 1 and seen[0].is_relative_to(home.config.staging_dir)
    assert not seen[0].exists()
    assert not any(home.config.staging_dir.iterdir())


def test_a_database_refusal_during_the_check_stops_the_child(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter imports while the database checks run; when those refuse first, the
    child is stopped, its folder removed, and the database's reason is the one reported."""
    from atomicplug.errors import MigrationError

    children: list[subprocess.Popen[bytes]] = []
    real = health._start_child

    def keeping() -> subprocess.Popen[bytes]:
        children.append(real())
        return children[-1]

    monkeypatch.setattr(health, "_start_child", keeping)
    before = snapshot(home.config)
    slow = _backend("import time\ntime.sleep(30)\n")
    vacuum = {"0001_init": ("CREATE TABLE gate_users (id INTEGER PRIMARY KEY); VACUUM;", "DROP TABLE gate_users;")}
    package = home.package("slow", migrations=vacuum, files=slow)
    with pytest.raises(MigrationError, match="VACUUM cannot run inside a transaction"):
        home.installer.install_file(package)
    assert len(children) == 1 and children[0].poll() is not None
    assert snapshot(home.config) == before
    assert not any(home.config.staging_dir.iterdir())


def test_the_interpreter_starts_before_staging_and_imports_only_after(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started when the transaction begins (its start-up overlaps staging), it imports nothing until the
    plan's generation is built: a backend that fails at import is still refused before COMMIT."""
    from atomicplug import transaction

    order: list[str] = []
    real_start, real_send, real_stage = health._start_child, health._send_job, transaction._stage_trees

    def start() -> subprocess.Popen[bytes]:
        order.append("start")
        return real_start()

    def send(child: subprocess.Popen[bytes], scratch: Path, search: list[Path], targets: list[str]) -> None:
        order.append(f"send {','.join(targets)}")
        real_send(child, scratch, search, targets)

    def stage(*args: object, **kwargs: object) -> None:
        order.append("stage")
        real_stage(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(health, "_start_child", start)
    monkeypatch.setattr(health, "_send_job", send)
    monkeypatch.setattr(transaction, "_stage_trees", stage)
    with pytest.raises(OperationError, match="late 1.0.0: backend does not import: ModuleNotFoundError"):
        home.installer.install_file(home.package("late", migrations=USERS_TABLE, files=_backend("import nowhere\n")))
    assert order == ["start", "stage", "send late"]
    assert home.installer.list() == [] and not any(home.config.staging_dir.iterdir())


def test_an_interpreter_started_for_nothing_is_stopped(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction that fails before the gate (here: staging refuses the package) leaves no child behind."""
    from atomicplug import transaction
    from atomicplug.errors import PackageError

    children: list[subprocess.Popen[bytes]] = []
    real = health._start_child

    def keeping() -> subprocess.Popen[bytes]:
        children.append(real())
        return children[-1]

    def refuse(*_: object, **__: object) -> None:
        raise PackageError("refused while staging")

    monkeypatch.setattr(health, "_start_child", keeping)
    monkeypatch.setattr(transaction, "_stage_trees", refuse)
    with pytest.raises(PackageError, match="refused while staging"):
        home.installer.install_file(home.package("early"))
    assert len(children) == 1 and children[0].returncode is not None  # reaped, not left running


def test_a_process_that_runs_the_gate_again_keeps_a_fresh_interpreter_ready(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: in a warm process (the billing backend) the gate's start-up is paid between
    transactions. After the second gated transaction an idle interpreter waits; the next
    transaction starts none before its gate, and that interpreter still refuses a backend that
    does not import (it had imported nothing)."""
    monkeypatch.setattr(health, "KEEP_SPARE", True)
    started = _count_children(monkeypatch)
    home.installer.install_file(home.package("one", files=_backend("X = 1\n")))
    assert len(started) == 1 and gate_interpreter._spare is None  # a one-shot command keeps nothing
    home.installer.install_file(home.package("two", files=_backend("X = 2\n")))
    assert len(started) == 3 and gate_interpreter._spare is not None  # its gate, then the spare
    spare = gate_interpreter._spare[0]
    assert spare.poll() is None
    before = snapshot(home.config)
    with pytest.raises(OperationError, match="three 1.0.0: backend does not import: ModuleNotFoundError"):
        home.installer.install_file(home.package("three", files=_backend("import nowhere\n")))
    assert spare.returncode is not None  # it served that gate, and was reaped
    assert snapshot(home.config) == before
    assert len(started) == 4 and gate_interpreter._spare is not None and gate_interpreter._spare[0] is not spare
    home.installer.uninstall("two")  # no backend to import: the spare stays for the next one
    assert len(started) == 4
    kept = gate_interpreter._spare[0]
    health.drop_spare()
    assert kept.returncode is not None and gate_interpreter._spare is None  # stopped and reaped


def test_a_spare_left_by_another_transaction_is_kept_and_a_failing_start_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads' transactions (two homes, one process) both end: the second keeps the first's
    spare. A spare that cannot be started (no process left) does not fail the transaction."""
    monkeypatch.setattr(health, "KEEP_SPARE", True)
    monkeypatch.setattr(health, "_gates_started", 2)
    first, second = health._start_child(), health._start_child()
    health.release(first)
    kept = gate_interpreter._spare
    assert kept is not None and kept[0].poll() is None
    health.release(second)
    assert gate_interpreter._spare is kept and first.returncode is not None and second.returncode is not None
    health.drop_spare()
    used = health._start_child()

    def no_process() -> subprocess.Popen[bytes]:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(health, "_start_child", no_process)
    health.release(used)  # the transaction's own end: nothing raised
    assert gate_interpreter._spare is None and used.returncode is not None


@pytest.mark.parametrize("imports", [True, False], ids=["imports", "does-not-import"])
def test_the_gate_interpreter_is_stopped_while_the_compile_worker_runs(home: Home, monkeypatch: pytest.MonkeyPatch, imports: bool) -> None:
    """One helper interpreter at a time (issue 14, memory flat in size): the gate's idle child is stopped
    when staging starts the compile worker, and a fresh one gives the verdict after staging."""
    from atomicplug import pycs

    monkeypatch.setattr(pycs, "IN_PROCESS_BYTES", 0)  # any source starts the worker
    gates: list[subprocess.Popen[bytes]] = []
    real_start_child = health._start_child

    def gate_child() -> subprocess.Popen[bytes]:
        gates.append(real_start_child())
        return gates[-1]

    alive_at_worker_start: list[int] = []
    real_start = pycs._Worker._start

    def worker_start(self: pycs._Worker) -> subprocess.Popen[bytes]:
        alive_at_worker_start.append(sum(1 for g in gates if g.poll() is None))
        return real_start(self)

    monkeypatch.setattr(health, "_start_child", gate_child)
    monkeypatch.setattr(pycs._Worker, "_start", worker_start)
    code = "VALUE = 1\n" if imports else "import does_not_exist\n"
    package = home.package("worker_gate", files={"backend/__init__.py": code, "backend/more.py": "X = 2\n"})
    if imports:
        home.installer.install_file(package)
        assert [p["id"] for p in home.installer.list()] == ["worker_gate"]
    else:
        with pytest.raises(OperationError, match="does_not_exist"):
            home.installer.install_file(package)
        assert home.installer.list() == []
    assert alive_at_worker_start == [0], "the compile worker started once, with no gate interpreter alive"
    assert len(gates) == 2, "one prestarted (stopped for the worker), one for the verdict after staging"


def test_an_interpreter_started_early_serves_the_gate_and_one_not_needed_is_stopped(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: a one-shot ``install`` starts the gate's interpreter before its own imports
    (``gate_interpreter.start_early``). The gate then takes it and starts none of its own, and
    it still refuses a backend that does not import; a command that cannot gate starts none,
    and one started for a transaction that imports no backend is stopped at exit."""
    started = _count_children(monkeypatch)
    gate_interpreter.start_early("list")
    assert gate_interpreter._spare is None
    gate_interpreter.start_early("install")
    assert gate_interpreter._spare is not None
    early = gate_interpreter._spare[0]
    home.installer.install_file(home.package("one", files=_backend("X = 1\n")))
    assert started == [] and early.returncode is not None and gate_interpreter._spare is None  # it gave the verdict

    gate_interpreter.start_early("upgrade")
    early = gate_interpreter._spare[0]  # type: ignore[index]
    before = snapshot(home.config)
    with pytest.raises(OperationError, match="two 1.0.0: backend does not import: ModuleNotFoundError"):
        home.installer.install_file(home.package("two", files=_backend("import nowhere\n")))
    assert started == [] and early.returncode is not None and snapshot(home.config) == before

    gate_interpreter.start_early("rollback")
    unused = gate_interpreter._spare[0]  # type: ignore[index]
    home.installer.uninstall("one")  # no backend to import: no gate
    assert unused.poll() is None and gate_interpreter._spare is not None
    gate_interpreter.drop_spare()  # what the process's exit runs
    assert unused.returncode is not None and gate_interpreter._spare is None


def test_a_one_shot_install_starts_the_gate_interpreter_before_importing_the_installer(home: Home) -> None:
    """The point of the early start: the interpreter's start-up runs beside the command's own
    imports. Checked in a real ``python -m atomicplug`` process: when the interpreter is started,
    the installer is not imported yet; ``list`` starts none; the install ends with none left."""
    probe = (
        "import sys, runpy\n"
        "from atomicplug.stages import gate_interpreter\n"
        "real = gate_interpreter.start\n"
        "def start():\n"
        "    print('gate started; installer imported:', 'atomicplug.installer' in sys.modules, file=sys.stderr)\n"
        "    return real()\n"
        "gate_interpreter.start = start\n"
        "sys.argv[0] = 'atomicplug'\n"
        "runpy.run_module('atomicplug', run_name='__main__')\n"
    )
    env = {**os.environ, "ATOMICPLUG_RESIDENT": "off"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", probe, "--config", str(home.config_path), *args], capture_output=True, text=True, env=env, timeout=120)

    installed = run("install", str(home.package("early", files=_backend("X = 1\n"))))
    assert installed.returncode == 0, installed.stderr
    assert installed.stderr.splitlines() == ["gate started; installer imported: False"]
    listed = run("list")
    assert listed.returncode == 0 and "early" in listed.stdout and listed.stderr == ""


def test_the_module_every_command_imports_first_stays_light() -> None:
    """``__main__`` imports ``gate_interpreter`` for every command run here, before knowing
    whether it may gate: importing it must not pull in what ``list`` and ``recover`` never use
    (subprocess and threading, ~1.5 ms; typing)."""
    import atomicplug

    source = str(Path(atomicplug.__file__).parent.parent)
    probe = (
        f"import sys; sys.path.insert(0, {source!r}); import atomicplug; before = set(sys.modules)\n"
        "import atomicplug.stages.gate_interpreter\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert "atomicplug.stages.gate_interpreter" in loaded
    assert not {"subprocess", "threading", "typing"} & set(loaded), loaded
