"""``backend/install.py`` hooks, run with the migration connection (docs/design.md step 4).

A tree's ``backend/install.py`` may define any of::

    def install(conn, ctx): ...                 # after the ups, on install
    def upgrade(conn, ctx, from_version): ...   # after the ups, on upgrade
    def uninstall(conn, ctx): ...               # before the downs, on uninstall (also with keep_data)

``conn`` is a SQLAlchemy Connection over the one transaction's own database
connection: whatever a hook does commits or rolls back with the migrations;
``conn.commit()`` and ``conn.rollback()`` are refused (raise to abort). It is
built only when a hook runs, so a transaction without hooks never imports
SQLAlchemy (issue 8). The file is loaded by path under a unique module name that is
removed from ``sys.modules`` afterwards; it should be self-contained (no
relative imports). Hooks must tolerate a reinstall after ``--keep-data``
(``ctx.operation`` and the ledger tell them).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.errors import MigrationError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from atomicplug.change import Change
    from atomicplug.database.engine import Database

__all__ = ["HookContext", "hook_path", "run_hook"]


@attrs.frozen
class HookContext:
    """What a hook is told about the change it runs in (its public API; derived from the Change)."""

    plugin_id: str
    version: str | None
    txid: str
    operation: str
    tree: Path
    keep_data: bool = False

    @classmethod
    def for_change(cls, change: Change, home: Path, txid: str, operation: str, *, removing: bool) -> HookContext:
        """The context of ``change``'s hook: the tree going away (``removing``) or the one coming."""
        tree = change.old_tree(home) if removing else change.new_tree(home)
        assert tree is not None
        version = change.old_version if removing else change.new_version
        return cls(change.plugin_id, version, txid, operation, tree, change.keep_data if removing else False)


def hook_path(tree: Path) -> Path:
    return Path(tree) / "backend" / "install.py"


def _load(path: Path, plugin_id: str) -> tuple[ModuleType, str]:
    import uuid  # here: most transactions run no hook

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


class _Lent:
    """The transaction's connection while a hook holds it: its commit and rollback are refused."""

    def __init__(self) -> None:
        self.active = False  # SQLAlchemy's own first-connect rollback is let through (as a no-op)

    def commit(self, _dbapi_connection: Any) -> None:
        raise RuntimeError("install hooks must not commit: atomicplug commits the whole transaction")

    def rollback(self, _dbapi_connection: Any) -> None:
        """Refused while the hook runs; otherwise (SQLAlchemy's own bookkeeping) nothing happens."""
        if self.active:
            raise RuntimeError("install hooks must not roll back: raise an exception to abort the transaction")

    def keep_open(self, _dbapi_connection: Any) -> None:
        """The transaction, not SQLAlchemy's pool, closes the connection."""


@contextmanager
def sqlalchemy_connection(db: Database) -> Iterator[Connection]:
    """A SQLAlchemy Connection over ``db``'s open transaction, for one hook.

    The engine's one pooled connection is ``db``'s own DB-API connection; its
    dialect may neither commit, roll back (the pool's reset included) nor
    close it, so the transaction stays atomicplug's: BEGIN, COMMIT and ROLLBACK
    remain the runner's.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from atomicplug.database.engine import with_driver

    lent = _Lent()
    engine = create_engine(with_driver(db.url), creator=lambda: db.raw, poolclass=StaticPool)
    engine.dialect.do_commit = lent.commit  # type: ignore[method-assign]
    engine.dialect.do_rollback = lent.rollback  # type: ignore[method-assign]
    engine.dialect.do_close = lent.keep_open  # type: ignore[method-assign]
    conn = engine.connect()
    conn.begin()  # as the hook sees it, the transaction is already open (no SQL is sent)
    lent.active = True
    try:
        yield conn
    finally:
        lent.active = False
        conn.close()  # SQLAlchemy's own end of its autobegun transaction: now a no-op


def run_hook(tree: Path, hook: str, db: Database, ctx: HookContext, *args: Any) -> bool:
    """Run ``hook`` of ``tree``'s install.py if it defines one; True when it ran.

    Raises MigrationError "plugin X: <hook> hook failed: <message>" on any exception.
    """
    path = hook_path(tree)
    if not path.is_file():
        return False
    module_name = None
    try:
        module, module_name = _load(path, ctx.plugin_id)
        function: Callable[..., Any] | None = getattr(module, hook, None)
        if function is None:
            return False
        if not callable(function):
            raise TypeError(f"backend/install.py: '{hook}' is not a function")
        with sqlalchemy_connection(db) as conn:
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
