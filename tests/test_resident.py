"""The resident server: commands run by warm forked children, exactly as one-shot processes run them (issue 14)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomicplug.resident.address import SOCKET_ENV
from atomicplug.resident.client import AUTO_IDLE_TIMEOUT, MODE_ENV, NOT_SERVED, SERVED, connect, peer_credentials, read_message, send_message


class Resident:
    """A resident server on a socket of this test's own, and the CLI pointed at it."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700)
        self.socket = folder / "resident.sock"
        # "on": use this server, never start one (a pytest run from a terminal gives its children that stdin)
        self.env = {**os.environ, MODE_ENV: "on", SOCKET_ENV: str(self.socket)}

    def cli(self, *args: str, resident: bool = True, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **({} if resident else {MODE_ENV: "off"}), **kwargs.pop("env", {})}
        env = {k: v for k, v in env.items() if v is not None}  # None: unset
        return subprocess.run(
            [sys.executable, "-m", "atomicplug", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120, **kwargs
        )

    def popen(self, *args: str, **kwargs) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "atomicplug", *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )

    def status(self) -> dict:
        old = os.environ.get(SOCKET_ENV)
        os.environ[SOCKET_ENV] = str(self.socket)
        try:
            conn = connect()
            if conn is None:
                return {}
            try:
                send_message(conn, {"op": "status"})
                return read_message(conn) or {}
            finally:
                conn.close()
        finally:
            if old is None:
                del os.environ[SOCKET_ENV]
            else:
                os.environ[SOCKET_ENV] = old

    def served(self) -> int:
        return int(self.status()["served"])


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_two_messages_sent_back_to_back_are_read_one_at_a_time():
    """The child's pid and, for a command that ends at once, its outcome can arrive in one read:
    the first message's read must not swallow the second (the client then reported the server gone)."""
    import socket

    server, client = socket.socketpair()
    with server, client:
        send_message(server, {"pid": 4242})
        send_message(server, {"signal": 9})
        server.shutdown(socket.SHUT_WR)
        assert [read_message(client), read_message(client), read_message(client)] == [{"pid": 4242}, {"signal": 9}, None]


@pytest.fixture
def resident(tmp_path: Path) -> Iterator[Resident]:
    server = Resident(tmp_path / "run")
    started = server.cli("resident", "start", "--idle-timeout", "120")
    assert started.returncode == 0, started.stderr
    pid = server.status()["pid"]
    yield server
    server.cli("resident", "stop")
    assert _gone(pid), "the resident server did not stop"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_commands_through_the_server_print_and_exit_as_one_shot_commands_do(resident, home):
    package = str(home.package("shop"))
    config = str(home.config_path)
    installed = resident.cli("--config", config, "install", package)
    assert installed.returncode == 0, installed.stderr
    assert resident.served() == 1
    for args in (("list",), ("verify",), ("uninstall", "ghost"), ("install", "/no/such.zip"), ("enable",)):
        through = resident.cli("--config", config, *args)
        alone = resident.cli("--config", config, *args, resident=False)
        assert (through.returncode, through.stdout, through.stderr) == (alone.returncode, alone.stdout, alone.stderr), args
    assert resident.served() == 1 + 5  # the one-shot runs did not go through it
    assert "shop" in resident.cli("--config", config, "list").stdout


def test_a_child_takes_the_clients_folder_and_environment(resident, home):
    # A relative --config and $ATOMICPLUG_CONFIG resolve against the client's folder and environment.
    relative = resident.cli("--config", home.config_path.name, "list", cwd=home.config_path.parent)
    assert relative.returncode == 0, relative.stderr
    from_env = resident.cli("list", cwd="/", env={"ATOMICPLUG_CONFIG": str(home.config_path)})
    assert from_env.returncode == 0, from_env.stderr
    missing = resident.cli("list", cwd="/", env={"ATOMICPLUG_CONFIG": "/nowhere.toml"})
    assert missing.returncode == 2
    assert missing.stderr.strip() == "atomicplug: error: ATOMICPLUG_CONFIG points at /nowhere.toml, which does not exist"
    assert resident.served() == 3


def test_ctrl_c_reaches_the_child(resident, home, tmp_path: Path):
    # The child waits for the writer lock this test holds; SIGINT to the client interrupts it there.
    from atomicplug.lock import writer_lock

    package = str(home.package("shop"))
    with writer_lock(home.config.lock_path, 5):
        client = resident.popen("--config", str(home.config_path), "install", package)
        deadline = time.monotonic() + 30
        while resident.status().get("running") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
    assert client.returncode == 130, err
    assert err.strip().splitlines()[-1] == "atomicplug: interrupted"
    assert "shop" not in resident.cli("--config", str(home.config_path), "list").stdout


def test_a_child_killed_by_a_signal_kills_its_client_with_it(resident, home):
    from atomicplug.lock import writer_lock

    server = resident.status()["pid"]
    with writer_lock(home.config.lock_path, 5):
        client = resident.popen("--config", str(home.config_path), "install", str(home.package("shop")))
        deadline = time.monotonic() + 30
        while not _children(server) and time.monotonic() < deadline:
            time.sleep(0.02)
        (child,) = _children(server)
        os.kill(child, signal.SIGKILL)
        _, err = client.communicate(timeout=30)
    assert client.returncode == -signal.SIGKILL, err
    recovered = resident.cli("--config", str(home.config_path), "recover")
    assert recovered.returncode == 0, recovered.stderr


def test_stop_lets_running_commands_finish_while_new_ones_run_alone(resident, home):
    from atomicplug.lock import writer_lock

    pid = resident.status()["pid"]
    with writer_lock(home.config.lock_path, 5):
        client = resident.popen("--config", str(home.config_path), "install", str(home.package("shop")))
        deadline = time.monotonic() + 30
        while resident.status().get("running") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped = resident.cli("resident", "stop")
        assert stopped.returncode == 0 and "stopping" in stopped.stdout
        assert not resident.socket.exists()  # no new command reaches it
        alone = resident.cli("--config", str(home.config_path), "list")
        assert alone.returncode == 0, alone.stderr
        # Found from outside: the stopping server kept its claim on the name while its command ran, and
        # `resident start` waited 31 s to say one was "already listening" (a served `sync --watch`: forever).
        again = resident.cli("resident", "start", "--idle-timeout", "120")
        assert again.returncode == 0 and "started" in again.stdout, again.stdout + again.stderr
        assert resident.status()["pid"] != pid
        resident.cli("resident", "stop")
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert _gone(pid)
    assert "shop" in resident.cli("--config", str(home.config_path), "list").stdout


def _running_one(resident: Resident) -> None:
    deadline = time.monotonic() + 30
    while resident.status().get("running") != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert resident.status().get("running") == 1


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
def test_a_signal_the_caller_ignores_is_ignored_by_the_command_too(resident, home, signum):
    """Found from outside: `nohup atomicplug install x.zip &` died when the terminal closed (SIGHUP), and
    a script's `atomicplug install x.zip &` at a SIGINT, in mid-transaction: the client caught and passed on
    what its caller ignores, and the child had every signal back at its default. One-shot, both finish."""
    from atomicplug.lock import writer_lock

    with writer_lock(home.config.lock_path, 5):
        client = resident.popen(
            "--config", str(home.config_path), "install", str(home.package("shop")), preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN)
        )
        _running_one(resident)
        client.send_signal(signum)
        time.sleep(0.3)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert "shop" in resident.cli("--config", str(home.config_path), "list").stdout


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_ctrl_z_stops_the_served_command_with_its_client(resident, home):
    """Found from outside: Ctrl-Z stopped only the client; the command (the server's child, in no job of
    the shell's) went on, wrote to the terminal and committed while the shell said "Stopped"."""
    from atomicplug.lock import writer_lock

    server = resident.status()["pid"]
    with writer_lock(home.config.lock_path, 5):
        client = resident.popen("--config", str(home.config_path), "install", str(home.package("shop")))
        _running_one(resident)
        (child,) = _children(server)
        time.sleep(0.2)  # the client has the child's pid
        client.send_signal(signal.SIGTSTP)
        assert _until(lambda: _state(client.pid) == "T" and _state(child) == "T"), (_state(client.pid), _state(child))
        client.send_signal(signal.SIGCONT)  # `fg`
        assert _until(lambda: _state(child) != "T")
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_a_closed_standard_stream_is_not_taken_for_the_connection(resident, home, closed):
    """Found from outside: with stdout closed (`atomicplug list >&-`) the client's socket took descriptor 1
    and was passed on as the command's stdout: a traceback and exit 1 (one-shot: exit 0), and output past
    the socket's buffer hung. Such a command runs in its own process, as it would without a server."""
    config = str(home.config_path)
    results = [
        resident.cli("--config", config, "list", "--json", resident=through, preexec_fn=lambda: os.close(closed)) for through in (True, False)
    ]
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * 2
    assert resident.served() == 0


def _unanswered_and_open(conn) -> bool:
    """Nothing came on ``conn`` and the server has not closed it."""
    import socket

    try:
        conn.recv(1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False


def test_a_client_that_sends_nothing_holds_up_no_other_command(resident, home):
    """Requests are read as their bytes arrive, beside each other: a client stopped (Ctrl-Z) between
    connecting and sending, or one that sends half a request, does not make the next command wait."""
    import socket

    silent, half = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2))
    with silent, half:
        silent.connect(str(resident.socket))
        half.connect(str(resident.socket))
        half.sendall(b"\x00\x00\x01\x00{")  # a length, and one byte of 256
        listed = resident.cli("--config", str(home.config_path), "list")
        assert listed.returncode == 0, listed.stderr
        assert resident.served() == 1  # run by the server, not sent back
        # Both still wait for their requests: the command did not wait for them to time out.
        assert _unanswered_and_open(silent) and _unanswered_and_open(half)


@pytest.mark.slow
def test_a_connection_that_never_sends_its_request_is_closed_even_while_a_child_runs(resident, home_factory):
    """Closed unanswered after REQUEST_TIMEOUT, and by then by the server alone: a child forked
    meanwhile does not keep another client's connection (or its descriptors) open."""
    import socket

    from atomicplug.lock import writer_lock

    home = home_factory(lock_timeout=120)  # the install's child waits for the lock until this test lets go

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent, writer_lock(home.config.lock_path, 5):
        silent.connect(str(resident.socket))
        client = resident.popen("--config", str(home.config_path), "install", str(home.package("shop")))
        deadline = time.monotonic() + 30
        while resident.status().get("running") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert resident.status()["running"] == 1  # the install's child waits for the lock
        silent.settimeout(30)
        assert silent.recv(1) == b""
        assert resident.status()["running"] == 1
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err


def test_a_request_is_whole_when_its_last_byte_is_in_and_one_request_is_all_a_connection_sends():
    from atomicplug.resident.client import MAX_MESSAGE, complete_message

    import socket

    server, client = socket.socketpair()
    with server, client:
        send_message(server, {"op": "status"})
        data = client.recv(1024)
    assert [complete_message(data[:cut]) for cut in (0, 3, 4, len(data) - 1)] == [None] * 4
    assert complete_message(data) == {"op": "status"}
    for bad in (data + data[:1], data[:4] + b"\xff" * (len(data) - 4), (MAX_MESSAGE).to_bytes(4, "big")):
        with pytest.raises(ValueError):
            complete_message(bad)


def test_a_server_whose_code_changed_sends_the_command_back_and_stops(resident):
    pid = resident.status()["pid"]
    os.environ[SOCKET_ENV] = str(resident.socket)
    try:
        conn = connect()
        assert conn is not None
        send_message(conn, {"op": "run", "stamp": "not this code", "argv": ["list"]})
        assert "run_here" in read_message(conn)
        conn.close()
    finally:
        del os.environ[SOCKET_ENV]
    assert _gone(pid)
    assert not resident.socket.exists()


def test_doctor_names_the_server_that_runs_the_commands(resident, home):
    import json

    doctor = resident.cli("--config", str(home.config_path), "doctor", "--json")
    findings = {f["check"]: f for f in json.loads(doctor.stdout)}
    assert findings["command line"]["detail"].startswith(f"resident server pid {resident.status()['pid']} runs the commands")


def test_commands_it_does_not_serve_run_in_their_own_process(resident, tmp_path: Path):
    made = resident.cli("keygen", "-p", str(tmp_path / "k.pub"), "-s", str(tmp_path / "k.key"), "--no-password")
    assert made.returncode == 0, made.stderr
    assert resident.served() == 0


def test_starting_twice_says_so_and_status_and_stop_report(resident):
    again = resident.cli("resident", "start")
    assert again.returncode == 0
    assert "already running" in again.stdout
    status = resident.cli("resident", "status")
    assert status.returncode == 0 and f"pid {resident.status()['pid']}" in status.stdout


def test_no_server_means_status_exit_3_and_commands_run_alone(tmp_path: Path, home):
    alone = Resident(tmp_path / "run")
    status = alone.cli("resident", "status")
    assert status.returncode == 3
    assert "no resident server is running" in status.stdout
    assert alone.cli("--config", str(home.config_path), "list").returncode == 0


def test_it_refuses_a_folder_others_can_enter(tmp_path: Path):
    open_folder = Resident(tmp_path / "run")
    open_folder.socket.parent.chmod(0o755)
    started = open_folder.cli("resident", "start")
    assert started.returncode == 1
    assert started.stderr.strip() == f"atomicplug: error: {open_folder.socket.parent} is not a folder only this user can enter: not listening there"
    assert not open_folder.socket.exists()


def test_it_stops_when_idle(tmp_path: Path):
    idle = Resident(tmp_path / "run")
    assert idle.cli("resident", "start", "--idle-timeout", "0.3").returncode == 0
    pid = idle.status()["pid"]
    assert _gone(pid)
    assert not idle.socket.exists()
    assert idle.cli("resident", "status").returncode == 3


@pytest.mark.slow
def test_idle_time_counts_from_the_end_of_the_last_command(tmp_path: Path, home_factory):
    """A command that ran longer than --idle-timeout (a long install, `sync --watch`) does not leave
    the server stopping the moment it ends: idle starts then."""
    from atomicplug.lock import writer_lock

    home = home_factory(lock_timeout=60)
    idle = Resident(tmp_path / "run")
    assert idle.cli("resident", "start", "--idle-timeout", "3").returncode == 0
    pid = idle.status()["pid"]
    with writer_lock(home.config.lock_path, 5):
        client = idle.popen("--config", str(home.config_path), "install", str(home.package("shop")))
        time.sleep(4)  # the install waits for the lock longer than the idle timeout
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert idle.status().get("pid") == pid  # still serving once the command ended
    assert _gone(pid)  # and idle from then on


def test_two_starts_at_once_leave_one_server(tmp_path: Path):
    """Both starts succeed, one starts the server and the other finds it: no second server unlinks the first's socket."""
    both = Resident(tmp_path / "run")
    starts = [both.popen("resident", "start", "--idle-timeout", "120") for _ in range(2)]
    outputs = [start.communicate(timeout=60) for start in starts]
    named = {int(pid) for out, _ in outputs for pid in re.findall(r"\(pid (\d+),", out)}
    try:
        assert [start.returncode for start in starts] == [0, 0], outputs
        said = sorted("started" if "server started" in out else "found" if "already running" in out else out for out, _ in outputs)
        assert said == ["found", "started"], outputs
        assert named == {both.status()["pid"]}, outputs
    finally:
        both.cli("resident", "stop")
    assert all(_gone(pid) for pid in named)


def test_a_server_whose_dependencies_changed_sends_the_command_back_and_stops(tmp_path: Path, home):
    """An upgraded dependency (here a module every interpreter of this path imports) is stale code too."""
    extra = tmp_path / "extra"
    extra.mkdir()
    module = extra / "sitecustomize.py"
    module.write_text("# imported by site at start-up\n")
    server = Resident(tmp_path / "run")
    server.env["PYTHONPATH"] = str(extra)
    assert server.cli("resident", "start", "--idle-timeout", "120").returncode == 0
    pid = server.status()["pid"]
    try:
        assert server.cli("--config", str(home.config_path), "list").returncode == 0
        assert server.served() == 1
        module.write_text("# imported by site at start-up, and upgraded since\n")
        after = server.cli("--config", str(home.config_path), "list")
        assert after.returncode == 0, after.stderr
        assert _gone(pid), "the server kept serving code older than what is installed"
    finally:
        server.cli("resident", "stop")


def _open_files_limit(soft: int, hard: int | None = None):  # noqa: ANN202 - a preexec_fn
    import resource

    def limit() -> None:
        current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))

    return limit


def _limit_of(pid: int, name: str) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            soft, hard = line[len(name) :].split()[:2]
            return soft, hard
    raise AssertionError(f"no {name!r} in /proc/{pid}/limits")


def _limits_in_child(server: Resident, home, preexec_fn) -> tuple[tuple[str, str], tuple[str, str]]:
    """("Max open files" of the child that runs an install for a client started with ``preexec_fn``, of that client)."""
    from atomicplug.lock import writer_lock

    pid = server.status()["pid"]
    with writer_lock(home.config.lock_path, 5):  # the child waits here while its limits are read
        client = server.popen("--config", str(home.config_path), "install", str(home.package("shop")), preexec_fn=preexec_fn)
        wanted = _limit_of(client.pid, "Max open files")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # from the fork until the child has set itself up
            children = _children(pid)
            if children and _limit_of(children[0], "Max open files") == wanted:
                break
            time.sleep(0.02)
        seen = _limit_of(children[0], "Max open files") if children else ("no child", "")
    client.communicate(timeout=60)
    assert client.returncode == 0
    return seen, wanted


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a client with other groups needs root")
@pytest.mark.parametrize("groups", [{"extra_groups": [4242]}, {"group": 4242}], ids=["supplementary", "primary"])
def test_a_client_with_other_groups_runs_its_command_itself(resident, home, groups):
    """After `newgrp`, `sg` or a group added since the server started, a child with the server's groups would be wrong."""
    other = resident.cli("--config", str(home.config_path), "install", str(home.package("shop")), **groups)
    assert other.returncode == 0, other.stderr
    assert resident.served() == 0
    same = resident.cli("--config", str(home.config_path), "list")
    assert "shop" in same.stdout and resident.served() == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="taking other groups needs root")
def test_groups_past_what_getsockopt_takes_are_read_from_the_clients_proc():
    """More supplementary groups than Python's getsockopt can take (256): read from the client's /proc."""
    import socket

    from atomicplug.resident import server as resident_server

    many = set(range(5000, 5300))
    pid = os.fork()
    if pid == 0:  # a process of its own: setgroups changes this one
        try:
            os.setgroups(sorted(many))
            ours, theirs = socket.socketpair()  # the peer's credentials: this process's, at creation
            os._exit(0 if resident_server._peer_groups(ours, os.getpid()) == many else 1)
        finally:
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_kernel_that_cannot_tell_the_groups_leaves_the_gid_to_decide(monkeypatch):
    import socket

    from atomicplug.resident import server as resident_server

    monkeypatch.setattr(resident_server, "_SO_PEERGROUPS", 0x7FFF)  # an option no kernel has: ENOPROTOOPT
    ours, theirs = socket.socketpair()
    with ours, theirs:
        peer = peer_credentials(ours)
        assert resident_server._peer_groups(ours, peer[0]) is None
        assert resident_server._same_groups(ours, peer, (os.getegid(), frozenset({4242})))
        assert not resident_server._same_groups(ours, peer, (os.getegid() + 1, frozenset(os.getgroups())))


def test_a_child_takes_the_clients_resource_limits(resident, home):
    """`ulimit -n 321` before a command holds for the command, as it would for a one-shot process."""
    seen, wanted = _limits_in_child(resident, home, _open_files_limit(321))
    assert seen == wanted and seen[0] == "321"


def test_limits_above_the_servers_are_given_by_root_and_sent_back_otherwise(tmp_path: Path, home, monkeypatch):
    """A server started under a lower hard limit: with CAP_SYS_RESOURCE it raises a child's, else the client runs the command itself."""
    import resource

    from atomicplug.resident import server as resident_server

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 600:
        pytest.skip(f"this machine's hard limit on open files is {hard}")
    own = resource.getrlimit(resource.RLIMIT_NOFILE)
    above = [(resource.RLIMIT_NOFILE, own[0], resource.RLIM_INFINITY if own[1] == resource.RLIM_INFINITY else own[1] + 1)]
    within = [(resource.RLIMIT_NOFILE, 10, 20)]
    monkeypatch.setattr(resident_server, "_may_raise_hard_limits", lambda: False)
    assert (resident_server._limits_reachable(within), resident_server._limits_reachable(above)) == (True, own[1] == resource.RLIM_INFINITY)
    monkeypatch.undo()
    low = Resident(tmp_path / "run")
    assert low.cli("resident", "start", "--idle-timeout", "120", preexec_fn=_open_files_limit(300, 400)).returncode == 0
    try:
        if resident_server._may_raise_hard_limits():
            seen, wanted = _limits_in_child(low, home, None)
            assert seen == wanted and int(seen[1]) > 400
            assert low.served() == 1
        else:
            listed = low.cli("--config", str(home.config_path), "list")
            assert listed.returncode == 0, listed.stderr
            assert low.served() == 0
    finally:
        low.cli("resident", "stop")


def test_every_command_is_either_served_or_named_as_not_served():
    """A new command (`generations`) left out of SERVED silently ran one-shot, at full start-up cost."""
    from atomicplug.cli import build_parser

    commands = set(next(a for a in build_parser()._subparsers._group_actions).choices)  # type: ignore[union-attr]
    assert SERVED | NOT_SERVED == commands and not SERVED & NOT_SERVED, (commands - SERVED - NOT_SERVED, (SERVED | NOT_SERVED) - commands)


def _at_a_terminal(server: Resident, config: Path, mode: str | None, *, terminal: bool = True) -> subprocess.CompletedProcess[str]:
    """``list`` with a pseudo-terminal for its stdin (as typed in a shell), its output read through pipes."""
    import pty

    ours, theirs = pty.openpty()
    try:
        return server.cli("--config", str(config), "list", stdin=theirs if terminal else subprocess.DEVNULL, env={MODE_ENV: mode})
    finally:
        os.close(ours)
        os.close(theirs)


def _starting(server: Resident) -> list[int]:
    """Processes whose command line names this server's socket: a ``resident start`` a command
    spawned (it exists once that command has returned: Popen returns after the exec)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(server.socket).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _wait_for_server(server: Resident, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not (status := server.status()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def test_a_command_typed_at_a_terminal_leaves_a_server_for_the_next(tmp_path: Path, home):
    """Issue 14's small install "through the CLI": a person at a shell gets the warm server from the
    second command on, without starting it; it holds neither the terminal nor the output pipe."""
    server = Resident(tmp_path / "run")
    first = _at_a_terminal(server, home.config_path, None)  # returns: the server does not keep the pipes open
    assert (first.returncode, first.stdout, first.stderr) == (0, "no plugins installed\n", "")
    status = _wait_for_server(server, 30.0)
    assert status, "no resident server was started"
    try:
        assert status["served"] == 0 and status["idle_timeout"] == AUTO_IDLE_TIMEOUT
        assert Path(f"/proc/{status['pid']}/cwd").resolve() == Path("/")
        assert os.getsid(status["pid"]) != os.getsid(0)  # a session of its own,
        assert Path(f"/proc/{status['pid']}/stat").read_text().rsplit(")", 1)[1].split()[4] == "0"  # and no terminal
        second = _at_a_terminal(server, home.config_path, None)
        assert (second.returncode, second.stdout) == (0, "no plugins installed\n")
        assert server.served() == 1
    finally:
        server.cli("resident", "stop")
    assert _gone(status["pid"])


@pytest.mark.parametrize(
    ("mode", "terminal", "starts"),
    [("off", True, False), ("OFF", True, False), ("0", True, False), ("on", True, False), (None, False, False), ("auto", False, True)],
)
def test_who_starts_a_server_is_what_atomicplug_resident_says(tmp_path: Path, home, mode, terminal, starts):
    """Scripts, services and CI (no terminal) never find a process left behind unless they ask (auto)."""
    server = Resident(tmp_path / "run")
    ran = _at_a_terminal(server, home.config_path, mode, terminal=terminal)
    assert ran.returncode == 0, ran.stderr
    assert bool(_starting(server)) == starts
    status = _wait_for_server(server, 30.0 if starts else 1.0)
    if status:
        server.cli("resident", "stop")
        assert _gone(status["pid"])
    assert bool(status) == starts


def test_a_socket_left_by_a_killed_server_does_not_stop_the_next_one_from_starting(tmp_path: Path, home):
    """A server killed with SIGKILL leaves its socket file: the terminal's next command starts one anyway."""
    import socket

    server = Resident(tmp_path / "run")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(server.socket))  # a socket file nobody listens on any more
    ran = _at_a_terminal(server, home.config_path, None)
    assert ran.returncode == 0, ran.stderr
    status = _wait_for_server(server, 30.0)
    assert status, "the stale socket kept every command from starting a server"
    server.cli("resident", "stop")
    assert _gone(status["pid"])


def test_the_server_a_command_starts_imports_what_it_imports_and_keeps_none_of_its_secrets(tmp_path: Path, home):
    """Found from outside: with a relative PYTHONPATH (`PYTHONPATH=src`) the server, started in `/`,
    imported other code, named another socket and gave up, at every command; and it kept the first
    command's whole environment (a database password) for 15 minutes."""
    import atomicplug

    server = Resident(tmp_path / "run")
    source = Path(atomicplug.__file__).parent.parent
    (tmp_path / "src").symlink_to(source)
    env = {"PYTHONPATH": "src", "PGPASSWORD": "s3cret"}
    import pty

    ours, theirs = pty.openpty()
    try:
        ran = server.cli("--config", str(home.config_path), "list", stdin=theirs, cwd=tmp_path, env={MODE_ENV: None, **env})
    finally:
        os.close(ours)
        os.close(theirs)
    assert ran.returncode == 0, ran.stderr
    status = _wait_for_server(server, 30.0)
    assert status, "no server started for a relative PYTHONPATH"
    try:
        environ = Path(f"/proc/{status['pid']}/environ").read_bytes().split(b"\0")
        assert b"PGPASSWORD=s3cret" not in environ
        assert f"PYTHONPATH={tmp_path / 'src'}".encode() in environ
    finally:
        server.cli("resident", "stop")


def test_a_server_that_would_listen_elsewhere_is_not_started(tmp_path: Path):
    """Started for a command whose interpreter names another socket, it would serve nobody, and every
    command would start one more."""
    server = Resident(tmp_path / "run")
    started = server.cli("resident", "start", "--expect-socket", str(tmp_path / "elsewhere.sock"))
    assert started.returncode == 1 and "not started" in started.stdout, started.stdout + started.stderr
    assert not server.status() and not server.socket.exists()


def test_code_edited_while_the_server_preloads_makes_it_stale(tmp_path: Path, monkeypatch):
    """Found from outside: the code stamp and the modules' times were taken after the preload, so a file
    edited meanwhile (a `git pull` beside the first command of a terminal) was served as imported
    before the edit for as long as the server was used."""
    from atomicplug.resident import server as resident_server

    edited: list[str] = []
    preload, loaded_modules = resident_server.preload, resident_server._loaded_modules
    dependency = tmp_path / "dependency.py"  # a module of a dependency (not a real one: other tests' servers stat those)
    dependency.write_text("")
    os.utime(dependency, ns=(0, 0))

    def preload_then_edit():
        parser = preload()
        edited.append(str(dependency))
        dependency.write_text("upgraded = True\n")  # while the imports ran
        return parser

    monkeypatch.setattr(resident_server, "_loaded_modules", lambda: [*loaded_modules(), str(dependency)])

    monkeypatch.setattr(resident_server, "code_stamp", lambda: "after the edit" if edited else "before the edit")
    monkeypatch.setattr(resident_server, "preload", preload_then_edit)
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    server = resident_server.ResidentServer.listen(str(folder / "resident.sock"), 60)
    try:
        assert server.stamp == "before the edit"  # a client's stamp (after the edit) differs: sent back, and it stops
        assert dict((p, m) for p, _, m in server.loaded)[edited[0]] == -2
    finally:
        server.listener.close()
        os.close(server.claim)


@pytest.mark.parametrize("seconds", ["-5", "nan", "inf", "3000000", "soon"])
def test_an_idle_timeout_out_of_range_is_a_usage_error(tmp_path: Path, seconds: str):
    """Found from outside: from ~24.9 days on, the server said "started" and died at once (select's
    limit); a negative one stopped it at once, nan never."""
    server = Resident(tmp_path / "run")
    started = server.cli("resident", "start", "--idle-timeout", seconds)
    assert started.returncode == 2 and "--idle-timeout" in started.stderr, started.stdout + started.stderr
    assert not server.status()


@pytest.mark.parametrize("unbuffered", ["1", None])
def test_output_that_cannot_be_written_is_one_line_as_one_shot(resident, home, unbuffered):
    """Found from outside: through the server `atomicplug list > /dev/full` exited 120 without a word,
    and `python -u` (PYTHONUNBUFFERED) was lost: the child's stdout was always buffered."""
    args = ("--config", str(home.config_path), "list")
    env = {k: v for k, v in resident.env.items() if k != "PYTHONUNBUFFERED"} | ({"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
    with open("/dev/full", "w") as full:
        through = subprocess.run([sys.executable, "-m", "atomicplug", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert "No space left on device (ENOSPC)" in through.stderr and len(through.stderr.strip().splitlines()) == 1, through.stderr
    assert through.returncode == (1 if unbuffered else 120)
    assert resident.served() == 1
