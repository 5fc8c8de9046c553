"""The package layout (docs/design.md "Package format"): what may stand at a zip's top level.

One rule shared by ``pack`` (what it puts in) and the safe extractor (what it lets out).
"""

from __future__ import annotations

__all__ = [
    "METADATA_NAME",
    "RECORD_NAME",
    "TOP_LEVEL_DIRS",
    "TOP_LEVEL_DOC_PREFIXES",
    "ALLOWED_TOP_LEVEL",
    "top_level_allowed",
    "is_backend_source",
]

METADATA_NAME = "metadata.json"
#: The package's file list with sizes and sha256, written by ``pack`` (see atomicplug.package_record).
RECORD_NAME = "RECORD"
TOP_LEVEL_DIRS = frozenset({"backend", "frontend", "migrations"})
TOP_LEVEL_DOC_PREFIXES = ("README", "LICENSE", "CHANGELOG")
ALLOWED_TOP_LEVEL = "metadata.json, RECORD, backend/, frontend/, migrations/, README*, LICENSE*, CHANGELOG*"


def top_level_allowed(name: str, is_dir: bool) -> bool:
    """Folders backend/, frontend/, migrations/; files metadata.json, RECORD and README*/LICENSE*/CHANGELOG* (any case)."""
    if is_dir:
        return name in TOP_LEVEL_DIRS
    return name in (METADATA_NAME, RECORD_NAME) or name.upper().startswith(TOP_LEVEL_DOC_PREFIXES)


def is_backend_source(relative: str) -> bool:
    """A backend module's source (posix, relative to the tree): atomicplug stores its pyc beside it."""
    return relative.startswith("backend/") and relative.endswith(".py")
