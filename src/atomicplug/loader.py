"""Load enabled addons into a running web application, and keep them in step.

docs/design.md "Interfaces": the billing backend runs recovery on startup, imports
every enabled addon's backend as ``<package>.<id>`` from the config's
``backend_addons`` folder and mounts its FastAPI ``router``; after every
install, uninstall, enable, disable or rollback it calls :meth:`AddonLoader.reload`
so routes appear and disappear without a restart.

Reloading re-imports only what changed (the link now resolves to another
store tree, or the addon came or went) and the addons that require it, so
module-level state of untouched addons survives. It has two halves:
:meth:`AddonLoader.load_changes` does the slow part (teardowns, imports —
an addon's first import may pull in SQLAlchemy, hundreds of milliseconds —
and ``configure``) and may run in a worker thread while the application keeps
serving; :meth:`AddonLoader.remount` then swaps the route table, which takes
microseconds and belongs on the application's event loop. ``reload()`` is
both, in the caller's thread. An addon that fails to
import is logged, listed in :attr:`AddonLoader.failures` and skipped: the
application keeps serving. FastAPI is not imported here; any app object with
``router.routes``, ``include_router`` and ``openapi_schema`` will do.

Unloading releases everything (issue 16), so a backend can install and remove
addons for as long as it runs:

* The addon's routes leave the route table, and the app's router keeps its
  own ``lifespan_context``, ``on_startup`` and ``on_shutdown``: FastAPI's
  ``include_router`` wraps the app's lifespan around each included router's
  (and appends its event handlers), a chain that kept every old router, its
  endpoints and module globals alive. An addon router's lifespan and event
  handlers are therefore never run: the app started before the addon was
  mounted. Startup work belongs at import time.
* **Teardown hook.** Before the modules are dropped, the loader calls, once
  each and dependents first, the addon package's ``teardown()`` and every
  ``dispose_engines()`` defined in one of the addon's modules (the example
  plugins keep theirs in ``db.py``). Close connections, engines, threads and
  files there. A hook that raises is logged; the addon is unloaded anyway.
* ``<package>.<id>`` and its submodules leave ``sys.modules`` and the import
  system's caches for the addon's folders.
* FastAPI's memo caches of endpoint callables are emptied (see
  :func:`_forget_framework_caches`): they held up to 4096 old endpoints, and
  with them their modules' globals.

:meth:`AddonLoader.shutdown` tears every addon down; call it when the app stops.

**Settings** (docs/design.md "Plugin settings"): an addon package that
defines ``configure(settings)`` is called with its settings (the schema's
defaults overridden by the stored values, secrets included: they are for the
plugin) right after it is imported, and again by any ``reload()`` that finds
them changed (``Installer.configure``). A ``configure`` that raises is logged;
the addon stays loaded.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys
import threading
import traceback
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from atomicplug import generations
from atomicplug.errors import AtomicplugError, LockBusyError
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from atomicplug.cluster.watch import Watcher
    from atomicplug.config import Config

__all__ = ["AddonLoader", "LoadedAddon", "WebApp"]

log = logging.getLogger("atomicplug.loader")


class _Router(Protocol):
    @property
    def routes(self) -> list[Any]: ...


class WebApp(Protocol):
    """What the loader needs of the application (a ``fastapi.FastAPI`` has it)."""

    @property
    def router(self) -> _Router: ...

    openapi_schema: dict[str, Any] | None

    def include_router(self, router: Any) -> None: ...


@attrs.frozen
class LoadedAddon:
    """One imported addon: the store tree it came from and its router (if any)."""

    id: str
    version: str
    target: str  # the store backend folder the link resolved to when imported
    module: types.ModuleType
    router: Any | None


class AddonLoader:
    """Import enabled addons as ``<package>.<id>`` and mount their routers on ``app``."""

    def __init__(self, config: Config, app: WebApp, package: str = "addons", *, lock_timeout: float | None = None) -> None:
        self.config = config
        self.app = app
        self.package = package
        self.lock_timeout = config.lock_timeout if lock_timeout is None else lock_timeout
        self.loaded: dict[str, LoadedAddon] = {}
        self.failures: dict[str, str] = {}  # id → one-line reason its import failed
        self._failed_targets: dict[str, str | None] = {}
        self._mounted: list[Any] = []  # the route objects this loader added to app.router.routes
        self._pinned: str | None = None  # the backend view ``<package>.__path__`` holds
        self._released: list[Any] = []  # endpoints of routers unloaded since the last remount
        self._watcher: Watcher | None = None  # cluster mode: the LISTEN thread
        self._configured: dict[str, dict[str, Any]] = {}  # id → the settings its configure() got last
        self._loading = threading.Lock()  # load_changes: one thread at a time

    # -- lifecycle --------------------------------------------------------------
    def startup(self) -> None:
        """Recover unfinished transactions (cluster mode: and sync), then import and mount every enabled addon."""
        self.recover()
        self.sync()
        self.reload()

    # -- cluster mode (docs/design.md "Beyond one machine") -------------------------------
    def sync(self) -> None:
        """Cluster mode: bring this node to the desired generation before routes are mounted.

        A package that cannot be applied, or a database out of reach, is logged:
        the node serves its last good generation (the watcher retries).
        """
        if not self.config.cluster:
            return
        from atomicplug.cluster.sync import sync
        from atomicplug.errors import AtomicplugError

        try:
            result = sync(attrs.evolve(self.config, lock_timeout=self.lock_timeout), log.info)
        except AtomicplugError as exc:
            log.warning("cluster sync skipped: %s", exc)
            return
        if result.error is not None:
            log.error("%s", result.failure)

    def watch(self, schedule: Callable[[Callable[[], None]], None]) -> None:
        """Cluster mode: LISTEN in a thread and sync on every notification; after each switch
        :meth:`load_changes` in that thread, then ``schedule(self.remount)`` (e.g.
        ``loop.call_soon_threadsafe``: routes change on the app's loop)."""
        if not self.config.cluster or self._watcher is not None:
            return
        from atomicplug.cluster.watch import Watcher

        def switched() -> None:
            self.load_changes()  # the imports in the watcher's thread,
            schedule(self.remount)  # the route swap on the app's loop

        self._watcher = Watcher(self.config, progress=log.info, on_switched=switched)
        self._watcher.start()

    def recover(self) -> list[tuple[str, str]]:
        """``Installer.recover()``; a lock held by a running operation is logged, not fatal."""
        from atomicplug.installer import Installer

        try:
            outcomes = Installer(attrs.evolve(self.config, lock_timeout=self.lock_timeout)).recover()
        except LockBusyError as exc:
            log.warning("addon recovery skipped: %s", exc)
            return []
        for txid, direction in outcomes:
            log.info("recovered transaction %s: rolled %s", txid, direction)
        return outcomes

    def shutdown(self) -> None:
        """Tear down and unload every addon (dependents first) and unmount their routes: the app is stopping."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for pid in self._unload_order(set(self.loaded) | set(self._failed_targets)):
            self._unload(pid)
        self.remount()

    def reload(self) -> None:
        """Bring imported modules and mounted routes in line with the registry and links.

        Only addons whose link now resolves elsewhere (or that came or went),
        and the addons requiring them, are re-imported; a failed addon is
        retried when its tree changes.
        """
        self.load_changes()
        self.remount()

    def load_changes(self) -> None:
        """The slow half of :meth:`reload`: unload what changed, import what is new, hand out settings.

        Safe in a worker thread while requests are served (two callers take
        turns: the panel's operations and cluster mode's watcher may both
        reload); the route table keeps the routes mounted so far until
        :meth:`remount`, which the caller runs next, on the thread that serves
        requests.
        """
        with self._loading:
            self._apply_changes()

    def _apply_changes(self) -> None:
        view, registry_path = self._pin()
        self._ensure_package(view)
        # The registry of the pinned generation, not the live link: both must describe the same generation.
        registry = Registry.load(registry_path)
        wanted = self._wanted(registry, view)
        gone = self._gone(registry, view)
        current = {pid: a.target for pid, a in self.loaded.items()} | self._failed_targets
        stale = {pid for pid, target in current.items() if wanted.get(pid) != target}
        stale |= self._dependents(registry, stale)
        for pid in self._unload_order(stale):
            self._unload(pid)
        if stale:
            importlib.invalidate_caches()
        for pid in sorted(gone):
            if pid not in self.failures:
                self._fail(pid, registry.plugins[pid].version, None, "its backend entry leads to no folder (store tree or view removed?): "
                           "`atomicplug verify` names it; installing it again repairs it")  # fmt: skip
        for pid in _dependencies_first(registry, sorted(wanted)):
            if pid not in self.loaded and pid not in self.failures:
                self._load(pid, registry.plugins[pid].version, wanted[pid])
        self._configure(registry)

    # -- importing --------------------------------------------------------------
    def _pin(self) -> tuple[str, Path]:
        """The live generation's backend view and registry, from one resolution of ``<home>/current``.

        The addon folder is a link to ``<home>/current/backend``; ``current`` is resolved
        once per reload and both read inside the generation it resolved to, so every import
        of this reload comes from one whole generation even if a transaction switches
        ``current`` meanwhile (docs/design.md "Generations"). The view itself may be shared
        with other generations, so the registry is not beside it. A folder from before
        generations: itself, and the live registry.
        """
        live = self.config.home / generations.CURRENT
        folder = self.config.backend_addons
        if not (folder.is_symlink() and Path(os.readlink(folder)) == live / generations.BACKEND):
            return os.path.realpath(folder), self.config.registry_path
        generation = os.path.realpath(live)
        return os.path.realpath(os.path.join(generation, generations.BACKEND)), Path(generation, generations.REGISTRY_NAME)

    def _ensure_package(self, pinned: str) -> None:
        """Make ``<package>`` a package whose ``__path__`` is ``pinned``, the live generation's backend view."""
        module = sys.modules.get(self.package)
        if module is None:
            module = types.ModuleType(self.package, "Addons loaded by atomicplug (synthetic package).")
            module.__spec__ = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
            module.__path__ = []
            sys.modules[self.package] = module
        path = getattr(module, "__path__", None)
        if path is None:
            raise TypeError(f"{self.package!r} is already imported and is not a package; choose another package name")
        if self._pinned is not None and self._pinned in path:
            path.remove(self._pinned)
        if pinned not in path:
            path.insert(0, pinned)
        self._pinned = pinned
        if module.__spec__ is not None and module.__spec__.submodule_search_locations is not None:
            module.__spec__.submodule_search_locations = list(path)

    def _wanted(self, registry: Registry, view: str) -> dict[str, str]:
        """Enabled addons with a backend entry in the pinned view: id → the store folder it resolves to."""
        wanted = {}
        for pid, entry in registry.plugins.items():
            link = os.path.join(view, pid)
            if entry.enabled and os.path.isdir(link):
                wanted[pid] = os.path.realpath(link)
        return wanted

    def _gone(self, registry: Registry, view: str) -> set[str]:
        """Enabled addons whose tree has a backend (as the registry recorded it) and whose entry in the
        pinned view leads to no folder: their tree or the view was removed. A failure, not a silence."""
        return {
            pid for pid, entry in registry.plugins.items()
            if entry.enabled and entry.current.backend is True and not os.path.isdir(os.path.join(view, pid))
        }  # fmt: skip

    def _dependents(self, registry: Registry, changed: set[str]) -> set[str]:
        """Addons that (transitively) require a changed one: a loaded one holds stale references, a
        failed one may have failed for the dependency (retried, not left failed until a restart)."""
        return set(registry.dependents(changed, set(self.loaded) | set(self.failures)))

    def _load(self, pid: str, version: str, target: str) -> None:
        """Import ``<package>.<id>`` afresh: a module someone else left may come from another tree.

        Dependencies are loaded first, so a dependent's ``from addons.<dep> import``
        binds to the module loaded here.
        """
        name = f"{self.package}.{pid}"
        if name in sys.modules:
            self._purge(pid)
            importlib.invalidate_caches()
        try:
            module = importlib.import_module(name)
            router = getattr(module, "router", None)
            if router is not None and not isinstance(getattr(router, "routes", None), list):
                raise TypeError(f"'router' must be an APIRouter (got {type(router).__name__})")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any addon failure must leave the app serving
            self._fail(pid, version, target, traceback.format_exception_only(type(exc), exc)[-1].strip())
            self._purge(pid)
            return
        self._rehome(pid, target)
        self.loaded[pid] = LoadedAddon(id=pid, version=version, target=target, module=module, router=router)
        log.info("addon %s %s loaded%s", pid, version, " with routes" if router is not None else "")

    def _fail(self, pid: str, version: str, target: str | None, reason: str) -> None:
        """Report ``pid`` as failed, kept so until its target changes (None: it has none)."""
        log.error("addon %s %s failed to load, skipped: %s", pid, version, reason)
        self.failures[pid] = reason
        self._failed_targets[pid] = target

    def _rehome(self, pid: str, target: str) -> None:
        """Point ``<package>.<id>`` and its submodules at its store tree (``target``), not the backend
        view it was imported through: a view is gc's once no kept generation shows it, while the tree
        stays as long as the addon is live, so lazy imports and files beside ``__file__`` keep working
        (docs/design.md "Generations"). The tree is the same files the view's link leads to."""
        name = f"{self.package}.{pid}"
        entry = os.path.join(self._pinned or "", pid)
        for module_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            module = sys.modules[module_name]
            for attribute in ("__file__", "__cached__"):
                value = getattr(module, attribute, None)
                if isinstance(value, str) and value.startswith(entry + os.sep):
                    setattr(module, attribute, target + value[len(entry) :])
            spec = getattr(module, "__spec__", None)
            if spec is not None and isinstance(spec.origin, str) and spec.origin.startswith(entry + os.sep):
                spec.origin = target + spec.origin[len(entry) :]
            path = getattr(module, "__path__", None)
            if isinstance(path, list):
                path[:] = [target + p[len(entry) :] if p == entry or p.startswith(entry + os.sep) else p for p in path]
                if spec is not None and spec.submodule_search_locations is not None:
                    spec.submodule_search_locations = list(path)

    def _configure(self, registry: Registry) -> None:
        """Hand each loaded addon with a ``configure`` its settings, when they are new to it."""
        from atomicplug.settings.apply import effective_settings

        hooks = {pid: addon for pid, addon in self.loaded.items() if callable(getattr(addon.module, "configure", None))}
        if not hooks:
            return
        try:
            values = effective_settings(self.config, [registry.plugins[pid] for pid in sorted(hooks)])
        except AtomicplugError as exc:
            log.error("addon settings could not be read, configure() not called: %s", exc)
            return
        for pid, addon in hooks.items():
            settings = values.get(pid, {})
            if self._configured.get(pid) == settings:
                continue
            self._configured[pid] = settings
            try:
                addon.module.configure(dict(settings))
            except Exception as exc:  # noqa: BLE001 - a broken configure must not unload the app's other addons
                reason = traceback.format_exception_only(type(exc), exc)[-1].strip()
                log.error("addon %s %s configure() failed: %s", pid, addon.version, reason)

    def _unload_order(self, pids: set[str]) -> list[str]:
        """``pids`` dependents first: the reverse of the order they were loaded in (dependencies first)."""
        loaded = [pid for pid in reversed(list(self.loaded)) if pid in pids]
        return loaded + sorted(pids - set(loaded))

    def _unload(self, pid: str) -> None:
        """Run the addon's teardown hooks, then forget it (its routes go at the next remount)."""
        addon = self.loaded.pop(pid, None)
        if addon is not None:
            self._teardown(addon)
            if addon.router is not None:
                self._released.extend(_endpoints(addon.router))
        self.failures.pop(pid, None)
        self._failed_targets.pop(pid, None)
        self._configured.pop(pid, None)
        self._purge(pid)

    def _teardown(self, addon: LoadedAddon) -> None:
        """Call the package's ``teardown()`` and each module's own ``dispose_engines()``; log what raises."""
        name = addon.module.__name__
        modules = [m for n, m in list(sys.modules.items()) if (n == name or n.startswith(name + ".")) and m is not None]
        hooks = [(addon.module, "teardown")] + [(m, "dispose_engines") for m in modules]
        for module, attribute in hooks:
            hook = getattr(module, attribute, None)
            if not callable(hook) or getattr(hook, "__module__", module.__name__) != module.__name__:
                continue  # absent, or re-exported from another module: called where it is defined
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - a broken teardown must not keep the addon loaded
                reason = traceback.format_exception_only(type(exc), exc)[-1].strip()
                log.error("addon %s %s failed: %s", addon.id, attribute, reason)

    def _purge(self, pid: str) -> None:
        """Forget ``<package>.<id>``, its submodules and its folders' finders so the next import reads the new tree."""
        name = f"{self.package}.{pid}"
        for module_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            module = sys.modules.pop(module_name)
            for folder in getattr(module, "__path__", None) or ():
                sys.path_importer_cache.pop(folder, None)
        parent = sys.modules.get(self.package)
        if parent is not None and hasattr(parent, pid):
            delattr(parent, pid)

    # -- mounting ---------------------------------------------------------------
    def remount(self) -> None:
        """Rebuild the app's routes: its own ones, then each loaded addon's, in id order (the fast half of :meth:`reload`).

        The app router's lifespan and event handlers are put back as they were:
        ``include_router`` would chain each addon router into them (see the module docstring).
        """
        app_router = self.app.router
        routes = app_router.routes
        mine = {id(r) for r in self._mounted}
        own = [r for r in routes if id(r) not in mine]
        routes[:] = own
        saved = _RouterHooks.save(app_router)
        # A copy taken in one step: cluster mode's watcher may be changing ``loaded`` in its thread
        # (its own remount, scheduled after, mounts what it ends with).
        loaded = sorted(list(self.loaded.items()), key=lambda item: item[0])
        try:
            for _pid, addon in loaded:
                if addon.router is not None:
                    self.app.include_router(addon.router)
        finally:
            saved.restore(app_router)
        self._mounted = routes[len(own) :]
        released, self._released = self._released, []
        if released:
            _forget_framework_caches(released)
        mark_changed = getattr(app_router, "_mark_routes_changed", None)
        if callable(mark_changed):  # FastAPI versions that cache the route table by a version number
            mark_changed()
        self.app.openapi_schema = None  # FastAPI caches it; the next /openapi.json is rebuilt

    # -- reading ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Loaded addons (id → version) and failures (id → reason), for a health endpoint."""
        return {
            "loaded": {pid: self.loaded[pid].version for pid in sorted(self.loaded)},
            "failed": dict(sorted(self.failures.items())),
        }


@attrs.frozen
class _RouterHooks:
    """A router's lifespan and event handler lists, as they were before ``include_router``."""

    lifespan: Any
    on_startup: list[Any] | None
    on_shutdown: list[Any] | None

    @classmethod
    def save(cls, router: Any) -> _RouterHooks:
        def copy(name: str) -> list[Any] | None:
            handlers = getattr(router, name, None)
            return list(handlers) if isinstance(handlers, list) else None

        return cls(lifespan=getattr(router, "lifespan_context", None), on_startup=copy("on_startup"), on_shutdown=copy("on_shutdown"))

    def restore(self, router: Any) -> None:
        if self.lifespan is not None:
            router.lifespan_context = self.lifespan
        for name, handlers in (("on_startup", self.on_startup), ("on_shutdown", self.on_shutdown)):
            if handlers is not None:
                getattr(router, name)[:] = handlers


def _endpoints(router: Any) -> list[Any]:
    """The endpoint callables of ``router`` and of the routers it includes."""
    found = []
    for route in getattr(router, "routes", ()):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None:
            found.append(endpoint)
        nested = getattr(route, "original_router", None)  # FastAPI versions that keep included routers whole
        if nested is not None:
            found.extend(_endpoints(nested))
    return found


def _forget_framework_caches(endpoints: list[Any]) -> None:
    """Drop FastAPI's memoized facts about unloaded endpoints, so their modules can be freed.

    Newer FastAPI versions classify every endpoint and dependency callable in
    ``lru_cache``s of 4096 entries each (``fastapi.dependencies.models``) that
    hold the callable itself, and keep an unbounded ``id(endpoint)`` → source
    location dict (``fastapi.routing``) whose ids a later function may reuse.
    Both are pure memoization, refilled on the next request; a version without
    them is left alone.
    """
    models = sys.modules.get("fastapi.dependencies.models")
    for name in ("_is_gen_callable_cached", "_is_async_gen_callable_cached", "_is_coroutine_callable_cached"):
        clear = getattr(getattr(models, name, None), "cache_clear", None)
        if callable(clear):
            clear()
    contexts = getattr(sys.modules.get("fastapi.routing"), "_endpoint_context_cache", None)
    if isinstance(contexts, dict):
        for endpoint in endpoints:
            contexts.pop(id(endpoint), None)


def _dependencies_first(registry: Registry, plugin_ids: list[str]) -> list[str]:
    """``plugin_ids`` ordered so that every addon comes after the addons it requires."""
    from atomicplug.metadata import PluginRequirement

    order: list[str] = []
    wanted = set(plugin_ids)

    def visit(pid: str, chain: tuple[str, ...]) -> None:
        if pid in order or pid in chain:
            return
        for text in registry.plugins[pid].requires:
            dep = PluginRequirement.parse(text).id
            if dep in wanted:
                visit(dep, (*chain, pid))
        order.append(pid)

    for pid in plugin_ids:
        visit(pid, ())
    return order
