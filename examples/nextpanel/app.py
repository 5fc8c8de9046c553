"""The NextPanel backend: its own routes, the marketplace, and the addons atomicplug installed.

Run it (from the repository root)::

    ATOMICPLUG_CONFIG=/path/atomicplug.toml NEXTPANEL_ADMIN_TOKEN=secret \\
        uvicorn examples.nextpanel.app:app --host 127.0.0.1 --port 8000

or ``python -m examples.nextpanel``. On startup the loader recovers any
unfinished transaction (in a worker thread) and mounts every enabled addon;
after each marketplace operation it remounts, so addon routes and the
OpenAPI schema follow without a restart.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from atomicplug.config import Config
from atomicplug.errors import ConfigError
from atomicplug.loader import AddonLoader

from .errors import install_error_handler
from .fast_reads import FastReads
from .marketplace import marketplace_router
from .panel import OPERATION_LOCK_TIMEOUT, Panel
from .security import admin_guard

__all__ = ["ADMIN_NAME_ENV", "STARTUP_LOCK_TIMEOUT", "TOKEN_ENV", "create_app"]

TOKEN_ENV = "NEXTPANEL_ADMIN_TOKEN"
#: Who the audit history names for requests made with the admin token.
ADMIN_NAME_ENV = "NEXTPANEL_ADMIN_NAME"
#: Startup recovery waits this long for a running operation (e.g. the CLI), then loads anyway.
STARTUP_LOCK_TIMEOUT = 5.0
#: The marketplace page (plain HTML, CSS and JS; it asks for the admin token itself).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page loads nothing from elsewhere: README images and scripts from other sites are blocked too.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(
    config_path: str | os.PathLike[str] | None = None,
    admin_token: str | None = None,
    *,
    lock_timeout: float = OPERATION_LOCK_TIMEOUT,
) -> FastAPI:
    """Build the backend; defaults: ``$ATOMICPLUG_CONFIG`` (else ./atomicplug.toml) and ``$NEXTPANEL_ADMIN_TOKEN``.

    ``lock_timeout``: how long an operation waits for another process (the CLI)
    to release the installer before it fails as busy. Raises ConfigError when
    the config is missing or invalid or no admin token is given.
    """
    config = Config.load(Path(config_path) if config_path else None)
    token = admin_token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError(f"no admin token: set {TOKEN_ENV} (every marketplace request must carry it as a bearer token)")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(panel.loader.recover)
        await run_in_threadpool(panel.loader.sync)  # cluster mode: the desired generation before any route
        await panel.reload()  # imports in a worker thread, routes mounted on the loop, before the first request
        loop = asyncio.get_running_loop()
        panel.loader.watch(loop.call_soon_threadsafe)  # cluster mode: routes follow the other nodes' installs
        try:
            yield
        finally:
            panel.loader.shutdown()  # addons' teardown hooks: engines disposed, connections closed

    # Swagger UI and ReDoc from the package's own files: /docs works without internet.
    app = FastAPIOffline(title="NextPanel billing backend", lifespan=lifespan)
    loader = AddonLoader(config, app, lock_timeout=min(config.lock_timeout, STARTUP_LOCK_TIMEOUT))
    panel = Panel(config=config, loader=loader, admin_name=os.environ.get(ADMIN_NAME_ENV, "admin"), lock_timeout=lock_timeout)
    app.state.panel = panel
    install_error_handler(app, panel.context)

    @app.get("/api/v1/health", tags=["panel"])
    async def health() -> dict[str, Any]:
        """Public liveness: which addons are loaded or failed (ids only; reasons need the admin token)."""
        status = panel.loader.status()
        return {
            "status": "degraded" if status["failed"] else "ok",
            "addons": {"loaded": sorted(status["loaded"]), "failed": sorted(status["failed"])},
        }

    app.include_router(marketplace_router(panel, admin_guard(token)))
    app.add_middleware(FastReads, panel=panel, token=token)  # the page's hot reads from bytes, before routing

    @app.get("/marketplace", include_in_schema=False)
    async def marketplace_page() -> FileResponse:
        """The admin's marketplace page; public (it holds no data: every API call it makes needs the token)."""
        return FileResponse(STATIC_DIR / "marketplace.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY})

    app.mount("/marketplace/static", StaticFiles(directory=STATIC_DIR), name="marketplace-static")
    return app


def __getattr__(name: str) -> Any:
    """``examples.nextpanel.app:app`` for uvicorn, built from the environment on first access."""
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
