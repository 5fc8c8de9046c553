"""Stage 3b, extract: the safe extractor into ``staging/<txid>/<id>``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.fsutil import make_dirs

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.safezip import ContentSink, ExtractResult

__all__ = ["staging_tree", "extract_package"]


def staging_tree(config: Config, txid: str, plugin_id: str) -> Path:
    return config.staging_dir / txid / plugin_id


def extract_package(
    config: Config, txid: str, plugin_id: str, zip_path: Path, sink: ContentSink | None = None
) -> ExtractResult:
    """Extract a verified zip into its shadow folder; refusals raise PackageError.

    Not yet durable: :func:`atomicplug.stages.stage.install_tree` syncs the tree
    once, after adding the pycs and the record. ``sink`` (the background
    compiler) gets each backend source as it is written.
    """
    from atomicplug import safezip

    target = staging_tree(config, txid, plugin_id)
    make_dirs(target.parent)
    if target.exists():  # left by an earlier attempt of this same txid: start clean
        from atomicplug.fsutil import remove_tree

        remove_tree(target)
    return safezip.extract(zip_path, target, config.limits, durable=False, sink=sink)
