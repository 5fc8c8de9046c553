"""Dry run: what a writer would do, planned the way it plans, never run (docs/design.md "Dry run").

``Installer.preview("uninstall", "crm", cascade=True)`` calls the writer
``uninstall("crm", cascade=True)`` on an installer whose lock is a plain read
of the registry and that hands the plan to a :class:`DryRun` instead of
running it: the same code decides, so the preview cannot drift from
the transaction. The plan then gets what only the database knows, read-only:

- the migrations each change would run down and up
  (:func:`atomicplug.database.plan.plan_change` against the ledger);
- the tables (and added columns) a change would drop: those the reverted
  migrations' ups created, parsed with the databases' own parsers
  (:mod:`atomicplug.database.tables`), that exist now — or, with
  ``keep_data``, the tables that stay;
- every plan-time refusal of the transaction (folders, permissions,
  statements that cannot run in a transaction, kept data newer than the
  package): the database step's own checks run on the plan.

A package not yet in the store is unpacked (safely, as staging would) into a
temporary folder for that, then removed. A refusal is data (:class:`Refusal`),
with the preview of the same call plus the option that resolves it
(``cascade``, ``allow_downgrade``, ``with_requirements``) when there is one.
An install that reuses a tree (the installed package again, or a version whose
tree the store kept) names the files of it that ``verify --deep`` finds damaged
(the repair it would make, :attr:`Preview.repairs`). What only
running can tell is not previewed: the health gate, the frontend gate, and the
migrations themselves.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.errors import AtomicplugError, DatabaseError, UsageError

if TYPE_CHECKING:
    from atomicplug.change import Change, Plan
    from atomicplug.config import Config
    from atomicplug.database.engine import Database
    from atomicplug.database.plan import ChangePlan
    from atomicplug.settings.apply import Given
    from atomicplug.settings.schema import SettingsSchema

__all__ = ["WRITERS", "DryRun", "PluginPreview", "Preview", "Refusal", "preview"]

#: The Installer methods a preview can stand in for.
WRITERS = ("install", "install_file", "install_packages", "upgrade", "uninstall", "rollback", "enable", "disable")


@attrs.frozen
class Refusal:
    """Why the operation would be refused: the error the writer would raise, as data.

    ``option``: the keyword argument (and CLI flag) that would resolve it;
    ``plugins``: the plugins it concerns (a dependency refusal: the dependents);
    ``problems``: every problem, for errors that list several (metadata, settings).
    ``cause``: the exception itself, for front ends that map error classes (not compared).
    """

    error: str
    title: str
    message: str
    exit_code: int
    option: str | None = None
    plugins: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    cause: AtomicplugError | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_error(cls, exc: AtomicplugError) -> Refusal:
        return cls(
            error=type(exc).__name__,
            title=exc.title,
            message=str(exc),
            exit_code=exc.exit_code,
            option=exc.option,
            plugins=exc.plugins,
            problems=tuple(getattr(exc, "problems", ())),
            cause=exc,
        )

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self, filter=lambda a, _: a.name != "cause")
        return {**data, "plugins": list(self.plugins), "problems": list(self.problems)}


@attrs.frozen
class PluginPreview:
    """One plugin's part: its change (versions in and out), and what it does to the database.

    ``migrations_down``/``migrations_up``: ledger names in run order.
    ``tables_dropped``: tables the change would drop (the reverted ups made them
    and they exist); ``columns_dropped``: ``table.column`` of other tables;
    ``tables_kept``: with ``keep_data``, the plugin's tables that stay.
    ``settings``: the settings schema of the version it installs.
    """

    change: Change
    migrations_down: tuple[str, ...] = ()
    migrations_up: tuple[str, ...] = ()
    tables_dropped: tuple[str, ...] = ()
    columns_dropped: tuple[str, ...] = ()
    tables_kept: tuple[str, ...] = ()
    settings: SettingsSchema | None = None

    @property
    def plugin_id(self) -> str:
        return self.change.plugin_id

    def lines(self) -> list[str]:
        """The change and its database work, as the CLI prints them."""
        lines = [self.change.describe()]
        for label, items in (
            ("migrations down", self.migrations_down),
            ("migrations up", self.migrations_up),
            ("drops tables", self.tables_dropped),
            ("drops columns", self.columns_dropped),
            ("keeps tables", self.tables_kept),
        ):
            if items:
                lines.append(f"  {label}: {', '.join(items)}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        change = self.change
        return {
            "id": change.plugin_id,
            "name": (change.after or change.before).name if (change.after or change.before) else change.plugin_id,
            "action": change.action,
            "line": change.describe(),
            "from_version": change.old_version,
            "to_version": change.new_version,
            "enabled_before": change.before.enabled if change.before else None,
            "enabled_after": change.after.enabled if change.after else None,
            "keep_data": change.keep_data,
            "migrations_down": list(self.migrations_down),
            "migrations_up": list(self.migrations_up),
            "tables_dropped": list(self.tables_dropped),
            "columns_dropped": list(self.columns_dropped),
            "tables_kept": list(self.tables_kept),
            "settings": self.settings.to_dict() if self.settings else None,
        }


@attrs.frozen
class Preview:
    """What an operation would do: plugin changes in plan order, or the refusal.

    ``resolved``: when ``refusal.option`` would resolve the refusal, the preview
    of the same call with that option set (an uninstall of a required plugin:
    the cascade, and which dependents it removes). ``repairs``: the trees the install
    would repair before reusing them (the installed one of the very package, a kept one
    failing ``verification.tree_sealed``), as ``verify --deep`` finds them
    ("repair crm 1.0.0: 2 files damaged"; none with a refusal, as a refused install
    repairs nothing); the run itself also repairs what a damaged record hides, so it
    may name more files.
    """

    operation: str
    plugins: tuple[PluginPreview, ...] = ()
    refusal: Refusal | None = None
    resolved: Preview | None = None
    repairs: tuple[str, ...] = ()
    # ``plugins`` with a refusal: the plan was made and a later check refused it (settings, a
    # permission, a statement); empty when planning itself refused (dependencies, downgrade).

    @property
    def changed(self) -> bool:
        return bool(self.plugins or self.repairs)

    @property
    def exit_code(self) -> int:
        return self.refusal.exit_code if self.refusal else 0

    def lines(self) -> list[str]:
        """The CLI's text: each change with its migrations and tables ("nothing to do" when none)."""
        if self.refusal is not None:
            return []
        return [*self.repairs, *(line for plugin in self.plugins for line in plugin.lines())] or ["nothing to do"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "plugins": [p.to_dict() for p in self.plugins],
            "refusal": self.refusal.to_dict() if self.refusal else None,
            "resolved": self.resolved.to_dict() if self.resolved else None,
            "repairs": list(self.repairs),
        }


@attrs.define
class DryRun:
    """Where an Installer made with ``dry_run=`` leaves the plan its writer made, instead of running it,
    and the repairs it would make (:attr:`Preview.repairs`)."""

    planned: Plan | None = None
    schemas: Mapping[str, SettingsSchema | None] = attrs.field(factory=dict)
    repairs: tuple[str, ...] = ()

    def keep(
        self, config: Config, plan: Plan, settings: Given | None, by: str | None,
        schemas: Mapping[str, SettingsSchema | None] | None,
    ) -> None:
        """Keep ``plan`` (even when its settings are then refused: the preview still shows it)."""
        from atomicplug.settings.apply import plan_schemas, prepare

        self.planned = plan
        self.schemas = plan_schemas(config, plan, schemas)
        if plan.changes or settings:
            prepare(config, plan, settings, by, self.schemas)


def preview(
    config: Config, dry_installer: Callable[[DryRun], Any], operation: str, args: tuple[Any, ...], options: Mapping[str, Any]
) -> Preview:
    """``Installer.preview``: plan ``operation(*args, **options)`` and describe it; refusals as data.

    Raises UsageError for an operation that is not a writer or arguments it does
    not take (a caller's mistake, not a refusal).
    """
    if operation not in WRITERS:
        raise UsageError(f"expected one of {', '.join(WRITERS)} to preview, got {operation!r}")
    dry = DryRun()
    method = getattr(dry_installer(dry), operation)
    parameters = inspect.signature(method).parameters
    try:
        inspect.signature(method).bind(*args, **options)
    except TypeError as exc:
        raise UsageError(f"{operation}: {exc}") from None
    refused: AtomicplugError | None = None
    try:
        method(*args, **options)
    except AtomicplugError as exc:
        refused = exc
    plan = dry.planned
    plugins: tuple[PluginPreview, ...] = ()
    if plan is not None and plan.changes:
        try:
            plugins = _describe(config, plan, dry.schemas)
        except AtomicplugError as exc:  # a plan-time refusal of the transaction: the plan without database facts
            refused = refused or exc
            plugins = tuple(PluginPreview(change=c, settings=dry.schemas.get(c.plugin_id) if c.after else None) for c in plan.changes)
    if refused is None:
        assert plan is None or not plan.changes or plugins
        return Preview(operation=operation if plan is None else plan.operation, plugins=plugins, repairs=dry.repairs)
    resolved = None
    if refused.option and refused.option in parameters and not options.get(refused.option):
        resolved = preview(config, dry_installer, operation, args, {**options, refused.option: True})
    # No repairs: a refused install repairs nothing (they run once the plan-time checks pass).
    return Preview(operation=operation if plan is None else plan.operation, plugins=plugins, refusal=Refusal.from_error(refused), resolved=resolved)


def _describe(config: Config, plan: Plan, schemas: Mapping[str, SettingsSchema | None]) -> tuple[PluginPreview, ...]:
    """Each change with its migrations and tables; the transaction's plan-time refusals raise."""
    from atomicplug import generations
    from atomicplug.stages import migrate
    from atomicplug.stages.switch import check_addon_entries

    generations.check_backend_folder(config)
    check_addon_entries(config)
    with _unpacked(config, plan) as changes:
        migrate.check(config, changes)
        facts = _database_facts(config, changes)
    return tuple(
        attrs.evolve(facts[i], change=change, settings=schemas.get(change.plugin_id) if change.after else None)
        for i, change in enumerate(plan.changes)
    )


@contextmanager
def _unpacked(config: Config, plan: Plan) -> Iterator[tuple[Change, ...]]:
    """The plan's changes, those whose tree is not in the store yet pointing at a temporary copy.

    The copy is made by the safe extractor from the verified blob, as staging
    would make it (so a hostile package is refused here too), outside the
    home; it is removed when the block ends.
    """
    if not any(c.stage_tree and c.package and c.after for c in plan.changes):
        yield plan.changes
        return
    from atomicplug import safezip
    from atomicplug.intake import open_blob

    with tempfile.TemporaryDirectory(prefix="atomicplug-preview-") as scratch:
        changes = []
        for change in plan.changes:
            if change.stage_tree and change.package and change.after:
                target = Path(scratch) / change.plugin_id
                with open_blob(config, change.package) as blob:
                    safezip.extract(blob, target, config.limits, durable=False)
                # An absolute tree: ``home / tree`` is then the copy (Change.new_tree).
                current = attrs.evolve(change.after.current, tree=str(target))
                change = attrs.evolve(change, after=attrs.evolve(change.after, current=current))
            changes.append(change)
        yield tuple(changes)


def _database_facts(config: Config, changes: tuple[Change, ...]) -> list[PluginPreview]:
    """Migrations down and up per change (against the ledger) and the tables/columns they drop or keep."""
    from atomicplug.database.engine import backend_name, connect, first_line, sqlite_file_missing
    from atomicplug.database.ledger import applied_migrations
    from atomicplug.database.plan import plan_change

    if sqlite_file_missing(config.database_url):  # nothing was ever applied; never create the file to ask
        return [_facts(None, change, plan_change(change, {}, config.home), {}, "sqlite", config.home) for change in changes]
    dialect = backend_name(config.database_url)
    with connect(config.database_url, max(float(config.lock_timeout), 1.0)) as db:
        result = []
        for change in changes:
            try:
                applied = applied_migrations(db, change.plugin_id)
                result.append(_facts(db, change, plan_change(change, applied, config.home), applied, dialect, config.home))
            except AtomicplugError:
                raise
            except Exception as exc:  # noqa: BLE001 - the driver's (a locked SQLite file, a lost server): a refusal
                raise DatabaseError(f"cannot read the database to preview {change.plugin_id}: {first_line(exc)}") from exc
        return result


def _facts(db: Database | None, change: Change, plan: ChangePlan, applied: Mapping[str, str], dialect: str, home: Path) -> PluginPreview:
    from atomicplug.database.plan import tree_migrations
    from atomicplug.database.tables import created_by, existing_columns, existing_tables

    facts = PluginPreview(
        change=change,
        migrations_down=tuple(m.name for m in plan.reverts),
        migrations_up=tuple(m.name for m in plan.applies),
    )
    if db is None:
        return facts
    if change.action == "uninstall" and change.keep_data:
        kept = [m for m in tree_migrations(change.old_tree(home), change.plugin_id) if m.name in applied]
        made = created_by(kept, dialect)
        return attrs.evolve(facts, tables_kept=tuple(_names(sorted(existing_tables(db, made.tables), key=made.tables.index))))
    if not plan.reverts:
        return facts
    made = created_by(tuple(reversed(plan.reverts)), dialect)  # reverts run newest first; their ups ran oldest first
    dropped = sorted(existing_tables(db, made.tables), key=made.tables.index)
    columns = [
        f"{_name(table)}.{column}"
        for table, column in made.columns
        if table in existing_tables(db, [table]) and _column_key(column, dialect) in existing_columns(db, table)
    ]
    return attrs.evolve(facts, tables_dropped=tuple(_names(dropped)), columns_dropped=tuple(columns))


def _name(table: tuple[str | None, str]) -> str:
    return f"{table[0]}.{table[1]}" if table[0] else table[1]


def _names(tables: list[tuple[str | None, str]]) -> list[str]:
    return [_name(t) for t in tables]


def _column_key(column: str, dialect: str) -> str:
    return column.lower() if dialect == "sqlite" else column
