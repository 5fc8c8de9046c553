"""One handler for every expected atomicplug failure: a status from its exit code, never a 500.

Exit codes are DESIGN.md "Interfaces": 1 failed and rolled back, 2 usage or
config → 400; 3 security refusal (signature, permission, trust) → 403;
75 lock busy → 409. The body is ``{"detail": <one line>, "exit_code": n}``
plus the ``operation_id`` when the request started a tracked operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from atomicplug.errors import AtomicplugError

__all__ = ["STATUS_BY_EXIT_CODE", "install_error_handler", "status_for"]

STATUS_BY_EXIT_CODE = {1: 400, 2: 400, 3: 403, 75: 409}


def status_for(error: AtomicplugError) -> int:
    return STATUS_BY_EXIT_CODE.get(error.exit_code, 400)


async def _handle(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AtomicplugError)
    body: dict[str, Any] = {"detail": " ".join(str(error).split()) or type(error).__name__, "exit_code": error.exit_code}
    operation_id = getattr(request.state, "operation_id", None)
    if operation_id:
        body["operation_id"] = operation_id
    headers = {"Retry-After": "1"} if error.exit_code == 75 else None
    return JSONResponse(body, status_code=status_for(error), headers=headers)


def install_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(AtomicplugError, _handle)
