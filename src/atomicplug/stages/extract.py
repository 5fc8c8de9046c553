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
    config: Config, txid: str, plugin_id: str, sha256: str, sink: ContentSink | None = None
) -> ExtractResult:
    """Extract the verified blob of ``sha256`` into its shadow folder; refusals raise PackageError.

    Only the blob intake made is opened, and its sha256 is checked again on the
    very file object the extractor then reads (docs/design.md "Intake").

    Not yet durable: :func:`atomicplug.stages.stage.install_tree` syncs the tree
    once, after adding the pycs and the record. ``sink`` (the background
    compiler) gets each backend source as it is written.
    """
    from atomicplug import safezip
    from atomicplug.intake import open_blob

    target = staging_tree(config, txid, plugin_id)
    make_dirs(target.parent)
    if target.exists():  # left by an earlier attempt of this same txid: start clean
        from atomicplug.fsutil import remove_tree

        remove_tree(target)
    with open_blob(config, sha256) as blob:
        return safezip.extract(blob, target, config.limits, durable=False, sink=sink)
