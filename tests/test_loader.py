"""The addon loader: import enabled addons, mount their routers, follow every change without a restart."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import filelock
import pytest
from conftest import Home
from fastapi import FastAPI
from fastapi.testclient import TestClient

from atomicplug.installer import Installer
from atomicplug.journal import pending_journals
from atomicplug.loader import AddonLoader
from atomicplug.testing import count_crash_points, crash_at


def router_backend(plugin_id: str, version: str = "1.0.0", extra: str = "") -> dict[str, str | bytes]:
    """Backend files of a test addon serving GET /api/v1/<id>/ping → {"plugin", "version"}.

    The answer comes from a submodule, so an upgrade shows whether submodules were re-imported.
    """
    return {
        "backend/__init__.py": (
            "from fastapi import APIRouter\n"
            "from .answer import answer\n"
            f"{extra}"
            f'router = APIRouter(prefix="/api/v1/{plugin_id}", tags=["{plugin_id}"])\n'
            f'@router.get("/ping")\n'
            "def ping() -> dict:\n"
            "    return answer()\n"
        ),
        "backend/answer.py": f'def answer() -> dict:\n    return {{"plugin": "{plugin_id}", "version": "{version}"}}\n',
    }


def install_router_addon(home: Home, plugin_id: str, version: str = "1.0.0", **fields: object) -> None:
    home.installer.install_file(home.package(plugin_id, version, files=router_backend(plugin_id, version), **fields))


@pytest.fixture(autouse=True)
def forget_addons() -> Iterator[None]:
    """Every test starts without an ``addons`` package (the loader makes a synthetic one)."""
    yield
    for name in [m for m in sys.modules if m == "addons" or m.startswith("addons.")]:
        del sys.modules[name]


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()

    @app.get("/own")
    def own() -> dict[str, str]:
        return {"own": "yes"}

    return app


def _paths(app: FastAPI) -> set[str]:
    return set(app.openapi()["paths"])


def test_enabled_addon_router_is_mounted_and_in_openapi(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    loader = AddonLoader(home.config, app)
    loader.startup()
    client = TestClient(app)
    assert client.get("/api/v1/crm/ping").json() == {"plugin": "crm", "version": "1.0.0"}
    assert client.get("/own").status_code == 200
    assert _paths(app) == {"/own", "/api/v1/crm/ping"}
    assert loader.status() == {"loaded": {"crm": "1.0.0"}, "failed": {}}
    assert sys.modules["addons.crm"].__name__ == "addons.crm"


def test_disable_unmounts_and_enable_mounts_again(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    loader = AddonLoader(home.config, app)
    loader.startup()
    client = TestClient(app)
    assert app.openapi()  # cached now: reload must reset it
    home.installer.disable("crm")
    loader.reload()
    assert client.get("/api/v1/crm/ping").status_code == 404
    assert _paths(app) == {"/own"}
    assert "addons.crm" not in sys.modules and "addons.crm.answer" not in sys.modules
    home.installer.enable("crm")
    loader.reload()
    assert client.get("/api/v1/crm/ping").status_code == 200
    assert _paths(app) == {"/own", "/api/v1/crm/ping"}


def test_a_reload_pins_one_generation_its_view_and_its_registry_even_when_views_are_shared(
    home: Home, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend view may be shown by several generations (docs/design.md "Generations"), so the
    registry is not beside it: both come from one resolution of ``<home>/current``."""
    import os

    from atomicplug import generations

    install_router_addon(home, "crm")
    install_router_addon(home, "shop")
    loader = AddonLoader(home.config, app)
    loader.startup()
    home.installer.disable("shop")  # shows the first generation's view again
    pinned: list[tuple[str, Path]] = []
    real_pin = AddonLoader._pin

    def pin_then_switch(self: AddonLoader) -> tuple[str, Path]:
        pinned.append(real_pin(self))
        home.installer.enable("shop")  # a transaction switches `current` right after the pin
        return pinned[-1]

    monkeypatch.setattr(AddonLoader, "_pin", pin_then_switch)
    loader.reload()
    view, registry_path = pinned[0]
    number = int(registry_path.parent.name)
    assert view == os.path.realpath(generations.folder(home.config, number) / generations.BACKEND)
    assert generations.current_number(home.config) == number + 1
    assert loader.status()["loaded"] == {"crm": "1.0.0"}  # the pinned generation's: shop disabled there
    assert TestClient(app).get("/api/v1/shop/ping").status_code == 404


def test_upgrade_and_rollback_serve_the_new_then_old_code(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm", "1.0.0")
    loader = AddonLoader(home.config, app)
    loader.startup()
    route_count = len(app.routes)
    client = TestClient(app)
    install_router_addon(home, "crm", "2.0.0")
    loader.reload()
    assert client.get("/api/v1/crm/ping").json() == {"plugin": "crm", "version": "2.0.0"}
    home.installer.rollback("crm")
    loader.reload()
    assert client.get("/api/v1/crm/ping").json() == {"plugin": "crm", "version": "1.0.0"}
    assert len(app.routes) == route_count  # the old router was replaced, not kept beside the new one


def test_uninstall_removes_routes_and_modules(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    install_router_addon(home, "sales")
    loader = AddonLoader(home.config, app)
    loader.startup()
    home.installer.uninstall("crm")
    loader.reload()
    client = TestClient(app)
    assert client.get("/api/v1/crm/ping").status_code == 404
    assert client.get("/api/v1/sales/ping").status_code == 200
    assert loader.status()["loaded"] == {"sales": "1.0.0"}
    assert not any(m.startswith("addons.crm") for m in sys.modules)


def test_reload_without_changes_keeps_modules(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    loader = AddonLoader(home.config, app)
    loader.startup()
    module = sys.modules["addons.crm"]
    loader.reload()
    assert sys.modules["addons.crm"] is module
    assert len(app.routes) == len({id(r) for r in app.routes})


def test_addon_without_router_is_loaded_without_routes(home: Home, app: FastAPI) -> None:
    home.installer.install_file(home.package("quiet"))
    loader = AddonLoader(home.config, app)
    loader.startup()
    assert loader.status()["loaded"] == {"quiet": "1.0.0"}
    assert _paths(app) == {"/own"}


def test_addon_failing_at_import_is_reported_and_skipped(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    # e.g. installed before the health gate existed, or with `health_check = false`
    ungated = Installer(attrs.evolve(home.config, health_check=False))
    ungated.install_file(home.package("broken", files={"backend/__init__.py": "import does_not_exist\n"}))
    loader = AddonLoader(home.config, app)
    loader.startup()
    assert loader.failures == {"broken": "ModuleNotFoundError: No module named 'does_not_exist'"}
    assert "addons.broken" not in sys.modules
    client = TestClient(app)
    assert client.get("/own").status_code == 200
    assert client.get("/api/v1/crm/ping").status_code == 200
    loader.reload()  # same tree: not retried, still reported
    assert set(loader.failures) == {"broken"}
    home.installer.uninstall("broken")
    loader.reload()
    assert loader.failures == {}


def test_an_addon_whose_tree_is_gone_is_a_failure_not_dropped_without_a_word(home: Home, app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    """Found from outside: with an enabled addon's store tree removed, the loader skipped it, in no
    `failures` and no log line, and the health check said ok while the registry listed it enabled.
    Installing it again repairs it, and the next reload loads it."""
    import shutil

    install_router_addon(home, "crm")
    loader = AddonLoader(home.config, app)
    loader.startup()
    shutil.rmtree(home.config.home / "store" / "crm")
    loader.reload()
    assert set(loader.failures) == {"crm"} and "atomicplug verify" in loader.failures["crm"], loader.failures
    assert "addon crm 1.0.0 failed to load" in caplog.text
    loader.reload()  # reported once, kept while nothing changed
    assert set(loader.failures) == {"crm"} and caplog.text.count("addon crm 1.0.0 failed to load") == 1
    home.installer.install_file(home.package("crm", files=router_backend("crm")))  # the repair
    loader.reload()
    assert loader.failures == {} and loader.status()["loaded"] == {"crm": "1.0.0"}


def test_router_that_is_not_a_router_is_a_failure(home: Home, app: FastAPI) -> None:
    home.installer.install_file(home.package("odd", files={"backend/__init__.py": "router = 42\n"}))
    loader = AddonLoader(home.config, app)
    loader.startup()
    assert loader.failures == {"odd": "TypeError: 'router' must be an APIRouter (got int)"}


def test_upgrading_a_dependency_reimports_its_dependents(home: Home, app: FastAPI) -> None:
    home.installer.install_file(home.package("core", files={"backend/__init__.py": 'NAME = "core v1"\n'}))
    user_code = (
        "from fastapi import APIRouter\nfrom addons.core import NAME\n"
        'router = APIRouter()\n@router.get("/uses-core")\ndef uses() -> dict:\n    return {"core": NAME}\n'
    )
    home.installer.install_file(home.package("user", requires=("core",), files={"backend/__init__.py": user_code}))
    loader = AddonLoader(home.config, app)
    loader.startup()
    client = TestClient(app)
    assert client.get("/uses-core").json() == {"core": "core v1"}
    home.installer.install_file(home.package("core", "2.0.0", files={"backend/__init__.py": 'NAME = "core v2"\n'}))
    loader.reload()
    assert client.get("/uses-core").json() == {"core": "core v2"}


def test_startup_tolerates_a_held_lock_and_still_loads(home: Home, app: FastAPI) -> None:
    install_router_addon(home, "crm")
    loader = AddonLoader(home.config, app, lock_timeout=0.1)
    with filelock.FileLock(str(home.config.lock_path)):
        loader.startup()
    assert loader.status()["loaded"] == {"crm": "1.0.0"}


def test_startup_recovers_a_transaction_killed_after_commit(home_factory: Callable[..., Home], app: FastAPI) -> None:
    twin = home_factory(name="twin")  # the same fresh state, to count the crash points on
    twin_package = twin.package("crm", files=router_backend("crm"))
    points = count_crash_points(lambda: twin.installer.install_file(twin_package))
    home = home_factory()
    package = home.package("crm", files=router_backend("crm"))
    # points - 2: just before the journal's `done` record is written, long after COMMIT (the
    # last point is the finished journal's move out of the folder writers look in)
    assert crash_at(lambda: home.installer.install_file(package), points - 2)
    assert pending_journals(home.config.journal_dir)  # killed before `done`
    loader = AddonLoader(home.config, app)
    loader.startup()
    assert not pending_journals(home.config.journal_dir)
    assert loader.status()["loaded"] == {"crm": "1.0.0"}
    assert TestClient(app).get("/api/v1/crm/ping").status_code == 200


def test_works_with_any_app_exposing_router_include_router_and_openapi_schema(home: Home) -> None:
    """No FastAPI needed: a duck-typed app object is enough."""

    class Router:
        def __init__(self) -> None:
            self.routes: list[object] = ["own-route"]

    class BareApp:
        def __init__(self) -> None:
            self.router = Router()
            self.openapi_schema: dict[str, object] | None = {"cached": True}

        def include_router(self, router: object) -> None:
            self.router.routes.extend(router.routes)

    install_router_addon(home, "crm")
    bare = BareApp()
    loader = AddonLoader(home.config, bare)
    loader.startup()
    assert bare.router.routes[0] == "own-route" and len(bare.router.routes) == 2
    assert bare.openapi_schema is None
    home.installer.disable("crm")
    loader.reload()
    assert bare.router.routes == ["own-route"]


# -- unmounting releases everything (issue 16) --------------------------------------------


def _engine_backend(plugin_id: str, database_url: str, ballast: int = 0) -> dict[str, str | bytes]:
    """A router and a SQLAlchemy engine holding one open connection, as a real addon's db.py would.

    ``dispose_engines()`` lives in a submodule (``db.py``), where the example plugins keep it;
    ``teardown()`` in the package records that it ran. ``ballast`` bytes make a leaked module visible in RSS.
    """
    return {
        "backend/__init__.py": (
            "from fastapi import APIRouter\n"
            "from sqlalchemy import text\n"
            "from .db import CONNECTION\n"
            f"BALLAST = bytearray({ballast})\n"
            "TORN_DOWN = []\n"
            f'router = APIRouter(prefix="/api/v1/{plugin_id}")\n'
            '@router.get("/ping")\n'
            "def ping() -> dict:\n"
            '    return {"one": CONNECTION.execute(text("SELECT 1")).scalar()}\n'
            "def teardown() -> None:\n"
            '    TORN_DOWN.append("teardown")\n'
        ),
        "backend/db.py": (
            "from sqlalchemy import create_engine\n"
            f"ENGINE = create_engine({database_url!r})\n"
            "CONNECTION = ENGINE.connect()\n"
            "def dispose_engines() -> None:\n"
            "    CONNECTION.close()\n"
            "    ENGINE.dispose()\n"
        ),
    }


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _open_descriptors() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def _slope(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of (cycle, value): growth per cycle."""
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in samples) / sum((x - mean_x) ** 2 for x, _ in samples)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_a_thousand_install_uninstall_cycles_leak_neither_memory_nor_descriptors(
    home_factory: Callable[..., Home], app: FastAPI, memory_tmp_path: Path
) -> None:
    """Issue 16: every remount kept the old router, its module globals and its engine alive through the lifespan chain."""
    import gc

    # The loader is under test, not the gate or the disk: keep the 2000 transactions quick.
    home = home_factory(health_check=False, under=memory_tmp_path)
    ballast = 256 * 1024  # a leaked module would add 256 MB over the run
    package = home.package("leaky", files=_engine_backend("leaky", home.config.database_url, ballast))
    installer = home.installer
    loader = AddonLoader(home.config, app)
    loader.startup()
    client = TestClient(app)
    lifespan, startup_handlers = app.router.lifespan_context, list(app.router.on_startup)
    rss: list[tuple[int, float]] = []
    descriptors: list[tuple[int, float]] = []
    cycles = 1000
    for cycle in range(cycles):
        installer.install_file(package)
        loader.reload()
        assert client.get("/api/v1/leaky/ping").json() == {"one": 1}
        installer.uninstall("leaky")
        loader.reload()
        if cycle % 10 == 9:
            installer.gc()  # finished journals: every writer scans them, 2000 would make the run quadratic
        if cycle % 50 == 49:
            gc.collect()
            rss.append((cycle, _rss_bytes() / 1e6))
            descriptors.append((cycle, _open_descriptors()))
    settled_rss, settled_fds = rss[2:], descriptors[2:]  # after warm-up (allocator arenas, import caches)
    assert max(v for _, v in settled_fds) - min(v for _, v in settled_fds) <= 2, descriptors
    # A leak of the module would be ~0.26 MB per cycle; allow well under a tenth of it (allocator noise).
    assert _slope(settled_rss) < 0.01, (f"RSS grows {_slope(settled_rss):.3f} MB per cycle", rss)
    assert app.router.lifespan_context is lifespan and app.router.on_startup == startup_handlers


def test_unload_calls_teardown_and_dispose_engines_then_drops_the_module(home: Home, app: FastAPI) -> None:
    home.installer.install_file(home.package("crm", files=_engine_backend("crm", home.config.database_url)))
    loader = AddonLoader(home.config, app)
    loader.startup()
    module, db = sys.modules["addons.crm"], sys.modules["addons.crm.db"]
    assert TestClient(app).get("/api/v1/crm/ping").json() == {"one": 1}
    home.installer.disable("crm")
    loader.reload()
    assert module.TORN_DOWN == ["teardown"]
    assert db.CONNECTION.closed and db.ENGINE.pool.checkedout() == 0
    assert not any(m.startswith("addons.crm") for m in sys.modules)


def test_a_failing_teardown_is_logged_and_the_addon_is_still_unloaded(home: Home, app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    files = router_backend("crm")
    files["backend/__init__.py"] = str(files["backend/__init__.py"]) + "def teardown() -> None:\n    raise RuntimeError('boom')\n"
    home.installer.install_file(home.package("crm", files=files))
    loader = AddonLoader(home.config, app)
    loader.startup()
    home.installer.uninstall("crm")
    loader.reload()
    assert "addons.crm" not in sys.modules and loader.status()["loaded"] == {}
    assert "addon crm teardown failed: RuntimeError: boom" in caplog.text
    assert TestClient(app).get("/api/v1/crm/ping").status_code == 404


# The plugin uses FastAPI's deprecated on_event on purpose: addons written that way must not leak handlers.
@pytest.mark.filterwarnings(r"ignore:\s*on_event is deprecated:DeprecationWarning")
def test_remount_leaves_the_app_lifespan_and_event_handlers_as_they_were(home: Home, app: FastAPI) -> None:
    files = router_backend("crm")
    files["backend/__init__.py"] = str(files["backend/__init__.py"]) + "@router.on_event('startup')\ndef started() -> None:\n    pass\n"
    home.installer.install_file(home.package("crm", files=files))
    lifespan, startup, shutdown = app.router.lifespan_context, list(app.router.on_startup), list(app.router.on_shutdown)
    loader = AddonLoader(home.config, app)
    loader.startup()
    for _ in range(3):
        home.installer.disable("crm")
        loader.reload()
        home.installer.enable("crm")
        loader.reload()
    assert TestClient(app).get("/api/v1/crm/ping").status_code == 200
    assert app.router.lifespan_context is lifespan
    assert (app.router.on_startup, app.router.on_shutdown) == (startup, shutdown)


def test_shutdown_tears_down_every_addon_dependents_first(home: Home, app: FastAPI) -> None:
    order_file = home.root / "teardown-order.txt"
    def recorder(pid: str) -> str:
        return f"def teardown() -> None:\n    with open({str(order_file)!r}, 'a') as f:\n        f.write('{pid}\\n')\n"
    home.installer.install_file(home.package("core", files={"backend/__init__.py": recorder("core")}))
    home.installer.install_file(home.package("user", requires=("core",), files={"backend/__init__.py": "import addons.core\n" + recorder("user")}))
    loader = AddonLoader(home.config, app)
    loader.startup()
    loader.shutdown()
    assert order_file.read_text().split() == ["user", "core"]
    assert loader.status() == {"loaded": {}, "failed": {}}
    assert not any(m.startswith("addons.") for m in sys.modules)
    assert _paths(app) == {"/own"}


def test_load_changes_imports_without_touching_the_routes_until_remount(home: Home, app: FastAPI) -> None:
    """A server imports in a worker thread while its loop serves the routes it had; the swap is remount()."""
    import threading

    loader = AddonLoader(home.config, app)
    loader.startup()
    install_router_addon(home, "crm")
    worker = threading.Thread(target=loader.load_changes)
    worker.start()
    worker.join(timeout=60)
    assert "addons.crm" in sys.modules and loader.status()["loaded"] == {"crm": "1.0.0"}
    client = TestClient(app)
    assert client.get("/api/v1/crm/ping").status_code == 404  # imported, not mounted yet
    loader.remount()
    assert client.get("/api/v1/crm/ping").json() == {"plugin": "crm", "version": "1.0.0"}


def test_gc_of_the_view_an_unchanged_addon_was_imported_through_breaks_none_of_its_imports(home: Home, app: FastAPI) -> None:
    """Found from outside: an addon kept its package path in the backend view of the generation it was
    first imported in; after other installs and a gc removed that view, its lazy imports failed (500)
    until a restart. An addon's paths are its store tree, which gc keeps while it is live."""
    lazy = {
        "backend/__init__.py": (
            "from fastapi import APIRouter\nrouter = APIRouter(prefix='/api/v1/crm')\n"
            "@router.get('/ping')\ndef ping() -> dict:\n    from .lazy import answer\n    return answer()\n"
        ),
        "backend/lazy.py": "def answer() -> dict:\n    return {'ok': True}\n",
        "backend/data.txt": "beside __file__\n",
    }
    home.installer.install_file(home.package("crm", files=lazy))
    loader = AddonLoader(home.config, app)
    loader.startup()
    for pid in ("alpha", "beta", "gamma"):
        home.installer.install_file(home.package(pid))
        loader.reload()
    assert home.installer.gc()["views"] >= 1
    assert TestClient(app).get("/api/v1/crm/ping").json() == {"ok": True}
    module = sys.modules["addons.crm"]
    assert (Path(module.__file__).parent / "data.txt").read_text() == "beside __file__\n"


def test_an_addon_that_failed_with_its_dependency_is_retried_when_the_dependency_changes(home_factory: Callable[..., Home], app: FastAPI) -> None:
    """Found from outside: `child` failed only because `base` did; base fixed and reloaded, child
    stayed failed with base's old reason until a restart."""
    home = home_factory(health_check=False)  # a backend that fails at import goes live
    home.installer.install_file(home.package("base", files={"backend/__init__.py": "raise RuntimeError('base 1.0.0 is broken')\n"}))
    home.installer.install_file(home.package("child", requires=("base>=1.0",), files={"backend/__init__.py": "from addons.base import helper\n"}))
    loader = AddonLoader(home.config, app)
    loader.startup()
    assert set(loader.status()["failed"]) == {"base", "child"}
    home.installer.install_file(home.package("base", "1.0.1", files={"backend/__init__.py": "def helper():\n    return 1\n"}))
    loader.reload()
    assert loader.status() == {"loaded": {"base": "1.0.1", "child": "1.0.0"}, "failed": {}}
