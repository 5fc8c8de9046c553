"""``atomicplug init``: write a commented config with the embedded defaults, and the frontend addon folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["register"]


def cmd_init(args: argparse.Namespace) -> int:
    import tomllib

    from atomicplug.config import CONFIG_TEMPLATE, Config
    from atomicplug.errors import UsageError
    from atomicplug.frontend.layout import check_layout

    path = _config_path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    keys = ", ".join(f'"{k}"' for k in args.trusted_key)
    text = CONFIG_TEMPLATE.format(
        home=args.home,
        backend_addons=args.backend_addons,
        frontend_addons=args.frontend_addons,
        database_url=args.database_url or f"sqlite:///{args.home}/app.db",
        trusted_keys=keys,
    )
    config = Config.from_dict(tomllib.loads(text), base=path.parent.resolve(), source=path.resolve())
    check_layout(config)  # a frontend folder holding foreign files: refused before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    _write_frontend_folder(config)
    print(f"wrote {config.frontend_addons} (index.ts, types.ts, .store)")
    return 0


def _config_path(given: str) -> Path:
    """The file ``init PATH`` writes: PATH, or PATH/atomicplug.toml when PATH names a folder.

    A folder: an existing one, a PATH ending in '/', or a new PATH not ending in '.toml'
    (``init site`` makes site/atomicplug.toml, not a config file named "site").
    """
    path = Path(given)
    if path.is_dir() or given.endswith("/") or (not os.path.lexists(path) and path.suffix != ".toml"):
        return path / "atomicplug.toml"
    return path


def _write_frontend_folder(config: Config) -> None:
    """index.ts and types.ts from the start, so a fresh host app compiles before any install.

    Under the writer lock, after recovering what a crash left: the index is derived from
    the registry, which only a finished transaction describes.
    """
    from atomicplug.frontend.layout import write_layout
    from atomicplug.journal.reader import pending_journals
    from atomicplug.lock import writer_lock
    from atomicplug.registry import Registry

    with writer_lock(config.lock_path, config.lock_timeout):
        if pending_journals(config.journal_dir):
            from atomicplug.transaction import recover_pending

            recover_pending(config)
        write_layout(config, Registry.load(config.registry_path), "init")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented atomicplug.toml and the frontend addon folder",
        description="Write a commented atomicplug.toml, and the frontend addon folder (index.ts, types.ts, .store).",
    )
    p.add_argument(
        "path",
        nargs="?",
        default="atomicplug.toml",
        metavar="PATH",
        help="the config file (default %(default)s), or a folder to write atomicplug.toml in: "
        "an existing one, one ending in /, or a new PATH not ending in .toml",
    )
    p.add_argument("--home", default="state")
    p.add_argument("--backend-addons", default="app/addons")
    p.add_argument("--frontend-addons", default="web/src/addons")
    p.add_argument("--database-url", help="default: SQLite at <home>/app.db")
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB", help="trusted minisign public key (repeatable)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=cmd_init)
