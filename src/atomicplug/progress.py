"""Progress events: what an operation is doing, as one frozen value (docs/design.md "Progress events").

The installer's ``progress`` callback used to receive the CLI's lines, so a
front end that wanted to show a stage or a download bar had to parse text (the
marketplace did, and monkeypatched ``requests`` for the bytes). Each event now
says its stage, the plugin and version it concerns, and for a download the
bytes received and expected; ``str(event)`` is the line the CLI has always
printed. Events that have no line (download bytes, "done") have an empty
``text``: the CLI skips them, so its output is what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

__all__ = ["Progress", "ProgressEvent", "Stage", "accepting_lines"]

#: Where an operation is, in the order a transaction passes them (``lock`` and ``recover`` when
#: they happen, ``plan`` once per plugin change, ``done`` last). ``note``: a line from a part of the
#: library that says only text (cluster mode, the object store's notices). ``relink``: recovery put
#: back a live-generation link removed by hand (docs/design.md "Generations").
Stage = Literal[
    "lock", "recover", "relink", "verify", "download", "plan", "stage", "health", "frontend", "database", "switch", "done", "note"
]


@attrs.frozen
class ProgressEvent:
    """One step of an operation; ``str()`` is the CLI's line ("" for events the CLI does not print).

    ``received``/``total``: bytes of one package download (``total`` is the
    manifest's size; a download served from the cache reports ``total`` at once).
    ``plugins``: every plugin a stage covers (the health gate imports several).
    ``operation``: the transaction's operation (``install``, ``disable``…), so a
    front end can say what the database step does for it.
    """

    stage: Stage
    text: str = ""
    plugin_id: str | None = None
    version: str | None = None
    received: int | None = None
    total: int | None = None
    plugins: tuple[str, ...] = ()
    operation: str | None = None

    def __str__(self) -> str:
        return self.text

    @classmethod
    def download(cls, plugin_id: str, version: str, received: int, total: int) -> ProgressEvent:
        """Bytes of one package download so far (no CLI line: a terminal gets the fetcher's bar)."""
        return cls("download", plugin_id=plugin_id, version=version, received=received, total=total)


#: The ``Installer(progress=...)`` callback: gets every event of the operations it runs.
Progress = Callable[[ProgressEvent], None]


def after_commit(progress: Progress) -> Progress:
    """``progress`` for the events past COMMIT, where the change is decided.

    A callback that raises there (a websocket to a browser that went away, a closed pipe, a
    bug) must not stop the roll forward (it left the change committed but not switched), nor
    make a finished change look failed: its exception is logged (``atomicplug`` logger) and the
    work goes on. Before COMMIT a raising callback still stops the transaction, which rolls back.
    """

    def call(event: ProgressEvent) -> None:
        try:
            progress(event)
        except Exception:  # noqa: BLE001 - the application's callback: anything
            import logging  # here: ~3 ms of start-up that no command otherwise pays

            logging.getLogger("atomicplug").warning("progress callback failed at %s; the change goes on", event.stage, exc_info=True)

    return call


def accepting_lines(progress: Progress) -> Callable[[ProgressEvent | str], None]:
    """``progress``, also fed the plain lines some parts of the library still say, as ``note`` events."""

    def emit(event: ProgressEvent | str) -> None:
        progress(event if isinstance(event, ProgressEvent) else ProgressEvent("note", str(event)))

    return emit
