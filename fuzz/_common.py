"""Shared set-up for the atheris harnesses: import paths, atheris guard, seed corpus.

Why: the harnesses reuse ``tests/strategies.py`` and ``tests/hostile_zips.py``,
which live beside the tests rather than in the package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "tests", ROOT / "src"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def require_atheris() -> ModuleType:
    """Import atheris or exit with a message saying how to get it."""
    try:
        import atheris
    except ImportError:
        sys.exit(
            "atheris is not installed. Run `pip install atheris` (wheels exist for CPython on "
            "Linux x86_64; elsewhere it needs clang with libFuzzer). The bounded fuzz run that "
            "needs no atheris is `python -m pytest tests/test_fuzz_bounded.py`."
        )
    return atheris


def pop_flag(flag: str) -> bool:
    """Remove our own flag from argv before libFuzzer parses it."""
    if flag in sys.argv:
        sys.argv.remove(flag)
        return True
    return False


def pop_option(option: str) -> str | None:
    for i, arg in enumerate(sys.argv):
        if arg.startswith(option + "="):
            del sys.argv[i]
            return arg.split("=", 1)[1]
    return None
