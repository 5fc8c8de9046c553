"""The operator's configuration: where state, addons and the database live.

Found as docs/design.md "Interfaces" says: ``--config PATH``, else
``$ATOMICPLUG_CONFIG``, else ``./atomicplug.toml``. Relative paths resolve
from the config file's folder, so a config works wherever it is invoked from.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from atomicplug.errors import ConfigError

__all__ = [
    "Config",
    "ExtractLimits",
    "KNOWN_PERMISSIONS",
    "PERMISSION_ALIASES",
    "CONFIG_TEMPLATE",
    "find_config_path",
    "with_aliases",
]

#: Every permission a plugin may ask for under atomicplug's own names.
_CANONICAL_PERMISSIONS: frozenset[str] = frozenset(
    {
        "database.create_tables",
        "database.read",
        "database.write",
        "api.routes",
        "frontend.routes",
        "network.outbound",
        "filesystem.read",
        "filesystem.write",
        "email.send",
        "sms.send",
        "billing.read",
        "billing.write",
        "users.read",
        "users.write",
        "scheduler.jobs",
    }
)

#: Names the NextPanel plugin format writes, accepted exactly as written: alias → atomicplug's name.
#: Granting either name grants both (docs/design.md "Permissions").
PERMISSION_ALIASES: dict[str, str] = {"api.register_routes": "api.routes"}

#: Every permission a plugin may ask for; anything else is refused at validation.
KNOWN_PERMISSIONS: frozenset[str] = _CANONICAL_PERMISSIONS | frozenset(PERMISSION_ALIASES)


def with_aliases(permissions: frozenset[str]) -> frozenset[str]:
    """``permissions`` plus every alias of a name in it and every name an alias in it stands for."""
    expanded = set(permissions)
    for alias, name in PERMISSION_ALIASES.items():
        if alias in permissions or name in permissions:
            expanded |= {alias, name}
    return frozenset(expanded)


@attrs.frozen
class ExtractLimits:
    """Caps the safe extractor enforces on the bytes it actually streams."""

    max_entries: int = 10_000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_ratio: int = 200
    max_metadata_bytes: int = 256 * 1024
    max_name_bytes: int = 255
    max_path_bytes: int = 1024


CONFIG_TEMPLATE = """\
# atomicplug configuration. Relative paths resolve from this file's folder.

# Where atomicplug keeps its journal, downloads, objects, store, generations, lock and registry.
home = "{home}"

# The application's addon folders. backend_addons is made a link to <home>/current/backend,
# the live generation (one folder per installed plugin), so a transaction switches every
# plugin at once (a folder already there must hold nothing of yours). frontend_addons
# atomicplug owns whole (index.ts, types.ts, a .store link).
backend_addons = "{backend_addons}"
frontend_addons = "{frontend_addons}"

# The frontend gate: plugins' npm dependencies are checked against the host app's
# package.json and node_modules (the host: the nearest folder above frontend_addons
# with a package.json, or frontend_host); frontend_check, when set, runs there before
# the database COMMIT with the candidate index in $ATOMICPLUG_FRONTEND_INDEX.
# frontend_host = "web"
# frontend_check = "npx tsc --noEmit -p tsconfig.app.json"
# frontend_check_timeout = 600

# The application's database (SQLite or PostgreSQL; MySQL/MariaDB are refused:
# their DDL auto-commits, so a failed migration could not be rolled back).
database_url = "{database_url}"

# The plugin repository (a static folder served over HTTP); optional.
# repository = "http://127.0.0.1:8002"

# minisign public keys whose signatures are trusted.
trusted_keys = [{trusted_keys}]

# Refuse packages without a valid signature (strongly recommended).
allow_unsigned = false

# Seconds a second writer waits for the lock before giving up (exit 75).
lock_timeout = 30

# Permissions plugins may be granted (default: every known permission).
# granted_permissions = ["database.create_tables", "api.routes", "frontend.routes"]

# Import each new plugin backend in a fresh interpreter before the database
# COMMIT, so a backend that does not import is refused instead of breaking the app.
health_check = true

# Generations gc keeps: the live one and the ones before it (at least 2, so the
# previous generation stays for `atomicplug rollback --generation`).
# keep_generations = 2

# Repository downloads: a whole fetch (retries included) must end within
# download_timeout seconds, and a server sending fewer than download_min_rate
# bytes/s over any download_rate_window seconds is given up on (0: no minimum).
# download_timeout = 300
# download_min_rate = 1024
# download_rate_window = 30

# Seconds a listing may reuse the verified manifest before revalidating it.
# manifest_max_age = 60

# Cluster mode (PostgreSQL only): several app servers on one database converge to the
# same plugins; the database holds the desired state, writers serialise on an advisory
# lock and migrations run once. Each node keeps its own home and addon folders and runs
# `atomicplug sync --watch` (or the loader does). See README "Cluster".
# cluster = true
# node_id = "app-1"                 # default: the host name
# cluster_stage_wait = 30           # seconds a writer waits for live nodes to stage before COMMIT

# Safe-extraction caps.
# max_entries = 10000
# max_unpacked_bytes = 536870912
# max_ratio = 200
"""


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate the config file, or raise ConfigError saying where we looked."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} {_not_a_file(path)}")
        return path.resolve()
    env = os.environ.get("ATOMICPLUG_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"ATOMICPLUG_CONFIG points at {path}, which {_not_a_file(path)}")
        return path.resolve()
    path = Path("atomicplug.toml")
    if path.is_file():
        return path.resolve()
    raise ConfigError("no config: pass --config PATH, set ATOMICPLUG_CONFIG, or run `atomicplug init` here")


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as the config file (it is not a file)."""
    if path.is_dir():
        return f"is a folder, not a file (expected the config file itself, such as {path / 'atomicplug.toml'})"
    return "does not exist"


_KNOWN_KEYS = {
    "home",
    "backend_addons",
    "frontend_addons",
    "database_url",
    "repository",
    "trusted_keys",
    "allow_unsigned",
    "lock_timeout",
    "granted_permissions",
    "max_entries",
    "max_unpacked_bytes",
    "max_ratio",
    "frontend_index",
    "download_timeout",
    "download_min_rate",
    "download_rate_window",
    "manifest_max_age",
    "health_check",
    "keep_generations",
    "frontend_host",
    "frontend_check",
    "frontend_check_timeout",
    "cluster",
    "node_id",
    "cluster_stage_wait",
}


def _expect(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"config '{key}' must be of type {name} (got {value!r})")
    return value


@attrs.frozen
class Config:
    """A loaded, validated configuration with absolute paths."""

    home: Path
    backend_addons: Path
    frontend_addons: Path
    database_url: str
    repository: str | None = None
    trusted_keys: tuple[Path, ...] = ()
    allow_unsigned: bool = False
    lock_timeout: float = 30.0
    granted_permissions: frozenset[str] = KNOWN_PERMISSIONS
    limits: ExtractLimits = ExtractLimits()
    frontend_index: bool = True
    download_timeout: float = 300.0
    download_min_rate: float = 1024.0
    download_rate_window: float = 30.0
    manifest_max_age: float = 60.0
    health_check: bool = True
    keep_generations: int = 2
    frontend_host: Path | None = None
    frontend_check: str = ""
    frontend_check_timeout: float = 600.0
    cluster: bool = False
    node_id: str = ""
    cluster_stage_wait: float = 30.0
    source: Path | None = None

    # -- named constructors -------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Config:
        """Read the config file found per docs/design.md (see :func:`find_config_path`)."""
        found = find_config_path(path)
        try:
            data = tomllib.loads(found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {found}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {found} is not valid TOML: {exc}") from exc
        return cls.from_dict(data, base=found.parent, source=found)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
        """Validate a parsed config; relative paths resolve from ``base``."""
        unknown = sorted(set(data) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"config has unknown key '{unknown[0]}' (known: {', '.join(sorted(_KNOWN_KEYS))})")

        def path_of(key: str, default: str) -> Path:
            # Absolute and normalised, but symlinks kept: the addon folders ARE links (to the live
            # generation), and resolving them here would pin one generation for the process's life.
            return Path(os.path.abspath(base / _expect(data, key, str, default)))

        home = path_of("home", "state")
        default_db = f"sqlite:///{home / 'app.db'}"
        database_url = _expect(data, "database_url", str, default_db)
        if database_url.startswith("sqlite:///") and not database_url.startswith("sqlite:////"):
            relative = database_url[len("sqlite:///") :]
            if relative and relative != ":memory:":
                database_url = f"sqlite:///{(base / relative).resolve()}"
        keys = _expect(data, "trusted_keys", list, [])
        for key in keys:
            if not isinstance(key, str):
                raise ConfigError(f"config 'trusted_keys' must list file paths (got {key!r})")
        granted = _expect(data, "granted_permissions", list, sorted(KNOWN_PERMISSIONS))
        unknown_perms = sorted(set(map(str, granted)) - KNOWN_PERMISSIONS)
        if unknown_perms:
            raise ConfigError(f"config 'granted_permissions' names unknown permission '{unknown_perms[0]}'")
        lock_timeout = _expect(data, "lock_timeout", (int, float), 30)
        if lock_timeout < 0:
            raise ConfigError(f"config 'lock_timeout' must be >= 0 (got {lock_timeout})")
        defaults = ExtractLimits()
        limits = attrs.evolve(
            defaults,
            max_entries=_positive(data, "max_entries", defaults.max_entries),
            max_unpacked_bytes=_positive(data, "max_unpacked_bytes", defaults.max_unpacked_bytes),
            max_ratio=_positive(data, "max_ratio", defaults.max_ratio),
        )
        frontend_host = data.get("frontend_host")
        if frontend_host is not None and not isinstance(frontend_host, str):
            raise ConfigError(f"config 'frontend_host' must be a folder path (got {frontend_host!r})")
        repository = _repository(data)
        cluster = _expect(data, "cluster", bool, False)
        if cluster:
            from atomicplug.database.engine import backend_name

            if backend_name(database_url) != "postgresql":
                raise ConfigError(
                    "config 'cluster = true' needs a postgresql:// database_url: the nodes share the desired state, "
                    f"the writer lock and the notifications through it (got {backend_name(database_url)})"
                )
        return cls(
            home=home,
            backend_addons=path_of("backend_addons", "app/addons"),
            frontend_addons=path_of("frontend_addons", "web/src/addons"),
            database_url=database_url,
            repository=repository,
            trusted_keys=tuple((base / k).resolve() for k in keys),
            allow_unsigned=_expect(data, "allow_unsigned", bool, False),
            lock_timeout=float(lock_timeout),
            granted_permissions=with_aliases(frozenset(map(str, granted))),
            limits=limits,
            frontend_index=_expect(data, "frontend_index", bool, True),
            download_timeout=_number(data, "download_timeout", 300, positive=True),
            download_min_rate=_number(data, "download_min_rate", 1024, positive=False),
            download_rate_window=_number(data, "download_rate_window", 30, positive=True),
            manifest_max_age=_number(data, "manifest_max_age", 60, positive=False),
            health_check=_expect(data, "health_check", bool, True),
            keep_generations=_at_least(data, "keep_generations", 2, minimum=2),
            frontend_host=(base / frontend_host).resolve() if frontend_host is not None else None,
            frontend_check=_expect(data, "frontend_check", str, "").strip(),
            frontend_check_timeout=_number(data, "frontend_check_timeout", 600, positive=True),
            cluster=cluster,
            node_id=_node_id(data),
            cluster_stage_wait=_number(data, "cluster_stage_wait", 30, positive=False),
            source=source,
        )

    @classmethod
    def for_directory(cls, root: Path, **overrides: Any) -> Config:
        """The embedded default layout under one folder (tests, quickstart)."""
        data: dict[str, Any] = {"home": "state", "backend_addons": "app/addons", "frontend_addons": "web/src/addons"}
        data.update({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
        return cls.from_dict(data, base=Path(root).resolve())

    # -- derived paths (docs/design.md "State") ----------------------------------
    @property
    def lock_path(self) -> Path:
        return self.home / "lock"

    @property
    def journal_dir(self) -> Path:
        return self.home / "journal"

    @property
    def staging_dir(self) -> Path:
        return self.home / "staging"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def manifest_cache_dir(self) -> Path:
        return self.home / "manifest_cache"

    @property
    def registry_path(self) -> Path:
        return self.home / "addon_registry.json"


def _repository(data: dict[str, Any]) -> str | None:
    """``repository``: an http:// or https:// URL with a host (an empty string: none, as when unset)."""
    value = data.get("repository")
    if value is None or value == "":
        return value
    if not (isinstance(value, str) and _is_http_url(value)):
        raise ConfigError(f"config 'repository' must be an http:// or https:// URL, such as \"http://127.0.0.1:8002\" (got {value!r})")
    return value


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError:  # that port, or an unclosed "[" of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in text)


#: A node id is shown in status and sent as part of the PostgreSQL application_name (63 bytes at most).
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


def _node_id(data: dict[str, Any]) -> str:
    """``node_id``, default the host name (cut at its first dot when too long)."""
    # os.uname's node name is what socket.gethostname() returns (both are uname(2)'s
    # nodename), without importing socket (~5 ms of every command's start-up).
    default = os.uname().nodename or "node"
    if not _NODE_ID.match(default):
        default = default.split(".", 1)[0][:48] or "node"
    value = _expect(data, "node_id", str, default)
    if not _NODE_ID.match(value):
        raise ConfigError(
            f"config 'node_id' must be 1-48 letters, digits, '.', '_' or '-', starting with a letter or digit (got {value!r})"
        )
    return str(value)


def _at_least(data: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = _expect(data, key, int, default)
    if value < minimum:
        raise ConfigError(f"config '{key}' must be at least {minimum} (got {value})")
    return int(value)


def _positive(data: dict[str, Any], key: str, default: int) -> int:
    value = _expect(data, key, int, default)
    if value <= 0:
        raise ConfigError(f"config '{key}' must be a positive integer (got {value})")
    return int(value)


def _number(data: dict[str, Any], key: str, default: float, *, positive: bool) -> float:
    """A finite number >= 0 (> 0 when ``positive``); booleans are not numbers here."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        expected = "a positive number" if positive else "a number >= 0"
        raise ConfigError(f"config '{key}' must be {expected} (got {value!r})")
    return float(value)
