"""CLI commands that run or inspect transactions: install … gc, and plugin settings.

Every writer takes ``--dry-run``: the same call goes to ``Installer.preview``,
which prints what would change (migrations, tables dropped) and exits 0, or
the refusal's exit code (docs/design.md "Dry run").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from atomicplug.cli import load_config

__all__ = ["register"]


def _installer(args: argparse.Namespace, relinked: list[str] | None = None):  # noqa: ANN202 - lazy import keeps start-up cheap
    """The Installer of ``--config``, its progress on stderr when a person watches (or ``--verbose``);
    ``relinked`` keeps the line of a live-generation link put back, which ``recover`` reports."""
    from atomicplug.installer import Installer

    def progress(event: object) -> None:
        line = str(event)  # a ProgressEvent; "" for events without a line (download bytes, done)
        if relinked is not None and getattr(event, "stage", None) == "relink":
            relinked.append(line)
        elif line and (sys.stderr.isatty() or getattr(args, "verbose", False)):
            print(f"  {line}", file=sys.stderr)

    return Installer(load_config(args), progress=progress)


def _report(result: Any, quiet_text: str) -> int:
    if result.changed:
        for line in result.changes:
            print(line)
    else:
        print(quiet_text)
    return 0


def _perform(args: argparse.Namespace, installer: Any, operation: str, *call: Any, quiet_text: str, **options: Any) -> int:
    """Run the writer ``operation``, or with ``--dry-run`` print its preview instead."""
    if not getattr(args, "dry_run", False):
        return _report(getattr(installer, operation)(*call, **options), quiet_text)
    preview = installer.preview(operation, *call, **options)
    if preview.refusal is not None:
        print(f"atomicplug: error: {preview.refusal.message}", file=sys.stderr)
        if preview.resolved is not None and preview.resolved.refusal is None:
            print(f"with --{preview.refusal.option.replace('_', '-')} it would:")  # type: ignore[union-attr]
            for line in preview.resolved.lines():
                print(f"  {line}")
        return preview.refusal.exit_code
    for line in preview.lines():
        print(line)
    print("(dry run: nothing was changed)")
    return 0


def _settings_option(values: list[str] | None) -> dict[str, dict[str, Any]] | None:
    """``--setting ID.FIELD=VALUE`` (repeatable) as ``{id: {field: TextValue}}``; the schema gives the type."""
    from atomicplug.errors import UsageError
    from atomicplug.settings.schema import TextValue

    if not values:
        return None
    result: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        plugin_id, dot, field = key.partition(".")
        if not sep or not dot or not plugin_id or not field:
            raise UsageError(f"--setting: expected ID.FIELD=VALUE, got {item!r}")
        result.setdefault(plugin_id, {})[field] = TextValue(value)
    return result


def _who() -> str:
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):
        return "command line"


def _looks_like_file(target: str) -> bool:
    """A path (a zip, or a folder given by mistake: intake says what it is), not a repository id."""
    return target.endswith(".zip") or "/" in target or Path(target).exists()


def cmd_install(args: argparse.Namespace) -> int:
    installer = _installer(args)
    rehearse = not args.no_rehearse
    files = [t for t in args.targets if _looks_like_file(t)]
    specs = [t for t in args.targets if not _looks_like_file(t)]
    if files and specs:
        from atomicplug.errors import UsageError

        raise UsageError("install takes package files or repository ids, not both at once")
    if files:
        if args.signature and len(files) > 1:
            from atomicplug.errors import UsageError

            raise UsageError("--signature names the signature of one package; give one package with it")
        packages = [installer.take_in(f, args.signature) for f in files]
        operation, target = "install_packages", packages
    else:
        operation, target = "install", specs
    with _saying_how_to_give_settings():
        return _perform(
            args, installer, operation, target, quiet_text="nothing to do: already installed", allow_downgrade=args.allow_downgrade,
            rehearse=rehearse, with_requirements=args.with_requirements, settings=_settings_option(args.setting), by=_who(),
        )


def cmd_upgrade(args: argparse.Namespace) -> int:
    from atomicplug.errors import UsageError

    if args.all == bool(args.ids):
        raise UsageError("upgrade needs plugin ids or --all" if not args.all else "upgrade takes plugin ids or --all, not both")
    return _perform(
        args, _installer(args), "upgrade", None if args.all else args.ids, quiet_text="nothing to do: everything is up to date",
        rehearse=not args.no_rehearse,
    )


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _perform(args, _installer(args), "uninstall", args.id, quiet_text="nothing to do", keep_data=args.keep_data, cascade=args.cascade)


def cmd_rollback(args: argparse.Namespace) -> int:
    with _saying_how_to_give_settings():
        return _perform(
            args, _installer(args), "rollback", args.id, quiet_text="nothing to do", generation=args.generation,
            transaction=args.transaction, keep_data=args.keep_data, settings=_settings_option(args.setting), by=_who(),
        )


@contextmanager
def _saying_how_to_give_settings() -> Iterator[None]:
    """A required setting without a value: the line says which option gives it."""
    from atomicplug.errors import SettingsError

    try:
        yield
    except SettingsError as exc:
        if not (exc.missing and exc.plugins):
            raise
        options = " ".join(f"--setting {exc.plugins[0]}.{field}=VALUE" for field in exc.missing)
        raise SettingsError(
            f"{exc} (give {'it' if len(exc.missing) == 1 else 'them'} with {options})", exc.problems,
            plugins=exc.plugins, fields=exc.fields, missing=exc.missing,
        ) from None


def cmd_enable(args: argparse.Namespace) -> int:
    return _perform(args, _installer(args), "enable", args.id, quiet_text=f"{args.id} is already enabled", with_requirements=args.with_requirements)


def cmd_disable(args: argparse.Namespace) -> int:
    return _perform(args, _installer(args), "disable", args.id, quiet_text=f"{args.id} is already disabled")


def cmd_configure(args: argparse.Namespace) -> int:
    from atomicplug.errors import UsageError
    from atomicplug.settings.schema import TextValue

    values: dict[str, Any] = {}
    for item in args.values:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise UsageError(f"configure: expected FIELD=VALUE, got {item!r}")
        values[field] = TextValue(value)
    values.update(dict.fromkeys(args.unset or (), None))
    if not values:
        raise UsageError("configure needs FIELD=VALUE or --unset FIELD")
    return _report(_installer(args).configure(args.id, values, by=_who()), "nothing to do: the settings are already so")


def cmd_settings(args: argparse.Namespace) -> int:
    view = _installer(args).settings(args.id)
    if args.json:
        print(json.dumps(view.to_dict(), indent=2))
        return 0
    if not view.fields:
        print(f"{args.id} {view.version} declares no settings")
    for state in view.fields:
        shown = ("set" if state.is_set else "not set") if state.field.secret else json.dumps(state.value) if state.is_set else "not set"
        print(f"{state.field.name:24} {shown}{' (default)' if state.source == 'default' else ''}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = _installer(args).list()
    if args.json:
        # One plugin per line: `indent` takes the pure-Python encoder (~5 ms for 1000 plugins, issue 14).
        print("[\n" + ",\n".join(f"  {json.dumps(row)}" for row in rows) + "\n]" if rows else "[]")
        return 0
    if not rows:
        print("no plugins installed")
        return 0
    print(f"{'ID':24} {'VERSION':12} {'ENABLED':8} REQUIRES")
    for row in rows:
        print(f"{row['id']:24} {row['version']:12} {'yes' if row['enabled'] else 'no':8} {', '.join(row['requires']) or '-'}")
    return 0


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], empty: str, lines: Callable[[dict[str, Any]], list[str]]) -> int:
    """``rows`` as indented JSON with ``--json``; else each row's ``lines``, or ``empty`` when there is none."""
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(empty)
    for row in rows:
        for line in lines(row):
            print(line)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from atomicplug.change import describe_step
    from atomicplug.history import shown_time

    def lines(entry: dict[str, Any]) -> list[str]:
        steps = "; ".join(describe_step(step) for step in entry["steps"])
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        return [f"{shown_time(entry['finished'])}  {entry['operation']:9} {entry['outcome']:8} {steps}{reason}"]

    return _print_rows(args, _installer(args).history(), "no transactions yet", lines)


def cmd_generations(args: argparse.Namespace) -> int:
    def lines(row: dict[str, Any]) -> list[str]:
        shown = ", ".join(f"{p['id']} {p['version']}{'' if p['enabled'] else ' (disabled)'}" for p in row["plugins"])
        return [f"generation {row['generation']}{' (live)' if row['live'] else ''}  {_made_by(row)}", f"  {shown or 'no plugins'}"]

    return _print_rows(args, _installer(args).generations(), "no generations yet (nothing installed)", lines)


def _made_by(row: dict[str, Any]) -> str:
    """When and by what a generation was made, as `history` says it (``rollback: enable beta``)."""
    from atomicplug.history import shown_time

    if not row["operation"]:  # history has no line for it
        return f"transaction {row['txid']}" if row["txid"] else ""
    changes = "; ".join(row["changes"])
    said = changes if changes.startswith(row["operation"]) else f"{row['operation']}: {changes}"
    return f"{shown_time(row['finished'])}  {said}"


def cmd_verify(args: argparse.Namespace) -> int:
    reports = _installer(args).verify(args.id, deep=args.deep)
    if args.json:
        import attrs

        print(json.dumps([attrs.asdict(r) | {"ok": r.ok} for r in reports], indent=2))
        return 0 if all(r.ok for r in reports) else 1
    for report in reports:
        if report.ok:
            print(f"{report.plugin_id} {report.version}: ok")
            continue
        print(f"{report.plugin_id} {report.version}: MODIFIED")
        for label, paths in (("changed", report.changed), ("missing", report.missing), ("extra", report.extra), ("bad link", report.bad_links)):
            for path in paths:
                print(f"  {label}: {path}")
        if report.files_damaged:
            print(f"  repair: install its package again (its zip, or `atomicplug install {report.plugin_id}` from the repository; --dry-run shows the repair)")
    if not reports:
        print("no plugins installed")
    return 0 if all(r.ok for r in reports) else 1


def cmd_recover(args: argparse.Namespace) -> int:
    relinked: list[str] = []
    outcomes = _installer(args, relinked).recover()
    if not outcomes and not relinked:
        print("nothing to recover")
    for txid, direction in outcomes:
        print(f"{txid}: rolled {direction}")
    for line in relinked:
        print(line)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    removed = _installer(args).gc(dry_run=args.dry_run)
    verb, freeing = ("would remove", "freeing") if args.dry_run else ("removed", "freed")
    print(
        f"{verb} {removed['generations']} generation(s), {removed['views']} view(s), {removed['trees']} store tree(s), "
        f"{removed['objects']} object(s), "
        f"{removed['blobs']} package(s), "
        f"{removed['journals']} journal(s), {removed['leftovers']} leftover(s), {freeing} {removed['bytes']} bytes"
    )
    if "cluster_packages" in removed:
        print(f"{verb} {removed['cluster_packages']} package(s) from the cluster's store ({removed['cluster_bytes']} bytes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    def add(name: str, handler: Any, help_text: str, *, writer: bool = False) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("-v", "--verbose", action="store_true", help="print each stage on stderr")
        if writer:
            parser.add_argument("--dry-run", action="store_true", help="print what would change (migrations, tables dropped); change nothing")
        parser.set_defaults(handler=handler)
        return parser

    p = add("install", cmd_install, "install or upgrade plugins from zip files or the repository", writer=True)
    p.add_argument("targets", nargs="+", metavar="PATH.zip|ID[==VER]", help="package file(s) (signature beside as .minisig) or repository ids")
    p.add_argument("--signature", metavar="PATH", help="signature file when it is not PATH.zip.minisig")
    p.add_argument("--allow-downgrade", action="store_true", help="allow installing an older version than the installed one")
    p.add_argument("--no-rehearse", action="store_true", help="skip the down-migration rehearsal before COMMIT")
    p.add_argument("--with-requirements", action="store_true", help="also enable installed requirements that are disabled")
    p.add_argument("--setting", action="append", metavar="ID.FIELD=VALUE", help="a plugin setting, stored with the install (repeatable)")

    p = add("upgrade", cmd_upgrade, "upgrade plugins to the newest repository versions", writer=True)
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="upgrade every installed plugin")
    p.add_argument("--no-rehearse", action="store_true", help="skip the down-migration rehearsal before COMMIT")

    p = add("uninstall", cmd_uninstall, "remove a plugin, its addon entries and (unless --keep-data) its tables", writer=True)
    p.add_argument("id")
    p.add_argument("--keep-data", action="store_true", help="leave the plugin's tables in the database")
    p.add_argument("--cascade", action="store_true", help="also uninstall the plugins that require it, first")

    p = add("rollback", cmd_rollback, "go back to the version a plugin replaced, or to an earlier generation", writer=True)
    p.add_argument("id", nargs="?", help="one plugin: back to the version the current one replaced")
    p.add_argument("--generation", type=int, metavar="N", help="every plugin back to kept generation N, in one transaction")
    p.add_argument("--transaction", metavar="TXID", help="undo the live generation's transaction (back to its parent)")
    p.add_argument("--keep-data", action="store_true", help="keep the tables of plugins the rollback uninstalls")
    p.add_argument("--setting", action="append", metavar="ID.FIELD=VALUE", help="a setting of a plugin the rollback installs again (repeatable)")
    p = add("enable", cmd_enable, "put a disabled plugin's addon entries back", writer=True)
    p.add_argument("id")
    p.add_argument("--with-requirements", action="store_true", help="also enable its disabled requirements")
    p = add("disable", cmd_disable, "remove a plugin's addon entries, keeping its files and tables", writer=True)
    p.add_argument("id")
    p = add("configure", cmd_configure, "change an installed plugin's settings (recorded in history by field name)")
    p.add_argument("id")
    p.add_argument("values", nargs="*", metavar="FIELD=VALUE")
    p.add_argument("--unset", action="append", metavar="FIELD", help="remove a value (its default applies again)")
    p = add("settings", cmd_settings, "show an installed plugin's settings (secrets only as set or not set)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = add("list", cmd_list, "list installed plugins")
    p.add_argument("--json", action="store_true", help="print a JSON array (id, version, enabled, ...)")
    p = add("history", cmd_history, "list finished transactions")
    p.add_argument("--json", action="store_true")
    p = add("generations", cmd_generations, "list the kept generations (newest first): what each shows, what made it, which is live")
    p.add_argument("--json", action="store_true")
    p = add("verify", cmd_verify, "check installed files against the hashes recorded at install (exit 1 when modified)")
    p.add_argument("id", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--deep", action="store_true", help="also compile each backend source again and compare it with the pyc Python runs")
    add("recover", cmd_recover, "finish or undo transactions a crash interrupted")
    p = add("gc", cmd_gc, "remove what no kept generation needs: generations, views, store trees, objects, packages, journals")
    p.add_argument("--dry-run", action="store_true", help="say what it would remove and the bytes that would free; remove nothing")
