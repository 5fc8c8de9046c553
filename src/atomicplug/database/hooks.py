"""``backend/install.py`` hooks, run with the migration connection (DESIGN.md step 4).

A tree's ``backend/install.py`` may define any of::

    def install(conn, ctx): ...                 # after the ups, on install
    def upgrade(conn, ctx, from_version): ...   # after the ups, on upgrade
    def uninstall(conn, ctx): ...               # before the downs, on uninstall (also with keep_data)

``conn`` is the SQLAlchemy Connection of the one transaction: whatever a hook
does commits or rolls back with the migrations, and ``conn.commit()`` is
refused. The file is loaded by path under a unique module name that is
removed from ``sys.modules`` afterwards; it should be self-contained (no
relative imports). Hooks must tolerate a reinstall after ``--keep-data``
(``ctx.operation`` and the ledger tell them).
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from atomicplug.errors import MigrationError

__all__ = ["HookContext", "hook_path", "run_hook"]


@attrs.frozen
class HookContext:
    """What a hook is told about the change it runs in."""

    plugin_id: str
    version: str | None
    txid: str
    operation: str
    tree: Path
    keep_data: bool = False


def hook_path(tree: Path) -> Path:
    return Path(tree) / "backend" / "install.py"


def _load(path: Path, plugin_id: str) -> tuple[ModuleType, str]:
    name = f"_atomicplug_hook_{plugin_id}_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"plugin {plugin_id}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module, name


def run_hook(tree: Path, hook: str, conn: Any, ctx: HookContext, *args: Any) -> bool:
    """Run ``hook`` of ``tree``'s install.py if it defines one; True when it ran.

    Raises MigrationError "plugin X: <hook> hook failed: <message>" on any exception.
    """
    path = hook_path(tree)
    if not path.is_file():
        return False
    from atomicplug.database.engine import commit_forbidden

    module_name = None
    try:
        module, module_name = _load(path, ctx.plugin_id)
        function: Callable[..., Any] | None = getattr(module, hook, None)
        if function is None:
            return False
        if not callable(function):
            raise TypeError(f"backend/install.py: '{hook}' is not a function")
        with commit_forbidden(conn):
            function(conn, ctx, *args)
        return True
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"plugin {ctx.plugin_id}: {hook} hook failed: {_one_line(exc)}") from exc
    finally:
        if module_name is not None:
            sys.modules.pop(module_name, None)


def _one_line(exc: BaseException) -> str:
    from atomicplug.database.engine import first_line

    return first_line(exc)
