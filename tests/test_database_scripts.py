"""Splitting SQL scripts with the databases' own tokenizers; refusing by statement type."""

from __future__ import annotations

import pytest

from atomicplug.database.scripts import ScriptSyntaxError, split_script

BOTH = ["sqlite", "postgresql"]


def sqls(text: str, dialect: str) -> list[str]:
    return [s.sql for s in split_script(text, dialect)]


# -- splitting -----------------------------------------------------------------


@pytest.mark.parametrize("dialect", BOTH)
def test_split_keeps_semicolons_inside_strings_and_comments(dialect: str) -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (s VARCHAR(20));
    INSERT INTO t VALUES ('a;b'); /* block; comment */
    INSERT INTO t VALUES ('c''d;e');
    """
    assert sqls(script, dialect) == [
        "CREATE TABLE t (s VARCHAR(20))",
        "INSERT INTO t VALUES ('a;b')",
        "INSERT INTO t VALUES ('c''d;e')",
    ]


def test_postgresql_split_keeps_dollar_quoted_bodies_whole() -> None:
    script = """CREATE FUNCTION f() RETURNS integer AS $body$
    BEGIN
      PERFORM 1; RETURN 2;
    END;
    $body$ LANGUAGE plpgsql;
    SELECT $$x;y$$;"""
    statements = split_script(script, "postgresql")
    assert [s.number for s in statements] == [1, 2]
    assert "RETURN 2;" in statements[0].sql and statements[0].sql.endswith("LANGUAGE plpgsql")
    assert statements[1].sql == "SELECT $$x;y$$"


@pytest.mark.parametrize("dialect", BOTH)
def test_split_drops_empty_and_comment_only_statements(dialect: str) -> None:
    statements = split_script(";;\n-- nothing\n/* nothing */ ;\nSELECT 1;\n-- trailing\n", dialect)
    assert [(s.number, s.sql) for s in statements] == [(1, "SELECT 1")]


@pytest.mark.parametrize("dialect", BOTH)
def test_a_last_statement_without_semicolon_is_a_statement(dialect: str) -> None:
    assert sqls("SELECT 1;\nSELECT 2 -- no semicolon\n", dialect) == ["SELECT 1", "SELECT 2"]


def test_postgresql_statement_text_is_cut_by_character_not_byte() -> None:
    script = "-- héllo wörld\nINSERT INTO t VALUES ('é;ü');\nSELECT 'ß'"
    assert sqls(script, "postgresql") == ["INSERT INTO t VALUES ('é;ü')", "SELECT 'ß'"]


def test_sqlite_split_keeps_trigger_body_whole() -> None:
    script = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; DELETE FROM u; END;\nSELECT 1;"
    statements = split_script(script, "sqlite")
    assert len(statements) == 2 and statements[0].sql.endswith("END")
    assert statements[0].refusal is None


def test_sqlite_split_is_not_fooled_by_a_column_named_begin() -> None:
    """sqlparse took ``begin`` for a block and glued the next statements to it."""
    script = "CREATE TABLE shifts (id INTEGER, begin TEXT);\nINSERT INTO shifts VALUES (1, 'x');\nCREATE INDEX ix ON shifts (begin);"
    statements = split_script(script, "sqlite")
    assert [s.sql for s in statements] == [
        "CREATE TABLE shifts (id INTEGER, begin TEXT)",
        "INSERT INTO shifts VALUES (1, 'x')",
        "CREATE INDEX ix ON shifts (begin)",
    ]
    assert all(s.refusal is None for s in statements)


def test_postgresql_split_finds_a_commit_hidden_after_a_column_named_begin() -> None:
    """The reported bypass: sqlparse kept this as one chunk and psycopg2 ran the COMMIT."""
    script = "CREATE TABLE shifts (id serial, begin timestamptz); COMMIT; CREATE TABLE later (id int);"
    statements = split_script(script, "postgresql")
    assert [s.sql for s in statements] == [
        "CREATE TABLE shifts (id serial, begin timestamptz)",
        "COMMIT",
        "CREATE TABLE later (id int)",
    ]
    assert [s.refusal is not None for s in statements] == [False, True, False]


def test_postgresql_syntax_error_names_the_line() -> None:
    with pytest.raises(ScriptSyntaxError, match=r'^syntax error at or near "FROM" \(line 3\)$'):
        split_script("SELECT 1;\n\nSELECT * FROM FROM;\n", "postgresql")


def test_postgresql_statement_cut_short_names_the_last_line() -> None:
    with pytest.raises(ScriptSyntaxError, match=r"^syntax error at end of input \(line 2\)$"):
        split_script("CREATE TABLE a (id INTEGER);\nCREATE TABLE b (nonsense", "postgresql")


def test_split_results_are_cached_per_text_and_dialect() -> None:
    text = "CREATE TABLE cached_t (id INTEGER);"
    assert split_script(text, "sqlite") is split_script(text, "sqlite")
    assert split_script(text, "postgresql") is split_script(text, "postgresql")


def test_sqlite_split_does_not_import_pglast() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from atomicplug.database.scripts import split_script; "
        "split_script('CREATE TABLE t (a INTEGER);', 'sqlite'); print('pglast' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- refusals: PostgreSQL, by parsed statement type ------------------------------


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("COMMIT", "transaction control"),
        ("END", "transaction control"),
        ("BEGIN", "transaction control"),
        ("START TRANSACTION", "transaction control"),
        ("ROLLBACK", "transaction control"),
        ("ABORT", "transaction control"),
        ("SAVEPOINT s", "transaction control"),
        ("RELEASE SAVEPOINT s", "transaction control"),
        ("ROLLBACK TO SAVEPOINT s", "transaction control"),
        ("PREPARE TRANSACTION 'x'", "transaction control"),
        ("COMMIT PREPARED 'x'", "transaction control"),
        ("VACUUM", "VACUUM"),
        ("/* sneaky */ vacuum full t", "VACUUM"),
        ("VACUUM/**/FULL", "VACUUM"),
        ("CREATE DATABASE other", "CREATE/DROP DATABASE"),
        ("DROP DATABASE other", "CREATE/DROP DATABASE"),
        ("ALTER DATABASE app SET TABLESPACE ts", "ALTER DATABASE"),
        ("CREATE INDEX CONCURRENTLY ix ON t (a)", "CONCURRENTLY"),
        ("create unique index concurrently ix on t (a)", "CONCURRENTLY"),
        ("/* a */ CREATE INDEX /* b */ CONCURRENTLY ix ON t(a)", "CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY ix", "CONCURRENTLY"),
        ("REINDEX TABLE CONCURRENTLY t", "CONCURRENTLY"),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY ix", "CONCURRENTLY"),
        ("REINDEX DATABASE app", "REINDEX DATABASE/SYSTEM"),
        ("REINDEX SYSTEM app", "REINDEX DATABASE/SYSTEM"),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "CONCURRENTLY"),
        ("ALTER SYSTEM SET work_mem = '1MB'", "ALTER SYSTEM"),
        ("CREATE TABLESPACE ts LOCATION '/tmp'", "TABLESPACE"),
        ("DROP TABLESPACE ts", "TABLESPACE"),
        ("CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p", "SUBSCRIPTION"),
        ("ALTER SUBSCRIPTION s REFRESH PUBLICATION", "SUBSCRIPTION"),
        ("DROP SUBSCRIPTION s", "SUBSCRIPTION"),
        ("DISCARD ALL", "DISCARD ALL"),
        ("CLUSTER", "CLUSTER"),
        ("SET synchronous_commit = off", "synchronous_commit"),
        ("SET LOCAL synchronous_commit TO off", "synchronous_commit"),
        ("RESET synchronous_commit", "synchronous_commit"),
        ("SELECT pg_catalog.set_config('synchronous_commit', 'off', false)", "synchronous_commit"),
        ("SET SESSION AUTHORIZATION bob", "session_authorization"),
        ("RESET SESSION AUTHORIZATION", "session_authorization"),
        ("SET ROLE bob", "role"),
        ("RESET ROLE", "role"),
        ("SELECT set_config('role', 'bob', true)", "role"),
        ("DO $$ BEGIN COMMIT; END $$", "DO block"),
        ("DO $$ BEGIN IF true THEN ROLLBACK; END IF; END $$", "DO block"),
        ("DO LANGUAGE plpython3u $$ plpy.commit() $$", "DO block"),
        ("COPY t FROM STDIN", "COPY"),
        ("COPY t FROM PROGRAM 'cat /etc/passwd'", "COPY"),
        ("COPY t TO PROGRAM 'sh'", "COPY"),
        ("COPY t TO STDOUT", "COPY"),
        ("CALL do_things()", "CALL"),
    ],
)
def test_postgresql_statements_that_cannot_run_in_our_transaction_are_refused_by_type(sql: str, reason: str) -> None:
    (statement,) = split_script(sql, "postgresql")
    assert statement.refusal is not None and reason in statement.refusal


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX ix ON t (a)",
        "CREATE TABLE begin_log (commit_id INTEGER, begin TIMESTAMPTZ, rollback TEXT)",
        "INSERT INTO t VALUES ('VACUUM; COMMIT')",
        "ALTER DATABASE app SET timezone TO 'UTC'",
        "ANALYZE t",
        "CLUSTER t USING ix",
        "DISCARD PLANS",
        "DO $$ BEGIN PERFORM 1; END $$",
        "DO $$ BEGIN RAISE NOTICE 'COMMIT'; END $$",
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$",
        "SET search_path = app, public",
        "SELECT pg_catalog.set_config('search_path', '', false)",
        "SET statement_timeout = 0",
        "SET client_min_messages = warning",
        "RESET ALL",
        "COPY t FROM '/srv/seed.csv'",
    ],
)
def test_postgresql_ordinary_statements_are_allowed(sql: str) -> None:
    (statement,) = split_script(sql, "postgresql")
    assert statement.refusal is None


# -- refusals: SQLite, by the statement's first keyword ------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin immediate",
        "COMMIT",
        "END TRANSACTION",
        "ROLLBACK",
        "SAVEPOINT s",
        "RELEASE s",
        "/* sneaky */ -- more\n commit",
        "ATTACH DATABASE 'x.db' AS x",
        "DETACH x",
        "VACUUM",
        "VACUUM INTO 'copy.db'",
        "PRAGMA foreign_keys = OFF",
        "PRAGMA main.journal_mode = WAL",
        "pragma \"journal_mode\" = DELETE",
        "PRAGMA synchronous = 0",
        "PRAGMA locking_mode = EXCLUSIVE",
        "PRAGMA temp_store = MEMORY",
        "PRAGMA page_size = 8192",
        "PRAGMA auto_vacuum = FULL",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ],
)
def test_sqlite_statements_that_cannot_run_in_our_transaction_are_refused(sql: str) -> None:
    (statement,) = split_script(sql, "sqlite")
    assert statement.refusal is not None


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE begin_log (begin TEXT, commit_id INTEGER, end_at TEXT)",
        "INSERT INTO t VALUES ('BEGIN')",
        "PRAGMA defer_foreign_keys = ON",
        "UPDATE t SET \"commit\" = 1",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
    ],
)
def test_sqlite_ordinary_statements_are_allowed(sql: str) -> None:
    (statement,) = split_script(sql, "sqlite")
    assert statement.refusal is None


def test_refused_statements_are_quoted_on_one_line_and_shortened() -> None:
    from atomicplug.database.scripts import one_line

    assert one_line("DO $$\nBEGIN\n   COMMIT;\nEND $$") == "DO $$ BEGIN COMMIT; END $$"
    long = "INSERT INTO t VALUES " + ", ".join(f"({i})" for i in range(100))
    assert len(one_line(long)) == 80 and one_line(long).endswith("…")
