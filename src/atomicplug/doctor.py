"""``atomicplug doctor``: what this installation looks like, and what would stop a transaction.

Each check is one line a person can act on. Nothing is changed, except a
throw-away probe file (and its hard link) inside ``<home>`` to learn whether
the object store can hard-link into the store or must copy (docs/design.md
"The object store").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from atomicplug.errors import AtomicplugError

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["Finding", "examine"]


@attrs.frozen
class Finding:
    """One check: its name, whether it passed, and what was found (or what to do)."""

    check: str
    ok: bool
    detail: str


def _check(name: str, run: Callable[[], str]) -> Finding:
    try:
        return Finding(name, True, run())
    except AtomicplugError as exc:
        return Finding(name, False, str(exc))
    except OSError as exc:
        return Finding(name, False, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))


def examine(config: Config) -> list[Finding]:
    """Every check, in the order a transaction meets them."""
    from atomicplug import generations
    from atomicplug.journal.reader import pending_journals

    def keys() -> str:
        from atomicplug.minisign import load_trusted_keys

        loaded = load_trusted_keys(config.trusted_keys)
        if not loaded and not config.allow_unsigned:
            raise AtomicplugError("no trusted_keys configured: every signed package would be refused")
        return ", ".join(k.key_id_hex for k in loaded) or "none (allow_unsigned = true)"

    def storage() -> str:
        from atomicplug.stages.stage import objects_of

        if not config.home.is_dir():
            return f"{config.home}: not created yet (the first transaction creates it)"
        into = config.store_dir if config.store_dir.is_dir() else config.home
        why = objects_of(config).probe_hardlinks(into)
        if why is None:
            return f"{config.home}: hard links work (store trees share their objects)"
        return f"{config.home}: hard links unavailable on this file system ({why}), objects are copied into each tree"

    def object_layout() -> str:
        from atomicplug.stages.stage import objects_of

        objects = objects_of(config)
        left, ignored = sorted(objects.fan_outs_left()), objects.fan_outs_ignored()
        line = "one flat folder"
        if left:
            shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
            line += (f"; {len(left)} folder(s) of the earlier fan-out layout read in place: {shown} (the next install moves "
                     "their objects; a folder holding anything else stays)")
        for name, why in sorted(ignored.items()):
            line += f"; objects/{name} is {why}: what it holds is neither used nor freed"
        return line

    def backend() -> str:
        generations.check_backend_folder(config)
        if config.backend_addons.is_symlink():
            return f"{config.backend_addons} -> {os.readlink(config.backend_addons)}"
        return f"{config.backend_addons}: will become a link to the live generation at the next transaction"

    def frontend() -> str:
        from atomicplug.frontend.layout import check_layout

        folder = config.frontend_addons
        if not config.frontend_index:
            return f"{folder}: left alone (frontend_index = false)"
        check_layout(config)
        if not folder.is_dir():
            return f"{folder}: not created yet (`atomicplug init` or the first transaction writes it)"
        return f"{folder}: index.ts and types.ts, .store -> {config.store_dir}"

    def live() -> str:
        number, numbers = generations.current_number(config), generations.numbers(config)
        kept = ", ".join(map(str, numbers)) or "none"
        if number is None and numbers:  # `list` would say "no plugins installed"
            raise AtomicplugError(
                f"no live generation: {config.home / generations.CURRENT} is missing (removed by hand?) while generations "
                f"{kept} are kept; the addon folders show no plugin: `atomicplug recover` (or the next change) points it at "
                + ("the live generation again, once it has finished the unfinished transaction" if pending_journals(config.journal_dir)
                   else f"generation {numbers[-1]} again")
            )
        return f"generation {number} (kept: {kept})" if number is not None else "no generation yet (nothing installed)"

    def rollback_targets() -> str:
        """The kept store trees a rollback would make live (each plugin's previous one, and every one a kept
        generation shows), checked as the rollback checks them: ahead of the day it is needed."""
        from atomicplug.registry import Registry
        from atomicplug.stages.repair import reinstall_ways
        from atomicplug.verification import kept_tree_damage

        live = Registry.load(config.registry_path)
        wanted = {e.previous.tree: attrs.evolve(e, current=e.previous) for e in live.plugins.values() if e.previous is not None}
        for number in generations.numbers(config):
            try:
                theirs = Registry.load(generations.folder(config, number) / generations.REGISTRY_NAME, required=True)
            except FileNotFoundError:  # removed by a gc since it was listed: no longer a rollback target
                continue
            for entry in theirs.plugins.values():
                wanted.setdefault(entry.current.tree, entry)
        # A disabled plugin's tree is kept, not live: `enable` checks it as a rollback does.
        disabled = {e.current.tree for e in live.plugins.values() if not e.enabled}
        shown = {e.current.tree for e in live.plugins.values()} - disabled
        kept = [e for tree, e in sorted(wanted.items()) if tree not in shown and (config.home / tree).is_dir()]
        found = [(e, report) for e in kept if (report := kept_tree_damage(config, e)) is not None]
        damaged = [report for _, report in found]
        if len(found) == 1:
            [(entry, report)] = found
            refused = "enabling it" if entry.current.tree in disabled else "a rollback to it"
            raise AtomicplugError(
                f"{report.plugin_id} {report.version} is damaged ({report.damage()}): {refused} is refused until its package "
                f"is installed again ({reinstall_ways(report.plugin_id, report.version)})"
            )
        if damaged:
            named = "; ".join(f"{r.plugin_id} {r.version} ({r.damage()})" for r in damaged)
            raise AtomicplugError(
                f"{named} are damaged: a rollback to them is refused until their packages are installed again "
                f"({reinstall_ways(several=True)})"
            )
        return f"{len(kept)} kept tree{'s' if len(kept) != 1 else ''} a rollback can go to: intact" if kept else "no kept tree (nothing to roll back to)"

    def pending() -> str:
        from atomicplug.lock import writer_active

        # A journal is unfinished work only with no writer holding the lock: read before and after
        # asking, so that a writer starting or finishing meanwhile is not taken for one.
        seen = {state.txid for state in pending_journals(config.journal_dir)}
        if seen and writer_active(config.lock_path):
            return f"a transaction is in progress ({', '.join(sorted(seen))})"
        found = [state for state in pending_journals(config.journal_dir) if state.txid in seen]
        if found:
            raise AtomicplugError(f"{len(found)} unfinished transaction(s): run `atomicplug recover`")
        return "no unfinished transaction"

    def database() -> str:
        from atomicplug.database.engine import connect, first_line, sqlite_file_missing

        if sqlite_file_missing(config.database_url):
            return "SQLite file not created yet (the first migration creates it)"
        try:
            with connect(config.database_url, 5.0) as db:
                db.execute("SELECT 1")
        except AtomicplugError:
            raise
        except Exception as exc:  # noqa: BLE001 - any driver error is the finding
            raise AtomicplugError(f"cannot use the database: {first_line(exc)}") from exc
        return f"{config.database_url.split('@')[-1]}: reachable"

    def command_line() -> str:
        from atomicplug.resident.client import MODE_ENV, query, resident_mode

        if resident_mode() == "off":
            return f"one process per command ({MODE_ENV}=off)"
        status = query("status")
        if status is None:
            starts = {"on": "`atomicplug resident start` runs them warm", "auto": "the next command starts the resident server"}
            return f"one process per command ({starts.get(resident_mode(), 'a command typed at a terminal starts the resident server')}, ~60 ms less each)"
        return f"resident server pid {status['pid']} runs the commands ({status['served']} so far; {status['socket']})"

    return [
        _check("trusted keys", keys),
        _check("storage", storage),
        _check("object store", object_layout),
        _check("backend addons", backend),
        _check("frontend addons", frontend),
        _check("generation", live),
        _check("rollback targets", rollback_targets),
        _check("journal", pending),
        _check("database", database),
        _check("command line", command_line),
    ]
