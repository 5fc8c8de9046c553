"""``atomicplug repo init|add|sign|list``, ``serve``, ``search`` and ``available``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atomicplug.cli import add_command_group
from atomicplug.errors import UsageError

__all__ = ["register"]


def _secret_key(path: str) -> Any:
    from atomicplug.cli.signing_cmds import read_password
    from atomicplug.minisign import SecretKey

    if not Path(path).is_file():
        raise UsageError(f"secret key {path} does not exist")
    return SecretKey.load(path, lambda: read_password(confirm=False))


def _repo_init(args: argparse.Namespace) -> int:
    from atomicplug.repository.repo_admin import init_repository

    manifest = init_repository(Path(args.repo), _secret_key(args.key), expires_days=args.expires_days)
    print(f"initialised repository {args.repo} (manifest version {manifest.version})")
    return 0


def _repo_add(args: argparse.Namespace) -> int:
    from atomicplug.minisign import load_trusted_keys
    from atomicplug.repository.repo_admin import add_packages

    extra = load_trusted_keys(args.trusted_key or [])
    result = add_packages(
        Path(args.repo), [Path(z) for z in args.zips], _secret_key(args.key), trusted_keys=extra, expires_days=args.expires_days
    )
    for entry in result.added:
        print(f"added {entry.id} {entry.version}")
    for entry in result.unchanged:
        print(f"unchanged {entry.id} {entry.version} (already present)")
    state = "now" if result.added else "still"
    print(f"manifest {state} at version {result.manifest.version}")
    return 0


def _repo_sign(args: argparse.Namespace) -> int:
    from atomicplug.repository.manifest import format_time
    from atomicplug.repository.repo_admin import resign_repository

    manifest = resign_repository(Path(args.repo), _secret_key(args.key), expires_days=args.expires_days)
    print(f"manifest version {manifest.version} signed, expires {format_time(manifest.expires)}")
    return 0


def _print_entries(entries: Sequence[Any], installed: Mapping[str, Any] | None, as_json: bool) -> None:
    if as_json:
        rows = []
        for e in entries:
            row = e.to_dict()
            if installed is not None:
                row["installed"] = str(installed[e.id]) if e.id in installed else None
            rows.append(row)
        json.dump(rows, sys.stdout, indent=2)
        print()
        return
    for e in entries:
        mark = ""
        if installed is not None and e.id in installed:
            mark = "  [installed]" if installed[e.id] == e.parsed_version else f"  [installed {installed[e.id]}]"
        requires = f"  requires {', '.join(e.requires)}" if e.requires else ""
        title = f"  {e.name}" if e.name else ""
        print(f"{e.id} {e.version}{title}{requires}{mark}")


def _repo_list(args: argparse.Namespace) -> int:
    from atomicplug.repository.manifest import format_time
    from atomicplug.repository.repo_admin import read_manifest

    manifest = read_manifest(Path(args.repo))
    if not args.json:
        print(f"# manifest version {manifest.version}, expires {format_time(manifest.expires)}, {len(manifest.plugins)} package(s)")
    entries = sorted(manifest.plugins, key=lambda e: (e.id, e.parsed_version))
    _print_entries(entries, None, args.json)
    return 0


def _port(text: str) -> int:
    """``--port``: a TCP port number (0 picks a free one)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    from atomicplug.repository.repo_admin import read_manifest
    from atomicplug.repository.server import serve

    read_manifest(Path(args.repo), verify=False)  # refuse a folder that is not a repository
    serve(Path(args.repo), args.host, args.port)
    return 0


def _remote_entries(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from atomicplug.cli import load_config
    from atomicplug.repository.remote import installed_versions, load_manifest

    config = load_config(args)
    manifest = load_manifest(config)
    entries = manifest.plugins if getattr(args, "all_versions", False) else tuple(manifest.latest())
    return sorted(entries, key=lambda e: (e.id, e.parsed_version)), installed_versions(config)


def _search(args: argparse.Namespace) -> int:
    entries, installed = _remote_entries(args)
    needle = args.text.casefold()
    found = [e for e in entries if any(needle in f.casefold() for f in (e.id, e.name, e.description, e.category))]
    _print_entries(found, installed, args.json)
    if not found and not args.json:
        print(f"no plugin matches {args.text!r}", file=sys.stderr)
    return 0


def _available(args: argparse.Namespace) -> int:
    entries, installed = _remote_entries(args)
    _print_entries(entries, installed, args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from atomicplug.repository.repo_admin import DEFAULT_EXPIRES_DAYS

    def expires(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--expires-days", type=float, default=DEFAULT_EXPIRES_DAYS, metavar="DAYS",
            help=f"the signed manifest expires after DAYS (default {DEFAULT_EXPIRES_DAYS:g})",
        )

    key_help = "secret key (atomicplug keygen or minisign -G); password from $ATOMICPLUG_KEY_PASSWORD, a prompt, or stdin"
    repo = subparsers.add_parser("repo", help="publish a signed plugin repository", description="Manage a repository folder.")
    repo_sub = add_command_group(repo, "repo_command", "SUBCOMMAND")

    p = repo_sub.add_parser("init", help="create an empty signed repository")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--key", required=True, help=key_help)
    expires(p)
    p.set_defaults(handler=_repo_init)

    p = repo_sub.add_parser("add", help="add signed packages and re-sign the manifest")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("zips", nargs="+", metavar="ZIP", help="package files, each with ZIP.minisig beside it")
    p.add_argument("--key", required=True, help=key_help)
    p.add_argument("--trusted-key", action="append", metavar="PUB", help="also accept packages signed by this public key")
    expires(p)
    p.set_defaults(handler=_repo_add)

    p = repo_sub.add_parser("sign", help="bump the manifest version and sign it again (refreshes expiry)")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--key", required=True, help=key_help)
    expires(p)
    p.set_defaults(handler=_repo_sign)

    p = repo_sub.add_parser("list", help="list a repository folder's packages")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--json", action="store_true", help="print a JSON array of manifest entries")
    p.set_defaults(handler=_repo_list)

    p = subparsers.add_parser("serve", help="serve a repository folder over HTTP (development)")
    p.add_argument("repo", metavar="REPO")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8002, help="0-65535; 0 picks a free one (default %(default)s)")
    p.set_defaults(handler=_serve)

    for name, handler, text in (
        ("search", _search, "search the repository's plugins by id, name, description or category"),
        ("available", _available, "list the repository's plugins, marking installed ones"),
    ):
        p = subparsers.add_parser(name, help=text, description=text)
        if name == "search":
            p.add_argument("text", metavar="TEXT")
        p.add_argument("--all-versions", action="store_true", help="every version, not only the newest")
        p.add_argument("--json", action="store_true", help="print a JSON array of manifest entries")
        p.set_defaults(handler=handler)
