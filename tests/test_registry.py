"""The registry file: read line by line, written back encoding only what changed (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from atomicplug import registry as registry_module
from atomicplug.errors import OperationError
from atomicplug.registry import InstalledPlugin, Registry, TreeRef


def _registry(count: int = 3) -> Registry:
    plugins = {}
    for i in range(count):
        pid = f"p{i}"
        current = TreeRef(version="1.0.0", tree=f"store/{pid}/1.0.0-0123456789ab", sha256="ab" * 32, backend=True, frontend=i % 2 == 0)
        plugins[pid] = InstalledPlugin(id=pid, name=f"Plugin {i} \u00e9", current=current, enabled=True, requires=("base",), txid="t1")
    return Registry(plugins=plugins, generation=4, txid="t1", parent=3)


def _same(a: Registry, b: Registry) -> None:
    assert (a.generation, a.txid, a.parent) == (b.generation, b.txid, b.parent)
    assert {pid: e.to_dict() for pid, e in a.plugins.items()} == {pid: e.to_dict() for pid, e in b.plugins.items()}


def test_a_registry_read_back_writes_the_same_bytes_and_encodes_only_the_entries_changed(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(_registry().to_json())
    loaded = Registry.load(path)
    encoded: list[str] = []
    real = InstalledPlugin.to_dict
    monkeypatch.setattr(InstalledPlugin, "to_dict", lambda self: encoded.append(self.id) or real(self))
    assert loaded.to_json() == path.read_bytes()
    assert encoded == []  # each entry kept the line it was read from
    changed = loaded.with_entries({"p1": attrs.evolve(loaded.plugins["p1"], enabled=False)}, generation=5, txid="t2")
    data = json.loads(changed.to_json())
    assert encoded == ["p1"]
    assert data["plugins"]["p1"]["enabled"] is False and data["generation"] == 5
    assert data["plugins"]["p0"] == json.loads(path.read_bytes())["plugins"]["p0"]


@pytest.mark.parametrize(
    "layout",
    ["indented", "two-plugins-on-a-line", "one-plugin-over-two-lines", "no-plugins", "id-that-is-not-an-identifier"],
)
def test_any_layout_of_valid_json_reads_as_parsing_it_whole(tmp_path: Path, layout: str) -> None:
    """A registry written by an older atomicplug (indented) or edited by hand still reads the same."""
    registry = _registry(0 if layout == "no-plugins" else 3)
    if layout == "id-that-is-not-an-identifier":
        registry = attrs.evolve(registry, plugins={"odd-id": attrs.evolve(registry.plugins["p0"], id="odd-id")})
    text = registry.to_json().decode()
    if layout == "indented":
        text = json.dumps(json.loads(text), indent=2)
    elif layout == "two-plugins-on-a-line":
        text = text.replace(',\n  "p1"', ', "p1"')
    elif layout == "one-plugin-over-two-lines":
        text = text.replace('"enabled": true, ', '"enabled": true,\n    ', 1)
    path = tmp_path / "registry.json"
    path.write_text(text)
    loaded = Registry.load(path)
    expected = json.loads(text)
    assert {pid: e.to_dict() for pid, e in loaded.plugins.items()} == {
        pid: InstalledPlugin.from_dict(pid, data).to_dict() for pid, data in expected["plugins"].items()
    }
    _same(Registry.load(path), loaded)
    reread = tmp_path / "again.json"
    reread.write_bytes(loaded.to_json())  # whatever it was read from, what it writes reads the same
    _same(Registry.load(reread), loaded)


@pytest.mark.parametrize("damage", ["a line cut short", "a comma missing", "bytes after the end"])
def test_a_damaged_line_makes_the_registry_damaged(tmp_path: Path, damage: str) -> None:
    text = _registry().to_json().decode()
    lines = text.split("\n")
    if damage == "a line cut short":
        lines[2] = lines[2][:-3]
    elif damage == "a comma missing":
        lines[1] = lines[1][:-1]
    else:
        lines[-1] = "x"
    path = tmp_path / "registry.json"
    path.write_text("\n".join(lines))
    with pytest.raises(OperationError, match="damaged") as info:
        Registry.load(path)
    # recovery finishes transactions, it does not remake a registry: the line must not send you there
    assert "recover" not in str(info.value) and str(info.value).endswith("put the file back (from a backup)")


def test_a_remembered_registry_is_loaded_without_parsing(tmp_path: Path, monkeypatch) -> None:
    registry = _registry()
    data = registry.to_json()
    registry.remember(data)
    path = tmp_path / "registry.json"
    path.write_bytes(data)
    monkeypatch.setattr(Registry, "_parse", classmethod(lambda cls, path, raw: pytest.fail("parsed again")))
    _same(Registry.load(path), registry)
    monkeypatch.undo()
    path.write_bytes(data.replace(b'"generation": 4', b'"generation": 9'))  # other bytes: parsed
    assert Registry.load(path).generation == 9


def test_the_loaded_registries_kept_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    for generation in range(10):
        path.write_bytes(Registry(generation=generation).to_json())
        Registry.load(path)
    assert len(registry_module._LOADED) <= registry_module._KEEP_LOADED


def test_a_registry_read_after_another_decodes_only_its_lines_that_differ(tmp_path: Path, monkeypatch) -> None:
    """`rollback --generation N` reads generation N's registry after the live one: with 1000
    plugins the lines both share are not decoded again (issue 14)."""
    live = _registry()
    (tmp_path / "live.json").write_bytes(live.to_json())
    Registry.load(tmp_path / "live.json")
    older = live.with_entries(
        {"p1": attrs.evolve(live.plugins["p1"], enabled=False), "p9": attrs.evolve(live.plugins["p0"], id="p9")}, generation=2, txid="t0"
    )
    (tmp_path / "older.json").write_bytes(older.to_json())  # p9's line holds the same text as p0's
    decoded: list[str] = []
    real = InstalledPlugin.from_dict
    monkeypatch.setattr(InstalledPlugin, "from_dict", classmethod(lambda cls, pid, *a: decoded.append(pid) or real(pid, *a)))
    loaded = Registry.load(tmp_path / "older.json")
    assert sorted(decoded) == ["p1", "p9"]  # p0 and p2 are the live registry's entries
    assert loaded.plugins["p9"].id == "p9" and loaded.plugins["p1"].enabled is False
    _same(loaded, older)
