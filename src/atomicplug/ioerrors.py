"""A failing disk or database is one line: what, where, and the state left behind.

docs/design.md "A failing disk is one line". Every OSError of the file system,
and the database drivers' storage errors (SQLite's I/O, full and cannot-open
errors; psycopg2's OperationalErrors of a lost connection and of SQLSTATE
classes 08, 53 "insufficient resources" and 58 "system error"), are expected
failures, not bugs. Where they happen, the step and the path are named
(:func:`named` on the :mod:`atomicplug.fsutil` primitives, :func:`doing`
elsewhere: ``os.fsync(fd)`` raises with no file name). The boundaries that
know the operation and the state it leaves turn them into one
:class:`~atomicplug.errors.StorageError` (:func:`storage_error`,
:func:`reported`): the transaction runner (nothing changed; or committed, and
recovery will finish it), recovery, the Installer's writers and intake.
"""

from __future__ import annotations

import errno as errnos
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from atomicplug.errors import AtomicplugError, DownloadError, OperationError, StorageError

__all__ = [
    "NOTHING_CHANGED",
    "Site",
    "named",
    "doing",
    "is_full_disk",
    "storage_cause",
    "describe",
    "storage_error",
    "reported",
    "database_location",
]

NOTHING_CHANGED = "nothing changed"

class Site(Protocol):
    """Where an operation works (a :class:`~atomicplug.config.Config`): its home and its database."""

    @property
    def home(self) -> Path: ...

    @property
    def database_url(self) -> str: ...


_P = ParamSpec("_P")
_R = TypeVar("_R")

_STEP = "atomicplug_step"  # set on an OSError: (action, where) of the innermost step named
_SQLITE_STORAGE = {10, 13, 14}  # SQLITE_IOERR (any extended code), SQLITE_FULL, SQLITE_CANTOPEN
_PG_STORAGE = ("08", "53", "58")  # SQLSTATE classes: connection exception, insufficient resources (disk_full), system error (io_error)


def _note(exc: OSError, action: str, where: object) -> None:
    """Remember the step an OSError failed at; the innermost step named wins."""
    if getattr(exc, _STEP, None) is None:
        setattr(exc, _STEP, (action, os.fspath(where) if isinstance(where, os.PathLike) else str(where)))


def named(action: str, path_arg: int = 0) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a primitive whose argument ``path_arg`` is the path it changes: its OSErrors
    say ``could not <action> <path>``."""

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def step(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return function(*args, **kwargs)
            except OSError as exc:
                _note(exc, action, args[path_arg])
                raise

        return step

    return decorate


@contextmanager
def doing(action: str, where: object) -> Iterator[None]:
    """Name the step an OSError escaping the block failed at (unless a step inside named it)."""
    try:
        yield
    except OSError as exc:
        _note(exc, action, where)
        raise


def _is_storage(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__
    if module == "sqlite3":
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _SQLITE_STORAGE
    if module.startswith("psycopg2") and any(c.__name__ == "OperationalError" for c in type(exc).__mro__):
        pgcode = getattr(exc, "pgcode", None)  # None: the connection itself failed (lost, refused)
        return pgcode is None or pgcode[:2] in _PG_STORAGE
    return False


def is_full_disk(failure: BaseException) -> bool:
    """Whether ``failure`` is (or was raised from) a file system out of space or quota."""
    cause = storage_cause(failure, wrapped=True)
    return isinstance(cause, OSError) and cause.errno in (errnos.ENOSPC, errnos.EDQUOT)


def storage_cause(failure: BaseException, *, wrapped: bool = False) -> BaseException | None:
    """The disk or database failure that ``failure`` is (or was raised from), else None.

    An AtomicplugError is already a verdict and is left alone; with ``wrapped``
    an OperationError (exit 1: the extractor's "cannot write", a MigrationError
    over SQLite's "disk I/O error") is looked through, for callers that have
    just rolled everything back and so know that nothing changed.
    """
    current: BaseException | None = failure
    for _ in range(8):  # a chain of causes is short; never loop on a cycle
        if current is None:
            return None
        if isinstance(current, AtomicplugError):
            if not wrapped or not isinstance(current, OperationError) or isinstance(current, (StorageError, DownloadError)):
                return None
        elif _is_storage(current):
            return current
        current = current.__cause__
    return None


def describe(cause: BaseException, site: Site | None = None, wrapper: BaseException | None = None) -> str:
    """``could not fsync /x/state/journal: No space left on device (ENOSPC)``: what, where, why.

    An OSError that names no path and no step (a write to a pipe, code that
    does not name its steps) is told by the error that wrapped it, whose
    message names the place, or else placed under the site's home.
    """
    if isinstance(cause, OSError):
        name = f" ({errnos.errorcode.get(cause.errno, cause.errno)})" if cause.errno is not None else ""
        reason = f"{cause.strerror or os.strerror(cause.errno)}{name}" if cause.errno is not None else str(cause)
        step = getattr(cause, _STEP, None)
        if step is not None:
            return f"could not {step[0]} {step[1]}: {reason}"
        if cause.filename is not None:
            where = f"{cause.filename} -> {cause.filename2}" if cause.filename2 is not None else str(cause.filename)
            return f"{where}: {reason}"
        if wrapper is not None and wrapper is not cause:
            return f"{wrapper}{name}"
        return f"could not change files under {site.home}: {reason}" if site is not None else reason
    from atomicplug.database.engine import first_line

    where = database_location(site.database_url) if site is not None else "(unknown)"
    return f"the database {where} failed: {first_line(cause)}"


def _where(cause: BaseException, site: Site | None) -> str | None:
    if isinstance(cause, OSError):
        step = getattr(cause, _STEP, None)
        if step is not None:
            return str(step[1])
        return str(cause.filename) if cause.filename is not None else (str(site.home) if site is not None else None)
    return database_location(site.database_url) if site is not None else None


def storage_error(
    head: str, cause: BaseException, outcome: str, site: Site | None = None, wrapper: BaseException | None = None
) -> StorageError:
    """``StorageError("<head>: <what failed where>; <outcome>")``, carrying the path and errno."""
    code = cause.errno if isinstance(cause, OSError) else None
    return StorageError(f"{head}: {describe(cause, site, wrapper)}; {outcome}", path=_where(cause, site), errno=code)


@contextmanager
def reported(what: str, outcome: str = NOTHING_CHANGED, site: Site | None = None) -> Iterator[None]:
    """A disk or database failure escaping the block becomes ``StorageError("<what> failed: …; <outcome>")``.

    For boundaries where an escaping OSError cannot have changed anything
    (``outcome`` says otherwise where it can); AtomicplugErrors pass unchanged.
    """
    try:
        yield
    except Exception as exc:
        cause = storage_cause(exc)
        if cause is None:
            raise
        raise storage_error(f"{what} failed", cause, outcome, site) from exc


def database_location(url: str) -> str:
    """Where a database URL points, without its credentials: a SQLite file, or host:port/name."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.split("+", 1)[0] == "sqlite":
        return parts.path[1:] if parts.path.startswith("/") else (parts.path or ":memory:")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"
