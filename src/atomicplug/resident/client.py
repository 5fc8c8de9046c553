"""The command line's side of the resident server (standard library only).

:func:`forward` runs one command in a child of the resident server when one is
listening for this interpreter, and returns its exit code; None means "run it
here" (no server, another user's socket, a stale server, a command it does not
serve), and costs a failed ``connect`` at most. :func:`leaves_server` and
:func:`start_in_background` let a command typed at a terminal leave a server
behind for the next one when none runs. Once the server has forked the
child the command is running: signals the client gets (Ctrl-C, ``kill``) are
passed on to it, and a child killed by a signal makes the client die of the same
signal, so a caller sees what a one-shot process would have shown.
"""

from __future__ import annotations

import _socket  # the C module: socket.py builds its enums at import (~3 ms of every command)
import array
import marshal
import os
import signal
import struct
import sys
from atomicplug import TYPE_CHECKING
from atomicplug.errors import report_interrupt
from atomicplug.resident.address import code_stamp, private_folder, socket_path

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["FORWARDED_SIGNALS", "AUTO_IDLE_TIMEOUT", "MODE_ENV", "NOT_SERVED", "SERVED", "complete_message", "forward", "leaves_server", "query", "resident_mode", "read_message", "requested_command", "send_message", "start_in_background"]

#: ``ATOMICPLUG_RESIDENT``: ``off`` never uses a resident server (the test suite; a crash test);
#: ``on`` uses one that runs and never starts one; ``auto`` starts one when none runs. Unset (or
#: anything else): ``auto`` for a command whose stdin is a terminal (someone typing commands),
#: ``on`` otherwise (scripts, services, CI: no process is left behind that they did not start).
MODE_ENV = "ATOMICPLUG_RESIDENT"
#: How long a server a command started stays without a command: a session at a terminal, not a day.
AUTO_IDLE_TIMEOUT = 900.0
#: Commands a resident child runs: every command but NOT_SERVED.
SERVED = frozenset({
    "install", "upgrade", "uninstall", "rollback", "enable", "disable", "configure", "settings", "list",
    "history", "generations", "verify", "recover", "gc", "search", "available", "doctor", "sync", "cluster", "init",
})  # fmt: skip
#: Those that prompt for a password on the terminal (keygen, pack, repo), start a long-lived
#: server (serve), or manage this one: they always run in the client's own process.
NOT_SERVED = frozenset({"keygen", "pack", "repo", "serve", "resident"})
#: Signals passed on to the running child.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_LENGTH = struct.Struct(">I")
#: Bytes a request may take: its environment and arguments are bounded by the kernel's ARG_MAX (2 MiB here).
MAX_MESSAGE = 16 << 20


def requested_command(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (skipping the global options), or None."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)
        elif arg == "--debug" or arg.startswith("--config="):
            continue
        elif arg.startswith("-"):
            return None  # --help and friends
        else:
            return arg
    return None


def send_message(conn: _socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """One length-prefixed message, with ``fds`` passed along (SCM_RIGHTS).

    ``marshal``: built in (json costs ~3 ms of start-up), and both ends are the same
    interpreter (the socket's name carries its version) of the same user (SO_PEERCRED).
    """
    body = marshal.dumps(message)
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    data = _LENGTH.pack(len(body)) + body
    sent = conn.sendmsg([data], ancillary)
    if sent < len(data):
        conn.sendall(data[sent:])


def read_message(conn: _socket.socket) -> dict[str, Any] | None:
    """The next message on ``conn`` (a blocking socket), or None at its end."""
    data = _read_exactly(conn, b"", _LENGTH.size)
    if data is None:
        return None
    body = _read_exactly(conn, b"", _LENGTH.unpack(data)[0])
    return None if body is None else _decode(body)


def complete_message(data: bytes | bytearray) -> dict[str, Any] | None:
    """The one message ``data`` holds, once all its bytes are in; None before.

    For a reader that takes bytes as they come (the server, which reads every
    client's request beside the others'). ValueError: not one message, or larger
    than any request (``MAX_MESSAGE``).
    """
    if len(data) < _LENGTH.size:
        return None
    end = _LENGTH.size + _LENGTH.unpack_from(data)[0]
    if end > MAX_MESSAGE:
        raise ValueError("a request larger than any command sends")
    if len(data) < end:
        return None
    message = _decode(data[_LENGTH.size :]) if len(data) == end else None
    if message is None:
        raise ValueError("not one request")
    return message


def _decode(body: bytes | bytearray) -> dict[str, Any] | None:
    try:
        message = marshal.loads(body)
    except (EOFError, ValueError, TypeError):
        return None
    return message if isinstance(message, dict) else None


def _read_exactly(conn: _socket.socket, data: bytes, size: int) -> bytes | None:
    """``size`` bytes, never more: the next message may already be waiting behind this one."""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            return None
        data += more
    return data


def peer_credentials(conn: _socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED), as it was at connect."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid, gid


def connect() -> _socket.socket | None:
    """A connection to this interpreter's resident server, or None (no server, or not ours)."""
    path = socket_path()
    if not os.path.exists(path) or not private_folder(path, create=False):
        return None
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(path)
        if peer_credentials(conn)[1] == os.getuid():  # the server's uid
            return conn
    except OSError:
        pass
    conn.close()
    return None


def query(op: str) -> dict[str, Any] | None:
    """Ask this interpreter's server (``status``, ``stop``); None when none is listening."""
    conn = connect()
    if conn is None:
        return None
    try:
        conn.settimeout(10.0)
        send_message(conn, {"op": op})
        return read_message(conn)
    finally:
        conn.close()


def forward(argv: Sequence[str]) -> int | None:
    """Run ``argv`` in a resident child and return its exit code; None: run it in this process."""
    if not _may_serve(argv):
        return None
    conn = connect()
    if conn is None:
        return None
    if conn.fileno() <= 2:
        # A closed stdin, stdout or stderr: the socket took its number, and would be passed on as
        # that stream. Run here, where it stays closed, as it would without a server.
        conn.close()
        return None
    relay = _Relay()  # from before the request: a Ctrl-C at any moment reaches the command
    try:
        try:
            send_message(conn, _request(argv, relay.ignored), fds=(0, 1, 2))
        except OSError:  # a closed stdin, stdout or stderr cannot be passed on, a deleted folder
            return relay.run_here()
        first = _reply(conn)
        if first is not None and "run_here" in first:
            return relay.run_here()  # the server is stale (code changed), stopping, or refused the request
        if first is None or "pid" not in first:
            # The server went away with the request: whether its child started cannot be told,
            # and running the command here too could run it twice.
            relay.restore()
            return _lost("the resident server closed the connection before it answered")
        relay.attach(int(first["pid"]))
        outcome = _reply(conn)
        relay.restore()
        return _outcome(outcome)
    finally:
        conn.close()


def resident_mode() -> str:
    """``ATOMICPLUG_RESIDENT`` as ``off``, ``on``, ``auto`` or ``""`` (unset: auto at a terminal), any case;
    ``0``/``false``/``no`` mean off, and ``1``/``true``/``yes`` on."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    return {"0": "off", "false": "off", "no": "off", "1": "on", "true": "on", "yes": "on"}.get(mode, mode)


def _may_serve(argv: Sequence[str]) -> bool:
    return resident_mode() != "off" and "ATOMICPLUG_CRASH_AT" not in os.environ and requested_command(argv) in SERVED


def leaves_server(argv: Sequence[str]) -> bool:
    """Whether this command, run in its own process, should start a server for the next ones.

    Only a command a server would run, only under ``auto`` (see MODE_ENV: a terminal is where
    a person waits for each command), and only when none answers: a socket file left by a
    server that was killed must not stop every later command from starting one (``resident
    start`` removes it).
    """
    if not _may_serve(argv):
        return False
    mode = resident_mode()
    if mode != "auto" and (mode == "on" or not os.isatty(0)):
        return False
    path = socket_path()
    if len(os.fsencode(path)) > _SUN_PATH_MAX or (os.path.lexists(os.path.dirname(path)) and not private_folder(path, create=False)):
        return False  # no server could listen there: starting one each time would only cost CPU
    answering = connect()
    if answering is None:
        return True
    answering.close()  # one that sent this command back (other groups, limits): it stays in charge
    return False


def start_in_background() -> None:
    """Start ``atomicplug resident start`` detached and return at once (never fails the command).

    A fresh interpreter, not a fork of this one: this process has run a command (threads, a
    database connection, a lock). Same interpreter flags, so that it listens where this
    process looks (``--expect-socket`` makes it give up otherwise, rather than serve nobody);
    its own session, ``/`` for its folder and ``/dev/null`` for its streams, so that it holds
    neither the terminal nor a pipe the caller reads to its end (``$(atomicplug list)``).
    """
    import subprocess

    if not sys.executable:
        return
    flags = subprocess._args_from_interpreter_flags()  # -O, -B, -X dev, -W ...: what multiprocessing passes on
    for name, value in sys._xoptions.items():  # and the -X options it leaves out (warn_default_encoding ...)
        option = name if value is True else f"{name}={value}"
        if option not in flags:
            flags += ["-X", option]
    command = [
        sys.executable, *flags, "-m", "atomicplug", "resident", "start",
        "--idle-timeout", f"{AUTO_IDLE_TIMEOUT:g}", "--expect-socket", socket_path(),
    ]  # fmt: skip
    try:
        subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd="/", start_new_session=True, close_fds=True, env=_server_environment(),
        )  # fmt: skip
    except OSError:
        pass  # the next command tries again; this one has done its work


#: What a server's own environment keeps of the command's that starts it: the children take each
#: request's environment, so the server needs only what decides its interpreter and its socket.
_SERVER_ENVIRONMENT = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "XDG_RUNTIME_DIR")
#: sockaddr_un's sun_path: 108 bytes with the NUL.
_SUN_PATH_MAX = 107


def _server_environment() -> dict[str, str]:
    """The environment of a server a command starts: no secret the command had (a database
    password, a cloud key) waits in it for 15 minutes; PYTHONPATH made absolute, since the
    server starts in ``/`` and must import what this process imports."""
    keep = {
        name: value for name, value in os.environ.items()
        if name in _SERVER_ENVIRONMENT or name.startswith(("PYTHON", "LC_", "ATOMICPLUG_RESIDENT"))
    }  # fmt: skip
    if "PYTHONPATH" in keep:
        keep["PYTHONPATH"] = os.pathsep.join(os.path.abspath(entry) for entry in keep["PYTHONPATH"].split(os.pathsep))
    return keep


class _Relay:
    """Signals the client gets, passed on to the child (held until the server names it).

    A signal this process ignores (``nohup``, a script's ``cmd &``, ``trap ''``) is neither
    caught nor passed on: the child ignores it too (``ignored``, sent with the request), as a
    one-shot process inherits the disposition.
    """

    def __init__(self) -> None:
        self.child: int | None = None
        self.pending: list[int] = []
        self.ignored = [signum for signum in FORWARDED_SIGNALS if signal.getsignal(signum) is signal.SIG_IGN]
        self.previous = {signum: signal.signal(signum, self._got) for signum in FORWARDED_SIGNALS if signum not in self.ignored}
        if signal.getsignal(signal.SIGTSTP) is not signal.SIG_IGN:  # Ctrl-Z (ignored by a shell without job control)
            self.previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._suspend)
        self.previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._resume)

    def _suspend(self, _signum: int, _frame: object) -> None:
        """Ctrl-Z: the child (no terminal of its own, not in the shell's job) stops with this process."""
        self._send(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until the shell's `fg`/`bg` (SIGCONT)
        signal.signal(signal.SIGTSTP, self._suspend)
        self._send(signal.SIGCONT)

    def _resume(self, _signum: int, _frame: object) -> None:
        self._send(signal.SIGCONT)

    def _send(self, signum: int) -> None:
        if self.child is not None:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    def _got(self, signum: int, _frame: object) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        self._send(signum)

    def attach(self, child: int) -> None:
        self.child = child
        for signum in self.pending:
            self._got(signum, None)
        self.pending.clear()

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def run_here(self) -> int | None:
        """None (the caller runs the command), or the exit of a signal that came meanwhile."""
        self.restore()
        if signal.SIGINT in self.pending:
            return report_interrupt()
        for signum in self.pending:
            signal.raise_signal(signum)  # its own handler, or its default action
        return None


def _reply(conn: _socket.socket) -> dict[str, Any] | None:
    try:
        return read_message(conn)
    except OSError:  # reset by a server that died
        return None


def _lost(what: str) -> int:
    print(
        f"atomicplug: error: {what} (see `atomicplug history`, `atomicplug recover` if it was a transaction; "
        f"{MODE_ENV}=off runs commands without the server)",
        file=sys.stderr,
    )
    return 1


def _request(argv: Sequence[str], ignored: Sequence[int]) -> dict[str, Any]:
    import resource  # here, not at the top: only a client that reached a server pays for it

    mask = os.umask(0o22)
    os.umask(mask)
    streams = [sys.stdin, sys.stdout, sys.stderr]
    return {
        "op": "run",
        "stamp": code_stamp(),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": mask,
        # ulimit -n, -c, -f ...: what the child must run under, as a one-shot process would have
        "limits": [(number, *resource.getrlimit(number)) for number in _rlimits(resource)],
        "encodings": [(s.encoding, s.errors) if s is not None else None for s in streams],
        "write_through": bool(getattr(sys.stdout, "write_through", False)),  # python -u, PYTHONUNBUFFERED
        "ignored_signals": [int(signum) for signum in ignored],  # marshal takes no enums
    }


def _rlimits(resource: Any) -> list[int]:
    """Every resource limit this platform has (RLIMIT_NOFILE, RLIMIT_CORE, ...)."""
    return sorted({getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")})


def _outcome(outcome: dict[str, Any] | None) -> int:
    """The exit code of the child, as the server reported how it ended."""
    if outcome is None:
        return _lost("the resident server stopped before the command ended")
    if "signal" in outcome:
        signum = int(outcome["signal"])
        sys.stdout.flush()
        if signum != signal.SIGKILL:
            signal.signal(signum, signal.SIG_DFL)  # not Python's SIGINT handler: die, as the child did
        os.kill(os.getpid(), signum)
        return 128 + signum  # a signal whose default is to go on
    return int(outcome.get("exit", 1))
