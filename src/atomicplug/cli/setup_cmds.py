"""``atomicplug init``: write a commented config with the embedded defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def cmd_init(args: argparse.Namespace) -> int:
    from atomicplug.config import CONFIG_TEMPLATE
    from atomicplug.errors import UsageError

    path = Path(args.path)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write a commented atomicplug.toml", description="Write a commented atomicplug.toml.")
    p.add_argument("path", nargs="?", default="atomicplug.toml")
    p.add_argument("--home", default="state")
    p.add_argument("--backend-addons", default="app/addons")
    p.add_argument("--frontend-addons", default="web/src/addons")
    p.add_argument("--database-url", help="default: SQLite at <home>/app.db")
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB", help="trusted minisign public key (repeatable)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=cmd_init)
