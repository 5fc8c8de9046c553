"""The page's hot reads answered from prepared bytes, before FastAPI's routing.

Every open marketplace page lists and searches plugins and polls operations.
With the listing and the operations overview already kept as JSON bytes
(:mod:`examples.nextpanel.listing`, :meth:`OperationTracker.overview_json`),
most of what such a read cost was FastAPI itself: routing, the bearer
dependency, parameter validation, the response machinery (bench/README.md
"Marketplace under load"). This middleware answers exactly those reads —
``GET …/plugins`` with at most one ``q`` and one ``category`` within their
length limits, and ``GET …/operations`` — when they carry the admin token and
the bytes are ready, with the same body and headers the routes would send.
Anything else (no or another token, other parameters, a listing that must
be built first) goes on to the routes, which answer it as always (401, 403,
422, a build in a worker thread).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from .panel import Panel

__all__ = ["FastReads"]

PLUGINS = "/api/v1/marketplace/plugins"
OPERATIONS = "/api/v1/marketplace/operations"
#: The routes' own limits on these parameters (marketplace.py); anything beyond goes to FastAPI's 422.
_LIMITS = {"q": 100, "category": 64}

Scope = dict[str, Any]


class FastReads:
    """ASGI middleware: hot reads from bytes, everything else to ``app``."""

    def __init__(self, app: Any, panel: Panel, token: str) -> None:
        self.app = app
        self.panel = panel
        self._authorization = b"Bearer " + token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        body = self._answer(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-length", str(len(body)).encode("ascii")), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _answer(self, scope: Scope) -> bytes | None:
        path = scope["path"]
        if path not in (PLUGINS, OPERATIONS) or not self._authorized(scope["headers"]):
            return None
        if path == OPERATIONS:
            return None if scope["query_string"] else self.panel.tracker.overview_json()
        params = _params(scope["query_string"])
        if params is None:
            return None
        listing = self.panel.current_listing()
        if listing is None:
            return None
        query, category = params.get("q"), params.get("category")
        return listing.search(query, category) if (query or category) else listing.data

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        values = [value for name, value in headers if name == b"authorization"]
        return len(values) == 1 and hmac.compare_digest(values[0], self._authorization)


def _params(query_string: bytes) -> dict[str, str] | None:
    """``q`` and ``category`` as the route would read them; None for anything the route must judge."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)  # as Starlette parses them
    params = dict(pairs)
    if len(params) != len(pairs) or set(params) - set(_LIMITS):
        return None
    if any(len(value) > _LIMITS[key] for key, value in params.items()):
        return None
    return params
