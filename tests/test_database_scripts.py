"""Splitting SQL scripts and refusing statements that cannot run in a transaction."""

from __future__ import annotations

import pytest

from atomicplug.database.scripts import non_transactional_reason, split_script


def test_split_keeps_semicolons_inside_strings_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (s VARCHAR(20));
    INSERT INTO t VALUES ('a;b'); /* block; comment */
    INSERT INTO t VALUES ('c''d;e');
    """
    sqls = [s.sql for s in split_script(script)]
    assert len(sqls) == 3
    assert sqls[1].endswith("INSERT INTO t VALUES ('a;b')")
    assert sqls[2].endswith("INSERT INTO t VALUES ('c''d;e')")


def test_split_keeps_dollar_quoted_bodies_whole() -> None:
    script = """CREATE FUNCTION f() RETURNS integer AS $body$
    BEGIN
      PERFORM 1; RETURN 2;
    END;
    $body$ LANGUAGE plpgsql;
    SELECT $$x;y$$;"""
    statements = split_script(script)
    assert [s.number for s in statements] == [1, 2]
    assert "RETURN 2;" in statements[0].sql and statements[0].sql.endswith("LANGUAGE plpgsql")
    assert statements[1].sql == "SELECT $$x;y$$"


def test_split_drops_empty_and_comment_only_statements() -> None:
    statements = split_script(";;\n-- nothing\n/* nothing */ ;\nSELECT 1;\n-- trailing\n")
    assert [(s.number, s.sql) for s in statements] == [(1, "SELECT 1")]


def test_split_keeps_sqlite_trigger_body_whole() -> None:
    script = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; DELETE FROM u; END;\nSELECT 1;"
    statements = split_script(script)
    assert len(statements) == 2 and statements[0].sql.endswith("END")


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY ix ON t (a)",
        "create unique index concurrently ix on t (a)",
        "DROP INDEX CONCURRENTLY ix",
        "REINDEX TABLE CONCURRENTLY t",
        "REINDEX (VERBOSE) INDEX CONCURRENTLY ix",
        "REINDEX DATABASE app",
        "VACUUM",
        "/* sneaky */ vacuum full t",
        "CREATE DATABASE other",
        "DROP DATABASE other",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "CREATE TABLESPACE ts LOCATION '/tmp'",
        "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
        "ATTACH DATABASE 'x.db' AS x",
        "PRAGMA foreign_keys = OFF",
        "COMMIT",
        "BEGIN",
        "ROLLBACK",
        "START TRANSACTION",
    ],
)
def test_statements_that_cannot_run_in_a_transaction_are_named(sql: str) -> None:
    assert non_transactional_reason(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX ix ON t (a)",
        "CREATE TABLE begin_log (commit_id INTEGER)",
        "INSERT INTO t VALUES ('VACUUM')",
        "ALTER DATABASE app SET timezone TO 'UTC'",
        "DO $$ BEGIN PERFORM 1; END $$",
        "PRAGMA defer_foreign_keys = ON",
    ],
)
def test_ordinary_statements_are_allowed(sql: str) -> None:
    assert non_transactional_reason(sql) is None


@pytest.mark.parametrize(
    "sql",
    [
        "VACUUM/*x*/FULL",
        "/* a */ CREATE INDEX /* b */ CONCURRENTLY ix ON t(a)",
        "SELECT '--not a comment' -- real\n",
        "CREATE TABLE t (a TEXT DEFAULT '/* no */')",
        "-- only a comment\n/* and another */",
    ],
)
def test_comment_stripping_agrees_with_sqlparse_format(sql: str) -> None:
    """The one-pass lexer strip must read statements as sqlparse's (slower) formatter does."""
    import sqlparse

    from atomicplug.database.scripts import _strip_comments

    assert " ".join(_strip_comments(sql).split()) == " ".join(sqlparse.format(sql, strip_comments=True).split())
