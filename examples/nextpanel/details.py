"""A plugin's detail view: README and CHANGELOG rendered safely, permissions in words, versions, publisher key.

The facts come from the version's own package: the installed tree when that
version is installed, else the package downloaded (and verified: signature
and sha256 against the signed manifest) into the download cache. Markdown is
rendered with raw HTML escaped and only http(s)/mailto/relative links (the
renderer drops ``javascript:`` and ``data:`` URLs); the page's Content
Security Policy keeps external images out as well.
"""

from __future__ import annotations

import html
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomicplug.catalog import InstalledDescription, tree_path
from atomicplug.errors import NotInstalledError, SignatureError

from .models import PermissionText, PluginDetail, VersionInfo

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.repository.manifest import ManifestEntry

__all__ = ["PERMISSION_TEXT", "permission_text", "plugin_detail", "render_document"]

#: Documents larger than this are not rendered (a README is a few kB).
MAX_DOCUMENT_BYTES = 256 * 1024

#: Permission names (metadata.json ``permissions``) said for an admin.
PERMISSION_TEXT = {
    "database.create_tables": "Create its own tables in the panel's database",
    "database.read": "Read data that other plugins keep in the panel's database",
    "database.write": "Change data in the panel's database",
    "api.routes": "Add API endpoints to the panel",
    "api.register_routes": "Add API endpoints to the panel",
    "frontend.routes": "Add pages to the panel",
    "filesystem.write": "Write files on the server",
    "network.outbound": "Connect to services on the internet",
    "email.send": "Send email to your customers",
    "sms.send": "Send text messages to your customers",
}


def permission_text(name: str) -> str:
    return PERMISSION_TEXT.get(name, f"A permission this panel does not describe: {name}")


def render_document(name: str, text: str) -> str:
    """Markdown (README.md, CHANGELOG.md, or no extension) to HTML with raw HTML escaped; other text as <pre>."""
    if Path(name).suffix.lower() not in ("", ".md", ".markdown"):
        return f"<pre>{html.escape(text)}</pre>"
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


def _pick_document(names: list[str], stem: str) -> str | None:
    found = sorted(n for n in names if "/" not in n.rstrip("/") and n.upper().startswith(stem))
    return found[0] if found else None


class _Source:
    """Reads metadata.json, README* and CHANGELOG* from an installed tree or a verified zip."""

    def __init__(self, tree: Path | None = None, zip_path: Path | None = None) -> None:
        self.tree, self.zip_path = tree, zip_path

    def names(self) -> list[str]:
        if self.tree is not None:
            return sorted(p.name for p in self.tree.iterdir() if p.is_file())
        assert self.zip_path is not None
        with zipfile.ZipFile(self.zip_path) as archive:
            return archive.namelist()

    def read(self, name: str) -> str | None:
        try:
            if self.tree is not None:
                with open(self.tree / name, "rb") as handle:
                    raw = handle.read(MAX_DOCUMENT_BYTES + 1)
            else:
                assert self.zip_path is not None
                with zipfile.ZipFile(self.zip_path) as archive, archive.open(name) as member:
                    raw = member.read(MAX_DOCUMENT_BYTES + 1)
        except (OSError, KeyError, zipfile.BadZipFile):
            return None
        if len(raw) > MAX_DOCUMENT_BYTES:
            return None
        return raw.decode("utf-8", "replace")

    def document(self, stem: str) -> str | None:
        name = _pick_document(self.names(), stem)
        text = self.read(name) if name else None
        return render_document(name, text) if name and text is not None else None


def _key_id(signature_path: Path | None) -> str | None:
    if signature_path is None or not signature_path.is_file():
        return None
    from atomicplug import minisign

    try:
        return minisign.Signature.from_text(signature_path.read_text(encoding="utf-8")).key_id_hex
    except (OSError, SignatureError):  # a damaged cached signature only hides the key id
        return None


def plugin_detail(
    config: Config,
    plugin_id: str,
    version: str | None,
    entries: list[ManifestEntry],
    installed: dict[str, InstalledDescription],
    fetch: Callable[[ManifestEntry], tuple[Path, Path | None]],
) -> PluginDetail:
    """The detail of ``plugin_id`` at ``version`` (default: the installed one, else the newest offered).

    ``fetch`` downloads and verifies a repository entry, returning its zip and signature paths.
    Raises NotInstalledError when neither the registry nor the repository knows that version.
    """
    from packaging.version import Version

    mine = installed.get(plugin_id)
    offered = sorted(entries, key=lambda e: e.parsed_version)
    wanted = version or (mine.entry.version if mine else (offered[-1].version if offered else None))
    if wanted is None:
        raise NotInstalledError(f"{plugin_id} is neither installed nor offered by the repository")
    if mine is not None and Version(mine.entry.version) == Version(wanted):
        tree = tree_path(config, mine.entry)
        source, origin = _Source(tree=tree), "installed"
        key_id = mine.entry.signed_by  # recorded at install: the blob itself is gone once the tree is made
    else:
        entry = next((e for e in offered if e.parsed_version == Version(wanted)), None)
        if entry is None:
            raise NotInstalledError(f"{plugin_id} {wanted} is neither installed nor offered by the repository")
        zip_path, sig_path = fetch(entry)
        source, origin = _Source(zip_path=zip_path), "repository"
        key_id = _key_id(sig_path)
    raw_meta = source.read("metadata.json")
    meta: dict[str, Any] = json.loads(raw_meta) if raw_meta else {}
    required_by = sorted(
        pid for pid, other in installed.items() if any(_requirement_id(r) == plugin_id for r in other.entry.requires)
    )
    versions = sorted({e.version for e in offered} | ({mine.entry.version} if mine else set()), key=Version, reverse=True)
    return PluginDetail(
        id=plugin_id,
        name=str(meta.get("name") or plugin_id),
        version=wanted,
        source=origin,  # type: ignore[arg-type]
        description=str(meta.get("description") or ""),
        author=str(meta.get("author") or ""),
        category=str(meta.get("category") or ""),
        price=meta.get("price"),
        permissions=[PermissionText(name=p, text=permission_text(p)) for p in meta.get("permissions") or []],
        requires=[str(r) for r in meta.get("requires") or []],
        required_by=required_by,
        versions=[
            VersionInfo(version=v, installed=bool(mine and mine.entry.version == v), in_repository=any(e.version == v for e in offered))
            for v in versions
        ],
        installed_version=mine.entry.version if mine else None,
        publisher_key_id=key_id,
        readme_html=source.document("README"),
        changelog_html=source.document("CHANGELOG"),
    )


def _requirement_id(text: str) -> str:
    from atomicplug.metadata import PluginRequirement

    return PluginRequirement.parse(text).id
