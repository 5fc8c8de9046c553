"""``<frontend_addons>/index.ts``: rendered from the registry, read back by verify and tests.

Why it looks as it does (docs/design.md "Frontend contract"):
- each enabled addon is imported through the one static ``.store`` link by its store
  tree's path, unique per version (``<id>/<version>-<sha12>``): a dev server that cached
  1.0.0's modules never serves them for 1.1.0, and the one atomic replace of index.ts
  switches every addon at once;
- import names are ``addon_<id>``: an id is a lowercase identifier, so the name is one too,
  never a reserved word (id ``public``) nor one of the names the index exports (id ``addons``);
- the header and ``generation`` carry the number of the generation (``<home>/generations/<n>``)
  that last changed the list; numbers only grow, so the file's text changes on every
  transaction that changes a frontend tree, and watchers see it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from atomicplug.frontend.contract import MARKER, STORE_LINK

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import Registry

__all__ = ["AddonImport", "AddonIndex", "addon_imports", "load_index"]

_STORE_PREFIX = "store/"
_HEADER = re.compile(rf"{re.escape(MARKER)}: addon index, generation (\d+)\.")
_IMPORT = re.compile(r'import addon_([a-z][a-z0-9_]*) from ("[^"\n]+");')
_SPECIFIER_TAIL = "/frontend/addon.config"
_IMPORT_START = "import addon_"


@attrs.frozen
class AddonImport:
    """One enabled addon as index.ts imports it: its id and store tree (relative to home)."""

    plugin_id: str
    tree: str

    @property
    def name(self) -> str:
        return f"addon_{self.plugin_id}"

    @property
    def specifier(self) -> str:
        return f"./{STORE_LINK}/{self.tree.removeprefix(_STORE_PREFIX)}{_SPECIFIER_TAIL}"


@attrs.frozen
class AddonIndex:
    """The index's content: the generation that wrote it and the imported addons, sorted by id."""

    generation: int
    imports: tuple[AddonImport, ...] = ()

    @property
    def trees(self) -> dict[str, str]:
        """Plugin id → the store tree index.ts imports for it."""
        return {item.plugin_id: item.tree for item in self.imports}

    def render(self) -> str:
        lines = [
            f"{MARKER}: addon index, generation {self.generation}. Do not edit; every transaction",
            "// that changes an addon's frontend rewrites it.",
            "import type { AddonConfig } from './types';",
        ]
        lines += self.import_lines()
        lines += [
            "",
            "export type { AddonConfig, AddonRoute, AddonWidget, LazyComponent } from './types';",
            "",
            "/** The generation (<home>/generations/<n>) of the last transaction that changed the list below. */",
            f"export const generation = {self.generation};",
            "",
            "/** The enabled addons, by id. */",
        ]
        if self.imports:
            lines += ["export const addons: AddonConfig[] = [", *(f"  {item.name}," for item in self.imports), "];"]
        else:
            lines.append("export const addons: AddonConfig[] = [];")
        return "\n".join(lines) + "\n"

    def import_lines(self) -> list[str]:
        """One ``import addon_<id> from "<specifier>";`` line per addon, as :meth:`render` writes them."""
        # JSON strings are JavaScript strings: whatever a version holds stays inside the quotes
        # (json.dumps of a str, without its per-call set-up: 1000 of them every transaction).
        quote = json.encoder.encode_basestring_ascii
        return [f"{_IMPORT_START}{item.plugin_id} from {quote(item.specifier)};" for item in self.imports]

    def lists_the_same_as(self, text: str) -> bool:
        """Whether ``text`` (index.ts) is an index of ours importing exactly these addons, in order.

        Its import lines are compared as text with the ones :meth:`render` would write, not
        parsed: a transaction asks this with every plugin enabled (1000 lines, issue 14).
        """
        if _HEADER.match(text) is None:
            return False
        return [line for line in text.split("\n") if line.startswith(_IMPORT_START)] == self.import_lines()

    @classmethod
    def parse(cls, text: str) -> AddonIndex | None:
        """Read an index this module rendered; None for anything else (an older format too)."""
        header = _HEADER.match(text)
        if header is None:
            return None
        imports = []
        for match in _IMPORT.finditer(text):
            specifier = json.loads(match.group(2))
            prefix = f"./{STORE_LINK}/"
            if not (specifier.startswith(prefix) and specifier.endswith(_SPECIFIER_TAIL)):
                return None
            tree = _STORE_PREFIX + specifier[len(prefix) : -len(_SPECIFIER_TAIL)]
            imports.append(AddonImport(match.group(1), tree))
        return cls(int(header.group(1)), tuple(imports))


def addon_imports(config: Config, registry: Registry) -> tuple[AddonImport, ...]:
    """The enabled plugins whose tree has ``frontend/addon.config.ts`` (or ``.tsx``), by id."""
    home = str(config.home)
    result = []
    for plugin_id in sorted(registry.plugins):
        entry = registry.plugins[plugin_id]
        # Known from the registry entry once a generation was built with it; probed otherwise.
        if entry.enabled and entry.current.with_parts_known(home).frontend:
            result.append(AddonImport(plugin_id, entry.current.tree))
    return tuple(result)


def load_index(path: Path) -> AddonIndex | None:
    """The index at ``path`` (None when missing or not ours), parsed once per version of the file.

    ``verify`` asks once per installed plugin; the file is parsed again only when it changed.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return _parse_file(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_file(path: str, _ino: int, _mtime_ns: int, _size: int) -> AddonIndex | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return AddonIndex.parse(text)
