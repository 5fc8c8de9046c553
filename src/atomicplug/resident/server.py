"""The resident server: accept a command, fork a warm child to run it, report how it ended.

The server imports every module a command may need and builds the full argument
parser once (:func:`preload`), then waits on its socket. Each request carries the
client's argv, working folder, environment, umask and stdin/stdout/stderr
(SCM_RIGHTS); the forked child takes them over and runs ``cli.main`` as the
one-shot process would. The server stays single-threaded (``fork`` copies only the
calling thread), runs no transaction and keeps no state between commands, so a
command run here sees what a one-shot command sees: the home on disk.

It answers only its own user (SO_PEERCRED, and the socket's folder is 0700),
refuses a client whose code stamp differs from its own (the code changed under
it: the client runs the command itself and the server stops), and stops after
``idle_timeout`` seconds without a command.
"""

from __future__ import annotations

import argparse
import array
import errno
import fcntl
import functools
import gc
import io
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

import attrs

from atomicplug.errors import OperationError, report_interrupt
from atomicplug.resident.address import code_stamp, private_folder
from atomicplug.resident.client import FORWARDED_SIGNALS, complete_message, connect, peer_credentials, requested_command, send_message
from atomicplug.stages.gate_interpreter import start_early

__all__ = ["DEFAULT_IDLE_TIMEOUT", "AlreadyListening", "ResidentServer", "preload", "start"]

#: Seconds without a command after which the server exits (0: never).
DEFAULT_IDLE_TIMEOUT = 3600.0
#: Seconds a connection has to send its whole request; then it is closed unanswered.
REQUEST_TIMEOUT = 5.0
#: Modules a command never imports in the server's children.
_NOT_PRELOADED = ("atomicplug.__main__", "atomicplug.pyc_worker", "atomicplug.testing")
_FDS_SPACE = socket.CMSG_SPACE(3 * array.array("i").itemsize)
#: linux/capability.h: what raising a hard resource limit takes.
_CAP_SYS_RESOURCE = 24
#: SO_PEERGROUPS (Linux 4.13): the socket option Python names no constant for.
_SO_PEERGROUPS: int | None = getattr(socket, "SO_PEERGROUPS", 59 if sys.platform.startswith("linux") else None)
#: The largest buffer Python's getsockopt takes (1024 bytes): 256 groups.
_GROUPS_BUFFER = 1024


class AlreadyListening(OperationError):
    """Another server holds this socket's claim: it listens, or is about to (its preload takes a moment)."""


def preload() -> argparse.ArgumentParser:
    """Import every atomicplug module (optional extras when installed); the full parser."""
    import importlib
    import pkgutil

    import atomicplug
    from atomicplug.cli import build_parser

    for module in pkgutil.walk_packages(atomicplug.__path__, "atomicplug."):
        if module.name not in _NOT_PRELOADED:
            try:
                importlib.import_module(module.name)
            except ImportError:  # an extra that is not installed: its commands fail as one-shot ones do
                pass
    _warm()
    return build_parser()


def _warm() -> None:
    """Do once here what each child would otherwise do on its first use (~10 ms a command).

    The standard-library modules the commands import where they are used, libc's
    ``syncfs`` (ctypes), OpenSSL's Ed25519 and SQLite's library: every child
    inherits them loaded.
    """
    import codecs
    import getpass  # noqa: F401 - the actor's name (transaction_cmds)
    import pwd  # noqa: F401 - getpass.getuser() without $USER
    import sqlite3

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from atomicplug import fsutil

    codecs.lookup("utf-8-sig")  # metadata.json may start with a BOM
    fsutil.libc_syncfs()
    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"warm"), b"warm")
    sqlite3.connect(":memory:").close()


@attrs.define
class _Incoming:
    """A connection whose request is still arriving: its bytes so far and the descriptors passed with them."""

    conn: socket.socket
    peer: tuple[int, int, int]
    deadline: float
    data: bytearray = attrs.field(factory=bytearray)
    fds: list[int] = attrs.field(factory=list)

    def close(self) -> None:
        _close_all(self.fds)
        self.conn.close()


@attrs.define
class ResidentServer:
    """One listening server and the children it runs (pid → the client's connection)."""

    path: str
    listener: socket.socket
    parser: argparse.ArgumentParser
    idle_timeout: float
    stamp: str = attrs.field(factory=code_stamp)
    #: Every module file it has imported (atomicplug's and its dependencies'), as :func:`_stat_files` saw them at start-up.
    loaded: tuple[tuple[str, int, int], ...] = attrs.field(factory=lambda: _stat_files(_loaded_modules()))
    started: float = attrs.field(factory=time.time)
    served: int = 0
    stopping: bool = False
    running: dict[int, socket.socket] = attrs.field(factory=dict)
    #: Connections whose requests are still arriving, by descriptor: each is read as its bytes come,
    #: so a client stopped (Ctrl-Z) between connecting and sending holds up no other command.
    incoming: dict[int, _Incoming] = attrs.field(factory=dict)
    selector: selectors.BaseSelector = attrs.field(factory=selectors.DefaultSelector)
    #: The socket file this server bound (device, inode): removed at exit only while it is still that file.
    bound: tuple[int, int] = attrs.field(init=False)
    #: The pipe signals wake :meth:`serve` through (read end, write end), while it runs; a child closes it.
    wakeup: tuple[int, int] = attrs.field(init=False, default=(-1, -1))
    #: The locked claim on the socket's name (:func:`_claim`), held until the name is released (:meth:`_release_name`); a child closes it.
    claim: int = -1
    #: (effective gid, supplementary groups) every child inherits: a client with other groups runs its command itself.
    groups: tuple[int, frozenset[int]] = attrs.field(factory=lambda: (os.getegid(), frozenset(os.getgroups())))

    def __attrs_post_init__(self) -> None:
        info = os.stat(self.path)
        self.bound = (info.st_dev, info.st_ino)

    @classmethod
    def listen(cls, path: str, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> ResidentServer:
        """Bind ``path`` (refusing a folder others can enter, or a live server there), preload."""
        if not private_folder(path, create=True):
            raise OperationError(f"{os.path.dirname(path)} is not a folder only this user can enter: not listening there")
        claim = _claim(path)
        try:
            live = connect()
            if live is not None:  # a server that took no claim (an older atomicplug's)
                live.close()
                raise AlreadyListening(f"a resident server is already listening at {path}")
            # What the code is, taken before the imports: a file edited while they run (a `git pull`,
            # a `pip install -U` beside the first command of a terminal) makes this server stale
            # at once, rather than serving what it imported before the edit for as long as it is used.
            stamp, begun = code_stamp(), time.time_ns()
            parser = preload()
            loaded = _edited_since(_stat_files(_loaded_modules()), begun, time.time_ns())
            try:
                os.unlink(path)  # a socket file a killed server left: its claim died with it
            except FileNotFoundError:
                pass
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(64)
        except BaseException:
            os.close(claim)
            raise
        return cls(path=path, listener=listener, parser=parser, idle_timeout=idle_timeout, claim=claim, stamp=stamp, loaded=loaded)

    def serve(self) -> None:
        """Answer requests until stopped (``stop``, SIGTERM, idle, stale code) and every child ended."""
        # What preload built stays put: the children's garbage collections skip it, so they do not
        # write to (and copy) every page of the heap they share with this process.
        gc.collect()
        gc.freeze()
        self.wakeup = wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the wakeup fd
        signal.signal(signal.SIGTERM, self._stop_on_signal)
        signal.signal(signal.SIGINT, self._stop_on_signal)
        selector = self.selector
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(wake_read, selectors.EVENT_READ)
        last = time.monotonic()
        try:
            while True:
                if self._reap():
                    last = time.monotonic()  # idle counts from the end of the last command, not its start
                self._expire()
                if self.stopping and self.listener.fileno() >= 0:
                    selector.unregister(self.listener)
                    self._close_listener(drain=True)
                if self.stopping and not self.running and not self.incoming:
                    return
                deadlines = [incoming.deadline for incoming in self.incoming.values()]
                if self.idle_timeout and not self.running and not self.stopping:
                    if last + self.idle_timeout <= time.monotonic():
                        self.stopping = True
                        continue
                    deadlines.append(last + self.idle_timeout)
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.listener:
                        self._accept()
                        last = time.monotonic()
                    elif isinstance(key.data, _Incoming):
                        self._read_request(key.data)
                    else:
                        _drain(wake_read)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            self._close_listener()
            for incoming in list(self.incoming.values()):
                self._forget(incoming).close()
            selector.close()
            os.close(wake_read)
            os.close(wake_write)
            self.wakeup = (-1, -1)

    def _stop_on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _close_listener(self, *, drain: bool = False) -> None:
        """Remove the socket's name, answer the connections already waiting, close.

        Unlinked first, so no client connects after; one already in the backlog is
        told to run its command itself (closed unanswered, it could not tell whether
        its command ran, and would report an error instead).
        """
        if self.listener.fileno() < 0:
            return
        self._release_name()
        if drain:
            self.listener.setblocking(False)
            while True:
                try:
                    self._accept()
                except BlockingIOError:
                    break
        self.listener.close()

    def _release_name(self) -> None:
        """Unlink the socket's name (unless a newer server's socket took it): no client connects after.

        The claim goes with it: this server may wait long for its children (a served `sync
        --watch`), and `resident start` must not wait for them (it said "already listening").
        """
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self.bound:
                os.unlink(self.path)
        except OSError:
            pass
        _close_all([self.claim])
        self.claim = -1

    def _accept(self) -> None:
        """Take one connection; its request is read as it arrives (BlockingIOError when none waits on a non-blocking listener)."""
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            raise
        except OSError:
            return
        try:
            peer = peer_credentials(conn)  # (pid, uid, gid), read once: who may ask, and with which groups
            if peer[1] != os.getuid():
                conn.close()
                return
            conn.setblocking(False)
            incoming = _Incoming(conn=conn, peer=peer, deadline=time.monotonic() + REQUEST_TIMEOUT)
            self.selector.register(conn, selectors.EVENT_READ, incoming)
        except (OSError, ValueError):
            conn.close()
            return
        self.incoming[conn.fileno()] = incoming

    def _read_request(self, incoming: _Incoming) -> None:
        """Take the bytes (and descriptors) that arrived on a connection; answer once its request is whole."""
        try:
            data, ancillary, flags, _ = incoming.conn.recvmsg(65536, _FDS_SPACE)
            incoming.fds += _passed_fds(ancillary)
            if not data or flags & socket.MSG_CTRUNC:
                raise ValueError("a truncated request, or too many descriptors")
            incoming.data += data
            request = complete_message(incoming.data)
        except BlockingIOError:
            return
        except (OSError, ValueError):
            self._forget(incoming).close()
            return
        if request is None:
            return
        conn = self._forget(incoming).conn
        try:
            conn.settimeout(5.0)  # answers and the outcome are small: a client that stops reading is dropped
            self._answer(conn, incoming.peer, request, incoming.fds)
        except (OSError, ValueError):
            conn.close()
        finally:
            _close_all(incoming.fds)

    def _forget(self, incoming: _Incoming) -> _Incoming:
        """Stop waiting on a connection's request (it is answered or dropped next)."""
        self.incoming.pop(incoming.conn.fileno(), None)
        try:
            self.selector.unregister(incoming.conn)
        except (KeyError, ValueError):
            pass
        return incoming

    def _expire(self) -> None:
        """Close, unanswered, the connections whose requests did not arrive in time."""
        now = time.monotonic()
        for incoming in [i for i in self.incoming.values() if i.deadline <= now]:
            self._forget(incoming).close()

    def close_in_child(self) -> None:
        """In a forked child: close what is the server's (its socket, other clients' connections and descriptors)."""
        self.listener.close()
        for incoming in self.incoming.values():
            incoming.close()
        for conn in self.running.values():
            conn.close()
        self.selector.close()  # the child's copy: the server's registrations stay as they are
        _close_all([*self.wakeup, self.claim])

    def _answer(self, conn: socket.socket, peer: tuple[int, int, int], request: dict[str, Any], fds: list[int]) -> None:
        op = request.get("op")
        if op == "status":
            send_message(conn, self.status())
        elif op == "stop":
            self.stopping = True
            self._release_name()  # before answering: once `resident stop` returns, no new command reaches this server
            send_message(conn, {"stopping": os.getpid()})
        elif op == "run" and self.stopping:
            send_message(conn, {"run_here": "the resident server is stopping"})
        elif op == "run" and (request.get("stamp") != self.stamp or _stat_files(f for f, _, _ in self.loaded) != self.loaded):
            # atomicplug's code (the client's stamp) or a dependency (pip upgraded it) changed since it was imported
            self.stopping = True
            send_message(conn, {"run_here": "the code changed since the resident server started"})
        elif op == "run" and not _limits_reachable(request.get("limits") or []):
            send_message(conn, {"run_here": "the command's resource limits are above the resident server's"})
        elif op == "run" and not _same_groups(conn, peer, self.groups):
            send_message(conn, {"run_here": "the command's groups differ from the resident server's"})
        elif op == "run" and len(fds) == 3:
            # The client passes its signals on as soon as it has the pid: held until the child
            # has its own handlers (the server's would swallow a Ctrl-C meant for the command).
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
            pid = os.fork()
            if pid == 0:
                _run_child(self, conn, fds, request)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
            self.served += 1
            self.running[pid] = conn
            send_message(conn, {"pid": pid})
            return  # the connection stays open until the child's end is reported
        else:
            send_message(conn, {"run_here": "not a request this server runs"})
        conn.close()

    def _reap(self) -> int:
        """Report how each child that ended ended; how many did."""
        ended = 0
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = self.running.pop(pid, None)
            if conn is None:
                continue
            ended += 1
            outcome = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
            try:
                send_message(conn, outcome)
            except OSError:
                pass  # the client went away; the command ran to its end all the same
            conn.close()
        return ended

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "socket": self.path,
            "started": self.started,
            "served": self.served,
            "running": len(self.running),
            "idle_timeout": self.idle_timeout,
            "stamp": self.stamp,
        }


def _loaded_modules() -> list[str]:
    """The file of every module imported so far (atomicplug's and its dependencies')."""
    return sorted({f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)})


def _stat_files(files: Iterable[str]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each file: what a dependency's upgrade changes.

    The client's code stamp covers atomicplug's own files only (it cannot know what
    the server imported); the server re-stats the modules it imported at start-up,
    ~500 stats (under a millisecond) per command.
    """
    seen = []
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            seen.append((path, -1, -1))
            continue
        seen.append((path, info.st_size, info.st_mtime_ns))
    return tuple(seen)


def _edited_since(seen: tuple[tuple[str, int, int], ...], begun: int, ended: int) -> tuple[tuple[str, int, int], ...]:
    """``seen``, with each file modified between ``begun`` and ``ended`` (ns) marked as never matching:
    it may have been imported before the edit. (A file dated in the future, a clock's skew, is left alone.)"""
    return tuple((path, size, -2 if begun <= mtime <= ended else mtime) for path, size, mtime in seen)


def _limits_reachable(limits: list[Any]) -> bool:
    """Whether a child can take the client's resource limits: lowering is always allowed, raising a hard one needs CAP_SYS_RESOURCE."""
    if _may_raise_hard_limits():
        return True
    for number, _soft, hard in limits:
        try:
            own_hard = resource.getrlimit(int(number))[1]
        except (ValueError, OSError):
            return False  # a limit this server does not know: not the same platform's client
        if own_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > own_hard):
            return False
    return True


def _same_groups(conn: socket.socket, peer: tuple[int, int, int], own: tuple[int, frozenset[int]]) -> bool:
    """Whether the client has the groups a child would run with (after ``newgrp``, ``sg`` or a change to
    /etc/group since the server started, it does not: the command then needs the client's own process).

    Read from the kernel (``peer``: SO_PEERCRED's pid, uid, gid), not the request: a client
    cannot claim groups it lacks.
    """
    pid, _uid, gid = peer
    groups = _peer_groups(conn, pid)
    return gid == own[0] and (groups is None or groups == own[1])


def _peer_groups(conn: socket.socket, pid: int) -> frozenset[int] | None:
    """The peer's supplementary groups (SO_PEERGROUPS, as they were at connect); None where the kernel cannot tell."""
    if _SO_PEERGROUPS is None:
        return None
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, _GROUPS_BUFFER)
    except OSError as exc:
        if exc.errno == errno.ERANGE:  # more groups than Python's getsockopt can take: the peer's /proc
            return _process_groups(pid)
        return None  # ENOPROTOOPT: a kernel before 4.13
    return frozenset(array.array("I", raw))


def _process_groups(pid: int) -> frozenset[int] | None:
    """A process's supplementary groups from /proc (the client waits for the answer, so it is still there)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return frozenset(int(group) for group in line.split()[1:])
    except (OSError, ValueError):
        pass
    return None


@functools.cache
def _may_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE in this process's effective set (root in a container often lacks it); read once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            effective = next(line for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return os.geteuid() == 0
    return bool(int(effective.split()[1], 16) & (1 << _CAP_SYS_RESOURCE))


def _take_limits(limits: list[Any]) -> None:
    """In the child: the client's limits, as its one-shot process would have run under (checked by :func:`_limits_reachable`)."""
    for number, soft, hard in limits:
        try:
            resource.setrlimit(int(number), (int(soft), int(hard)))
        except (ValueError, OSError):  # root asking beyond what the kernel allows: the client could not have it either
            pass


def _claim(path: str) -> int:
    """An exclusive lock on ``<path>.lock``, or AlreadyListening: one server per socket name.

    Checking that nobody answers and then binding left a window (the preload, a few
    hundred ms) in which a second ``start`` could bind too, unlinking the first's
    socket and orphaning it. The lock ends with the process that holds it, so a
    killed server leaves nothing to clean up but a stale socket file.
    """
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyListening(f"a resident server is already listening (or starting) at {path}") from None
    return fd


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors a message brought (SCM_RIGHTS): now this process's, to close."""
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _run_child(server: ResidentServer, conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """In the forked child: become the client's command, run it, exit. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, *FORWARDED_SIGNALS):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in request.get("ignored_signals") or ():  # what the client's caller ignores (nohup), as one-shot
            signal.signal(int(signum), signal.SIG_IGN)
        server.close_in_child()
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.umask(int(request["umask"]))
        _take_limits(request.get("limits") or [])
        os.environ.clear()
        os.environ.update(request["env"])
        _rebind_stdio(request.get("encodings") or [None, None, None], write_through=bool(request.get("write_through")))
        argv = [str(arg) for arg in request["argv"]]
        sys.argv = ["atomicplug", *argv]
        try:
            os.chdir(request["cwd"])
        except OSError as exc:
            print(f"atomicplug: error: cannot enter the working folder {request['cwd']}: {exc.strerror}", file=sys.stderr)
            code = 1
        else:
            from atomicplug import cli

            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # what came meanwhile arrives now
            start_early(requested_command(argv))  # the gate's interpreter: in the client's environment and folder
            code = cli.main(argv, parser=server.parser)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # between the unblock and main's own handling of it
        code = report_interrupt()
    except BaseException:
        traceback.print_exc()
    finally:
        _end_child(code)


def _end_child(code: int) -> None:
    """Exit as the one-shot command does: threads joined, atexit handlers run, stdio flushed."""
    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        from atomicplug.cli import exit_process

        try:
            sys.stdout.flush()
        except OSError as exc:  # a full disk under `> file` (Python's own exit says it in 2 lines): one
            if not isinstance(exc, BrokenPipeError):  # `| head`: what it did not read was not wanted
                from atomicplug.ioerrors import describe

                print(f"atomicplug: error: cannot write the output: {describe(exc)}", file=sys.stderr)
            os._exit(120)
        exit_process(code)
    except SystemExit:
        code = 120  # stdout could not be flushed (a closed pipe): what Python's own exit reports
    finally:
        os._exit(code)


def _rebind_stdio(encodings: list[Any], *, write_through: bool = False) -> None:
    """sys.stdin/stdout/stderr over the client's descriptors, buffered as Python would for them
    (``write_through``: the client ran unbuffered, ``python -u``)."""
    for fd, name, spec in zip((0, 1, 2), ("stdin", "stdout", "stderr"), encodings):
        encoding, errors = spec if spec else (None, None)
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        unbuffered = write_through and fd != 0
        buffered: io.RawIOBase | io.BufferedIOBase = io.BufferedReader(raw) if fd == 0 else raw if unbuffered else io.BufferedWriter(raw)
        interactive = raw.isatty()
        stream = io.TextIOWrapper(
            buffered,  # type: ignore[arg-type] - a raw writer, as Python's own -u streams
            encoding=encoding,
            errors=errors,
            line_buffering=fd != 0 and (interactive or fd == 2) and not unbuffered,
            write_through=unbuffered,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def start(path: str, idle_timeout: float) -> int:
    """Start a server in the background (a daemon of its own session); its pid once it listens."""
    ready_read, ready_write = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(ready_read)
        report = "error: the resident server did not start"
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            server = ResidentServer.listen(path, idle_timeout)
            report = f"ok {os.getpid()}"
            os.write(ready_write, report.encode())
            os.close(ready_write)
            server.serve()
        except BaseException as exc:
            if not report.startswith("ok"):
                report = f"{'busy' if isinstance(exc, AlreadyListening) else 'error'}: {exc}"
                try:
                    os.write(ready_write, report.encode())
                except OSError:
                    pass
        finally:
            os._exit(0)
    os.close(ready_write)
    os.waitpid(first, 0)
    with os.fdopen(ready_read, "rb") as ready:
        report = ready.read().decode(errors="replace")
    if report.startswith("busy: "):
        raise AlreadyListening(report.removeprefix("busy: "))
    if not report.startswith("ok "):
        raise OperationError(report.removeprefix("error: ") or "the resident server did not start")
    return int(report.split()[1])
