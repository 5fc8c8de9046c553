"""Safe extraction of plugin zips: never ``extractall`` (docs/design.md "Safe extraction").

``read_metadata`` validates an archive's structure (and its RECORD, if any) and
reads its metadata.json; ``extract`` unpacks it into a fresh folder, and
``extract_to_objects`` into the object store, streaming and hashing every file.
Every refusal is one ``PackageError`` line naming the entry and the rule.
"""

from __future__ import annotations

from atomicplug.safezip._archive import RATIO_FLOOR_BYTES, PackageSource
from atomicplug.safezip._extract import ExtractedFile, ExtractResult, entry_names, extract, read_entries, read_metadata
from atomicplug.safezip._names import METADATA_NAME, TOP_LEVEL_DIRS, TOP_LEVEL_DOC_PREFIXES, escaped, name_problem
from atomicplug.safezip._objects import ObjectExtraction, SourceSink, extract_to_objects

__all__ = [
    "SourceSink",
    "PackageSource",
    "extract",
    "extract_to_objects",
    "read_metadata",
    "read_entries",
    "entry_names",
    "ExtractResult",
    "ExtractedFile",
    "ObjectExtraction",
    "RATIO_FLOOR_BYTES",
    "METADATA_NAME",
    "TOP_LEVEL_DIRS",
    "TOP_LEVEL_DOC_PREFIXES",
    "name_problem",
    "escaped",
]
