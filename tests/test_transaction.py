"""The transaction engine end to end through the Installer API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atomicplug.errors import (
    DependencyError,
    NotInstalledError,
    OperationError,
    SignatureError,
    UsageError,
)
from atomicplug.journal.reader import all_journals, pending_journals
from atomicplug.testing import snapshot, table_names

ITEMS_V1 = {"0001_items": ("CREATE TABLE shop_items (id INTEGER PRIMARY KEY, name TEXT);", "DROP TABLE shop_items;")}
ITEMS_V2 = dict(ITEMS_V1, **{"0002_orders": ("CREATE TABLE shop_orders (id INTEGER PRIMARY KEY);", "DROP TABLE shop_orders;")})


@pytest.fixture
def home(any_db_home):
    """Every test here runs on SQLite and on PostgreSQL."""
    return any_db_home


def _link_version(folder: Path, plugin_id: str) -> str:
    return Path(os.readlink(folder / plugin_id)).parent.name.split("-")[0]


def test_install_links_backend_and_frontend_and_creates_tables(home):
    result = home.installer.install_file(home.package("shop", migrations=ITEMS_V1))
    assert result.changes == ("install shop 1.0.0",)
    assert _link_version(home.config.backend_addons, "shop") == "1.0.0"
    assert (home.config.backend_addons / "shop" / "__init__.py").read_text().startswith('"""shop backend')
    assert table_names(home.config.database_url) == {"shop_items"}
    assert [(p["id"], p["version"], p["enabled"]) for p in home.installer.list()] == [("shop", "1.0.0", True)]
    index = (home.config.frontend_addons / "index.ts").read_text()
    tree = f"shop/1.0.0-{home.installer.list()[0]['sha256'][:12]}"
    assert f'import addon_shop from "./.store/{tree}/frontend/addon.config";' in index


def test_backend_is_precompiled_so_the_store_is_never_written_by_imports(home):
    home.installer.install_file(home.package("shop"))
    pycache = home.config.backend_addons / "shop" / "__pycache__"
    assert any(p.suffix == ".pyc" for p in pycache.iterdir())


def test_reinstalling_the_same_package_is_a_no_op(home):
    package = home.package("shop")
    home.installer.install_file(package)
    again = home.installer.install_file(package)
    assert not again.changed
    assert len(home.installer.history()) == 1


def test_upgrade_runs_new_migrations_and_keeps_previous_tree_for_rollback(home):
    home.installer.install_file(home.package("shop", "1.0.0", migrations=ITEMS_V1))
    result = home.installer.install_file(home.package("shop", "1.1.0", migrations=ITEMS_V2))
    assert result.changes == ("upgrade shop 1.0.0 -> 1.1.0",)
    assert table_names(home.config.database_url) == {"shop_items", "shop_orders"}
    assert home.installer.list()[0]["previous_version"] == "1.0.0"
    home.installer.rollback("shop")
    assert _link_version(home.config.backend_addons, "shop") == "1.0.0"
    assert table_names(home.config.database_url) == {"shop_items"}
    assert home.installer.list()[0]["version"] == "1.0.0"


def test_downgrade_needs_allow_downgrade(home):
    home.installer.install_file(home.package("shop", "2.0.0"))
    older = home.package("shop", "1.0.0")
    with pytest.raises(UsageError, match="downgrade"):
        home.installer.install_file(older)
    home.installer.install_file(older, allow_downgrade=True)
    assert home.installer.list()[0]["version"] == "1.0.0"


def test_uninstall_removes_links_registry_and_tables_but_keep_data_keeps_tables(home):
    home.installer.install_file(home.package("shop", migrations=ITEMS_V1))
    home.installer.uninstall("shop", keep_data=True)
    assert home.installer.list() == []
    assert not os.path.lexists(home.config.backend_addons / "shop")
    assert table_names(home.config.database_url) == {"shop_items"}

    home.installer.install_file(home.package("blog", migrations={"0001_posts": ("CREATE TABLE blog_posts (id INTEGER);", "DROP TABLE blog_posts;")}))
    home.installer.uninstall("blog")
    assert "blog_posts" not in table_names(home.config.database_url)


def test_disable_and_enable_move_links_but_keep_store_and_tables(home):
    home.installer.install_file(home.package("shop", migrations=ITEMS_V1))
    home.installer.disable("shop")
    assert not os.path.lexists(home.config.backend_addons / "shop")
    assert home.installer.list()[0]["enabled"] is False
    assert "shop" not in (home.config.frontend_addons / "index.ts").read_text()
    assert table_names(home.config.database_url) == {"shop_items"}
    home.installer.enable("shop")
    assert _link_version(home.config.backend_addons, "shop") == "1.0.0"


def test_wrong_signature_is_refused_and_nothing_is_written(home, tmp_path):
    from atomicplug.testing import make_keypair

    package = home.package("shop")
    stranger = make_keypair(tmp_path / "stranger")
    from atomicplug.minisign import sign_file

    Path(f"{package}.minisig").write_text(sign_file(package, stranger.secret))
    with pytest.raises(SignatureError, match="untrusted key"):
        home.installer.install_file(package)
    assert not home.config.home.exists()
    assert not home.config.backend_addons.exists()


def test_unsigned_package_is_refused_unless_allowed(home, home_factory):
    package = home.package("shop")
    Path(f"{package}.minisig").unlink()
    with pytest.raises(SignatureError, match="no signature"):
        home.installer.install_file(package)
    lenient = home_factory(name="lenient", allow_unsigned=True)
    lenient.installer.install_file(package)
    assert lenient.installer.list()[0]["id"] == "shop"


def test_failed_migration_rolls_back_everything_and_is_recorded(home):
    bad = {"0001_x": ("CREATE TABLE shop_a (id INTEGER); CREATE TABLE shop_b (nonsense", "DROP TABLE shop_a;")}
    before = snapshot(home.config)
    with pytest.raises(OperationError):
        home.installer.install_file(home.package("shop", migrations=bad))
    assert snapshot(home.config) == before
    assert not any((home.config.store_dir).glob("shop/*"))
    assert not any(home.config.staging_dir.glob("*")) if home.config.staging_dir.exists() else True
    history = home.installer.history()
    assert history[-1]["outcome"] == "aborted"
    assert all(j.finished for j in all_journals(home.config.journal_dir))


def test_finished_transactions_leave_no_journal_where_the_next_writer_looks(home):
    home.installer.install_file(home.package("shop"))
    with pytest.raises(OperationError):
        home.installer.install_file(home.package("shop", "1.1.0", migrations={"0001_x": ("CREATE TABLE shop_b (nonsense", "")}))
    assert list(home.config.journal_dir.glob("*.jsonl")) == []
    assert [j.outcome for j in all_journals(home.config.journal_dir)] == ["done", "aborted"]


def test_finished_journals_left_where_writers_look_are_put_aside_by_the_next_writer(home):
    """A home from before journals moved (or a crash between a journal's last record and its move)
    has finished journals where every writer looks; the next writer moves them, once."""
    from atomicplug.journal import Journal, RecordType

    home.installer.install_file(home.package("shop"))
    for n in range(3):  # as an earlier atomicplug left them: the last record, no move
        Journal.begin(home.config.journal_dir, f"20200101T00000000000{n}-aaaaaa", plan={}).append(RecordType.DONE)
    assert len(list(home.config.journal_dir.glob("*.jsonl"))) == 3
    home.installer.disable("shop")
    assert list(home.config.journal_dir.glob("*.jsonl")) == []
    assert len(all_journals(home.config.journal_dir)) == 5 and not pending_journals(home.config.journal_dir)


def test_backend_syntax_error_is_refused_before_commit(home):
    package = home.package("shop", files={"backend/broken.py": "def nope(:\n"})
    with pytest.raises(Exception, match="broken.py does not compile"):
        home.installer.install_file(package)
    assert home.installer.list() == []


def test_requires_must_be_installed_and_blocks_uninstall(home):
    with pytest.raises(DependencyError, match="shop requires base"):
        home.installer.install_file(home.package("shop", requires=("base>=1.0",)))
    home.installer.install_file(home.package("base", "1.2.0"))
    home.installer.install_file(home.package("shop", requires=("base>=1.0",)))
    with pytest.raises(DependencyError, match="require"):
        home.installer.uninstall("base")
    with pytest.raises(DependencyError, match="base would be 0.9"):
        home.installer.install_file(home.package("base", "0.9.0"), allow_downgrade=True)
    result = home.installer.uninstall("base", cascade=True)
    assert result.changes == ("uninstall shop 1.0.0", "uninstall base 1.2.0")
    assert home.installer.list() == []


def test_rollback_without_previous_version_is_refused(home):
    home.installer.install_file(home.package("shop"))
    with pytest.raises(OperationError, match="no previous version"):
        home.installer.rollback("shop")
    with pytest.raises(NotInstalledError):
        home.installer.rollback("ghost")


def test_rollback_to_a_tree_removed_by_hand_says_how_to_get_it_back(home):
    import shutil

    home.installer.install_file(home.package("shop", "1.0.0", migrations=ITEMS_V1))
    home.installer.install_file(home.package("shop", "1.1.0", migrations=ITEMS_V2))
    previous = next(t for t in (home.config.store_dir / "shop").iterdir() if t.name.startswith("1.0.0-"))
    shutil.rmtree(previous)
    with pytest.raises(OperationError, match=r"shop 1.0.0 is no longer in the store .*install its package again"):
        home.installer.rollback("shop")
    assert home.installer.list()[0]["version"] == "1.1.0"


def test_real_folder_in_the_way_is_refused_before_anything_changes(home):
    (home.config.backend_addons / "shop").mkdir(parents=True)
    with pytest.raises(OperationError, match="holds files atomicplug did not put there"):
        home.installer.install_file(home.package("shop"))
    assert home.installer.list() == []


def test_verify_reports_changed_missing_and_extra_files(home):
    home.installer.install_file(home.package("shop", files={"backend/extra.py": "X = 1\n"}))
    assert all(r.ok for r in home.installer.verify())
    backend = home.config.backend_addons / "shop"
    os.chmod(backend / "extra.py", 0o644)
    (backend / "extra.py").write_text("X = 2\n")
    (backend / "__init__.py").unlink()
    (backend / "intruder.py").write_text("")
    report = home.installer.verify("shop")[0]
    assert report.changed == ("backend/extra.py",)
    assert report.missing == ("backend/__init__.py",)
    assert report.extra == ("backend/intruder.py",)


def test_gc_keeps_the_trees_of_the_kept_generations_and_their_previous_ones_only(home):
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        home.installer.install_file(home.package("shop", version))
    trees = sorted(p.name.split("-")[0] for p in (home.config.store_dir / "shop").iterdir())
    assert trees == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    removed = home.installer.gc()  # kept: generations 3 (1.2.0, previous 1.1.0) and 4 (1.3.0, previous 1.2.0)
    assert removed["trees"] == 1
    trees = sorted(p.name.split("-")[0] for p in (home.config.store_dir / "shop").iterdir())
    assert trees == ["1.1.0", "1.2.0", "1.3.0"]
    assert len(all_journals(home.config.journal_dir)) == 1


def test_registry_file_is_valid_json_listing_the_plugins(home):
    home.installer.install_file(home.package("shop"))
    data = json.loads(home.config.registry_path.read_text())
    assert data["plugins"]["shop"]["version"] == "1.0.0"
    assert data["plugins"]["shop"]["enabled"] is True


def test_enable_refuses_while_a_requirement_is_disabled(home):
    """Issue 13 item 8: disable sms; disable email; enable sms made the state that disable refuses."""
    home.installer.install_file(home.package("email"))
    home.installer.install_file(home.package("sms", requires=("email",)))
    home.installer.disable("sms")
    home.installer.disable("email")
    before = snapshot(home.config)
    with pytest.raises(DependencyError, match="sms requires email, which is disabled"):
        home.installer.enable("sms")
    assert snapshot(home.config) == before
    result = home.installer.enable("sms", with_requirements=True)
    assert sorted(result.changes) == ["enable email", "enable sms"]
    assert {p["id"]: p["enabled"] for p in home.installer.list()} == {"email": True, "sms": True}


def test_installing_a_plugin_whose_requirement_is_disabled_is_refused(home):
    home.installer.install_file(home.package("email"))
    home.installer.disable("email")
    sms = home.package("sms", requires=("email",))
    with pytest.raises(DependencyError, match="sms requires email, which is disabled"):
        home.installer.install_file(sms)
    assert [p["id"] for p in home.installer.list()] == ["email"]
    home.installer.install_file(sms, with_requirements=True)
    assert {p["id"]: p["enabled"] for p in home.installer.list()} == {"email": True, "sms": True}


# -- dependencies first (docs/design.md "One transaction", step 2) -----------------------------
#: zeta's table, which alpha's migration writes into: alpha's must run after zeta's.
ZETA = {"0001_zeta": ("CREATE TABLE zeta_t (id INTEGER);", "DROP TABLE zeta_t;")}
ALPHA = {"0001_alpha": ("INSERT INTO zeta_t (id) VALUES (1);", "DELETE FROM zeta_t;")}


def test_zips_given_dependents_first_are_installed_dependencies_first(home):
    alpha = home.package("alpha", requires=("zeta",), migrations=ALPHA)
    result = home.installer.install_packages([home.installer.take_in(alpha), home.installer.take_in(home.package("zeta", migrations=ZETA))])
    assert result.changes == ("install zeta 1.0.0", "install alpha 1.0.0")
    assert table_names(home.config.database_url) == {"zeta_t"}


def test_a_generation_rollback_installs_dependencies_first_and_uninstalls_dependents_first(home):
    """Changes ran in id order: alpha's migration wrote into zeta's table before zeta made it, and
    zeta's down dropped the table alpha's down still empties."""
    home.installer.install_file(home.package("other"))  # generation 1
    home.installer.install_file(home.package("zeta", migrations=ZETA))  # 2
    home.installer.install_file(home.package("alpha", requires=("zeta",), migrations=ALPHA))  # 3
    undone = home.installer.rollback(generation=1)
    assert undone.changes == ("uninstall alpha 1.0.0", "uninstall zeta 1.0.0")
    assert table_names(home.config.database_url) == set()
    redone = home.installer.rollback(generation=3)
    assert redone.changes == ("install zeta 1.0.0", "install alpha 1.0.0")
    assert {p["id"] for p in home.installer.list()} == {"alpha", "other", "zeta"}


def test_with_requirements_enables_a_requirement_the_same_install_upgrades(home):
    home.installer.install_file(home.package("base"))
    home.installer.disable("base")
    shop, base = home.package("shop", requires=("base>=1.1",)), home.package("base", "1.1.0")
    home.installer.install_packages([home.installer.take_in(shop), home.installer.take_in(base)], with_requirements=True)
    assert {p["id"]: (p["version"], p["enabled"]) for p in home.installer.list()} == {"base": ("1.1.0", True), "shop": ("1.0.0", True)}


def test_zips_that_require_each_other_are_refused(home):
    first, second = home.package("ping", requires=("pong",)), home.package("pong", requires=("ping",))
    with pytest.raises(DependencyError, match="dependency cycle: p[io]ng -> p[io]ng -> p[io]ng"):
        home.installer.install_packages([home.installer.take_in(first), home.installer.take_in(second)])
    assert home.installer.list() == []
