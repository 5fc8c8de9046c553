"""SQL scripts: split into statements; refuse what cannot run inside a transaction.

DESIGN.md "Migrations": scripts are split with sqlparse (dollar-quoted bodies,
semicolons inside strings and comments stay where they are) and run statement
by statement; statements that cannot run inside a transaction block, or that
would end ours, are refused at plan time.
"""

from __future__ import annotations

import functools
import re

import attrs
import sqlparse
from sqlparse.lexer import tokenize
from sqlparse.tokens import Comment

__all__ = ["Statement", "split_script", "non_transactional_reason"]


@attrs.frozen
class Statement:
    """One statement of a script; ``number`` counts from 1 in its file."""

    number: int
    sql: str


@functools.lru_cache(maxsize=256)
def split_script(text: str) -> tuple[Statement, ...]:
    """The statements of ``text`` in order; empty and comment-only ones are dropped.

    Cached: a transaction splits the same script several times (check, plan,
    run, rehearsal) and sqlparse is slow; the result is immutable.
    """
    statements: list[Statement] = []
    for raw in sqlparse.split(text):
        if not _strip_comments(raw).rstrip(";").strip():
            continue
        sql = raw.strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        statements.append(Statement(number=len(statements) + 1, sql=sql))
    return tuple(statements)


@functools.lru_cache(maxsize=1024)
def _strip_comments(sql: str) -> str:
    """``sql`` with each comment replaced by a space (so ``VACUUM/**/FULL`` stays two words).

    One pass of sqlparse's lexer: ``sqlparse.format(strip_comments=True)`` groups the
    whole statement first, ~5 ms for a 50-row INSERT, most of ``migrate.check`` (issue 8).
    """
    return "".join(" " if ttype in Comment else value for ttype, value in tokenize(sql)).strip()


# Matched against the statement with comments removed, whitespace collapsed, upper-cased.
_REFUSED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), reason)
    for pattern, reason in (
        (r"^CREATE (UNIQUE )?INDEX CONCURRENTLY\b", "CREATE INDEX CONCURRENTLY cannot run inside a transaction"),
        (r"^DROP INDEX CONCURRENTLY\b", "DROP INDEX CONCURRENTLY cannot run inside a transaction"),
        (r"^REINDEX\b.*\bCONCURRENTLY\b", "REINDEX CONCURRENTLY cannot run inside a transaction"),
        (r"^REINDEX (\(.*\) )?(DATABASE|SYSTEM)\b", "REINDEX DATABASE/SYSTEM cannot run inside a transaction"),
        (r"^ALTER TABLE\b.*\bDETACH PARTITION\b.*\bCONCURRENTLY\b", "DETACH PARTITION CONCURRENTLY cannot run inside a transaction"),
        (r"^VACUUM\b", "VACUUM cannot run inside a transaction"),
        (r"^(CREATE|DROP) DATABASE\b", "CREATE/DROP DATABASE cannot run inside a transaction"),
        (r"^ALTER SYSTEM\b", "ALTER SYSTEM cannot run inside a transaction"),
        (r"^(CREATE|DROP) TABLESPACE\b", "CREATE/DROP TABLESPACE cannot run inside a transaction"),
        (r"^(CREATE|DROP) SUBSCRIPTION\b", "CREATE/DROP SUBSCRIPTION cannot run inside a transaction"),
        (r"^DISCARD ALL\b", "DISCARD ALL cannot run inside a transaction"),
        (r"^(ATTACH|DETACH)\b", "SQLite ATTACH/DETACH cannot run inside a transaction"),
        (r"^PRAGMA (\w+\.)?(FOREIGN_KEYS|JOURNAL_MODE)\b", "this PRAGMA is silently ignored inside a transaction (use PRAGMA defer_foreign_keys)"),
        (
            r"^(BEGIN|COMMIT|END|ROLLBACK|ABORT|START TRANSACTION|SAVEPOINT|RELEASE|PREPARE TRANSACTION)\b",
            "transaction control belongs to atomicplug: the whole operation is one transaction",
        ),
    )
)


def non_transactional_reason(sql: str) -> str | None:
    """Why ``sql`` may not run inside atomicplug's transaction, or None when it may."""
    normal = " ".join(_strip_comments(sql).split()).upper()
    for pattern, reason in _REFUSED:
        if pattern.search(normal):
            return reason
    return None
