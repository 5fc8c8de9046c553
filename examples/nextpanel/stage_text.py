"""The installer's progress events, said for an admin.

Each :class:`atomicplug.progress.ProgressEvent` carries its stage, plugin,
version and operation, so the words come from those fields: no line of the
CLI's text is parsed. Events an admin need not see (the plan lines, the
download bytes after the first) give None.
"""

from __future__ import annotations

from collections.abc import Callable

from atomicplug.progress import ProgressEvent

__all__ = ["StageContext", "stage_text"]

Names = Callable[[str], str]

_SWITCH = {
    "uninstall": "Removing the plugin's code from the panel",
    "enable": "Turning the plugin on in the panel",
    "disable": "Turning the plugin off in the panel",
}


class StageContext:
    """What the words depend on: the operation's kind, keep_data, and plugin names."""

    def __init__(self, kind: str, name: Names, keep_data: bool = False) -> None:
        self.kind, self.name, self.keep_data = kind, name, keep_data


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, round(n / 1024))} kB"


def _database(operation: str, context: StageContext) -> str:
    if operation in ("enable", "disable"):
        return "Saving the change"
    if operation == "uninstall":
        return "Saving the removal (the data is kept)" if context.keep_data else "Removing the plugin's tables and saving the removal"
    return "Updating the database (all changes or none)"


def stage_text(event: ProgressEvent, context: StageContext) -> str | None:
    """One event in words; None for events that are not a step of their own."""
    name = context.name
    plugin = f"{name(event.plugin_id)} {event.version}" if event.plugin_id else ""
    stage = event.stage
    if stage == "download":
        return f"Downloading {plugin} ({_size(event.total or 0)})" if event.received == 0 else None
    if stage == "verify":
        return f"Checked {plugin}: the publisher's signature and checksum match" if plugin else "Checking the package's signature"
    if stage == "stage":
        return f"Unpacking {plugin}"
    if stage == "health":
        return f"Checking that {', '.join(name(p) for p in event.plugins)} starts"
    if stage == "frontend":
        return "Checking the panel's pages with the new plugins"
    if stage == "database":
        return _database(event.operation or context.kind, context)
    if stage == "switch":
        return _SWITCH.get(event.operation or "", "Switching the panel to the new versions")
    if stage == "lock":
        return "Waiting for another operation to finish"
    if stage == "recover":
        return "Finishing an interrupted operation first"
    if stage in ("note", "relink"):
        return event.text or None  # cluster mode, the object store, the gate and recovery say these in words already
    return None  # plan lines (the preview showed them) and done (the summary says it)
