"""Installs from the repository with download bytes reported: today's adapter around the library.

The library reports stages as text and draws download progress only on a
terminal; until it takes a download progress callback, :class:`PanelInstaller`
downloads (and verifies) the packages first with the library's own calls,
counting bytes through a response hook on its ``requests`` session, so the
install that follows finds them verified in the download cache. The downgrade
path (:func:`install_versions`) is the library's ``Installer.install`` with
``allow_downgrade``, which that method does not take yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atomicplug.config import Config
from atomicplug.installer import Installer, TransactionResult
from atomicplug.repository.manifest import ManifestEntry

__all__ = ["DownloadProgress", "PanelInstaller", "install_versions"]

#: ``(plugin_id, version, received, total)``: bytes of one package download so far.
DownloadProgress = Callable[[str, str, int, int], None]


class PanelInstaller(Installer):
    """An Installer that can report package download bytes (see :meth:`prefetch`)."""

    def __init__(self, config: Config, progress: Callable[[str], None] | None = None, on_download: DownloadProgress | None = None) -> None:
        super().__init__(config, progress=progress)
        self.on_download = on_download

    def prefetch(self, specs: list[str], *, upgrade: bool = False) -> None:
        """Download and verify what ``install(specs, upgrade=...)`` will need, reporting bytes.

        The same library calls the installer makes (signed manifest, resolve,
        size cap, sha256, package signature), so a refusal here is the one the
        install would give.
        """
        from atomicplug.repository.remote import fetch_package, installed_versions, load_manifest, make_fetcher
        from atomicplug.repository.resolver import resolve

        fetcher = make_fetcher(self.config)
        manifest = load_manifest(self.config, fetcher=fetcher)
        entries = resolve(manifest, specs, installed_versions(self.config), upgrade=upgrade)
        watched: dict[str, ManifestEntry] = {fetcher.url(e.download_url): e for e in entries}
        report = self.on_download

        def count_bytes(response: Any, *_: Any, **__: Any) -> Any:
            first = response.history[0].url if response.history else response.url  # after redirects too
            entry = watched.get(first) or watched.get(response.url)
            if entry is None or report is None or response.status_code not in (200, 206):
                return response
            start = 0
            if response.status_code == 206:  # a resumed download: Content-Range "bytes N-M/T"
                try:
                    start = int(response.headers.get("Content-Range", "").split()[1].split("-")[0])
                except (IndexError, ValueError):
                    start = 0
            chunks = response.iter_content
            state = {"received": start}

            def counted(chunk_size: int | None = 1, decode_unicode: bool = False) -> Any:
                for chunk in chunks(chunk_size, decode_unicode):
                    state["received"] += len(chunk)
                    report(entry.id, entry.version, min(state["received"], entry.size), entry.size)
                    yield chunk

            response.iter_content = counted
            return response

        fetcher.session.hooks["response"].append(count_bytes)
        for entry in entries:
            self.progress(f"downloading {entry.id} {entry.version} ({entry.size} bytes)")
            if report is not None:
                report(entry.id, entry.version, 0, entry.size)
            fetch_package(self.config, entry, fetcher=fetcher)
            if report is not None:
                report(entry.id, entry.version, entry.size, entry.size)  # also when it came from the cache
            self.progress(f"verified {entry.id} {entry.version}: sha256 and signature")


def install_versions(installer: Installer, specs: list[str], *, allow_downgrade: bool) -> TransactionResult:
    """``installer.install(specs)``, passing ``allow_downgrade`` to the transaction."""
    return installer.install(specs, allow_downgrade=allow_downgrade)
