"""Where this addon finds the application's database.

``ATOMICPLUG_DATABASE_URL`` when set, else the ``database_url`` of the
atomicplug config (``ATOMICPLUG_CONFIG`` or ``./atomicplug.toml``). One
SQLAlchemy engine per URL, created on first use. There is deliberately no
in-memory fallback: an addon writing to a database nobody else reads would
lose every message silently.
"""

from __future__ import annotations

import importlib.util
import os
import threading

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine, make_url

DATABASE_URL_ENV = "ATOMICPLUG_DATABASE_URL"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


class DatabaseNotConfigured(RuntimeError):
    """Neither ATOMICPLUG_DATABASE_URL nor an atomicplug config names a database."""


def database_url() -> str:
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    try:
        from atomicplug.config import Config

        return Config.load().database_url
    except Exception as exc:  # ConfigError, missing file, atomicplug not importable
        raise DatabaseNotConfigured(
            f"ai_chatbot: no database configured: set {DATABASE_URL_ENV} or ATOMICPLUG_CONFIG ({exc})"
        ) from exc


def engine_url(url: str) -> URL:
    """A bare ``postgresql://`` means psycopg2, as for atomicplug (SQLAlchemy 2.1 would pick psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is not None:
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def get_engine() -> Engine:
    url = database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_engine(engine_url(url), pool_pre_ping=True)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (the loader may call it before unloading the addon)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
