"""What a new user meets first (issue 13, "found as a new user would"): one line, the right exit code."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_transactions import assert_one_line_error, run_cli

from atomicplug.testing import PluginSpec, write_plugin_source

#: The NextPanel plugin format's own example metadata.json, verbatim but for the backend
#: dependency, swapped for one that is installed here.
NEXTPANEL_EXAMPLE = {
    "id": "ai_chatbot",
    "name": "AI Chatbot",
    "version": "1.0.0",
    "author": "NextPanel Team",
    "description": "AI-powered customer support chatbot",
    "category": "communication",
    "price": 0,
    "requires": [],
    "backend": {"models": ["ChatSession", "ChatMessage"], "routes": ["/api/v1/chat/*"], "dependencies": ["packaging>=20"]},
    "frontend": {"routes": ["/support/chats"], "components": ["AIChatBot"], "dependencies": {}},
    "permissions": ["database.create_tables", "api.register_routes", "filesystem.write"],
}


def _pack(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomicplug", "pack", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_nextpanel_example_metadata_installs_as_written(home, tmp_path):
    source = write_plugin_source(PluginSpec(id="ai_chatbot"), tmp_path / "ai_chatbot")
    (source / "metadata.json").write_text(json.dumps(NEXTPANEL_EXAMPLE, indent=2))
    proc = _pack(str(source), "--key", str(home.publisher.secret_path), "-o", str(tmp_path / "out" / "ai_chatbot.zip"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(home, "install", str(tmp_path / "out" / "ai_chatbot.zip"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(run_cli(home, "list", "--json").stdout)[0]["id"] == "ai_chatbot"


def test_an_alias_permission_is_granted_by_its_name_and_refused_without_it(home_factory, tmp_path):
    strict = home_factory(name="strict", granted_permissions=["database.create_tables", "filesystem.write"])
    package = strict.package("routes_only", permissions=("api.register_routes",))
    assert_one_line_error(run_cli(strict, "install", str(package)), 3, "'api.register_routes', which is not granted")
    by_name = home_factory(name="by-name", granted_permissions=["api.routes"])
    assert run_cli(by_name, "install", str(package)).returncode == 0


def test_pack_into_a_missing_folder_creates_it(home, tmp_path):
    source = write_plugin_source(PluginSpec(id="shop"), tmp_path / "shop")
    out = tmp_path / "missing" / "deeper" / "shop.zip"
    proc = _pack(str(source), "--key", str(home.publisher.secret_path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.with_name("shop.zip.minisig").is_file()


def test_pack_of_a_missing_folder_is_a_usage_error(home, tmp_path):
    assert_one_line_error(_pack(str(tmp_path / "no-such"), "--key", str(home.publisher.secret_path)), 2, "does not exist")


def test_install_of_a_folder_says_it_is_a_folder(home, tmp_path):
    folder = write_plugin_source(PluginSpec(id="shop"), tmp_path / "shopsrc")
    proc = run_cli(home, "install", str(folder))
    assert_one_line_error(proc, 2, "is a folder, not a package")
    relative = subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "install", "shopsrc"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert_one_line_error(relative, 2, "is a folder, not a package")


def test_doctor_reports_storage_generation_and_problems(home):
    proc = run_cli(home, "doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert "not created yet" in findings["storage"]["detail"]
    assert findings["generation"]["detail"] == "no generation yet (nothing installed)"
    assert findings["command line"]["detail"].startswith("one process per command")
    assert not home.config.home.exists(), "doctor changes nothing"
    assert run_cli(home, "install", str(home.package("shop"))).returncode == 0
    findings = {f["check"]: f for f in json.loads(run_cli(home, "doctor", "--json").stdout)}
    assert "hard links work" in findings["storage"]["detail"]
    assert findings["generation"]["detail"].startswith("generation 1")
    (home.config.backend_addons.parent / "elsewhere").mkdir()
    home.config.backend_addons.unlink()
    home.config.backend_addons.symlink_to(home.config.backend_addons.parent / "elsewhere")
    proc = run_cli(home, "doctor")
    assert proc.returncode == 1
    assert "BAD  backend addons" in proc.stdout and "not atomicplug's link" in proc.stdout
    details = [f["detail"] for f in json.loads(run_cli(home, "doctor", "--json").stdout)]
    assert len({line.index(detail) for line, detail in zip(proc.stdout.splitlines(), details, strict=True)}) == 1, proc.stdout


# -- the README walked through as a new user: each refusal one line, with the README's exit code --


def _atomicplug(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m atomicplug ARGS`` with no --config added."""
    return subprocess.run(
        [sys.executable, "-m", "atomicplug", *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=60
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_on_a_port_outside_0_to_65535_is_a_usage_error(tmp_path, port):
    assert_one_line_error(_atomicplug("serve", str(tmp_path), "--port", port), 2, f"serve: argument --port: expected a port number 0-65535, got '{port}'")


def test_serve_that_cannot_listen_names_the_host_and_port(home, tmp_path):
    repo = tmp_path / "repo"
    assert _atomicplug("repo", "init", str(repo), "--key", str(home.publisher.secret_path)).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _atomicplug("serve", str(repo), "--port", str(port))
    assert_one_line_error(proc, 1, f"cannot listen on 127.0.0.1:{port}: address already in use")
    proc = _atomicplug("serve", str(repo), "--host", "no-such-host.invalid", "--port", "8002")
    assert_one_line_error(proc, 1, "cannot listen on no-such-host.invalid:8002: ")


@pytest.mark.parametrize("group", ["repo", "cluster", "resident"])
def test_a_command_group_without_its_subcommand_prints_its_own_help(group):
    proc = _atomicplug(group)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"usage: atomicplug {group} "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_atomicplug_alone_prints_the_help_of_every_command():
    proc = _atomicplug()
    assert proc.returncode == 2 and proc.stderr.startswith("usage: atomicplug ")
    assert all(f"    {name} " in proc.stderr for name in ("init", "repo", "cluster", "resident")), proc.stderr


def _wrote_config_in(folder: Path, proc: subprocess.CompletedProcess[str]) -> None:
    from atomicplug.config import Config

    assert proc.returncode == 0, proc.stderr
    assert (folder / "atomicplug.toml").is_file()
    config = Config.load(folder / "atomicplug.toml")
    assert config.home == folder.resolve() / "state" and (config.frontend_addons / "index.ts").is_file()


@pytest.mark.parametrize("given", ["w6", "w6/", "nested/w6"])
def test_init_of_a_new_path_not_ending_in_toml_makes_that_folder_with_atomicplug_toml_in_it(tmp_path, given):
    _wrote_config_in(tmp_path / given, _atomicplug("init", given, cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [given.split("/")[0]], "nothing written beside it"


def test_init_of_an_existing_folder_writes_atomicplug_toml_in_it_and_force_replaces_only_that(tmp_path):
    (tmp_path / "w8").mkdir()
    _wrote_config_in(tmp_path / "w8", _atomicplug("init", "w8", cwd=tmp_path))
    assert_one_line_error(_atomicplug("init", "w8", cwd=tmp_path), 2, "w8/atomicplug.toml exists; use --force to overwrite it")
    _wrote_config_in(tmp_path / "w8", _atomicplug("init", "w8", "--force", cwd=tmp_path))


def test_init_of_a_toml_path_writes_that_file(tmp_path):
    proc = _atomicplug("init", "site/custom.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "custom.toml").is_file() and (tmp_path / "site" / "web" / "src" / "addons" / "index.ts").is_file()


def test_config_that_is_a_folder_is_said_to_be_a_folder(home):
    folder = str(home.config_path.parent)
    assert_one_line_error(_atomicplug("--config", folder, "list"), 2, f"config file {folder} is a folder, not a file")
    proc = _atomicplug("list", env={"ATOMICPLUG_CONFIG": folder})
    assert_one_line_error(proc, 2, f"ATOMICPLUG_CONFIG points at {folder}, which is a folder, not a file")


def test_a_repository_that_is_not_a_url_is_a_config_error(home):
    home.config_path.write_text(home.config_path.read_text() + 'repository = "not a url"\n')
    proc = run_cli(home, "available")
    assert_one_line_error(proc, 2, "config 'repository' must be an http:// or https:// URL")
    assert "(got 'not a url')" in proc.stderr


def test_a_refused_connection_names_the_repository_not_the_http_librarys_classes(home_factory):
    port = _closed_port()
    proc = run_cli(home_factory(repository=f"http://127.0.0.1:{port}"), "available")
    assert_one_line_error(proc, 1, f"cannot connect to the repository at http://127.0.0.1:{port}: connection refused")
    assert "_Watched" not in proc.stderr and "Pool" not in proc.stderr


def test_the_config_template_describes_backend_addons_as_atomicplug_does_it(home, tmp_path):
    from atomicplug.config import CONFIG_TEMPLATE

    assert "one symlink per plugin" not in CONFIG_TEMPLATE
    assert "backend_addons is made a link to <home>/current/backend" in " ".join(CONFIG_TEMPLATE.replace("#", "").split())
    assert run_cli(home, "install", str(home.package("shop"))).returncode == 0
    link = home.config.backend_addons
    assert Path(os.path.normpath(link.parent / os.readlink(link))) == home.config.home / "current" / "backend"


def test_an_argparse_error_says_atomicplug_once():
    assert _atomicplug("rollback", "--generation", "x").stderr == "atomicplug: error: rollback: argument --generation: invalid int value: 'x'\n"
    assert _atomicplug("--bogus").stderr == "atomicplug: error: unrecognized arguments: --bogus\n"


@pytest.mark.parametrize("argv", [["install", "X", "--debug"], ["--debug", "install", "X", "--bogus"]])
def test_a_usage_error_never_prints_a_traceback_even_with_debug(argv):
    assert_one_line_error(_atomicplug(*argv), 2, "unrecognized arguments: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["install", "a.zip", "b==1.0", "--dry-run", "--setting", "b.x=1"],
        ["--config", "c.toml", "rollback", "--generation", "3"],
        ["repo", "add", "r", "p.zip", "--key", "k"],
        ["cluster", "status"],
        ["resident", "start", "--idle-timeout", "0"],
        ["pack", "src", "--out", "o", "--key", "k"],
    ],
)
def test_a_command_parses_as_with_every_command_registered(argv):
    """A command builds only its own parser (its module's other commands' are dropped: ~2 ms of
    every command), and reads its arguments as the parser of every command does."""
    from atomicplug.cli import build_parser

    full, own = build_parser(), build_parser(argv)
    assert vars(own.parse_args(argv)) == vars(full.parse_args(argv))
    chosen = next(action for action in own._subparsers._group_actions).choices  # type: ignore[union-attr]
    assert argv[argv.index("--config") + 2 if "--config" in argv else 0] in chosen and len(chosen) == 1


def test_an_unknown_command_still_lists_every_command():
    proc = _atomicplug("instal", "x.zip")
    assert proc.returncode == 2 and "invalid choice: 'instal'" in proc.stderr
    assert all(f"'{name}'" in proc.stderr for name in ("init", "install", "repo", "cluster", "resident")), proc.stderr


def test_an_empty_package_path_is_named_as_such(home):
    assert_one_line_error(run_cli(home, "install", ""), 2, "the package path is empty")


def test_a_trusted_key_that_is_a_folder_is_named_as_such(home_factory, tmp_path):
    folder = tmp_path / "keys-folder"
    folder.mkdir()
    site = home_factory(trusted_keys=[str(folder)])
    proc = run_cli(site, "install", str(site.package("shop")))
    assert_one_line_error(proc, 2, f"trusted key file {folder} is not a file (config 'trusted_keys')")


def test_keygen_into_a_file_taken_for_a_folder_names_it(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    proc = subprocess.run([sys.executable, "-m", "atomicplug", "keygen", "--no-password", "-p", str(plain / "a.pub"),
                           "-s", str(tmp_path / "a.key")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (2, f"atomicplug: error: cannot write a key file inside {plain}: it is not a folder\n")
