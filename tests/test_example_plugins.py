"""The example plugins of examples/plugins/, packed, signed and installed for real.

Every version of ai_chatbot, email_marketing and sms_notifications goes through
the Installer (install, upgrade, rollback, uninstall) on SQLite and on
PostgreSQL, with the tables and columns checked after each step; then the
installed backends are imported as ``addons.<id>`` and their FastAPI routers
are called through a TestClient against the same database.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import db_fixtures
import pytest
import sqlalchemy
from db_fixtures import execute, query, sqlalchemy_url

from atomicplug.errors import DependencyError
from atomicplug.packing import pack

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"
VERSIONS = ("1.0.0", "1.1.0")

#: What each version must leave in the database: tables, and extra columns of 1.1.0.
EXPECTED: dict[str, dict[str, Any]] = {
    "email_marketing": {
        "1.0.0": {"email_campaigns", "email_subscribers"},
        "1.1.0": {"email_campaigns", "email_subscribers", "email_campaign_stats"},
        "columns": {},
    },
    "sms_notifications": {
        "1.0.0": {"sms_contacts", "sms_messages"},
        "1.1.0": {"sms_contacts", "sms_messages"},
        "columns": {"sms_messages": {"segments"}},
    },
    "ai_chatbot": {
        "1.0.0": {"chat_sessions", "chat_messages"},
        "1.1.0": {"chat_sessions", "chat_messages"},
        "columns": {"chat_sessions": {"title"}, "chat_messages": {"rating"}},
    },
}
EMAIL_TABLES = EXPECTED["email_marketing"]["1.0.0"]


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def packages(tmp_path: Path, home_factory, database_url: str):
    """(home, {(id, version): zip}): every example version packed and signed with a fresh key."""
    home = home_factory(database_url=database_url)
    zips = {}
    for plugin_id in EXPECTED:
        for version in VERSIONS:
            out = tmp_path / "packages" / f"{plugin_id}-{version}.zip"
            out.parent.mkdir(parents=True, exist_ok=True)
            packed = pack(EXAMPLES / plugin_id / version, home.publisher.secret, out)
            assert packed.metadata.id == plugin_id and packed.metadata.version == version
            assert packed.signature_path is not None and packed.signature_path.is_file()
            zips[plugin_id, version] = packed.zip_path
    return home, zips


def columns(url: str, table: str) -> set[str]:
    engine = sqlalchemy.create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return {c["name"] for c in sqlalchemy.inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """The plugins' tables (atomicplug's ledger left out)."""
    return {name for name in db_fixtures.table_names(url) if not name.startswith("atomicplug_")}


def installed(home) -> dict[str, str]:
    return {p["id"]: p["version"] for p in home.installer.list()}


def check_schema(url: str, plugin_id: str, version: str | None, others: set[str] = frozenset()) -> None:
    """The database holds exactly ``plugin_id``'s tables of ``version`` (plus ``others``)."""
    expected = set(others) | (EXPECTED[plugin_id][version] if version else set())
    assert table_names(url) == expected
    if version is None:
        return
    for table, extra in EXPECTED[plugin_id]["columns"].items():
        if version == "1.1.0":
            assert extra <= columns(url, table), f"{table} lacks {extra} at {version}"
        else:
            assert not extra & columns(url, table), f"{table} still has {extra} at {version}"


@contextmanager
def addons_package(config, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A synthetic ``addons`` package over the home's backend addons folder, as the panel has.

    ATOMICPLUG_DATABASE_URL points the addons at the home's database. Afterwards
    the addons' engines are disposed and every ``addons.*`` module is forgotten.
    """
    saved = {name: mod for name, mod in sys.modules.items() if name == "addons" or name.startswith("addons.")}
    for name in saved:
        del sys.modules[name]
    package = types.ModuleType("addons")
    package.__path__ = [str(config.backend_addons)]  # type: ignore[attr-defined]
    sys.modules["addons"] = package
    importlib.invalidate_caches()
    monkeypatch.setenv("ATOMICPLUG_DATABASE_URL", config.database_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    try:
        yield package
    finally:
        forget_addons()
        sys.modules.update(saved)


def forget_addons() -> None:
    """Dispose every loaded addon's engines and drop ``addons.*`` (keeping the ``addons`` package)."""
    for name in [n for n in sys.modules if n.startswith("addons.")]:
        module = sys.modules.pop(name)
        dispose = getattr(module, "dispose_engines", None)
        if name.endswith(".db") and callable(dispose):
            dispose()
    importlib.invalidate_caches()


def client_for(*plugin_ids: str):
    """A FastAPI app with the installed addons' routers mounted, and its TestClient."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    for plugin_id in plugin_ids:
        module = importlib.import_module(f"addons.{plugin_id}")
        app.include_router(module.router)
    return TestClient(app)


# -- install, upgrade, rollback, uninstall ----------------------------------------------


@pytest.mark.parametrize("plugin_id", list(EXPECTED))
def test_lifecycle_install_upgrade_rollback_uninstall(packages, plugin_id):
    home, zips = packages
    url = home.config.database_url
    installer = home.installer
    others: set[str] = set()
    if plugin_id == "sms_notifications":  # requires email_marketing>=1.0
        installer.install_file(zips["email_marketing", "1.0.0"])
        others = set(EMAIL_TABLES)

    installer.install_file(zips[plugin_id, "1.0.0"])
    assert installed(home)[plugin_id] == "1.0.0"
    check_schema(url, plugin_id, "1.0.0", others)
    seed_data(url, plugin_id)

    installer.install_file(zips[plugin_id, "1.1.0"])  # upgrade: new migration + upgrade hook
    assert installed(home)[plugin_id] == "1.1.0"
    check_schema(url, plugin_id, "1.1.0", others)
    check_upgraded_data(url, plugin_id)

    installer.rollback(plugin_id)  # runs 1.1.0's downs
    assert installed(home)[plugin_id] == "1.0.0"
    check_schema(url, plugin_id, "1.0.0", others)
    assert (home.config.backend_addons / plugin_id / "__init__.py").read_text().count('VERSION = "1.0.0"') == 1

    installer.install_file(zips[plugin_id, "1.1.0"])  # and up again after the rollback
    check_schema(url, plugin_id, "1.1.0", others)

    installer.uninstall(plugin_id)
    assert plugin_id not in installed(home)
    check_schema(url, plugin_id, None, others)
    assert not (home.config.backend_addons / plugin_id).exists()
    if plugin_id == "sms_notifications":
        installer.uninstall("email_marketing")
        assert table_names(url) == set()
    assert installed(home) == {}


def seed_data(url: str, plugin_id: str) -> None:
    """Rows written by 1.0.0, for the upgrade hooks to work on."""
    if plugin_id == "email_marketing":
        # The install hook added the welcome campaign (with an explicit id: PostgreSQL too).
        assert query(url, "SELECT id, subject FROM email_campaigns") == [(1, "Welcome")]
        execute(url, "INSERT INTO email_campaigns (id, subject, body) VALUES (2, 'Spring sale', 'Ten percent off')")
    elif plugin_id == "sms_notifications":
        execute(url, "INSERT INTO sms_messages (id, to_number, body, status, created_at) "
                     "VALUES ('m-short', '+15550001', 'hi', 'queued', CURRENT_TIMESTAMP)")  # fmt: skip
        execute(url, "INSERT INTO sms_messages (id, to_number, body, status, created_at) "
                     f"VALUES ('m-long', '+15550001', '{'x' * 400}', 'queued', CURRENT_TIMESTAMP)")  # fmt: skip
    else:
        execute(url, "INSERT INTO chat_sessions (id, created_at, updated_at) VALUES ('s1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        execute(url, "INSERT INTO chat_messages (id, session_id, role, content, created_at) "
                     "VALUES ('m1', 's1', 'user', 'How do I   pay my invoice?', CURRENT_TIMESTAMP)")  # fmt: skip


def check_upgraded_data(url: str, plugin_id: str) -> None:
    if plugin_id == "email_marketing":
        assert sorted(query(url, "SELECT campaign_id, delivered FROM email_campaign_stats")) == [(1, 0), (2, 0)]
    elif plugin_id == "sms_notifications":
        assert sorted(query(url, "SELECT id, segments FROM sms_messages")) == [("m-long", 3), ("m-short", 1)]
    else:
        assert query(url, "SELECT id, title FROM chat_sessions") == [("s1", "How do I pay my invoice?")]


def test_fresh_install_of_the_second_versions(packages):
    """1.1.0 installed directly (no upgrade): all migrations and the install hooks run."""
    home, zips = packages
    url = home.config.database_url
    for plugin_id in ("email_marketing", "sms_notifications", "ai_chatbot"):
        home.installer.install_file(zips[plugin_id, "1.1.0"])
    assert installed(home) == {"email_marketing": "1.1.0", "sms_notifications": "1.1.0", "ai_chatbot": "1.1.0"}
    assert table_names(url) == set().union(*(EXPECTED[p]["1.1.0"] for p in EXPECTED))
    assert query(url, "SELECT campaign_id FROM email_campaign_stats") == [(1,)]
    # email_marketing cannot go while sms_notifications needs it
    with pytest.raises(DependencyError):
        home.installer.uninstall("email_marketing")
    home.installer.uninstall("email_marketing", cascade=True)
    assert set(installed(home)) == {"ai_chatbot"}
    assert table_names(url) == EXPECTED["ai_chatbot"]["1.1.0"]


def test_sms_without_email_marketing_is_refused(packages):
    home, zips = packages
    with pytest.raises(DependencyError, match="email_marketing"):
        home.installer.install_file(zips["sms_notifications", "1.0.0"])
    assert installed(home) == {}
    assert table_names(home.config.database_url) == set()
    assert not (home.config.backend_addons / "sms_notifications").exists()


# -- the installed backends' routes ------------------------------------------------------


def test_ai_chatbot_routes_with_the_rule_based_engine(packages, monkeypatch):
    home, zips = packages
    url = home.config.database_url
    home.installer.install_file(zips["ai_chatbot", "1.0.0"])
    with addons_package(home.config, monkeypatch):
        client = client_for("ai_chatbot")
        health = client.get("/api/v1/chat/health").json()
        assert health == {"status": "ok", "plugin": "ai_chatbot", "version": "1.0.0", "engine": "rules"}

        session = client.post("/api/v1/chat/sessions", json={"user_id": "u-42"})
        assert session.status_code == 201
        session_id = session.json()["id"]

        hello = client.post(f"/api/v1/chat/sessions/{session_id}/messages", json={"content": "hello"})
        assert hello.status_code == 201
        assert hello.json()["user_message"]["content"] == "hello"
        assert hello.json()["reply"]["engine"] == "rules"
        assert hello.json()["reply"]["content"].startswith("Hello! I'm the NextPanel assistant")

        pay = client.post(f"/api/v1/chat/sessions/{session_id}/messages", json={"content": "how do I pay my invoice?"})
        assert pay.status_code == 201
        assert "Billing > Invoices" in pay.json()["reply"]["content"]
        assert "Pay now" in pay.json()["reply"]["content"]

        plugins = client.post(f"/api/v1/chat/sessions/{session_id}/messages", json={"content": "Can I install a plugin?"})
        assert "Marketplace" in plugins.json()["reply"]["content"]
        other = client.post(f"/api/v1/chat/sessions/{session_id}/messages", json={"content": "What is the weather?"})
        assert other.json()["reply"]["content"].startswith("I'm not sure I understood")

        stored = query(url, f"SELECT role, content FROM chat_messages WHERE session_id = '{session_id}'")
        assert len(stored) == 8
        assert ("user", "how do I pay my invoice?") in stored
        assert sum(1 for role, _ in stored if role == "assistant") == 4

        full = client.get(f"/api/v1/chat/sessions/{session_id}").json()
        assert full["user_id"] == "u-42"
        assert [m["role"] for m in full["messages"]] == ["user", "assistant"] * 4
        assert [m["content"] for m in full["messages"][::2]] == [
            "hello", "how do I pay my invoice?", "Can I install a plugin?", "What is the weather?",
        ]  # fmt: skip

        assert client.get("/api/v1/chat/sessions/nope").status_code == 404
        assert client.post("/api/v1/chat/sessions/nope/messages", json={"content": "hi"}).status_code == 404
        assert client.post(f"/api/v1/chat/sessions/{session_id}/messages", json={"content": ""}).status_code == 422

        # Upgrade: the hook titles the existing session; 1.1.0 adds ratings.
        home.installer.install_file(zips["ai_chatbot", "1.1.0"])
        forget_addons()
        client = client_for("ai_chatbot")
        assert client.get("/api/v1/chat/health").json()["version"] == "1.1.0"
        upgraded = client.get(f"/api/v1/chat/sessions/{session_id}").json()
        assert upgraded["title"] == "hello"
        reply_id = upgraded["messages"][3]["id"]
        rated = client.post(f"/api/v1/chat/sessions/{session_id}/messages/{reply_id}/rating", json={"rating": 5})
        assert rated.status_code == 200 and rated.json()["rating"] == 5
        assert query(url, f"SELECT rating FROM chat_messages WHERE id = '{reply_id}'") == [(5,)]
        user_id = upgraded["messages"][0]["id"]
        assert client.post(f"/api/v1/chat/sessions/{session_id}/messages/{user_id}/rating", json={"rating": 3}).status_code == 422

        # Rollback: the rating route is gone with 1.1.0's code, the column with its down migration.
        home.installer.rollback("ai_chatbot")
        forget_addons()
        client = client_for("ai_chatbot")
        assert client.get("/api/v1/chat/health").json()["version"] == "1.0.0"
        assert len(client.get(f"/api/v1/chat/sessions/{session_id}").json()["messages"]) == 8
        assert client.post(f"/api/v1/chat/sessions/{session_id}/messages/{reply_id}/rating", json={"rating": 5}).status_code == 404
        assert "rating" not in columns(url, "chat_messages")


def test_ai_chatbot_needs_a_configured_database(packages, monkeypatch, tmp_path):
    home, zips = packages
    home.installer.install_file(zips["ai_chatbot", "1.0.0"])
    with addons_package(home.config, monkeypatch):
        monkeypatch.delenv("ATOMICPLUG_DATABASE_URL")
        monkeypatch.setenv("ATOMICPLUG_CONFIG", str(tmp_path / "missing.toml"))
        client = client_for("ai_chatbot")
        db = importlib.import_module("addons.ai_chatbot.db")
        with pytest.raises(db.DatabaseNotConfigured, match="ATOMICPLUG_DATABASE_URL"):
            client.post("/api/v1/chat/sessions", json={})
        # ... and the atomicplug config, when there is one, names it.
        monkeypatch.setenv("ATOMICPLUG_CONFIG", str(home.config_path))
        assert db.database_url() == home.config.database_url
        assert client.post("/api/v1/chat/sessions", json={}).status_code == 201


def test_email_and_sms_routes(packages, monkeypatch):
    home, zips = packages
    url = home.config.database_url
    home.installer.install_file(zips["email_marketing", "1.1.0"])
    home.installer.install_file(zips["sms_notifications", "1.0.0"])
    with addons_package(home.config, monkeypatch):
        client = client_for("email_marketing", "sms_notifications")

        created = client.post("/api/v1/email/campaigns", json={"subject": "Spring sale", "body": "Ten percent off"})
        assert created.status_code == 201 and created.json()["id"] == 2
        campaigns = client.get("/api/v1/email/campaigns").json()
        assert [(c["id"], c["subject"], c["stats"]["delivered"]) for c in campaigns] == [(1, "Welcome", 0), (2, "Spring sale", 0)]

        ada = client.post("/api/v1/email/subscribers", json={"email": "Ada@example.com"})
        assert ada.status_code == 201 and ada.json()["email"] == "ada@example.com"
        assert client.post("/api/v1/email/subscribers", json={"email": "ada@example.com"}).status_code == 409
        assert client.post("/api/v1/email/subscribers", json={"email": "not-an-email"}).status_code == 422
        bob = client.post("/api/v1/email/subscribers", json={"email": "bob@example.com"}).json()
        assert [s["email"] for s in client.get("/api/v1/email/subscribers").json()] == ["ada@example.com", "bob@example.com"]

        # sms_notifications sees email_marketing's subscribers as its contacts
        contacts = client.get("/api/v1/sms/contacts").json()
        assert [(c["email"], c["phone"]) for c in contacts] == [("ada@example.com", None), ("bob@example.com", None)]
        ada_id = ada.json()["id"]
        phone = client.put(f"/api/v1/sms/contacts/{ada_id}", json={"phone": "+1 (555) 010-0001"})
        assert phone.status_code == 200 and phone.json()["phone"] == "+15550100001"
        assert client.put("/api/v1/sms/contacts/999", json={"phone": "+15550100001"}).status_code == 404

        sent = client.post("/api/v1/sms/send", json={"subscriber_id": ada_id, "body": "Your invoice is ready"})
        assert sent.status_code == 202
        assert sent.json()["status"] == "queued" and sent.json()["to"] == "+15550100001"
        direct = client.post("/api/v1/sms/send", json={"to": "+44 20 7946 0000", "body": "Maintenance tonight"})
        assert direct.status_code == 202 and direct.json()["to"] == "+442079460000"
        assert client.post("/api/v1/sms/send", json={"subscriber_id": bob["id"], "body": "x"}).status_code == 422  # no phone
        assert client.post("/api/v1/sms/send", json={"subscriber_id": 999, "body": "x"}).status_code == 404
        assert client.post("/api/v1/sms/send", json={"body": "nobody"}).status_code == 422
        assert client.post("/api/v1/sms/send", json={"to": "call me", "body": "x"}).status_code == 422

        listed = client.get("/api/v1/sms/messages").json()
        assert sorted(m["body"] for m in listed) == ["Maintenance tonight", "Your invoice is ready"]
        assert sorted(query(url, "SELECT to_number, status FROM sms_messages")) == [
            ("+15550100001", "queued"), ("+442079460000", "queued"),
        ]  # fmt: skip

        # 1.1.0 of sms_notifications: segments and /stats
        home.installer.install_file(zips["sms_notifications", "1.1.0"])
        forget_addons()
        client = client_for("email_marketing", "sms_notifications")
        long = client.post("/api/v1/sms/send", json={"subscriber_id": ada_id, "body": "y" * 161})
        assert long.status_code == 202 and long.json()["segments"] == 2
        stats = client.get("/api/v1/sms/stats").json()
        assert stats == {"by_status": {"queued": {"messages": 3, "segments": 4}}, "messages": 3, "segments": 4}


# -- the reply engine's choice -------------------------------------------------------------


def _load_engine_module(version: str = "1.0.0") -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"_ai_chatbot_engine_{version.replace('.', '_')}", EXAMPLES / "ai_chatbot" / version / "backend" / "engine.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_openai(answer: str | Exception) -> types.ModuleType:
    """A stand-in ``openai`` package: OpenAI(...).chat.completions.create(...) returns ``answer``."""
    calls: list[dict[str, Any]] = []

    class Completions:
        def create(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            if isinstance(answer, Exception):
                raise answer
            message = types.SimpleNamespace(content=answer)
            return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)])

    class OpenAI:
        def __init__(self, api_key: str, timeout: float) -> None:
            self.api_key = api_key
            self.chat = types.SimpleNamespace(completions=Completions())

    module = types.ModuleType("openai")
    module.__spec__ = importlib.machinery.ModuleSpec("openai", None)
    module.OpenAI = OpenAI  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_reply_engine_uses_openai_only_with_package_and_key(monkeypatch):
    engine = _load_engine_module()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = _fake_openai("From the model.")
    monkeypatch.setitem(sys.modules, "openai", fake)
    assert engine.select_engine().name == "rules"  # package, no key

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    reply = engine.reply_to("how do I pay?", [("user", "hi"), ("assistant", "Hello!")])
    assert (reply.engine, reply.content) == ("openai", "From the model.")
    sent = fake.calls[-1]["messages"]
    assert sent[0]["role"] == "system" and sent[1:] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how do I pay?"},
    ]

    monkeypatch.setitem(sys.modules, "openai", _fake_openai(RuntimeError("quota exceeded")))
    fallback = engine.reply_to("hello")
    assert fallback.engine == "rules" and fallback.content.startswith("Hello!")

    monkeypatch.delitem(sys.modules, "openai")
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: None)  # key, no package
    assert engine.select_engine().name == "rules"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Hello there", "Hello! I'm the NextPanel assistant"),
        ("hi, how do I pay my invoice?", "To pay an invoice"),
        ("I want a refund", "Refunds are requested"),
        ("how to uninstall an addon", "Plugins are managed in Marketplace"),
        ("thank you", "You're welcome"),
        ("???", "Please type a question"),
        ("tell me a joke", "I'm not sure I understood"),
    ],
)
def test_rule_based_engine_is_deterministic(message, expected):
    engine = _load_engine_module().RuleBasedEngine()
    first = engine.reply(message)
    assert first.content.startswith(expected)
    assert engine.reply(message).content == first.content


def test_ai_chatbot_1_1_takes_its_openai_key_and_model_from_its_settings(monkeypatch):
    engine = _load_engine_module("1.1.0")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "openai", _fake_openai("From the model."))
    assert engine.select_engine().name == "rules" and engine.openai_key() == ""
    engine.configure({"openai_api_key": "sk-from-settings", "model": "gpt-4o"})  # what atomicplug's loader hands over
    chosen = engine.select_engine()
    assert (chosen.name, chosen.model, chosen._client.api_key) == ("openai", "gpt-4o", "sk-from-settings")
    engine.configure({})
    assert engine.select_engine().name == "rules"
