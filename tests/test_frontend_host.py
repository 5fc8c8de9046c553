"""The example host app (examples/frontend-host) with real Node tools: tsc, Vite, esbuild, webpack.

Issue 17: after every transaction the host type-checks and its bundle holds exactly the
enabled addons; a running Vite dev server follows upgrades and rollbacks without a restart;
the frontend gate refuses, with real tsc or a real build, a plugin that would break the host.

Node is needed: without it these tests skip (and fail under CI=true, where .ci/run installs
it). One ``npm ci`` of the example host serves every test: each test's copy of the host
gets a node_modules folder of links to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_cli_transactions import assert_one_line_error, run_cli

from atomicplug.frontend.index import load_index
from atomicplug.frontend.layout import write_layout
from atomicplug.packing import pack
from atomicplug.registry import Registry

REPO = Path(__file__).resolve().parents[1]
HOST_SOURCE = REPO / "examples" / "frontend-host"
EXAMPLES = REPO / "examples" / "plugins"
#: Vite 7's floor.
MIN_NODE = (20, 19)
TSC = "node_modules/.bin/tsc --noEmit -p tsconfig.app.json"
#: How long a dev server may take to start or to notice a rewritten index (a bound, not a measurement).
DEV_SERVER_PATIENCE = 60.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def host_modules() -> Path:
    """examples/frontend-host/node_modules, installed by ``npm ci`` unless it matches the lock."""
    import filelock

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are not installed (Debian: apt-get install nodejs npm)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if tuple(int(part) for part in version.lstrip("v").split(".")[:2]) < MIN_NODE:
        _unavailable(f"Vite 7 needs Node {MIN_NODE[0]}.{MIN_NODE[1]} or newer, got {version}")
    modules = HOST_SOURCE / "node_modules"
    stamp = modules / ".atomicplug-lock.sha256"  # the same stamp .ci/run writes
    digest = hashlib.sha256((HOST_SOURCE / "package-lock.json").read_bytes()).hexdigest()
    with filelock.FileLock(str(Path(tempfile.gettempdir()) / "atomicplug-frontend-host-npm.lock")):
        if not stamp.is_file() or stamp.read_text().strip() != digest:
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HOST_SOURCE, capture_output=True, text=True, timeout=900
            )
            if proc.returncode != 0:
                pytest.fail(f"npm ci in {HOST_SOURCE} failed: {proc.stderr[-2000:]}")
            stamp.write_text(digest + "\n")
    return modules


@attrs.frozen
class Host:
    """A copy of the example host app, with a home whose frontend_addons is its src/addons."""

    folder: Path
    home: Any

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(command, shell=True, cwd=self.folder, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"`{command}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def check(self) -> dict[str, Any]:
        """tsc --noEmit, vite build and a run of index.ts, side by side.

        Returns what the bundle holds (id → version), what index.ts exports when Node runs
        it (id@version → route paths: running catches what compiling does not, e.g. an
        import binding that shadows ``addons`` itself), and the store trees tsc read.
        """
        runtime = self.folder / "runtime-index"
        shutil.rmtree(runtime, ignore_errors=True)
        script = (
            f"const m = await import({json.dumps((runtime / 'index.js').as_uri())});"
            "console.log(JSON.stringify(Object.fromEntries(m.addons.map(a => [a.id + '@' + a.version, a.routes.map(r => r.path)]))));"
        )
        commands = [
            # incremental: the steps of one test re-check only what changed (1.5 s instead of 2.2 s here)
            f"{TSC} --incremental --tsBuildInfoFile .tsbuildinfo --listFiles",
            "node_modules/.bin/vite build --outDir dist --emptyOutDir --logLevel error",
            "node_modules/.bin/esbuild src/addons/index.ts --bundle --splitting --format=esm --platform=node "
            f"--packages=external --preserve-symlinks --log-level=warning --outdir={runtime} "
            f"&& node --input-type=module -e {shlex.quote(script)}",
        ]
        children = [
            subprocess.Popen(c, shell=True, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands
        ]
        outputs = []
        for command, child in zip(commands, children):
            output, _ = child.communicate(timeout=300)
            assert child.returncode == 0, f"`{command}` failed:\n{output[-3000:]}"
            outputs.append(output)
        checked = set(re.findall(r"/src/addons/\.store/([^/]+/[^/]+)/", outputs[0]))
        return {"bundle": bundled(self.folder / "dist"), "runtime": json.loads(outputs[2]), "checked_trees": checked}


def bundled(dist: Path) -> dict[str, str]:
    """id → version of every addon config in a built bundle (minified or not)."""
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in dist.rglob("*.js"))
    found = re.findall(r'\bid:\s*"([a-z][a-z0-9_]*)",\s*version:\s*"([^"]+)",\s*title:', text)
    return dict(sorted(found))


def routes_in(dist: Path) -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in dist.rglob("*.js"))
    return set(re.findall(r'\bpath:\s*"(/[^"]+)"', text))


@pytest.fixture
def make_host(host_modules: Path, home_factory: Callable[..., Any], tmp_path: Path) -> Callable[..., Host]:
    def make(**overrides: Any) -> Host:
        folder = tmp_path / "host"
        shutil.copytree(HOST_SOURCE, folder, ignore=shutil.ignore_patterns("node_modules", "dist", "dist-*", "addons"))
        (folder / "node_modules").mkdir()
        for entry in host_modules.iterdir():
            (folder / "node_modules" / entry.name).symlink_to(entry)
        home = home_factory(frontend_addons=str(folder / "src" / "addons"), **overrides)
        write_layout(home.config, Registry(), "init")  # what `atomicplug init` writes
        return Host(folder, home)

    return make


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    return make_host()


@pytest.fixture
def example(host: Host) -> Callable[[str, str], Path]:
    """(id, version) → the example plugin packed and signed with the home's publisher key."""

    def packed(plugin_id: str, version: str) -> Path:
        out = host.home.root / "packages" / f"{plugin_id}-{version}.zip"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            pack(EXAMPLES / plugin_id / version, host.home.publisher.secret, out)
        return out

    return packed


def page_plugin(home: Any, plugin_id: str, version: str = "1.0.0", config: str | None = None, **fields: Any) -> Path:
    """A plugin with one lazy page at /p/<id>."""
    default = (
        f"export default {{ id: '{plugin_id}', version: '{version}', title: 'Plugin {plugin_id}',\n"
        f"  routes: [{{ path: '/p/{plugin_id}', title: '{plugin_id}', component: () => import('./Page') }}] }};\n"
    )
    files = {
        "frontend/addon.config.ts": config or default,
        "frontend/Page.tsx": f"export default function Page() {{\n  return <p>{plugin_id} {version}</p>;\n}}\n",
        **fields.pop("files", {}),
    }
    return home.package(plugin_id, version, files=files, **fields)


# -- builds after every kind of transaction -----------------------------------------------


@pytest.mark.slow
def test_each_transaction_leaves_a_host_that_type_checks_and_bundles_exactly_the_enabled_addons(host, example):
    installer = host.home.installer
    dist = host.folder / "dist"

    def expect(**versions: str) -> None:
        state = host.check()
        assert state["bundle"] == versions
        assert sorted(state["runtime"]) == sorted(f"{pid}@{v}" for pid, v in versions.items())
        wanted = {"ai_chatbot": "/chats", "email_marketing": "/email", "sms_notifications": "/sms"}
        assert routes_in(dist) == {wanted.get(pid, f"/p/{pid}") for pid in versions}
        # tsc skips the .store dot folder in `include`: it reads only the trees index.ts imports
        index = load_index(host.home.config.frontend_addons / "index.ts")
        assert state["checked_trees"] == {tree.removeprefix("store/") for tree in index.trees.values()}

    expect()  # the fresh host, from `atomicplug init` on
    for plugin_id in ("email_marketing", "sms_notifications", "ai_chatbot"):
        installer.install_file(example(plugin_id, "1.0.0"))
    installer.install_file(page_plugin(host.home, "addons"))  # ids that were bindings before issue 17
    installer.install_file(page_plugin(host.home, "public"))
    expect(addons="1.0.0", ai_chatbot="1.0.0", email_marketing="1.0.0", public="1.0.0", sms_notifications="1.0.0")

    for plugin_id in ("email_marketing", "sms_notifications", "ai_chatbot"):
        installer.install_file(example(plugin_id, "1.1.0"))
    installer.uninstall("addons")
    expect(ai_chatbot="1.1.0", email_marketing="1.1.0", public="1.0.0", sms_notifications="1.1.0")

    installer.rollback("ai_chatbot")
    expect(ai_chatbot="1.0.0", email_marketing="1.1.0", public="1.0.0", sms_notifications="1.1.0")

    installer.disable("sms_notifications")
    expect(ai_chatbot="1.0.0", email_marketing="1.1.0", public="1.0.0")

    installer.enable("sms_notifications")
    installer.uninstall("ai_chatbot")
    expect(email_marketing="1.1.0", public="1.0.0", sms_notifications="1.1.0")


def test_esbuild_and_webpack_builds_hold_the_enabled_addons_and_need_preserved_symlinks(host, example):
    host.home.installer.install_file(example("email_marketing", "1.1.0"))
    host.home.installer.install_file(example("ai_chatbot", "1.1.0"))
    expected = {"ai_chatbot": "1.1.0", "email_marketing": "1.1.0"}
    host.run("node esbuild.config.mjs")
    assert bundled(host.folder / "dist-esbuild") == expected
    host.run("node_modules/.bin/webpack -c webpack.config.mjs")
    assert bundled(host.folder / "dist-webpack") == expected
    # Without preserveSymlinks the addon files resolve to the store, outside the app: no react there.
    script = (
        "const {build} = await import('esbuild');"
        "await build({entryPoints: ['src/main.tsx'], bundle: true, outdir: 'dist-real-paths', jsx: 'automatic', logLevel: 'silent'})"
        ".then(() => console.log('built'), e => console.log(e.errors.map(x => x.text).join('; ')));"
    )
    output = host.run(f"node --input-type=module -e {json.dumps(script)}").stdout
    assert 'Could not resolve "react"' in output


# -- the dev server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode("utf-8"))


@contextmanager
def dev_server(host: Host) -> Iterator[str]:
    port = _free_port()
    log = (host.folder / "vite-dev.log").open("wb")
    child = subprocess.Popen(
        ["node_modules/.bin/vite", "--host", "127.0.0.1", "--port", str(port), "--strictPort"],
        cwd=host.folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(base + "/") and True, "the dev server to answer")
        yield base
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        log.close()


def wait_for(probe: Callable[[], Any], what: str) -> Any:
    """Poll ``probe`` until it returns something true (errors count as not yet), within a bound."""
    deadline = time.monotonic() + DEV_SERVER_PATIENCE
    while True:
        try:
            result = probe()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def served_trees(index_module: str) -> dict[str, str]:
    """plugin id → the store tree the served (transformed) index module imports.

    Vite adds ``?t=<time>`` to an import it has served before, so the browser fetches it anew.
    """
    pattern = r'import addon_([a-z0-9_]+) from "/src/addons/\.store/([^"]+)/frontend/addon\.config\.ts(?:\?t=\d+)?"'
    return dict(re.findall(pattern, index_module))


def test_the_vite_dev_server_follows_an_upgrade_and_a_rollback_without_a_restart(host, example):
    installer = host.home.installer
    installer.install_file(example("ai_chatbot", "1.0.0"))
    with dev_server(host) as base:

        def serves(version: str) -> dict[str, str] | None:
            trees = served_trees(_get(f"{base}/src/addons/index.ts"))
            return trees if trees.get("ai_chatbot", "").startswith(f"ai_chatbot/{version}-") else None

        for change, version in ((None, "1.0.0"), (lambda: installer.install_file(example("ai_chatbot", "1.1.0")), "1.1.0"), (lambda: installer.rollback("ai_chatbot"), "1.0.0")):
            if change is not None:
                change()
            trees = wait_for(lambda: serves(version), f"the dev server to serve ai_chatbot {version}")
            assert list(trees) == ["ai_chatbot"]
            tree = f"/src/addons/.store/{trees['ai_chatbot']}/frontend"
            config = _get(f"{base}{tree}/addon.config.ts")
            assert f'version: "{version}"' in config
            page = _get(f"{base}{tree}/ChatsPage.tsx")
            # every module the served config and page pull in is this version's
            linked = set(re.findall(r"/src/addons/\.store/ai_chatbot/([^/]+)/", config + page))
            assert linked == {trees["ai_chatbot"].split("/")[1]}
            assert ("s.title" in page) is (version == "1.1.0")  # 1.1.0's chats page shows session titles


# -- the gate with real tools -----------------------------------------------------------------


BROKEN_CONFIG = (
    "export default { id: 'broken', version: '1.0.0',\n"
    "  routes: [{ path: '/p/broken', component: () => import('./Page') }] };\n"
)


def test_the_gate_refuses_a_plugin_that_breaks_tsc_and_changes_nothing(make_host):
    host = make_host(frontend_check=TSC)
    installer = host.home.installer
    installer.install_file(page_plugin(host.home, "fine"))
    index = (host.home.config.frontend_addons / "index.ts").read_bytes()
    assert b"addon_fine" in index
    proc = run_cli(host.home, "install", str(page_plugin(host.home, "broken", config=BROKEN_CONFIG)))
    assert_one_line_error(proc, 1, f"frontend check `{TSC}` failed for broken (exit 2)")
    assert "index.next.ts" in proc.stderr and "error TS" in proc.stderr
    assert (host.home.config.frontend_addons / "index.ts").read_bytes() == index
    assert not (host.home.config.frontend_addons / "index.next.ts").exists()
    assert [p["id"] for p in installer.list()] == ["fine"]


def test_a_build_check_builds_the_candidate_and_refuses_an_import_the_host_cannot_resolve(make_host):
    """The example vite.config.ts builds $ATOMICPLUG_FRONTEND_INDEX in place of index.ts."""
    check = "node_modules/.bin/vite build --outDir dist-check --emptyOutDir --logLevel error"
    host = make_host(frontend_check=check)
    host.home.installer.install_file(page_plugin(host.home, "fine"))
    assert bundled(host.folder / "dist-check") == {"fine": "1.0.0"}  # the candidate, built before COMMIT
    charts = {"frontend/Page.tsx": "import { Chart } from 'chart.js';\nexport default function Page() {\n  return <p>{String(Chart)}</p>;\n}\n"}
    proc = run_cli(host.home, "install", str(page_plugin(host.home, "charts", files=charts)))
    assert_one_line_error(proc, 1, f"frontend check `{check}` failed (exit 1)")
    assert "chart.js" in proc.stderr
    assert [p["id"] for p in host.home.installer.list()] == ["fine"]
