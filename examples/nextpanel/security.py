"""The admin bearer token guarding the marketplace: 401 without it, 403 when wrong."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["admin_guard"]

#: Module level: with postponed annotations FastAPI resolves ``Depends(_bearer)`` from the globals.
_bearer = HTTPBearer(auto_error=False)


def admin_guard(admin_token: str) -> Callable[..., Awaitable[None]]:
    """A dependency accepting only ``Authorization: Bearer <admin_token>`` (constant-time compare)."""
    expected = admin_token.encode("utf-8")

    async def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if credentials is None:
            raise HTTPException(401, "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise HTTPException(403, "invalid admin token")

    return require_admin
