"""The installer's progress lines, said for an admin.

Today the library reports progress as CLI lines ("staging crm 1.0.0",
"database: migrations and ledger in one transaction"); this maps each known
line to words an admin reads, depending on the operation (a disable runs no
migration). Structured progress events will replace the parsing; until
then an unknown line is shown as it came.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["StageContext", "stage_text", "change_text"]

Names = Callable[[str], str]

_STEP = re.compile(r"^(install|upgrade|downgrade|uninstall) ([a-z][a-z0-9_]*) (\S+)(?: -> (\S+))?$")
_TOGGLE = re.compile(r"^(enable|disable) ([a-z][a-z0-9_]*)$")
_DOWNLOADING = re.compile(r"^downloading ([a-z][a-z0-9_]*) (\S+) \((\d+) bytes\)$")
_VERIFIED = re.compile(r"^verified ([a-z][a-z0-9_]*) (\S+): ")
_STAGING = re.compile(r"^staging ([a-z][a-z0-9_]*) (\S+)$")
_HEALTH = re.compile(r"^health check: importing (.+) in a fresh interpreter$")
_RECOVERING = re.compile(r"^recovering \S+: (committed|not committed)")


class StageContext:
    """What the mapping needs to know about the operation: its kind, keep_data, and plugin names."""

    def __init__(self, kind: str, name: Names, keep_data: bool = False) -> None:
        self.kind, self.name, self.keep_data = kind, name, keep_data


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, round(n / 1024))} kB"


def change_text(line: str, name: Names) -> str:
    """One plan line ("upgrade crm 1.0.0 -> 2.0.0", "disable crm") in words."""
    if match := _STEP.match(line):
        action, pid, first, second = match.groups()
        if action == "uninstall":
            return f"Remove {name(pid)} {first}"
        if second:
            return f"{action.capitalize()} {name(pid)} from {first} to {second}"
        return f"Install {name(pid)} {first}"
    if match := _TOGGLE.match(line):
        return f"{match.group(1).capitalize()} {name(match.group(2))}"
    return line


def stage_text(message: str, context: StageContext) -> str:
    """One progress line in words (unknown lines unchanged)."""
    name = context.name
    if message.startswith("switching "):
        line = message.removeprefix("switching ")
        if match := _STEP.match(line):
            action, pid, first, second = match.groups()
            if action == "uninstall":
                return f"Removing {name(pid)}'s code from the panel"
            return f"Switching the panel to {name(pid)} {second or first}"
        if match := _TOGGLE.match(line):
            verb = "Turning on" if match.group(1) == "enable" else "Turning off"
            return f"{verb} {name(match.group(2))} in the panel"
        return line
    if message.startswith("database: "):
        if context.kind in ("enable", "disable"):
            return "Saving the change"
        if context.kind == "uninstall":
            return "Saving the removal (the data is kept)" if context.keep_data else "Removing the plugin's tables and saving the removal"
        return "Updating the database (all changes or none)"
    if match := _DOWNLOADING.match(message):
        pid, version, size = match.groups()
        return f"Downloading {name(pid)} {version} ({_size(int(size))})"
    if match := _VERIFIED.match(message):
        return f"Checked {name(match.group(1))} {match.group(2)}: the publisher's signature and checksum match"
    if match := _STAGING.match(message):
        return f"Unpacking {name(match.group(1))} {match.group(2)}"
    if match := _HEALTH.match(message):
        ids = [part.strip() for part in match.group(1).split(",")]
        return f"Checking that {', '.join(name(i) for i in ids)} starts"
    if match := _RECOVERING.match(message):
        return "Finishing an interrupted operation" if match.group(1) == "committed" else "Undoing an interrupted operation"
    if _STEP.match(message) or _TOGGLE.match(message):
        return "Plan: " + change_text(message, name)
    return message
