"""The ``atomicplug`` command line: argument parsing and error reporting only.

Each command group lives in its own module with a ``register(subparsers)``
function; handlers take the parsed arguments and return an exit code. Every
expected failure is an :class:`~atomicplug.errors.AtomicplugError` and is
printed as one line on stderr with its exit code (``--debug``, a global option
given before the command, adds the traceback); so is an OSError that escapes
anyway (exit 1). A usage error is one line without a traceback, ``--debug`` or not.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from atomicplug.errors import AtomicplugError, UsageError, report_interrupt
from atomicplug.resident.client import requested_command

__all__ = ["main", "run", "build_parser", "add_command_group"]

#: Command modules, imported lazily so start-up stays cheap.
_COMMAND_MODULES = (
    "atomicplug.cli.setup_cmds",
    "atomicplug.cli.signing_cmds",
    "atomicplug.cli.transaction_cmds",
    "atomicplug.cli.repo_cmds",
    "atomicplug.cli.doctor_cmds",
    "atomicplug.cli.cluster_cmds",
    "atomicplug.cli.resident_cmds",
)


#: The program's name: the top-level parser's prog, and what every usage error line starts with.
_PROG = "atomicplug"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as our one-line UsageError (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # main() prints "atomicplug: error: " before it: name only the command ("rollback: ...").
        command = self.prog.removeprefix(_PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def add_command_group(parser: argparse.ArgumentParser, dest: str, metavar: str = "COMMAND") -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The subcommands of ``parser``; the command alone prints its own help on stderr, exit 2 (as ``atomicplug`` alone does)."""

    def usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)
    return parser.add_subparsers(dest=dest, metavar=metavar)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv``, only what its command needs.

    Registering some command modules imports heavy things (the repository
    client pulls in requests), so ``atomicplug recover`` registers only the
    modules up to the one that defines ``recover``; and within them only that
    command's parser is made (:class:`_OneCommand`). Help and unknown commands
    still see every command.
    """
    import importlib

    parser = _Parser(prog=_PROG, description="Transactional plugin installer.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $ATOMICPLUG_CONFIG or ./atomicplug.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for failures")
    sub = add_command_group(parser, "command")
    wanted = requested_command(argv) if argv is not None else None
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub if wanted is None else _OneCommand(sub, wanted))
        if wanted in sub.choices:
            return parser
    return parser if wanted is None else build_parser()  # an unknown command: its error lists them all


class _OneCommand:
    """The command group as a command module sees it when one command was asked for: only that
    command's parser is made, the others' calls go to a stand-in that drops them.

    argparse made some 20 parsers for ``atomicplug install`` (2 of its 3 ms of set-up, much of it
    gettext looking for catalogs of their help texts), which only ``--help`` shows.
    """

    def __init__(self, group: argparse._SubParsersAction, wanted: str) -> None:  # type: ignore[type-arg]
        self._group = group
        self._wanted = wanted

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        return self._group.add_parser(name, **kwargs) if name == self._wanted else _Dropped()


class _Dropped:
    """A parser not made: every call on it (add_argument, set_defaults, a nested group) does nothing."""

    def __getattr__(self, _name: str) -> Callable[..., _Dropped]:
        return self._nothing

    def _nothing(self, *_args: Any, **_kwargs: Any) -> _Dropped:
        return self


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; ``parser``: a full one built before (the resident server's children)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False  # until parsed: a usage error never shows a traceback
    try:
        parser = parser or build_parser(argv)
        args = parser.parse_args(argv)
        debug = args.debug
        return int(args.handler(args) or 0)
    except AtomicplugError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"atomicplug: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return report_interrupt()
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # Last resort: the library reports a failing disk itself (StorageError); a command
        # outside it that still lets one escape prints it as one line all the same.
        from atomicplug.ioerrors import describe

        if debug:
            import traceback

            traceback.print_exc()
        print(f"atomicplug: error: {describe(exc)}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The command as a process (``atomicplug`` and ``python -m atomicplug``): main(), then exit."""
    exit_process(main())


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` without tearing the interpreter down.

    Finalization (clearing some 250 modules, a last garbage collection) cost ~20 ms of
    CPU at the end of every command, and nothing needs it once main() returned: every
    file the library writes is closed (and fsync'd) by then, and a database connection
    is committed or rolled back before it is closed. What the interpreter would still do
    is done here: the atexit handlers run, stdout and stderr are flushed. When another
    thread is still alive, or a flush fails (a closed pipe), the ordinary exit runs
    instead, which waits for the thread or reports the flush as it always did.
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        raise SystemExit(code)
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        raise SystemExit(code) from None
    os._exit(code)


def load_config(args: argparse.Namespace):  # noqa: ANN201 - avoids importing config at start-up
    """The Config the command line points at (``--config``, env, ./atomicplug.toml)."""
    from atomicplug.config import Config

    return Config.load(args.config)
