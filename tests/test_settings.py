"""Per-plugin settings (issue 16 phase 2): schema rules, values, storage, secrets, the backend, the audit.

Schemas are refused at package validation, one MetadataError problem per
rule; values are refused one line per field. Values live in
``atomicplug_installations`` and are written in the install's own database
transaction (a failing migration leaves no settings, a refused value no
install); ``configure`` is a small transaction of its own, recorded in the
ledger and in history by field name. No API returns a secret. The loader
hands the values to the addon's ``configure(settings)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from db_fixtures import query
from fastapi import FastAPI
from test_loader import forget_addons  # noqa: F401 - autouse: every test starts without an `addons` package

from atomicplug.errors import MetadataError, MigrationError, SettingsError
from atomicplug.history import read_history
from atomicplug.loader import AddonLoader
from atomicplug.metadata import Metadata
from atomicplug.testing import table_names

SCHEMA = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "title": "API key", "secret": True},
        "model": {"type": "string", "enum": ["small", "large"], "default": "small"},
        "history": {"type": "integer", "default": 20, "description": "messages kept per chat"},
        "ratio": {"type": "number"},
        "enabled": {"type": "boolean", "default": True},
    },
    "required": ["api_key"],
}
CONFIGURE = (
    "SEEN = []\n"
    "def configure(settings):\n"
    "    SEEN.append(dict(settings))\n"
)
TABLE = {"0001_t": ("CREATE TABLE chat_t (id INTEGER);", "DROP TABLE chat_t;")}


def chat(home: Any, version: str = "1.0.0", schema: dict[str, Any] | None = SCHEMA, **fields: Any) -> Any:
    extra = {"settings": schema} if schema is not None else {}
    return home.package("chat", version, metadata_extra=extra, files={"backend/__init__.py": CONFIGURE}, **fields)


def meta(settings: Any) -> dict[str, Any]:
    return {"id": "chat", "name": "Chat", "version": "1.0.0", "settings": settings}


# -- the schema's rules, one problem each ------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ([], "'settings' must be an object with 'properties'"),
        ({"properties": {}, "additionalProperties": False}, "'settings.additionalProperties' is not supported"),
        ({"type": "array", "properties": {}}, "'settings.type' must be 'object'"),
        ({"type": "object"}, "'settings.properties' must be an object mapping setting names"),
        ({"properties": {f"s{i}": {"type": "string"} for i in range(101)}}, "must declare at most 100 settings"),
        ({"properties": {"Api-Key": {"type": "string"}}}, "'settings.properties.Api-Key' must be named like"),
        ({"properties": {"key": "string"}}, "'settings.properties.key' must be an object with a 'type'"),
        ({"properties": {"key": {"type": "string", "minLength": 3}}}, "'settings.properties.key.minLength' is not supported"),
        ({"properties": {"key": {"type": "object"}}}, "'settings.properties.key.type' must be one of string, number, integer, boolean"),
        ({"properties": {"key": {"type": "string", "title": 3}}}, "'settings.properties.key.title' must be a string"),
        ({"properties": {"key": {"type": "string", "secret": "yes"}}}, "'settings.properties.key.secret' must be true or false"),
        ({"properties": {"key": {"type": "integer", "secret": True}}}, "'settings.properties.key.secret' is only for settings of type string"),
        ({"properties": {"key": {"type": "string", "secret": True, "default": "sk-1"}}}, "'settings.properties.key.default' is not allowed for a secret"),
        ({"properties": {"key": {"type": "string", "secret": True, "enum": ["a"]}}}, "'settings.properties.key.enum' cannot be combined with 'secret'"),
        ({"properties": {"key": {"type": "string", "enum": []}}}, "'settings.properties.key.enum' must be a non-empty list"),
        ({"properties": {"key": {"type": "string", "enum": ["a", 1]}}}, "'settings.properties.key.enum[1]' must be a value of type string"),
        ({"properties": {"key": {"type": "string", "enum": ["a", "a"]}}}, "'settings.properties.key.enum[1]' repeats a value"),
        ({"properties": {"key": {"type": "integer", "default": 1.5}}}, "'settings.properties.key.default' must be a value of type integer"),
        ({"properties": {"key": {"type": "string", "enum": ["a"], "default": "b"}}}, "'settings.properties.key.default' must be one of the 'enum' values"),
        ({"properties": {"key": {"type": "string"}}, "required": "key"}, "'settings.required' must be a list of setting names"),
        ({"properties": {"key": {"type": "string"}}, "required": ["nope"]}, "'settings.required[0]' must name a setting declared in 'properties'"),
        ({"properties": {"key": {"type": "string"}}, "required": ["key", "key"]}, "'settings.required[1]' repeats a setting already required"),
    ],
)
def test_each_schema_rule_is_refused_with_its_own_problem(settings: Any, problem: str) -> None:
    with pytest.raises(MetadataError) as info:
        Metadata.from_dict(meta(settings))
    assert len(info.value.problems) == 1, info.value.problems
    assert problem in info.value.problems[0] and info.value.exit_code == 3


def test_a_valid_schema_round_trips_through_metadata() -> None:
    parsed = Metadata.from_dict(meta(SCHEMA))
    assert parsed.settings is not None and [f.name for f in parsed.settings.fields] == list(SCHEMA["properties"])
    assert Metadata.from_dict(parsed.to_dict()) == parsed
    assert parsed.settings.to_dict() == SCHEMA


def test_a_package_with_a_bad_schema_is_refused_by_package_validation(home: Any) -> None:
    with pytest.raises(MetadataError, match="settings.properties.k.type"):  # pack validates as intake does
        home.package("chat", metadata_extra={"settings": {"properties": {"k": {"type": "date"}}}})


# -- values ---------------------------------------------------------------------------------


def test_values_are_refused_one_line_per_field_and_nothing_is_installed(home: Any) -> None:
    given = {"chat": {"model": "huge", "history": "many", "ratio": True, "colour": "red"}}
    with pytest.raises(SettingsError) as info:
        home.installer.install_file(chat(home), settings=given)
    assert info.value.problems == [
        "chat: setting 'colour' is not a setting of chat (expected one of: api_key, model, history, ratio, enabled)",
        "chat: setting 'api_key' is required",
        "chat: setting 'model' expected one of 'small', 'large', got 'huge'",
        "chat: setting 'history' expected an integer, got 'many'",
        "chat: setting 'ratio' expected a number, got true",
    ]
    assert str(info.value).endswith("(and 4 more)") and info.value.exit_code == 2
    assert info.value.fields == ("colour", "api_key", "model", "history", "ratio")
    assert home.installer.list() == [] and table_names(home.config.database_url) == set()
    with pytest.raises(SettingsError, match="'api_key' expected a string, got a value"):  # a wrong secret is not echoed
        home.installer.install_file(chat(home), settings={"chat": {"api_key": 12345}})
    with pytest.raises(SettingsError, match="'api_key' is required"):
        home.installer.install_file(chat(home))


def test_settings_for_a_plugin_the_install_does_not_bring_are_refused(home: Any) -> None:
    with pytest.raises(SettingsError, match="settings were given for other, which this operation does not install"):
        home.installer.install_file(chat(home), settings={"chat": {"api_key": "k"}, "other": {"x": 1}})


def stored(home: Any) -> list[tuple[Any, ...]]:
    return query(home.config.database_url, "SELECT plugin_id, settings, installed_by FROM atomicplug_installations ORDER BY plugin_id")


def test_settings_are_stored_with_the_install_in_its_database_transaction(any_db_home: Any) -> None:
    home = any_db_home
    broken = chat(home, migrations={"0001_t": ("CREATE TABLE chat_t (id INTEGER);\nSELECT no_such_function();", "DROP TABLE chat_t;")})
    with pytest.raises(MigrationError):
        home.installer.install_file(broken, settings={"chat": {"api_key": "sk-1"}}, by="ann")
    assert "atomicplug_installations" not in {r[0] for r in _tables(home)}  # rolled back with the migration
    home.installer.install_file(chat(home, migrations=TABLE), settings={"chat": {"api_key": "sk-1", "history": 5.0}}, by="ann")
    ((pid, values, by),) = stored(home)
    assert (pid, json.loads(values), by) == ("chat", {"api_key": "sk-1", "history": 5}, "ann")
    # An upgrade keeps them (a new version's schema decides which stay); uninstall --keep-data keeps the row too.
    home.installer.install_file(chat(home, "1.1.0", migrations=TABLE))
    assert json.loads(stored(home)[0][1]) == {"api_key": "sk-1", "history": 5}
    home.installer.uninstall("chat", keep_data=True)
    assert len(stored(home)) == 1
    home.installer.install_file(chat(home, "1.1.0", migrations=TABLE))  # back: its settings are still there
    assert home.installer.settings("chat").fields[0].is_set
    home.installer.uninstall("chat")
    assert stored(home) == []


def _tables(home: Any) -> list[tuple[Any, ...]]:
    if home.config.database_url.startswith("sqlite"):
        return query(home.config.database_url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return query(home.config.database_url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")


def test_no_api_returns_a_secret(home: Any) -> None:
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "sk-very-secret", "model": "large"}}, by="ann")
    view = home.installer.settings("chat")
    fields = {f.field.name: f for f in view.fields}
    assert (fields["api_key"].source, fields["api_key"].is_set, fields["api_key"].value) == ("stored", True, None)
    assert (fields["model"].value, fields["history"].source, fields["history"].value) == ("large", "default", 20)
    assert (fields["ratio"].source, fields["ratio"].is_set) == ("unset", False)
    assert view.installed_by == "ann"
    home.installer.configure("chat", {"api_key": "sk-rotated"}, by="bob")
    cli = subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "settings", "chat", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    text = json.dumps(view.to_dict()) + cli.stdout + json.dumps(home.installer.history()) + json.dumps(home.installer.list())
    text += (home.config.home / "history.jsonl").read_text() + "".join(p.read_text() for p in home.config.journal_dir.rglob("*.jsonl"))
    assert cli.returncode == 0 and json.loads(cli.stdout)["fields"][0]["is_set"] is True
    assert "sk-very-secret" not in text and "sk-rotated" not in text


def test_configure_changes_values_in_a_small_transaction_audited_by_field_name(any_db_home: Any) -> None:
    home = any_db_home
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "sk-1"}}, by="ann")
    result = home.installer.configure("chat", {"model": "large", "api_key": "sk-2", "history": None}, by="bob")
    assert result.changes == ("configure chat: api_key, model",) and result.txid
    view = home.installer.settings("chat")
    assert (view.updated_by, view.installed_by) == ("bob", "ann")
    entry = read_history(home.config.home)[-1]
    assert (entry["operation"], entry["outcome"], entry["by"], entry["steps"][0]["settings"]) == ("configure", "done", "bob", ["api_key", "model"])
    ledger = query(home.config.database_url, f"SELECT operation, plugins FROM atomicplug_transactions WHERE txid = '{result.txid}'")
    assert ledger[0][0] == "configure" and json.loads(ledger[0][1])[0]["settings"] == ["api_key", "model"]
    assert home.installer.configure("chat", {"model": "large"}).changes == ()  # nothing new: no transaction, no history
    with pytest.raises(SettingsError, match="'model' expected one of"):
        home.installer.configure("chat", {"model": "medium"})
    assert json.loads(stored(home)[0][1]) == {"api_key": "sk-2", "model": "large"}


def test_configure_from_the_command_line_reads_values_as_the_schema_types_them(home: Any) -> None:
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "k"}})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
                              capture_output=True, text=True, timeout=60)

    done = cli("configure", "chat", "history=7", "ratio=0.5", "enabled=no", "model=large")
    assert done.returncode == 0 and done.stdout == "configure chat: enabled, history, model, ratio\n"
    assert cli("history").stdout.splitlines()[-1].endswith("configure done     configure chat: enabled, history, model, ratio")
    assert json.loads(stored(home)[0][1]) == {"api_key": "k", "enabled": False, "history": 7, "model": "large", "ratio": 0.5}
    bad = cli("configure", "chat", "history=lots")
    assert bad.returncode == 2 and bad.stderr.strip() == "atomicplug: error: chat: setting 'history' expected an integer, got 'lots'"
    shown = cli("settings", "chat").stdout.splitlines()
    assert shown[0].split() == ["api_key", "set"] and shown[2].split() == ["history", "7"]


def test_the_loader_hands_the_settings_to_the_addon_and_again_when_they_change(home: Any) -> None:
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "sk-1"}})
    loader = AddonLoader(home.config, FastAPI())
    loader.startup()
    module = sys.modules["addons.chat"]
    assert module.SEEN == [{"api_key": "sk-1", "model": "small", "history": 20, "enabled": True}]
    loader.reload()
    assert len(module.SEEN) == 1  # unchanged: not called again
    home.installer.configure("chat", {"model": "large"})
    loader.reload()
    assert module.SEEN[-1]["model"] == "large" and len(module.SEEN) == 2
    home.installer.disable("chat")
    loader.reload()
    home.installer.enable("chat")
    loader.reload()
    assert sys.modules["addons.chat"].SEEN == [{"api_key": "sk-1", "model": "large", "history": 20, "enabled": True}]
    loader.shutdown()


def test_a_rollback_to_a_version_whose_required_setting_was_dropped_takes_it_again(home: Any) -> None:
    """2.0.0 no longer declares api_key, so the upgrade dropped it (docs/design.md "Plugin settings");
    rolling back to 1.0.0, which requires it, was refused with no way to give it. It takes --setting now."""
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "sk-1"}})
    home.installer.install_file(chat(home, "2.0.0", schema={"type": "object", "properties": {"model": {"type": "string"}}}))
    assert json.loads(stored(home)[0][1]) == {}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    refused = cli("rollback", "chat")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == "atomicplug: error: chat: setting 'api_key' is required (give it with --setting chat.api_key=VALUE)"
    assert [p["version"] for p in home.installer.list()] == ["2.0.0"]
    back = cli("rollback", "chat", "--setting", "chat.api_key=sk-2")
    assert back.returncode == 0, back.stderr
    assert [p["version"] for p in home.installer.list()] == ["1.0.0"]
    assert json.loads(stored(home)[0][1]) == {"api_key": "sk-2"}
    home.installer.rollback(generation=2, settings={"chat": {"model": "large"}})  # the API takes them too
    assert json.loads(stored(home)[0][1]) == {"model": "large"}


def test_an_upgrade_to_a_version_without_settings_drops_them_all(home: Any) -> None:
    """Found from outside: a version that declares no settings kept every stored value, a secret
    too, and a later version declaring the name again brought the old secret back. A schema that
    declares nothing keeps nothing, as one that drops a name drops its value."""
    home.installer.install_file(chat(home), settings={"chat": {"api_key": "OLD-SECRET", "history": 9}})
    home.installer.install_file(chat(home, "1.1.0", schema=None))
    assert json.loads(stored(home)[0][1]) == {}
    home.installer.install_file(chat(home, "1.2.0"), settings={"chat": {"api_key": "new"}})
    assert json.loads(stored(home)[0][1]) == {"api_key": "new"}
    home.installer.install_file(chat(home, "1.3.0", schema=None))
    home.installer.install_file(chat(home, "1.4.0", schema={"type": "object", "properties": {"api_key": {"type": "string"}}}))
    assert json.loads(stored(home)[0][1]) == {}  # not the value 1.3.0 left behind
