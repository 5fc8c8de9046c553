"""A plugin's settings schema (metadata.json ``settings``) and values checked against it.

docs/design.md "Plugin settings". The schema is a small subset of JSON Schema,
enough for a form and no more, so a publisher never believes a keyword works
that atomicplug ignores (``minLength`` is refused, not skipped)::

    "settings": {
      "type": "object",
      "properties": {
        "openai_api_key": {"type": "string", "title": "OpenAI API key", "secret": true},
        "model": {"type": "string", "enum": ["gpt-4o-mini", "gpt-4o"], "default": "gpt-4o-mini"}
      },
      "required": ["openai_api_key"]
    }

Types: string, number, integer, boolean; ``enum``, ``default``, ``title``,
``description``; ``secret: true`` (strings only, no default: a default would be
published in the package) marks a value no API ever returns. Rules are checked
when the package is validated (:func:`parse_schema`, every problem reported);
values are checked by :meth:`SettingsSchema.check`, one problem per field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from atomicplug.errors import SettingsError

__all__ = ["FieldType", "SettingField", "SettingsSchema", "TextValue", "parse_schema", "MAX_SETTINGS", "MAX_VALUE_CHARS"]

FieldType = Literal["string", "number", "integer", "boolean"]
_TYPES: tuple[FieldType, ...] = ("string", "number", "integer", "boolean")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SCHEMA_KEYS = ("type", "properties", "required", "title", "description")
_FIELD_KEYS = ("type", "title", "description", "default", "enum", "secret")
MAX_SETTINGS = 100
MAX_VALUE_CHARS = 10_000
_MAX_LABEL_CHARS = 500

#: ``add(field, rule, value)``: how metadata.py collects a problem (its ``_Problems.add``).
AddProblem = Callable[..., None]


def _type_problem(kind: FieldType, value: Any) -> str | None:
    """Why ``value`` is not a ``kind`` (None when it is one)."""
    if kind == "boolean":
        return None if isinstance(value, bool) else "expected true or false"
    if kind == "string":
        if not isinstance(value, str):
            return "expected a string"
        if len(value) > MAX_VALUE_CHARS:
            return f"expected at most {MAX_VALUE_CHARS} characters (got {len(value)})"
        return "expected no control characters" if _CONTROL.search(value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"expected {'an integer' if kind == 'integer' else 'a number'}"
    if kind == "integer" and not float(value).is_integer():
        return "expected an integer"
    return None


def _normal(kind: FieldType, value: Any) -> Any:
    """A checked value in its one form: an integer given as 3.0 is stored as 3."""
    return int(value) if kind == "integer" else value


class TextValue(str):
    """A value typed as text (a command line's ``FIELD=VALUE``): read as the field's type before it is checked."""


_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


def _from_text(kind: FieldType, text: str) -> Any:
    """``text`` as a ``kind`` when it reads as one; else ``text`` itself (the check then says what was expected)."""
    folded = text.strip().lower()
    if kind == "boolean":
        return True if folded in _TRUE else False if folded in _FALSE else str(text)
    if kind in ("integer", "number"):
        try:
            return int(folded) if kind == "integer" else float(folded)
        except ValueError:
            return str(text)
    return str(text)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else ("true" if value else "false")
    return text if len(text) <= 60 else text[:57] + "..."


@attrs.frozen
class SettingField:
    """One setting of a plugin: its type, what a form shows, and its rules."""

    name: str
    type: FieldType
    title: str = ""
    description: str = ""
    enum: tuple[Any, ...] | None = None
    default: Any = None  # None: no default (null is no value of any type)
    secret: bool = False
    required: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable here, "expected X, got Y" (None when it is)."""
        wrong = _type_problem(self.type, value)
        if wrong is None and self.enum is not None and value not in self.enum:
            wrong = f"expected one of {', '.join(_shown(v) for v in self.enum)}"
        if wrong is None:
            return None
        return f"{wrong}, got {'a value' if self.secret else _shown(value)}"  # a wrong secret is not echoed

    def to_dict(self) -> dict[str, Any]:
        """The JSON Schema property this field was parsed from (``required`` lives on the schema)."""
        data: dict[str, Any] = {"type": self.type}
        for key in ("title", "description"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.enum is not None:
            data["enum"] = list(self.enum)
        if self.default is not None:
            data["default"] = self.default
        if self.secret:
            data["secret"] = True
        return data


@attrs.frozen
class SettingsSchema:
    """The settings a plugin declares, in declaration order."""

    fields: tuple[SettingField, ...]
    title: str = ""
    description: str = ""

    def field(self, name: str) -> SettingField | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The metadata.json form (``parse_schema(s.to_dict()) == s``)."""
        data: dict[str, Any] = {"type": "object", "properties": {f.name: f.to_dict() for f in self.fields}}
        required = [f.name for f in self.fields if f.required]
        if required:
            data["required"] = required
        for key in ("title", "description"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data

    def merge(self, stored: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
        """The values to store: ``stored`` (only names the schema still has) updated by
        ``given``, where ``None`` removes a value (its default applies again)."""
        names = {f.name for f in self.fields}
        merged = {k: v for k, v in stored.items() if k in names}
        for key, value in given.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def effective(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """What the plugin's backend gets: each default, overridden by the stored value."""
        values = {f.name: f.default for f in self.fields if f.default is not None}
        values.update({k: v for k, v in stored.items() if self.field(k) is not None})
        return values

    def check(self, plugin_id: str, values: Mapping[str, Any], *, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``values`` (what would be stored) in their normal form; SettingsError listing every problem.

        Each problem names the plugin and the field: an unknown field, a value
        of the wrong type or outside the enum, a required field without a value
        or default. ``given`` (default: ``values``) is what the caller sent:
        only its unknown names are reported (a stored value the new version no
        longer declares is dropped, not refused).
        """
        problems: list[str] = []
        fields: list[str] = []
        missing: list[str] = []

        def add(name: str, text: str) -> None:
            problems.append(f"{plugin_id}: setting '{name}' {text}")
            fields.append(name)

        for name in sorted(set(given if given is not None else values) - {f.name for f in self.fields}):
            add(name, f"is not a setting of {plugin_id} (expected one of: {', '.join(f.name for f in self.fields) or 'none'})")
        normal: dict[str, Any] = {}
        for field in self.fields:
            if field.name not in values:
                if field.required and field.default is None:
                    add(field.name, "is required")
                    missing.append(field.name)
                continue
            value = values[field.name]
            value = _from_text(field.type, value) if isinstance(value, TextValue) else value
            problem = field.problem(value)
            if problem:
                add(field.name, problem)
            else:
                normal[field.name] = _normal(field.type, value)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SettingsError(problems[0] + more, problems, plugins=(plugin_id,), fields=tuple(fields), missing=tuple(missing))
        return normal


# -- the schema's own rules (metadata.json) ---------------------------------------------------


def parse_schema(value: Any, add: AddProblem) -> SettingsSchema | None:
    """Validate metadata.json's ``settings`` (None: absent); each broken rule goes to ``add``.

    Returns the schema when no rule is broken, else None (the caller raises).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        add("settings", "must be an object with 'properties'", value)
        return None
    before = _Counter(add)
    for key in sorted(set(value) - set(_SCHEMA_KEYS)):
        before.add(f"settings.{key}", f"is not supported (expected {', '.join(_SCHEMA_KEYS)})", show=False)
    if value.get("type", "object") != "object":
        before.add("settings.type", "must be 'object'", value.get("type"))
    title = _label(before, value, "settings.title", "title")
    description = _label(before, value, "settings.description", "description")
    properties = value.get("properties")
    if not isinstance(properties, Mapping):
        before.add("settings.properties", "must be an object mapping setting names to their schemas", properties)
        properties = {}
    elif len(properties) > MAX_SETTINGS:
        before.add("settings.properties", f"must declare at most {MAX_SETTINGS} settings (got {len(properties)})", show=False)
    required = _required(before, value.get("required"), properties)
    fields = [_field(before, name, spec, name in required) for name, spec in properties.items()]
    if before.count:
        return None
    return SettingsSchema(fields=tuple(f for f in fields if f is not None), title=title, description=description)


class _Counter:
    """Passes problems on and counts them (the schema is returned only when none was found)."""

    def __init__(self, add: AddProblem) -> None:
        self._add = add
        self.count = 0

    def add(self, field: str, rule: str, value: Any = None, *, show: bool = True) -> None:
        self.count += 1
        self._add(field, rule, value, show=show)


def _label(p: _Counter, spec: Mapping[str, Any], where: str, key: str) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str) or len(value) > _MAX_LABEL_CHARS or _CONTROL.search(value):
        p.add(where, f"must be a string of at most {_MAX_LABEL_CHARS} characters without control characters", value)
        return ""
    return value


def _required(p: _Counter, value: Any, properties: Mapping[str, Any]) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list):
        p.add("settings.required", "must be a list of setting names", value)
        return set()
    names: set[str] = set()
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in properties:
            p.add(f"settings.required[{i}]", "must name a setting declared in 'properties'", name)
        elif name in names:
            p.add(f"settings.required[{i}]", "repeats a setting already required", name)
        else:
            names.add(name)
    return names


def _field(p: _Counter, name: Any, spec: Any, required: bool) -> SettingField | None:
    where = f"settings.properties.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        p.add(where, "must be named like ^[a-z][a-z0-9_]{0,63}$ (it becomes a form field and a key)", name)
        return None
    if not isinstance(spec, Mapping):
        p.add(where, "must be an object with a 'type'", spec)
        return None
    for key in sorted(set(spec) - set(_FIELD_KEYS)):
        p.add(f"{where}.{key}", f"is not supported (expected {', '.join(_FIELD_KEYS)})", show=False)
    kind = spec.get("type")
    if kind not in _TYPES:
        p.add(f"{where}.type", f"must be one of {', '.join(_TYPES)}", kind)
        return None
    secret = spec.get("secret", False)
    if not isinstance(secret, bool):
        p.add(f"{where}.secret", "must be true or false", secret)
        secret = False
    elif secret and kind != "string":
        p.add(f"{where}.secret", "is only for settings of type string", show=False)
    enum = _enum(p, where, kind, spec.get("enum"), secret)
    default = spec.get("default")
    if default is not None:
        if secret:
            p.add(f"{where}.default", "is not allowed for a secret (it would be published in the package)", show=False)
        elif _type_problem(kind, default) is not None:
            p.add(f"{where}.default", f"must be a value of type {kind}", default)
        elif enum is not None and default not in enum:
            p.add(f"{where}.default", "must be one of the 'enum' values", default)
        else:
            default = _normal(kind, default)
    return SettingField(
        name=name,
        type=kind,
        title=_label(p, spec, f"{where}.title", "title"),
        description=_label(p, spec, f"{where}.description", "description"),
        enum=enum,
        default=default,
        secret=secret,
        required=required,
    )


def _enum(p: _Counter, where: str, kind: FieldType, value: Any, secret: bool) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if secret:
        p.add(f"{where}.enum", "cannot be combined with 'secret' (a choice from a published list is no secret)", show=False)
        return None
    if not isinstance(value, list) or not value:
        p.add(f"{where}.enum", "must be a non-empty list", value)
        return None
    choices: list[Any] = []
    for i, item in enumerate(value):
        if _type_problem(kind, item) is not None:
            p.add(f"{where}.enum[{i}]", f"must be a value of type {kind}", item)
        elif item in choices:
            p.add(f"{where}.enum[{i}]", "repeats a value", item)
        else:
            choices.append(_normal(kind, item))
    return tuple(choices)
