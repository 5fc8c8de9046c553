"""metadata.json as one frozen, validated value (docs/design.md "Package format").

Why: the id becomes a Python package and folder name, the version and
``requires`` drive dependency resolution, and ``permissions`` gate what a
plugin may do. Every field is checked once, here; later stages trust the
value. Validation collects every problem, then raises one MetadataError whose
message is the first problem (plus "(and N more)") and whose ``problems``
attribute lists them all.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from packaging.version import InvalidVersion, Version

from atomicplug.config import KNOWN_PERMISSIONS
from atomicplug.errors import MetadataError
from atomicplug.settings.schema import SettingsSchema, parse_schema

if TYPE_CHECKING:
    # Imported where used: packaging's requirement and specifier parsers (with the
    # platform tags they pull in) cost ~20 ms of every CLI start-up, and most
    # packages have no ``requires`` and no backend dependencies.
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

__all__ = [
    "Metadata",
    "refuse_new",
    "BackendSpec",
    "FrontendSpec",
    "PluginRequirement",
    "NpmDependency",
    "ID_PATTERN",
]

#: A plugin id becomes ``addons.<id>``: a lowercase Python identifier, not a Python keyword.
#: In TypeScript it is only ever imported as ``addon_<id>`` (:mod:`atomicplug.frontend.index`),
#: which no reserved word or exported name can equal, so ``public`` or ``addons`` are fine there.
ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,63}")
_REQUIRES = re.compile(r"\s*([a-z][a-z0-9_]*)\s*(.*?)\s*", re.DOTALL)
_NPM_NAME = re.compile(r"(@[A-Za-z0-9~][A-Za-z0-9._~-]*/)?[A-Za-z0-9~][A-Za-z0-9._~-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_NAME_CHARS = 200
_MAX_TEXT_CHARS = 20_000
_SOURCE = "metadata.json"


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Problems:
    """Collects rule violations so a publisher sees them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, field: str, rule: str, value: Any = None, *, show: bool = True) -> None:
        got = f" (got {_got(value)})" if show else ""
        self.items.append(f"{_SOURCE}: '{field}' {rule}{got}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        message = self.items[0]
        if len(self.items) > 1:
            message += f" (and {len(self.items) - 1} more)"
        raise _error(message, self.items)


def _specifier_set(text: str) -> SpecifierSet:
    """``text`` as a SpecifierSet ("" accepts every version); ValueError if malformed."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise ValueError(text) from exc


def _requirement(item: Any) -> Requirement:
    """``item`` as a PEP 508 Requirement; ValueError if it is not one."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(item, str):
        raise ValueError(item)
    try:
        return Requirement(item)
    except InvalidRequirement as exc:
        raise ValueError(item) from exc


def _error(message: str, problems: list[str] | None = None) -> MetadataError:
    """A MetadataError carrying every problem in ``.problems`` (just itself when alone)."""
    return MetadataError(message, problems)


@attrs.frozen
class PluginRequirement:
    """One ``requires`` entry: another plugin's id and the versions accepted."""

    id: str
    specifier: SpecifierSet = attrs.field(factory=lambda: _specifier_set(""))

    @classmethod
    def parse(cls, text: str) -> PluginRequirement:
        """Parse ``"email_core"`` or ``"email_core>=1.2,<2"``; ValueError if malformed."""
        match = _REQUIRES.fullmatch(text)
        if not match or not ID_PATTERN.fullmatch(match.group(1)):
            raise ValueError(text)
        return cls(match.group(1), _specifier_set(match.group(2)))

    def is_satisfied_by(self, version: Version | str) -> bool:
        """True when ``version`` is accepted (pre-releases count: plugins pin exactly)."""
        parsed = version if isinstance(version, Version) else Version(version)
        return self.specifier.contains(parsed, prereleases=True)

    def __str__(self) -> str:
        return f"{self.id}{self.specifier}"


@attrs.frozen
class NpmDependency:
    """A frontend dependency: npm package name and version range (``*`` when unstated)."""

    name: str
    range: str = "*"


@attrs.frozen
class BackendSpec:
    """The ``backend`` object; ``dependencies`` are PEP 508 requirements."""

    models: tuple[Any, ...] = attrs.field(default=(), hash=False)
    routes: tuple[Any, ...] = attrs.field(default=(), hash=False)
    dependencies: tuple[Requirement, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "models": list(self.models),
            "routes": list(self.routes),
            "dependencies": [str(r) for r in self.dependencies],
        }


@attrs.frozen
class FrontendSpec:
    """The ``frontend`` object; ``dependencies`` accept a dict or a list of npm names."""

    routes: tuple[Any, ...] = attrs.field(default=(), hash=False)
    components: tuple[Any, ...] = attrs.field(default=(), hash=False)
    dependencies: tuple[NpmDependency, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "routes": list(self.routes),
            "components": list(self.components),
            "dependencies": {d.name: d.range for d in self.dependencies},
        }


@attrs.frozen
class Metadata:
    """A validated metadata.json; build it with :meth:`from_json_bytes` or :meth:`from_dict`."""

    id: str
    name: str
    version: str
    author: str = ""
    description: str = ""
    category: str = ""
    price: int | float | None = None
    requires: tuple[PluginRequirement, ...] = ()
    backend: BackendSpec = BackendSpec()
    frontend: FrontendSpec = FrontendSpec()
    permissions: tuple[str, ...] = ()
    #: The settings an admin gives the plugin (docs/design.md "Plugin settings"); None: it has none.
    settings: SettingsSchema | None = None
    #: Top-level keys this model does not know, kept so ``to_dict`` round-trips.
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def parsed_version(self) -> Version:
        """The PEP 440 version (validated at construction)."""
        return Version(self.version)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Metadata:
        """Parse and validate metadata.json bytes; raises MetadataError only."""
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _error(f"{_SOURCE} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        try:
            parsed = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
        except _DuplicateKey as exc:
            raise _error(f"{_SOURCE} repeats the key {_got(exc.args[0])}") from exc
        except json.JSONDecodeError as exc:
            raise _error(f"{_SOURCE} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:
            raise _error(f"{_SOURCE} is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc
        if not isinstance(parsed, dict):
            raise _error(f"{_SOURCE} must hold a JSON object (got {type(parsed).__name__})")
        return cls.from_dict(parsed)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metadata:
        """Validate a parsed metadata.json; every problem is collected, then one MetadataError."""
        if not isinstance(d, Mapping):
            raise _error(f"{_SOURCE} must hold a JSON object (got {type(d).__name__})")
        p = _Problems()
        id_ = _check_id(p, d)
        name = _text(p, d, "name", required=True, max_chars=_MAX_NAME_CHARS)
        version = _check_version(p, d)
        author = _text(p, d, "author", max_chars=_MAX_NAME_CHARS)
        description = _text(p, d, "description", max_chars=_MAX_TEXT_CHARS, newlines=True)
        category = _text(p, d, "category", max_chars=_MAX_NAME_CHARS)
        price = _check_price(p, d)
        requires = _check_requires(p, d, id_)
        backend = _check_backend(p, d.get("backend"))
        frontend = _check_frontend(p, d.get("frontend"))
        permissions = _check_permissions(p, d.get("permissions"))
        settings = parse_schema(d.get("settings"), p.add)
        p.raise_if_any()
        known = {f.name for f in attrs.fields(cls)} - {"extra"}
        return cls(
            id=id_,
            name=name,
            version=version,
            author=author,
            description=description,
            category=category,
            price=price,
            requires=requires,
            backend=backend,
            frontend=frontend,
            permissions=permissions,
            settings=settings,
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form; ``from_dict(m.to_dict()) == m``."""
        return {
            **self.extra,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "author": self.author,
            "description": self.description,
            "category": self.category,
            "price": self.price,
            "requires": [str(r) for r in self.requires],
            "backend": self.backend.to_dict(),
            "frontend": self.frontend.to_dict(),
            "permissions": list(self.permissions),
            **({"settings": self.settings.to_dict()} if self.settings is not None else {}),
        }


# -- JSON parsing guards -------------------------------------------------------


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated keys: two parsers could otherwise read two different plugins."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- field rules -----------------------------------------------------------------


def _check_id(p: _Problems, d: Mapping[str, Any]) -> str:
    if "id" not in d:
        p.add("id", "is required", show=False)
        return ""
    value = d["id"]
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        p.add("id", "must match ^[a-z][a-z0-9_]{1,63}$", value)
        return ""
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        p.add("id", "must not be a Python keyword", value)
    return value


def _check_version(p: _Problems, d: Mapping[str, Any]) -> str:
    if "version" not in d:
        p.add("version", "is required", show=False)
        return ""
    value = d["version"]
    if not isinstance(value, str) or value != value.strip() or not value:
        p.add("version", "must be PEP 440", value)
        return ""
    try:
        Version(value)
    except InvalidVersion:
        p.add("version", "must be PEP 440", value)
    return value


def refuse_new(metadata: Metadata) -> None:
    """What a package new to atomicplug (intake, pack) may not have, though a tree an earlier
    atomicplug installed still reads (a rollback to it works): a version with an epoch (``1!2.0.0``),
    which becomes the store path ``store/<id>/<version>-<sha12>`` index.ts imports, where webpack
    takes ``!`` for its loader separator. MetadataError."""
    if "!" in metadata.version:
        p = _Problems()
        p.add("version", "must not have an epoch: the version is part of a path bundlers read, and webpack takes '!' for its loader separator", metadata.version)
        p.raise_if_any()


def _text(
    p: _Problems, d: Mapping[str, Any], field: str, *, required: bool = False, max_chars: int, newlines: bool = False
) -> str:
    if field not in d or (d[field] is None and not required):
        if required:
            p.add(field, "is required", show=False)
        return ""
    value = d[field]
    if not isinstance(value, str):
        p.add(field, "must be a string", value)
        return ""
    if required and not value.strip():
        p.add(field, "must not be empty", value)
    elif len(value) > max_chars:
        p.add(field, f"must be at most {max_chars} characters (got {len(value)})", show=False)
    elif (_CONTROL_BUT_NEWLINES if newlines else _CONTROL).search(value):
        p.add(field, "must not contain control characters", value)
    return value


def _check_price(p: _Problems, d: Mapping[str, Any]) -> int | float | None:
    value = d.get("price")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        p.add("price", "must be a number or null", value)
        return None
    if not math.isfinite(value) or value < 0:
        p.add("price", "must be >= 0", value)
        return None
    return value


def _list_of(p: _Problems, value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        p.add(field, "must be a list", value)
        return []
    return value


def _check_requires(p: _Problems, d: Mapping[str, Any], own_id: str) -> tuple[PluginRequirement, ...]:
    result: list[PluginRequirement] = []
    seen: set[str] = set()
    for i, item in enumerate(_list_of(p, d.get("requires"), "requires")):
        field = f"requires[{i}]"
        if not isinstance(item, str):
            p.add(field, "must be a string 'id' or 'id<specifier>'", item)
            continue
        try:
            req = PluginRequirement.parse(item)
        except ValueError:
            p.add(field, "must be 'id' or 'id<specifier>' (e.g. 'email_core>=1.2')", item)
            continue
        if req.id == own_id:
            p.add(field, "must not name the plugin itself", item)
        elif req.id in seen:
            p.add(field, "repeats a plugin already required", item)
        seen.add(req.id)
        result.append(req)
    return tuple(result)


def _object(p: _Problems, value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(field, "must be an object", value)
        return {}
    return value


def _entries(p: _Problems, value: Any, field: str) -> tuple[Any, ...]:
    """models/routes/components: names (strings) or descriptive objects."""
    result: list[Any] = []
    for i, item in enumerate(_list_of(p, value, field)):
        if isinstance(item, dict) or (isinstance(item, str) and item.strip() and not _CONTROL.search(item)):
            result.append(item)
        else:
            p.add(f"{field}[{i}]", "must be a non-empty string or an object", item)
    return tuple(result)


def _check_backend(p: _Problems, value: Any) -> BackendSpec:
    obj = _object(p, value, "backend")
    deps: list[Requirement] = []
    for i, item in enumerate(_list_of(p, obj.get("dependencies"), "backend.dependencies")):
        try:
            deps.append(_requirement(item))
        except ValueError:
            p.add(f"backend.dependencies[{i}]", "must be a PEP 508 requirement", item)
    return BackendSpec(
        models=_entries(p, obj.get("models"), "backend.models"),
        routes=_entries(p, obj.get("routes"), "backend.routes"),
        dependencies=tuple(deps),
        extra=_rest(obj, ("models", "routes", "dependencies")),
    )


def _check_frontend(p: _Problems, value: Any) -> FrontendSpec:
    obj = _object(p, value, "frontend")
    return FrontendSpec(
        routes=_entries(p, obj.get("routes"), "frontend.routes"),
        components=_entries(p, obj.get("components"), "frontend.components"),
        dependencies=_npm_dependencies(p, obj.get("dependencies")),
        extra=_rest(obj, ("routes", "components", "dependencies")),
    )


def _npm_dependencies(p: _Problems, value: Any) -> tuple[NpmDependency, ...]:
    """Accept ``{"name": "range"}`` or ``["name", "name@range"]``."""
    field = "frontend.dependencies"
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        for i, item in enumerate(_list_of(p, value, field)):
            if not isinstance(item, str):
                p.add(f"{field}[{i}]", "must be an npm package name", item)
                continue
            at = item.rfind("@")
            pairs.append((item[:at], item[at + 1 :]) if at > 0 else (item, "*"))
    result = []
    for name, rng in pairs:
        if not _NPM_NAME.fullmatch(name) or len(name) > 214:
            p.add(field, "must name npm packages", name)
        elif not isinstance(rng, str) or not rng.strip() or _CONTROL.search(rng):
            p.add(f"{field}.{name}", "must be an npm version range string", rng)
        else:
            result.append(NpmDependency(name, rng))
    return tuple(result)


def _check_permissions(p: _Problems, value: Any) -> tuple[str, ...]:
    result: list[str] = []
    for i, item in enumerate(_list_of(p, value, "permissions")):
        if not isinstance(item, str) or item not in KNOWN_PERMISSIONS:
            p.add(f"permissions[{i}]", "must be a known permission", item)
        elif item not in result:
            result.append(item)
    return tuple(result)


def _rest(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Keys this model does not know, kept so ``to_dict`` round-trips."""
    return {k: v for k, v in obj.items() if k not in known}
