"""The panel's own audit history: every marketplace request's outcome, with who, when, names and versions.

The installer's ``history.jsonl`` records finished transactions only; an
admin also needs the refusals that never became one (a dependency refusal, a
repository that is down, a busy installer). This file, ``<home>/nextpanel-audit.jsonl``,
gets one JSON line per marketplace operation that ended, appended under a
thread lock (the event loop and worker threads both write). It is the panel's
record, not the installer's: losing a line to a crash loses history, never state.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["AuditLog", "now"]

FILE_NAME = "nextpanel-audit.jsonl"
#: A line is small; a longer one (say, a damaged file) is skipped rather than parsed.
_MAX_LINE = 64 * 1024


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """Append and read ``nextpanel-audit.jsonl`` in an atomicplug home."""

    def __init__(self, home: Path) -> None:
        self.path = home / FILE_NAME
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        """Append one entry (``time`` is added when missing)."""
        line = json.dumps({"time": now(), **entry}, sort_keys=True, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)

    def read(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, newest first; unreadable lines are skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        for line in reversed(raw.splitlines()):
            if len(line) > _MAX_LINE:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
                if len(entries) >= limit:
                    break
        return entries
