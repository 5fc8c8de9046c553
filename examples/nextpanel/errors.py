"""Errors written for admins: a title and a detail from the library's error class and fields, never a 500.

Status from the exit code (docs/design.md "Interfaces"): 1 failed and rolled back,
2 usage or config → 400; 3 security refusal (signature, permission, trust) →
403; 75 lock busy → 409 with ``Retry-After``. The library's own line (written
for the CLI: "use --cascade") is kept as ``raw`` for a "details" disclosure,
with temporary file names removed; ``detail`` names API fields instead.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from atomicplug.errors import (
    AtomicplugError,
    DependencyError,
    DownloadError,
    LockBusyError,
    RepositoryUnreachableError,
    SecurityError,
    SettingsError,
    TrustError,
    UsageError,
)

from .models import ErrorBody

__all__ = ["RETRY_AFTER_SECONDS", "STATUS_BY_EXIT_CODE", "describe", "install_error_handler", "is_unreachable", "status_for"]

STATUS_BY_EXIT_CODE = {1: 400, 2: 400, 3: 403, 75: 409}
#: What a busy answer asks the client to wait (the page honours it).
RETRY_AFTER_SECONDS = 2

#: CLI flags in library messages → the API's request fields.
_FLAGS = {"--cascade": "cascade", "--allow-downgrade": "allow_downgrade", "--keep-data": "keep_data"}
_TEMP_PATH = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s'\"():,]+")
#: fsutil's temp names (.<name>.<pid>-<random>.tmp-atomicplug) and the manifest check's (.atomicplug-verify-<random>)
_ATOMIC_TEMP = re.compile(r"[^\s'\"():,]*(?:\.tmp-atomicplug\b|\.atomicplug-[\w-]+)")

Names = Callable[[str], str]

#: Security refusals said plainly (the library's line, with the exact reason, goes to ``raw``).
_SECURITY_DETAIL = {
    "SignatureError": "The package's signature is missing or is not from a trusted publisher key. Nothing was installed.",
    "PackageError": "The package is malformed or contains something unsafe (see details). Nothing was installed.",
    "MetadataError": "The package's metadata.json breaks a rule (see details). Nothing was installed.",
    "PermissionRefusedError": "The plugin asks for a permission this panel does not grant (see details). Nothing was installed.",
}


def status_for(error: AtomicplugError) -> int:
    return STATUS_BY_EXIT_CODE.get(error.exit_code, 400)


def is_unreachable(error: BaseException) -> bool:
    """A download that failed because nothing answered (refused, reset, timed out), not a bad answer."""
    return isinstance(error, RepositoryUnreachableError)


def _raw(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = _TEMP_PATH.sub("(temporary file)", text)
    text = _ATOMIC_TEMP.sub("(temporary file)", text)
    for flag, field in _FLAGS.items():
        text = text.replace(flag, f"{field}: true")
    return text


def _names(ids: tuple[str, ...] | list[str], name: Names) -> str:
    named = [name(i) for i in ids]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def describe(error: BaseException, *, name: Names = str, repository: str | None = None, operation_id: str | None = None) -> ErrorBody:
    """The admin's view of ``error``: title, detail in API terms, and the raw line for details."""
    raw = _raw(error)
    if not isinstance(error, AtomicplugError):
        return ErrorBody(title="Unexpected error", detail="The server failed unexpectedly; nothing was confirmed. See the server log.",
                         error=type(error).__name__, exit_code=1, raw=raw, operation_id=operation_id)
    title, detail = error.title, raw
    plugins = list(error.plugins)
    if is_unreachable(error):
        title = "Repository unreachable"
        where = f" at {repository}" if repository else ""
        detail = f"The plugin repository{where} did not answer. Nothing was changed; installed plugins keep working. Try again when it is back."
    elif isinstance(error, TrustError) and raw.startswith("manifest.json") and "signature" in raw:
        detail = (
            "The repository's plugin list is not signed by a trusted publisher key: it may have been altered. "
            "Nothing was installed; ask the repository's publisher."
        )
    elif isinstance(error, TrustError) and "sha256" in raw:
        detail = (
            "A downloaded package does not match the checksum in the repository's signed list: it may have been altered "
            "on the way or on the server. Nothing was installed."
        )
    elif isinstance(error, SecurityError) and type(error).__name__ in _SECURITY_DETAIL:
        detail = _SECURITY_DETAIL[type(error).__name__]
    elif isinstance(error, LockBusyError):
        detail = f"Another operation holds the installer. Nothing was changed; try again in {RETRY_AFTER_SECONDS} seconds."
    elif isinstance(error, DependencyError) and error.option == "cascade" and plugins:
        target = _subject(raw)
        detail = (
            f"{_names(plugins, name)} {'needs' if len(plugins) == 1 else 'need'} {name(target) if target else 'this plugin'}. "
            "Uninstall them together (cascade: true) or uninstall them first."
        )
    elif isinstance(error, DependencyError) and plugins:
        target = _subject(raw)
        detail = f"{_names(plugins, name)} {'needs' if len(plugins) == 1 else 'need'} {name(target) if target else 'this plugin'} enabled. Disable them first."
    elif isinstance(error, SettingsError) and len(error.problems) > 1:
        detail = f"{len(error.problems)} settings need a change: " + "; ".join(error.problems)
    elif isinstance(error, UsageError) and error.option == "allow_downgrade":
        detail = raw.replace(" (use allow_downgrade: true)", "") + ". Confirm the downgrade with allow_downgrade: true."
    return ErrorBody(
        title=title,
        detail=detail,
        error=type(error).__name__,
        exit_code=error.exit_code,
        raw=raw,
        option=error.option,
        plugins=plugins,
        operation_id=operation_id,
        retry_after=RETRY_AFTER_SECONDS if error.exit_code == 75 else None,
        problems=[_raw(p) for p in getattr(error, "problems", [])] if isinstance(error, SettingsError) else [],
        fields=list(getattr(error, "fields", ())),
    )


def _subject(raw: str) -> str | None:
    """The plugin a dependency refusal is about: "a, b require(s) <id>; ..." → <id>."""
    match = re.search(r"require\(s\) ([a-z][a-z0-9_]*)", raw)
    return match.group(1) if match else None


def error_response(body: ErrorBody) -> JSONResponse:
    status = STATUS_BY_EXIT_CODE.get(body.exit_code, 400)
    headers = {"Retry-After": str(body.retry_after)} if body.retry_after else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handler(app: FastAPI, context: Callable[[], dict[str, Any]]) -> None:
    """AtomicplugError → its status and :class:`ErrorBody`; ``context()`` gives ``name`` and ``repository``."""

    async def handle(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AtomicplugError)
        body = getattr(request.state, "error_body", None) or describe(
            error, operation_id=getattr(request.state, "operation_id", None), **context()
        )
        return error_response(body)

    app.add_exception_handler(AtomicplugError, handle)
