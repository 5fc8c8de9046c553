"""Cluster mode (issue 15): nodes on one PostgreSQL converge; migrations run once; nodes trust only their keys.

Real PostgreSQL, real signed packages; the nodes other than the writer are
separate homes and separate ``atomicplug sync --watch`` processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomicplug.cluster.desired import read_desired
from atomicplug.cluster.sync import Reporter, apply, converge, sync
from atomicplug.cluster.tables import cluster_database
from atomicplug.config import Config
from atomicplug.errors import ConfigError, SignatureError, TrustError
from atomicplug.testing import KeyPair, PluginSpec, build_package, make_keypair, snapshot

from cluster_fleet import Fleet, Node
from db_fixtures import execute, query

pytestmark = pytest.mark.postgres

V1 = {"0001_items": ("CREATE TABLE shop_items (id INTEGER PRIMARY KEY);", "DROP TABLE shop_items;")}
V2 = dict(V1, **{"0002_orders": ("CREATE TABLE shop_orders (id INTEGER PRIMARY KEY);", "DROP TABLE shop_orders;")})


@pytest.fixture
def fleet(tmp_path: Path, publisher: KeyPair, postgres_database: str) -> Iterator[Fleet]:
    made = Fleet(tmp_path, postgres_database, publisher)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new database on the shared server, dropped afterwards."""
    import uuid

    from sqlalchemy.engine import make_url

    from db_fixtures import _drop_database, _engine, postgres_url

    server = postgres_url()
    admin = _engine(server, isolation_level="AUTOCOMMIT")
    name = f"atomicplug_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(admin, name)
        admin.dispose()


def _package(fleet: Fleet, plugin_id: str, version: str = "1.0.0", key: KeyPair | None = None, **fields: Any) -> Path:
    out = fleet.root / "packages" / (key.public_path.stem if key else "publisher")
    return build_package(PluginSpec(id=plugin_id, version=version, **fields), out, (key or fleet.publisher).secret)


def _ledger(url: str) -> list[tuple[str, str, str]]:
    return [tuple(row) for row in query(url, "SELECT plugin_id, migration, direction FROM atomicplug_migrations ORDER BY id")]  # type: ignore[misc]


def _view(node: Node) -> dict[str, Any]:
    """What a node shows (plugins, addon links, frontend index), without the database's tables."""
    state = snapshot(node.config)
    state.pop("tables")
    return state


# -- configuration ---------------------------------------------------------------------------


def test_cluster_on_sqlite_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster = true' needs a postgresql:// database_url.*got sqlite"):
        Config.for_directory(tmp_path, cluster=True)


def test_node_id_defaults_to_the_host_name_and_is_checked(tmp_path: Path) -> None:
    import socket

    config = Config.for_directory(tmp_path, cluster=True, database_url="postgresql://u@127.0.0.1/db")
    assert config.node_id == socket.gethostname().split(".")[0][:48] or config.node_id == socket.gethostname()
    with pytest.raises(ConfigError, match="node_id"):
        Config.for_directory(tmp_path, node_id="bad id/with slash")


# -- convergence ----------------------------------------------------------------------------------


def test_install_upgrade_rollback_uninstall_on_one_node_converge_everywhere_with_migrations_run_once(fleet: Fleet) -> None:
    writer = fleet.node("a")
    others = ["b", "c", "d", "e"]
    for name in others:
        fleet.node(name).watch()
    fleet.wait_listening(others)
    url = fleet.database_url

    steps: list[Callable[[], Any]] = [
        lambda: writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1)),
        lambda: writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2)),
        lambda: writer.installer.rollback("shop"),
        lambda: writer.installer.uninstall("shop"),
    ]
    expected_plugins = [{"shop": ("1.0.0", True)}, {"shop": ("1.1.0", True)}, {"shop": ("1.0.0", True)}, {}]
    for generation, (step, plugins) in enumerate(zip(steps, expected_plugins), start=1):
        step()
        fleet.wait_for(generation, others)
        assert writer.plugins() == plugins
        for name in others:
            node = fleet.nodes[name]
            assert node.plugins() == plugins, name
            assert _view(node) == _view(writer), name
    # Each migration ran once for the cluster, up and down, by the writer alone.
    assert _ledger(url) == [
        ("shop", "0001_items", "up"),
        ("shop", "0002_orders", "up"),
        ("shop", "0002_orders", "down"),
        ("shop", "0001_items", "down"),
    ]
    assert query(url, "SELECT count(*) FROM atomicplug_transactions")[0][0] == 4
    # Every node's generation 4 shows the same registry (the writer's entries).
    for name in others:
        assert fleet.nodes[name].installer.history()[-1]["operation"] == "sync"


def test_two_writers_on_two_nodes_at_once_take_turns(fleet: Fleet) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    packages = {"a": _package(fleet, "alpha", migrations={"0001_a": ("CREATE TABLE alpha_t (id INTEGER);", "DROP TABLE alpha_t;")}),
                "b": _package(fleet, "beta", migrations={"0001_b": ("CREATE TABLE beta_t (id INTEGER);", "DROP TABLE beta_t;")})}  # fmt: skip
    writers = [
        subprocess.Popen([sys.executable, "-m", "atomicplug", "--config", str(node.config_path), "install", str(packages[name])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())  # fmt: skip
        for name, node in (("a", a), ("b", b))
    ]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outputs
    with cluster_database(a.config) as db:
        desired = read_desired(db)
    assert desired is not None and desired.generation == 2 and sorted(desired.plugins) == ["alpha", "beta"]
    # The second writer planned against the first one's generation: it synced itself first.
    assert sync(a.config).converged and sync(b.config).converged
    assert a.plugins() == b.plugins() == {"alpha": ("1.0.0", True), "beta": ("1.0.0", True)}
    assert sorted(_ledger(fleet.database_url)) == [("alpha", "0001_a", "up"), ("beta", "0001_b", "up")]


def _env() -> dict[str, str]:
    import os

    from cluster_fleet import SRC

    return dict(os.environ, PYTHONPATH=str(SRC))


def test_a_node_offline_during_three_transactions_catches_up_on_start(fleet: Fleet) -> None:
    writer, late = fleet.node("a"), fleet.node("d")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    assert late.cli("sync").returncode == 0
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2))
    writer.installer.install_file(_package(fleet, "extra"))
    writer.installer.disable("extra")
    late.watch()
    status = fleet.wait_for(4, ["d"])
    assert late.plugins() == writer.plugins() == {"shop": ("1.1.0", True), "extra": ("1.0.0", False)}
    assert _view(late) == _view(writer)
    assert [n for n in status["nodes"] if n["node_id"] == "node-d"][0]["lag"] == 0


def test_sync_is_idempotent_and_cluster_status_json_has_the_contract_shape(fleet: Fleet) -> None:
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", migrations=V1))
    first = node.cli("sync")
    assert first.returncode == 0 and "install shop 1.0.0" in first.stdout, first.stderr
    again = node.cli("sync")
    assert again.returncode == 0 and "install" not in again.stdout and "generation 1" in again.stdout
    shown = node.cli("cluster", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["generation"] == 1
    rows = {row["node_id"]: row for row in data["nodes"]}
    for node_id in ("node-a", "node-b"):
        assert {"node_id", "generation", "staged", "last_seen", "error"} <= set(rows[node_id])
        assert rows[node_id]["generation"] == 1 and rows[node_id]["error"] is None
    text = node.cli("cluster", "status")
    assert text.returncode == 0 and "desired generation 1" in text.stdout and "node-b" in text.stdout


def test_sync_outside_cluster_mode_is_a_usage_error(tmp_path: Path, publisher: KeyPair) -> None:
    from atomicplug.testing import make_home

    path = make_home(tmp_path / "solo", [publisher.public_path])
    done = subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(path), "sync"], capture_output=True, text=True, env=_env())
    assert done.returncode == 2 and "not in cluster mode" in done.stderr and "Traceback" not in done.stderr


# -- trust: the database is not enough to run code on a node -----------------------------------------


def test_a_node_whose_keys_reject_a_package_refuses_it_reports_it_and_keeps_its_generation(fleet: Fleet, tmp_path: Path) -> None:
    other = make_keypair(tmp_path / "other-keys", "other")
    writer = fleet.node("a", keys=[fleet.publisher.public_path, other.public_path])
    strict = fleet.node("e")  # trusts the publisher only
    writer.installer.install_file(_package(fleet, "shop", migrations=V1))
    strict.watch()
    fleet.wait_for(1, ["e"])
    installed = writer.cli("install", "--verbose", str(_package(fleet, "foreign", key=other)))
    assert installed.returncode == 0, installed.stderr
    # The writer says which node cannot follow, and commits anyway: one node's policy does not block the fleet.
    assert "node node-e cannot stage generation 2 (" in installed.stderr
    assert "); it stays on generation 1" in installed.stderr
    assert "did not stage" not in installed.stderr  # it said so while the writer waited: no waiting out cluster_stage_wait
    # The node says why, keeps generation 1 whole, and sync exits 1.
    deadline_status = _wait_for_error(fleet, "node-e")
    assert deadline_status["generation"] == 1 and deadline_status["error_generation"] == 2
    assert "signature" in deadline_status["error"].lower() or "key" in deadline_status["error"].lower()
    assert strict.plugins() == {"shop": ("1.0.0", True)}
    strict.stop()
    once = strict.cli("sync")
    assert once.returncode == 1 and "cannot apply generation 2" in once.stderr and "Traceback" not in once.stderr
    assert strict.plugins() == {"shop": ("1.0.0", True)}
    assert not list((strict.config.home / "store").glob("foreign*"))


def _wait_for_error(fleet: Fleet, node_id: str) -> dict[str, Any]:
    import time

    from cluster_fleet import DEADLINE

    deadline = time.monotonic() + DEADLINE
    while True:
        rows = {row["node_id"]: row for row in fleet.status()["nodes"]}
        if rows.get(node_id, {}).get("error"):
            return rows[node_id]
        assert time.monotonic() < deadline, f"{node_id} reported no error: {rows}"
        time.sleep(0.05)


def test_database_write_access_cannot_make_a_node_run_unsigned_or_foreign_code(fleet: Fleet, tmp_path: Path) -> None:
    """An attacker who can write every cluster table: a package signed by their key, bytes swapped
    under a trusted sha256, a path in a plugin id. The node refuses each and runs none of it."""
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", migrations=V1))
    assert sync(node.config).converged
    url = fleet.database_url
    attacker = make_keypair(tmp_path / "attacker", "attacker")
    evil = _package(fleet, "evil", key=attacker, files={"backend/__init__.py": "open('/tmp/pwned-by-cluster', 'w')\n"})
    sha = _store_package_as_attacker(url, evil)

    def desired(rows_sql: str) -> None:
        execute(url, "DELETE FROM atomicplug_cluster_plugins")
        execute(url, rows_sql)
        execute(url, "UPDATE atomicplug_cluster SET generation = generation + 1")

    # 1. A package signed by a key the node does not trust.
    desired(f"INSERT INTO atomicplug_cluster_plugins VALUES ('evil', '1.0.0', '{sha}', true, NULL, NULL, 'x', 'x')")
    result = sync(node.config)
    assert isinstance(result.error, SignatureError) and "untrusted key" in str(result.error), result.error
    # 2. The trusted package's sha256, but the stored bytes replaced.
    good_sha = query(url, "SELECT sha256 FROM atomicplug_cluster_packages WHERE plugin_id = 'shop'")[0][0]
    execute(url, f"UPDATE atomicplug_cluster_package_chunks SET data = set_byte(data, 200, 255 - get_byte(data, 200)) WHERE sha256 = '{good_sha}'")
    fresh = fleet.node("f")
    desired(f"INSERT INTO atomicplug_cluster_plugins VALUES ('shop', '1.0.0', '{good_sha}', true, NULL, NULL, 'x', 'x')")
    result = sync(fresh.config)
    assert isinstance(result.error, TrustError) and "sha256" in str(result.error), result.error
    # 3. A path where an id belongs.
    desired(f"INSERT INTO atomicplug_cluster_plugins VALUES ('../../etc', '1.0.0', '{good_sha}', true, NULL, NULL, 'x', 'x')")
    result = sync(node.config)
    assert result.error is not None and "bad plugin id" in str(result.error)
    assert not Path("/tmp/pwned-by-cluster").exists()
    assert node.plugins() == {"shop": ("1.0.0", True)} and fresh.plugins() == {}


def _store_package_as_attacker(url: str, zip_path: Path) -> str:
    import hashlib

    import psycopg2

    data = zip_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    signature = (zip_path.parent / (zip_path.name + ".minisig")).read_text()
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO atomicplug_cluster_packages VALUES (%s, 'evil', '1.0.0', %s, %s, now())", (sha, len(data), signature)
            )
            cursor.execute("INSERT INTO atomicplug_cluster_package_chunks VALUES (%s, 0, %s)", (sha, psycopg2.Binary(data)))
    finally:
        conn.close()
    return sha


# -- crashes ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["fresh-node", "upgrade"])
def test_sigkill_during_sync_at_every_crash_point_then_restart_converges(fleet: Fleet, scenario: str) -> None:
    from crash_harness import enumerate_crash_points

    writer = fleet.node("a", health_check=False)
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    with cluster_database(writer.config) as db:
        first = read_desired(db)
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2))
    writer.installer.install_file(_package(fleet, "base"))
    assert first is not None

    class Home:  # what crash_harness needs of a home: its config
        def __init__(self, node: Node) -> None:
            self.config = node.config

    def make_home(label: str) -> Home:
        return Home(fleet.node(f"{scenario}-{label.rsplit('-', 1)[-1]}", health_check=False))

    def setup(home: Home) -> None:
        if scenario == "upgrade":  # the node shows generation 1 (shop 1.0.0) before it syncs
            with cluster_database(home.config) as db:
                apply(home.config, db, first)

    def operation(home: Home) -> None:
        with cluster_database(home.config) as db:
            result = converge(home.config, db, Reporter(home.config.node_id))
        assert result.converged, result.error

    checked = enumerate_crash_points(make_home, setup, operation, f"cluster sync ({scenario})")
    assert checked > 5


def test_database_restarted_mid_sync_nodes_reconnect_and_converge(tmp_path: Path, publisher: KeyPair) -> None:
    """The server dies while nodes have staged a generation and wait for its COMMIT; it comes back."""
    import psycopg2

    from pg_cluster import throwaway_cluster

    with throwaway_cluster() as server:
        url = server.create_database("fleet")
        fleet = Fleet(tmp_path, url, publisher)
        try:
            writer = fleet.node("a", cluster_stage_wait=600)
            writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
            for name in ("b", "c"):
                fleet.node(name).watch()
            fleet.wait_for(1, ["b", "c"])
            # A live node that never stages keeps the writer waiting in its staged phase.
            phantom = psycopg2.connect(url + "?application_name=atomicplug:phantom")
            upgrade = _package(fleet, "shop", "1.1.0", migrations=V2)
            writing = subprocess.Popen(
                [sys.executable, "-m", "atomicplug", "--config", str(writer.config_path), "install", str(upgrade)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
            )  # fmt: skip
            _wait_until(lambda: _staged(fleet, ["node-b", "node-c"], 2))
            server.kill_all()
            server.start()
            _, err = writing.communicate(timeout=120)
            assert writing.returncode != 0 and b"Traceback" not in err, err
            phantom.close()
            # The nodes reconnect, find generation 1 still desired and keep it; the write, retried, converges.
            fleet.wait_listening(["b", "c"])
            assert fleet.nodes["b"].plugins() == {"shop": ("1.0.0", True)}
            writer.installer.install_file(upgrade)
            fleet.wait_for(2, ["b", "c"])
            assert fleet.nodes["b"].plugins() == fleet.nodes["c"].plugins() == {"shop": ("1.1.0", True)}
            assert _ledger(url) == [("shop", "0001_items", "up"), ("shop", "0002_orders", "up")]
        finally:
            fleet.stop()


def _staged(fleet: Fleet, node_ids: list[str], generation: int) -> bool:
    rows = {row["node_id"]: row for row in fleet.status()["nodes"]}
    return all(rows.get(n, {}).get("staged") == generation for n in node_ids)


def _wait_until(condition: Callable[[], bool]) -> None:
    import time

    from cluster_fleet import DEADLINE

    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# -- the loader: two NextPanel backends on one database ----------------------------------------------


def test_two_nextpanel_backends_install_through_one_routes_answer_on_the_other(fleet: Fleet, tmp_path: Path) -> None:
    import httpx

    from atomicplug.repository.repo_admin import add_packages, init_repository
    from test_loader import router_backend
    from test_nextpanel_api import AUTH, MARKET, ROOT, TOKEN, _free_port, _Served

    repo = tmp_path / "repo"
    init_repository(repo, fleet.publisher.secret)
    spec = PluginSpec(id="crm", version="1.0.0", migrations={"0001_c": ("CREATE TABLE crm_c (id INTEGER);", "DROP TABLE crm_c;")},
                      files=router_backend("crm", "1.0.0"))  # fmt: skip
    add_packages(repo, [build_package(spec, tmp_path / "pkgs", fleet.publisher.secret)], fleet.publisher.secret)
    served = _Served(repo)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bases = []
        for name in ("p1", "p2"):
            node = fleet.node(name, repository=served.url)
            port = _free_port()
            env = dict(_env(), ATOMICPLUG_CONFIG=str(node.config_path), NEXTPANEL_ADMIN_TOKEN=TOKEN)
            command = [sys.executable, "-m", "uvicorn", "examples.nextpanel.app:app", "--host", "127.0.0.1", "--port", str(port)]
            with open(node.root / "uvicorn.log", "wb") as log:  # the server keeps its own descriptor
                servers.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log))
            bases.append(f"http://127.0.0.1:{port}")
        for base, server in zip(bases, servers):
            _wait_until(lambda base=base, server=server: _answers(base, server))
        fleet.wait_listening(["p1", "p2"])
        assert httpx.get(f"{bases[1]}/api/v1/crm/ping", timeout=5).status_code == 404
        done = httpx.post(f"{bases[0]}{MARKET}/install-remote", json={"addon_id": "crm"}, headers=AUTH, timeout=120)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "done" and body["fleet"]["converged"] is True, body
        assert {n["node_id"]: n["generation"] for n in body["fleet"]["nodes"] if n["live"]} == {"node-p1": 1, "node-p2": 1}
        # The other backend mounted the routes without a restart (its loader reloads on its event loop).
        _wait_until(lambda: httpx.get(f"{bases[1]}/api/v1/crm/ping", timeout=5).status_code == 200)
        assert httpx.get(f"{bases[1]}/api/v1/crm/ping", timeout=5).json() == {"plugin": "crm", "version": "1.0.0"}
        fleet_view = httpx.get(f"{bases[1]}{MARKET}/fleet", headers=AUTH, timeout=10).json()
        assert fleet_view["generation"] == 1 and fleet_view["converged"] is True
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
        served.stop()


def _answers(base: str, server: subprocess.Popen[bytes]) -> bool:
    import httpx

    assert server.poll() is None, "uvicorn exited"
    try:
        return httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


# -- gc of the cluster's package store ----------------------------------------------------------


def _stored(url: str) -> dict[str, str]:
    """sha256 → version of every package in the cluster's store (and each still has its chunks)."""
    rows = query(url, "SELECT p.sha256, p.version, count(c.seq) FROM atomicplug_cluster_packages AS p "
                      "LEFT JOIN atomicplug_cluster_package_chunks AS c ON c.sha256 = p.sha256 GROUP BY p.sha256, p.version")  # fmt: skip
    assert all(chunks > 0 for _sha, _version, chunks in rows)
    return {sha: version for sha, version, _chunks in rows}


def test_gc_removes_the_packages_no_kept_cluster_generation_names_and_nodes_still_sync_and_roll_back(fleet: Fleet) -> None:
    writer = fleet.node("a", keep_generations=2)
    url = fleet.database_url
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        writer.installer.install_file(_package(fleet, "shop", version, migrations=V1))
    assert sorted(_stored(url).values()) == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    fresh = writer.cli("gc")
    assert fresh.returncode == 0, fresh.stderr
    assert "removed 0 package(s) from the cluster's store" in fresh.stdout  # all younger than the grace period
    execute(url, "UPDATE atomicplug_cluster_packages SET stored_at = stored_at - interval '2 hours'")
    dry = writer.cli("gc", "--dry-run")
    assert dry.returncode == 0 and "would remove 1 package(s) from the cluster's store" in dry.stdout, dry.stdout + dry.stderr
    assert sorted(_stored(url).values()) == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]  # nothing removed
    collected = writer.cli("gc")
    assert collected.returncode == 0, collected.stderr
    # Kept: 1.3.0 (desired) and 1.2.0 (its previous), 1.1.0 (the previous of generation 3, still kept).
    assert sorted(_stored(url).values()) == ["1.1.0", "1.2.0", "1.3.0"]
    assert "removed 1 package(s) from the cluster's store" in collected.stdout
    late = fleet.node("b")  # a new node has none of them: they come from the store
    assert late.cli("sync").returncode == 0
    assert late.plugins() == {"shop": ("1.3.0", True)}
    writer.installer.rollback("shop")
    synced = late.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert late.plugins() == writer.plugins() == {"shop": ("1.2.0", True)}
    assert _view(late) == _view(writer)


def test_gc_waits_for_a_writers_turn_and_says_so_when_it_cannot_have_it(fleet: Fleet) -> None:
    from atomicplug.database.engine import ADVISORY_LOCK_KEY, open_database

    writer = fleet.node("a", lock_timeout=1)
    writer.installer.install_file(_package(fleet, "shop", migrations=V1))
    execute(fleet.database_url, "UPDATE atomicplug_cluster_packages SET stored_at = stored_at - interval '2 hours'")
    other = open_database(fleet.database_url)
    try:
        other.execute("BEGIN")
        other.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [ADVISORY_LOCK_KEY])  # another node's writer, mid-turn
        busy = writer.cli("gc")
    finally:
        other.rollback_quietly()
        other.close()
    assert busy.returncode == 75, busy.stderr
    assert busy.stderr.strip().splitlines()[-1].startswith("atomicplug: error: another node's atomicplug writer holds the cluster lock")
    assert len(_stored(fleet.database_url)) == 1


def _alone(fleet: Fleet, name: str) -> Any:
    """The Installer of node ``name``'s home before cluster mode is turned on (``fleet.node(name)`` does)."""
    from atomicplug.installer import Installer
    from atomicplug.testing import make_home

    return Installer(Config.load(make_home(fleet.root / f"node-{name}", [fleet.publisher.public_path], database_url=fleet.database_url)))


def _ran_alone(fleet: Fleet, name: str, *packages: Path, **overrides: Any) -> Node:
    """A node whose home installed ``packages`` before cluster mode was turned on (its zips not kept)."""
    alone = _alone(fleet, name)
    for package in packages:
        alone.install_file(package)
    return fleet.node(name, **overrides)  # the same home, now a cluster node


def test_a_machine_that_ran_alone_is_given_its_zips_again_and_its_plugins_become_the_clusters_first_generation(fleet: Fleet) -> None:
    """Running alone it kept the installed files, not the zips: its first sync names every package
    it cannot publish (before publishing any), and one install of those zips seeds the cluster."""
    shop, blog = _package(fleet, "shop", migrations=V1), _package(fleet, "blog")
    first = _ran_alone(fleet, "a", shop, blog)
    before = _view(first)
    refused = first.cli("sync")
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("atomicplug: error: cannot publish blog 1.0.0, shop 1.0.0 to the cluster: their packages are not in "), line
    assert line.endswith("give this machine the zip again (`atomicplug install A.zip B.zip` takes zips in and keeps the installed versions as they are), then try again")
    assert "generation 0" not in line
    assert _stored(fleet.database_url) == {}
    with cluster_database(first.config) as db:
        assert read_desired(db) is None
    assert _view(first) == before
    again = first.cli("install", str(shop), str(blog))
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to do: already installed"), again.stderr
    seeded = first.cli("sync", "--verbose")
    assert seeded.returncode == 0, seeded.stderr
    assert "published this node's generation as the cluster's first (2 plugin(s))" in seeded.stderr
    joined = fleet.node("b")
    synced = joined.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert joined.plugins() == first.plugins() == {"blog": ("1.0.0", True), "shop": ("1.0.0", True)}
    assert _view(joined) == _view(first)


def test_a_first_writer_publishes_every_plugin_its_generation_names(fleet: Fleet) -> None:
    """The first generation names all of the node's plugins: a writer that changes one must publish
    the others too, or refuse before announcing (here: blog's zip is gone), not leave nodes unable to sync."""
    shop, blog = _package(fleet, "shop", migrations=V1), _package(fleet, "blog")
    first = _ran_alone(fleet, "a", shop, blog)
    before = _view(first)
    refused = first.cli("install", str(_package(fleet, "shop", "1.1.0", migrations=V2)))
    assert refused.returncode == 1, refused.stderr
    assert "cannot publish blog 1.0.0 to the cluster: its package is not in " in refused.stderr.strip().splitlines()[-1]
    with cluster_database(first.config) as db:
        assert read_desired(db) is None
    assert _view(first) == before
    assert first.cli("install", str(blog)).returncode == 0  # takes blog's zip in
    upgraded = first.cli("install", str(_package(fleet, "shop", "1.1.0", migrations=V2)))
    assert upgraded.returncode == 0, upgraded.stderr
    joined = fleet.node("b")
    assert joined.cli("sync").returncode == 0, joined.cli("sync").stderr
    assert joined.plugins() == first.plugins() == {"blog": ("1.0.0", True), "shop": ("1.1.0", True)}


def test_seeding_waits_for_a_writers_turn_no_longer_than_lock_timeout(fleet: Fleet) -> None:
    from atomicplug.database.engine import ADVISORY_LOCK_KEY, open_database
    from atomicplug.intake import take_in_file

    shop = _package(fleet, "shop", migrations=V1)
    first = _ran_alone(fleet, "a", shop, lock_timeout=1)
    take_in_file(first.config, shop)  # its zip is on this machine again (in downloads/)
    other = open_database(fleet.database_url)
    try:
        other.execute("BEGIN")
        other.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [ADVISORY_LOCK_KEY])  # another node's writer, mid-turn
        busy = first.cli("sync", timeout=60)
    finally:
        other.rollback_quietly()
        other.close()
    assert busy.returncode == 75, busy.stderr
    assert busy.stderr.strip().splitlines()[-1].startswith("atomicplug: error: another node's atomicplug writer holds the cluster lock")
    with cluster_database(first.config) as db:
        assert read_desired(db) is None
    # A watching node keeps its connection: a seed that could not have the turn leaves it usable.
    from atomicplug.errors import LockBusyError

    with cluster_database(first.config) as kept:
        other = open_database(fleet.database_url)
        try:
            other.execute("BEGIN")
            other.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [ADVISORY_LOCK_KEY])
            with pytest.raises(LockBusyError):
                converge(first.config, kept, Reporter(first.config.node_id))
        finally:
            other.rollback_quietly()
            other.close()
        assert kept.execute("SELECT 1") == [(1,)]
    seeded = first.cli("sync", "--verbose")
    assert seeded.returncode == 0, seeded.stderr
    assert "published this node's generation as the cluster's first (1 plugin(s))" in seeded.stderr
    joined = fleet.node("b")
    assert joined.cli("sync").returncode == 0
    assert joined.plugins() == first.plugins() == {"shop": ("1.0.0", True)}


def test_a_node_takes_a_package_from_its_own_downloads_before_the_store_and_the_repository(fleet: Fleet) -> None:
    """docs/design.md "Beyond one machine": from downloads/, else the package store, else the repository.
    A zip given to the node is enough when the store has lost the package and there is no repository."""
    from atomicplug.intake import take_in_file

    writer, late = fleet.node("a"), fleet.node("b")
    shop = _package(fleet, "shop", migrations=V1)
    writer.installer.install_file(shop)
    execute(fleet.database_url, "DELETE FROM atomicplug_cluster_packages")
    lost = late.cli("sync")
    assert lost.returncode == 1
    assert "is not in the cluster's package store and no repository is configured" in lost.stderr
    take_in_file(late.config, shop)  # its zip given to this node
    synced = late.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert late.plugins() == writer.plugins() == {"shop": ("1.0.0", True)}


def test_two_machines_that_ran_alone_seeding_at_once_leave_one_first_generation(fleet: Fleet) -> None:
    """Both publish, then take the writers' turn: the second finds the first's desired state and
    takes it instead of its own (docs/design.md "Beyond one machine"), so both show the same plugins."""
    import os
    import subprocess
    import sys
    import time

    from cluster_fleet import DEADLINE, SRC

    from atomicplug.database.engine import ADVISORY_LOCK_KEY, open_database
    from atomicplug.intake import take_in_file

    shop, blog = _package(fleet, "shop", migrations=V1), _package(fleet, "blog")
    first, second = _ran_alone(fleet, "a", shop), _ran_alone(fleet, "b", blog)
    take_in_file(first.config, shop)  # their zips given back
    take_in_file(second.config, blog)
    other = open_database(fleet.database_url)
    try:
        other.execute("BEGIN")
        other.execute("SELECT pg_catalog.pg_advisory_xact_lock(?)", [ADVISORY_LOCK_KEY])  # both seeds wait for it
        env = dict(os.environ, PYTHONPATH=str(SRC))
        syncs = [
            subprocess.Popen([sys.executable, "-m", "atomicplug", "--config", str(node.config_path), "sync"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for node in (first, second)
        ]  # fmt: skip
        deadline = time.monotonic() + DEADLINE
        while other.execute("SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0] < 2:
            assert time.monotonic() < deadline and all(sync.poll() is None for sync in syncs), "both seeds should wait for the turn"
            time.sleep(0.05)
    finally:
        other.rollback_quietly()
        other.close()
    outputs = [sync.communicate(timeout=DEADLINE) for sync in syncs]
    assert [sync.returncode for sync in syncs] == [0, 0], outputs
    with cluster_database(first.config) as db:
        desired = read_desired(db)
    assert desired is not None and sorted(desired.plugins) in (["blog"], ["shop"])
    assert first.plugins() == second.plugins() == {pid: ("1.0.0", True) for pid in desired.plugins}


def test_a_node_whose_own_generation_numbers_are_higher_keeps_counting_upwards(fleet: Fleet) -> None:
    """docs/design.md "Beyond one machine": local numbers only grow (a rollback --generation N names
    a local one), while the node's row shows the cluster's generation."""
    from atomicplug import generations

    shop = _package(fleet, "shop", migrations=V1)
    alone = _alone(fleet, "c")
    for _ in range(2):  # four generations of its own while running alone, ending with nothing installed
        alone.install_file(_package(fleet, "blog"))
        alone.uninstall("blog")
    busy = fleet.node("c")  # the same home, now a cluster node
    writer = fleet.node("a")
    writer.installer.install_file(shop)  # the cluster's generation 1
    synced = busy.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.strip().splitlines()[-1] == "node node-c is at generation 1"
    assert generations.current_number(busy.config) == 5
    assert busy.plugins() == {"shop": ("1.0.0", True)}
    rows = {row["node_id"]: row for row in fleet.status()["nodes"]}
    assert (rows["node-c"]["generation"], rows["node-c"]["lag"]) == (1, 0)
    assert busy.cli("rollback", "--generation", "4").returncode == 0  # its own number 4: nothing installed
    assert busy.plugins() == {}


def test_rollback_on_a_node_that_never_had_the_previous_tree_fetches_it(fleet: Fleet) -> None:
    """Node b joined at 1.1.0: its registry names 1.0.0 as the previous version, but 1.0.0's tree was never made there."""
    writer, late = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2))
    assert late.cli("sync").returncode == 0
    assert not any(t.name.startswith("1.0.0-") for t in (late.config.store_dir / "shop").iterdir())
    rolled = late.cli("rollback", "shop")
    assert rolled.returncode == 0, rolled.stderr
    assert late.plugins() == {"shop": ("1.0.0", True)}
    assert writer.cli("sync").returncode == 0
    assert writer.plugins() == {"shop": ("1.0.0", True)}
    assert _view(late) == _view(writer)
    assert _ledger(fleet.database_url)[-1] == ("shop", "0002_orders", "down")
    assert all(report.ok for report in late.installer.verify())


def _node_that_kept_a_tree(fleet: Fleet) -> tuple[Node, Node, Path]:
    """Writer a and node b, both at shop 1.1.0 after 1.0.0; the tree of 1.0.0 that node b kept."""
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    assert node.cli("sync").returncode == 0
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2))
    assert node.cli("sync").returncode == 0
    [kept] = [t for t in (node.config.store_dir / "shop").iterdir() if t.name.startswith("1.0.0-")]
    return writer, node, kept


def test_a_node_repairs_a_damaged_tree_it_kept_before_its_sync_makes_it_live_again(fleet: Fleet) -> None:
    """Node b kept 1.0.0's tree when it synced to 1.1.0; a module was added to that tree and a file changed.
    The writer's rollback to 1.0.0 must not make them live on b: b takes the package in and repairs the tree first."""
    writer, node, kept = _node_that_kept_a_tree(fleet)
    (kept / "backend" / "planted.py").write_text("PLANTED = True\n")
    changed = kept / "metadata.json"
    changed.chmod(0o644)
    changed.write_text(changed.read_text().replace('"shop"', '"shop" ', 1))
    writer.installer.rollback("shop")
    synced = node.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert "repair shop 1.0.0: 2 files" in synced.stdout + synced.stderr
    assert node.plugins() == {"shop": ("1.0.0", True)}
    assert not (kept / "backend" / "planted.py").exists()
    assert all(report.ok for report in node.installer.verify(deep=True))
    assert _view(node) == _view(writer)


def test_a_node_repairs_the_damaged_tree_of_a_disabled_plugin_before_an_enable_makes_it_live(fleet: Fleet) -> None:
    """Found from outside: the writer enabled a plugin its own intact tree holds; node b's copy, changed
    while disabled, went live at b's sync unchecked (taken for "already live": the same tree)."""
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    writer.installer.disable("shop")
    assert node.cli("sync").returncode == 0
    [tree] = list((node.config.store_dir / "shop").iterdir())
    (tree / "backend" / "planted.py").write_text("PLANTED = True\n")
    writer.installer.enable("shop")
    synced = node.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert "repair shop 1.0.0: 1 file" in synced.stdout + synced.stderr
    assert not (tree / "backend" / "planted.py").exists()
    assert node.plugins() == {"shop": ("1.0.0", True)}
    assert all(report.ok for report in node.installer.verify(deep=True))


def test_a_synced_node_names_the_signer_of_what_it_installed(fleet: Fleet) -> None:
    """Found from outside: node b verified the package's signature with its own keys, yet its registry
    said signed_by null where the writer's named the key; a rollback there carried the null on."""
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    assert node.cli("sync").returncode == 0
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", migrations=V2))
    assert node.cli("sync").returncode == 0
    signer = writer.installer.list()[0]["signed_by"]
    assert signer is not None and node.installer.list()[0]["signed_by"] == signer
    writer.installer.rollback("shop")  # b goes back to the tree it kept: its signer from b's kept generation
    assert node.cli("sync").returncode == 0
    assert [(p["version"], p["signed_by"]) for p in node.installer.list()] == [("1.0.0", signer)]


def test_a_rollback_on_a_node_that_fetches_the_package_keeps_the_stored_settings(fleet: Fleet) -> None:
    """Found in review: `rollback ID` on a node that never made the previous tree fetches its package;
    the settings schema, read from a tree not there yet, counted as "declares none" and the stored
    settings (a secret included) were wiped for the whole cluster."""
    schema = {"type": "object", "properties": {"api_key": {"type": "string", "secret": True}, "model": {"type": "string"}}}
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", metadata_extra={"settings": schema}),
                                  settings={"shop": {"api_key": "sk-1", "model": "m"}})  # fmt: skip
    writer.installer.install_file(_package(fleet, "shop", "1.1.0", metadata_extra={"settings": schema}))
    stored = "SELECT settings FROM atomicplug_installations WHERE plugin_id = 'shop'"
    before = query(fleet.database_url, stored)
    assert node.cli("sync").returncode == 0  # b makes 1.1.0's tree only
    rolled = node.cli("rollback", "shop")
    assert rolled.returncode == 0, rolled.stderr
    assert query(fleet.database_url, stored) == before


def test_a_disk_failing_while_a_node_repairs_a_kept_tree_is_one_line_and_its_next_sync_repairs(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair before a sync makes a kept tree live again runs before the node's transaction: a disk
    that fails there is one line in the sync's result (and the node's status), as the same repair's
    failure is for an install; the node still shows what it showed, and its next sync repairs."""
    import errno

    from atomicplug import faults
    from atomicplug.errors import StorageError
    from atomicplug.stages import repair

    writer, node, kept = _node_that_kept_a_tree(fleet)
    changed = kept / "metadata.json"
    changed.chmod(0o644)
    changed.write_text(changed.read_text().replace('"shop"', '"shop" ', 1))
    writer.installer.rollback("shop")
    real_repair = repair.repair_from_package

    def on_a_full_disk(*args: Any, **kwargs: Any) -> Any:
        faults.arm(1, errno.ENOSPC, then=errno.ENOSPC)  # the repair's first write fails, and every one after it
        try:
            return real_repair(*args, **kwargs)
        finally:
            faults.arm(0)

    monkeypatch.setattr(repair, "repair_from_package", on_a_full_disk)
    failed = sync(node.config)
    assert isinstance(failed.error, StorageError), repr(failed.error)
    message = str(failed.error)
    assert "\n" not in message and message.startswith("repair shop 1.0.0 failed: ") and "ENOSPC" in message, message
    assert "next sync finishes the repair" in message, message
    assert node.plugins() == {"shop": ("1.1.0", True)}
    monkeypatch.undo()
    synced = node.cli("sync")
    assert synced.returncode == 0, synced.stderr
    assert "repair shop 1.0.0: 1 file" in synced.stdout + synced.stderr
    assert node.plugins() == {"shop": ("1.0.0", True)}
    assert all(report.ok for report in node.installer.verify(deep=True))


def test_a_writer_refused_after_announcing_withdraws_and_the_nodes_that_staged_roll_back(fleet: Fleet) -> None:
    """The writer announces before its own staging and checks (so the nodes stage alongside it): a refusal
    after that withdraws the generation, and every node stays on, or comes back to, the one before."""
    writer, node = fleet.node("a"), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    node.watch()
    fleet.wait_for(1, ["b"])
    bad = _package(fleet, "shop", "1.1.0", migrations=dict(V1, **{"0002_bad": ("CREATE TABLE shop_bad (;", "DROP TABLE shop_bad;")}))
    refused = writer.cli("install", str(bad))
    assert refused.returncode != 0 and "0002_bad" in refused.stderr, refused.stderr
    assert query(fleet.database_url, "SELECT generation, state FROM atomicplug_cluster_generations ORDER BY generation")[-1] == (2, "withdrawn")
    good = _package(fleet, "shop", "1.1.0", migrations=V2)
    writer.installer.install_file(good)
    status = fleet.wait_for(2, ["b"])
    assert all(row["error"] is None for row in status["nodes"]), status
    assert node.plugins() == writer.plugins() == {"shop": ("1.1.0", True)}
    assert _view(node) == _view(writer)
    assert _ledger(fleet.database_url) == [("shop", "0001_items", "up"), ("shop", "0002_orders", "up")]


def test_a_writer_killed_after_announcing_leaves_every_node_on_the_generation_before(fleet: Fleet) -> None:
    """SIGKILL while the writer stages its own trees, the nodes staging the same generation alongside:
    its connection dies, the generation never commits, the nodes roll theirs back, and the writer's
    next install (after recovering) converges everywhere."""
    from atomicplug.testing import crash_at

    writer, node = fleet.node("a", health_check=False), fleet.node("b")
    writer.installer.install_file(_package(fleet, "shop", "1.0.0", migrations=V1))
    node.watch()
    fleet.wait_for(1, ["b"])
    upgrade = _package(fleet, "shop", "1.1.0", migrations=V2)

    def announced() -> bool:
        return query(fleet.database_url, "SELECT count(*) FROM atomicplug_cluster_generations WHERE generation = 2")[0][0] == 1

    point = 0
    while not announced():  # the first crash point after the announcement: the writer is staging
        point += 1
        assert point < 80, "the writer never announced generation 2 before it finished"
        assert crash_at(lambda: writer.installer.install_file(upgrade), point), f"the install finished before crash point {point}"
    assert query(fleet.database_url, "SELECT generation FROM atomicplug_cluster")[0][0] == 1
    writer.installer.recover()
    # The node staged generation 2 alongside the writer, then hears (txid_status) that it never committed.
    _wait_until(lambda: "generation 2 was not committed by its writer" in node.log())
    assert "staged generation 2; waiting for its writer's COMMIT" in node.log()
    assert node.plugins() == writer.plugins() == {"shop": ("1.0.0", True)}
    assert fleet.status()["generation"] == 1
    writer.installer.install_file(upgrade)
    fleet.wait_for(2, ["b"])
    assert node.plugins() == writer.plugins() == {"shop": ("1.1.0", True)}
    assert _view(node) == _view(writer)
    assert _ledger(fleet.database_url) == [("shop", "0001_items", "up"), ("shop", "0002_orders", "up")]
