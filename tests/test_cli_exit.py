"""The CLI process: it ends without interpreter finalization, yet loses nothing (issue 14, small CLI install)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)


def _run_after(prelude: str, home, *command: str) -> subprocess.CompletedProcess[str]:
    """A process that runs ``prelude``, then the CLI's ``run()`` with ``command`` (as ``atomicplug`` and ``-m`` do)."""
    code = f"{prelude}\nimport sys\nsys.argv = ['atomicplug', '--config', sys.argv[1], *sys.argv[2:]]\nfrom atomicplug.cli import run\nrun()\n"
    return _python(code, str(home.config_path), *command)


def test_run_calls_atexit_handlers_and_flushes_what_was_printed(home):
    # 200 KB of buffered stdout and an atexit handler that prints: os._exit alone would lose both.
    prelude = "import atexit, sys\natexit.register(lambda: print('atexit ran'))\nsys.stdout.write('x' * 200_000 + '\\n')"
    proc = _run_after(prelude, home, "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("x" * 200_000 + "\n")
    assert proc.stdout.rstrip().endswith("atexit ran")


def test_run_waits_for_a_thread_that_is_still_working(home, tmp_path: Path):
    marker = tmp_path / "thread-finished"
    prelude = (
        "import threading, time\n"
        "def work():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(marker)!r}, 'w').write('done')\n"
        "threading.Thread(target=work).start()"
    )
    proc = _run_after(prelude, home, "list")
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "done"


def test_run_exits_with_mains_code(home):
    proc = _run_after("", home, "uninstall", "ghost")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "atomicplug: error: ghost is not installed"


def test_an_install_without_requirements_does_not_import_what_it_does_not_use(home):
    # packaging's requirement parser (and the platform tags it imports) is for packages with
    # `requires` or backend dependencies; socket was only the node id's host name.
    code = (
        "import json, sys\n"
        "from atomicplug.cli import main\n"
        "code = main(['--config', sys.argv[1], 'install', sys.argv[2]])\n"
        "print(json.dumps([code, sorted(m for m in ('packaging.requirements', 'packaging.specifiers', 'socket') if m in sys.modules)]))\n"
    )
    proc = _python(code, str(home.config_path), str(home.package("shop")))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [0, []]
