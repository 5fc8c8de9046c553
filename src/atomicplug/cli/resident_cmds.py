"""``atomicplug resident start|stop|status``: the warm server that runs commands.

A command typed at a terminal starts one when none runs (``resident.client.leaves_server``).
"""

from __future__ import annotations

import argparse
import time

from atomicplug.cli import add_command_group

__all__ = ["register"]


#: How long ``start`` waits for a server another ``start`` is bringing up (its preload) to answer.
_STARTING_WAIT_S = 30.0


def cmd_start(args: argparse.Namespace) -> int:
    from atomicplug.resident.address import socket_path
    from atomicplug.resident.server import AlreadyListening, ResidentServer, start

    path = socket_path()
    if args.expect_socket is not None and args.expect_socket != path:
        # Started by a command whose interpreter differs in what names the socket: a server
        # here would never be reached, and that command would start another each time.
        print(f"atomicplug: not started: this interpreter's socket is {path}, not {args.expect_socket}")
        return 1
    if _report_running(path, wait=0.0):
        return 0
    try:
        if args.foreground:
            server = ResidentServer.listen(path, args.idle_timeout)
            print(f"atomicplug: resident server listening at {path} (pid {server.status()['pid']})", flush=True)
            server.serve()
            return 0
        pid = start(path, args.idle_timeout)
    except AlreadyListening:  # another start won the socket's claim: report that server once it answers
        if _report_running(path, wait=_STARTING_WAIT_S):
            return 0
        raise
    idle = f"stops after {args.idle_timeout:g} s without a command" if args.idle_timeout else "runs until stopped"
    print(f"atomicplug: resident server started (pid {pid}, {path}); it {idle}")
    return 0


def _report_running(path: str, *, wait: float) -> bool:
    """Print the running server's line and return True, asking for up to ``wait`` seconds; False if none answers."""
    from atomicplug.resident.client import query

    deadline = time.monotonic() + wait
    while (running := query("status")) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    print(f"atomicplug: the resident server is already running (pid {running['pid']}, {path})")
    return True


def cmd_stop(args: argparse.Namespace) -> int:
    from atomicplug.resident.client import query

    answer = query("stop")
    if answer is None:
        print("atomicplug: no resident server is running")
        return 0
    print(f"atomicplug: resident server stopping (pid {answer['stopping']}; commands it runs finish first)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from atomicplug.resident.address import socket_path
    from atomicplug.resident.client import query

    status = query("status")
    if status is None:
        print(f"atomicplug: no resident server is running (commands run in their own process); socket {socket_path()}")
        return 3
    uptime = time.time() - float(status["started"])
    print(
        f"atomicplug: resident server pid {status['pid']} at {status['socket']}: up {uptime:.0f} s, "
        f"{status['served']} commands served, {status['running']} running"
    )
    return 0


#: The longest idle timeout: the server's select() takes at most 2**31 ms (~24.8 days).
_LONGEST_IDLE_S = 2_000_000.0


def _idle_seconds(text: str) -> float:
    """``--idle-timeout``: 0 (never) up to :data:`_LONGEST_IDLE_S`; a larger one made the server die once started."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= seconds <= _LONGEST_IDLE_S:  # also nan
        raise argparse.ArgumentTypeError(f"must be 0 (never) to {_LONGEST_IDLE_S:g} seconds, got {text!r}")
    return seconds


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from atomicplug.resident.server import DEFAULT_IDLE_TIMEOUT

    p = sub.add_parser(
        "resident",
        help="a warm server that runs commands without starting Python each time",
        description=(
            "Start, stop or show the resident server. While it runs, atomicplug commands from this "
            "Python environment are run by children forked from it (same output and exit codes), "
            "which saves the interpreter's start-up and imports. A command typed at a terminal "
            "starts one when none runs (it stops after 15 minutes without a command). "
            "ATOMICPLUG_RESIDENT=off bypasses it, =on never starts one, =auto always does."
        ),
    )
    actions = add_command_group(p, "resident_action", "ACTION")
    start = actions.add_parser("start", help="start it in the background (or --foreground, for a service manager)")
    start.add_argument("--idle-timeout", type=_idle_seconds, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS", help="stop after this long without a command (0: never; default %(default)g)")
    start.add_argument("--foreground", action="store_true", help="stay in the foreground (systemd, supervisord)")
    start.add_argument("--expect-socket", metavar="PATH", help=argparse.SUPPRESS)  # a command starting one for the next
    start.set_defaults(handler=cmd_start)
    actions.add_parser("stop", help="stop it once the commands it runs have finished").set_defaults(handler=cmd_stop)
    actions.add_parser("status", help="whether it runs (exit 3 when not)").set_defaults(handler=cmd_status)
