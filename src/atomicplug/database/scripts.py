"""SQL scripts: split with the database's own tokenizer; refuse what cannot run in our transaction.

docs/design.md "SQL scripts": a script is split the way its database reads it,
never by a regex or a generic SQL lexer (sqlparse took a column named
``begin`` for a block and kept ``…; COMMIT; …`` as one chunk, which the
driver then ran whole):

- PostgreSQL: pglast (libpg_query, PostgreSQL's own parser). Each statement
  keeps its original text (the parser's ``stmt_location``/``stmt_len``) and
  is refused by its parsed type: anything that ends, commits or escapes the
  transaction, or cannot run inside one.
- SQLite: ``sqlite3.complete_statement`` (SQLite's tokenizer) decides where a
  statement ends; the statement's first keyword decides whether it is
  refused, so a column named ``begin`` is just a column.

Each statement is later sent on its own (one per execute). pglast is imported
only for PostgreSQL scripts: SQLite users do not need it.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import attrs

from atomicplug.errors import DatabaseError

__all__ = ["Statement", "ScriptSyntaxError", "split_script", "one_line", "sqlite_tokens"]


@attrs.frozen
class Statement:
    """One statement of a script: ``number`` counts from 1 in its file; ``refusal`` says
    why it may not run inside atomicplug's transaction (None: it may)."""

    number: int
    sql: str
    refusal: str | None = None


class ScriptSyntaxError(ValueError):
    """The script does not parse as the database's SQL; the message names the line."""


@functools.lru_cache(maxsize=256)
def split_script(text: str, dialect: str) -> tuple[Statement, ...]:
    """The statements of ``text`` for ``dialect`` (``"sqlite"`` or ``"postgresql"``), in order.

    Empty and comment-only statements are dropped; a last statement without
    ``;`` is still a statement. Cached: a transaction splits the same script
    several times (check, plan, run, rehearsal); the result is immutable.
    Raises ScriptSyntaxError when a PostgreSQL script does not parse.
    """
    if dialect == "postgresql":
        pieces = _postgresql_pieces(text)
    elif dialect == "sqlite":
        pieces = ((sql, _sqlite_refusal(sql)) for sql in _sqlite_pieces(text))
    else:
        raise ValueError(f"expected dialect 'sqlite' or 'postgresql', got {dialect!r}")
    return tuple(Statement(number, sql, refusal) for number, (sql, refusal) in enumerate(pieces, start=1))


def one_line(sql: str, limit: int = 80) -> str:
    """``sql`` on one line for a message: whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


_TRANSACTION_CONTROL = "transaction control belongs to atomicplug: the whole operation is one transaction"


# -- PostgreSQL ------------------------------------------------------------------


def _postgresql_pieces(text: str) -> Iterator[tuple[str, str | None]]:
    """(statement text, refusal) per statement, from libpg_query's parse tree.

    The JSON form is an order of magnitude faster to build than pglast's
    Python nodes (20,000 INSERTs: 0.06 s against 0.9 s); its locations are
    byte offsets into the UTF-8 text.
    """
    try:
        from pglast.parser import ParseError, parse_sql_json
    except ImportError:
        raise DatabaseError(
            "PostgreSQL migrations are split by PostgreSQL's own parser, pglast, which is not installed "
            "(pip install 'atomicplug[postgresql]')"
        ) from None
    while True:
        try:
            tree = json.loads(parse_sql_json(text))
            break
        except ParseError as exc:
            location = exc.args[1] if len(exc.args) > 1 and exc.args[1] is not None else len(text)
            text = _without_meta_command(text, location, exc.args[0])
    raw = text.encode("utf-8")
    for entry in tree.get("stmts", []):
        start = entry.get("stmt_location", 0)
        length = entry.get("stmt_len", 0)
        sql = (raw[start : start + length] if length else raw[start:]).decode("utf-8")
        if not length or sql.lstrip().startswith(("--", "/*")):
            sql = _between_tokens(sql)
        ((kind, node),) = entry["stmt"].items()
        yield sql.strip(), _postgresql_refusal(kind, node, sql)


#: psql meta-commands pg_dump writes (since 17.6/16.10/15.14…) around a dump; they only
#: restrict psql's own meta-commands, and atomicplug runs none, so they are left out.
_IGNORED_META_COMMANDS = frozenset({"restrict", "unrestrict"})


def _without_meta_command(text: str, location: int, message: str) -> str:
    """``text`` with the psql meta-command line at ``location`` blanked (offsets kept), when
    the parse error there is one pg_dump writes; otherwise ScriptSyntaxError naming the line."""
    line_start = text.rfind("\n", 0, location) + 1
    line_end = text.find("\n", location)
    line_end = len(text) if line_end == -1 else line_end
    line = text[line_start:line_end]
    number = text.count("\n", 0, location) + 1
    if text[location : location + 1] == "\\" and not text[line_start:location].strip():
        command = line.strip()[1:].split(maxsplit=1)[0] if line.strip()[1:] else ""
        if command in _IGNORED_META_COMMANDS:
            return text[:line_start] + " " * len(line) + text[line_end:]
        raise ScriptSyntaxError(
            f"psql meta-command \\{command} on line {number} is not SQL (atomicplug runs statements itself, not psql)"
        )
    raise ScriptSyntaxError(f"{message} (line {number})")


def _between_tokens(sql: str) -> str:
    """``sql`` from its first token to its last, without the comments around it (the last
    statement runs to the end of the script; older parsers start one at its leading comment)."""
    from pglast.parser import scan

    tokens = [t for t in scan(sql) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    return sql[tokens[0].start : tokens[-1].end + 1] if tokens else ""


#: Settings a migration may not touch: our COMMIT's durability, and who we run as.
_GUARDED_SETTINGS = {
    "synchronous_commit": "synchronous_commit is atomicplug's: it sets it to on for its COMMIT",
    "session_authorization": "session_authorization is atomicplug's: migrations run as the configured user",
    "role": "role is atomicplug's: migrations run as the configured user",
}

_BY_TYPE = {
    "TransactionStmt": _TRANSACTION_CONTROL,
    "CreatedbStmt": "CREATE/DROP DATABASE cannot run inside a transaction",
    "DropdbStmt": "CREATE/DROP DATABASE cannot run inside a transaction",
    "AlterSystemStmt": "ALTER SYSTEM cannot run inside a transaction",
    "CreateTableSpaceStmt": "CREATE/DROP TABLESPACE cannot run inside a transaction",
    "DropTableSpaceStmt": "CREATE/DROP TABLESPACE cannot run inside a transaction",
    "CreateSubscriptionStmt": "CREATE/ALTER/DROP SUBSCRIPTION cannot run inside a transaction",
    "AlterSubscriptionStmt": "CREATE/ALTER/DROP SUBSCRIPTION cannot run inside a transaction",
    "DropSubscriptionStmt": "CREATE/ALTER/DROP SUBSCRIPTION cannot run inside a transaction",
    "CallStmt": "CALL runs a procedure, which may commit: put its statements in the migration",
}


def _postgresql_refusal(kind: str, node: dict[str, Any], sql: str) -> str | None:
    """Why the statement ``kind``/``node`` may not run in our transaction, or None."""
    if kind in _BY_TYPE:
        return _BY_TYPE[kind]
    if kind == "VacuumStmt" and node.get("is_vacuumcmd"):
        return "VACUUM cannot run inside a transaction"
    if kind in ("IndexStmt", "DropStmt") and node.get("concurrent"):
        return "CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction"
    if kind == "ReindexStmt":
        if any(_defname(p) == "concurrently" for p in node.get("params", [])):
            return "REINDEX CONCURRENTLY cannot run inside a transaction"
        if node.get("kind") in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"):
            return "REINDEX DATABASE/SYSTEM cannot run inside a transaction"
    if kind == "AlterTableStmt" and any(_detaches_concurrently(c) for c in node.get("cmds", [])):
        return "DETACH PARTITION CONCURRENTLY cannot run inside a transaction"
    if kind == "AlterDatabaseStmt" and any(_defname(o) == "tablespace" for o in node.get("options", [])):
        return "ALTER DATABASE … SET TABLESPACE cannot run inside a transaction"
    if kind == "DiscardStmt" and node.get("target") == "DISCARD_ALL":
        return "DISCARD ALL cannot run inside a transaction"
    if kind == "ClusterStmt" and "relation" not in node:
        return "CLUSTER without a table cannot run inside a transaction"
    if kind == "CopyStmt" and (node.get("is_program") or "filename" not in node):
        return "COPY … STDIN/STDOUT/PROGRAM cannot run in a migration (data must be SQL; no programs)"
    if kind == "VariableSetStmt" and node.get("name", "").lower() in _GUARDED_SETTINGS:
        return _GUARDED_SETTINGS[node["name"].lower()]
    if kind == "DoStmt":
        return _do_refusal(node)
    if "set_config" in sql.lower() or "u&" in sql.lower():  # cheap filter before walking the tree
        return _set_config_refusal(node)
    return None


def _defname(item: dict[str, Any]) -> str | None:
    return item.get("DefElem", {}).get("defname")


def _detaches_concurrently(command: dict[str, Any]) -> bool:
    cmd = command.get("AlterTableCmd", {})
    return cmd.get("subtype") == "AT_DetachPartition" and bool(cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"))


def _set_config_refusal(node: Any) -> str | None:
    """``set_config('<guarded setting>', …)`` anywhere in the statement (pg_dump's own
    ``set_config('search_path', …)`` is allowed)."""
    for call in _nodes(node, "FuncCall"):
        name = [part.get("String", {}).get("sval", "") for part in call.get("funcname", [])]
        if name[-1:] != ["set_config"] or name[:-1] not in ([], ["pg_catalog"]):
            continue
        first = (call.get("args") or [{}])[0].get("A_Const", {}).get("sval", {}).get("sval")
        if first is None:
            return "set_config with a computed setting name cannot be checked: name the setting"
        if first.lower() in _GUARDED_SETTINGS:
            return _GUARDED_SETTINGS[first.lower()]
    return None


def _nodes(tree: Any, kind: str) -> Iterator[dict[str, Any]]:
    """Every ``kind`` node inside a JSON parse tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == kind and isinstance(value, dict):
                yield value
            yield from _nodes(value, kind)
    elif isinstance(tree, list):
        for item in tree:
            yield from _nodes(item, kind)


_DO_COMMITS = "a DO block that commits or rolls back would end atomicplug's transaction"


def _do_refusal(node: dict[str, Any]) -> str | None:
    """A DO block's body, parsed with PostgreSQL's PL/pgSQL parser: no COMMIT or ROLLBACK.

    Other languages (plpython's ``plpy.commit()``…) are read with the SQL
    scanner: a COMMIT or ROLLBACK token refuses them, and so does a body the
    scanner cannot read.
    """
    options = {_defname(o): o["DefElem"].get("arg", {}).get("String", {}).get("sval") for o in node.get("args", [])}
    body = options.get("as") or ""
    language = (options.get("language") or "plpgsql").lower()
    if language == "plpgsql":
        from pglast.parser import ParseError, parse_plpgsql_json

        tag = "atomicplug_do"
        while f"${tag}$" in body:
            tag += "_"
        try:
            function = json.loads(
                parse_plpgsql_json(f"CREATE FUNCTION {tag}() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$")
            )
        except ParseError:
            pass  # the server will refuse it; the scanner still looks for COMMIT/ROLLBACK below
        else:
            ends = any(True for kind in ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback") for _ in _nodes(function, kind))
            return _DO_COMMITS if ends else None
    from pglast.parser import scan

    try:
        names = {token.name for token in scan(body)}
    except Exception:  # noqa: BLE001 - an unreadable body is refused, not guessed at
        return f"the body of a DO block in {language} cannot be checked for COMMIT/ROLLBACK"
    return _DO_COMMITS if names & {"COMMIT", "ROLLBACK", "ABORT_P"} else None


# -- SQLite ----------------------------------------------------------------------


def _sqlite_pieces(text: str) -> Iterator[str]:
    """Statements as SQLite's tokenizer ends them: at the first ``;`` after which
    ``sqlite3.complete_statement`` holds (semicolons in strings, comments and
    trigger bodies do not end one). A last piece without ``;`` is a statement too."""
    start = 0
    end = text.find(";")
    while end != -1:
        if sqlite3.complete_statement(text[start : end + 1]):
            piece = _sqlite_lstrip(text[start:end]).rstrip()
            if piece:
                yield piece
            start = end + 1
        end = text.find(";", end + 1)
    tokens = list(_sqlite_tokens(text[start:]))
    if tokens:
        yield text[start + tokens[0][0] : start + tokens[-1][1]]


def sqlite_tokens(sql: str) -> Iterator[tuple[int, int, str]]:
    """The words of one SQLite statement as its tokenizer reads them: see :func:`_sqlite_tokens`
    (what a dry run reads to know the tables a migration creates, :mod:`atomicplug.database.tables`)."""
    return _sqlite_tokens(sql)


def _sqlite_lstrip(sql: str) -> str:
    """``sql`` from its first token on ("" when it holds only whitespace and comments)."""
    first = next(_sqlite_tokens(sql), None)
    return sql[first[0] :] if first else ""


def _sqlite_tokens(sql: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, word) of each token outside comments, lazily: ``word`` is an upper-cased
    keyword or identifier (quotes removed), ``'`` for a string, or the character itself.
    Enough to read a statement's first words the way SQLite's tokenizer does."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline == -1 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close == -1 else close + 2
        elif c in "'\"`[":
            j = _closing_quote(sql, i)
            yield i, j, "'" if c == "'" else sql[i + 1 : j - 1].upper()
            i = j
        elif c.isalnum() or c == "_":
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            yield i, j, sql[i:j].upper()
            i = j
        else:
            yield i, i + 1, c
            i += 1


def _closing_quote(sql: str, i: int) -> int:
    """The index after the quote closing the one at ``i`` (doubled quotes escape; ``[…]`` does not nest)."""
    closer = "]" if sql[i] == "[" else sql[i]
    j = i + 1
    while j < len(sql):
        if sql[j] == closer:
            if closer != "]" and sql.startswith(closer * 2, j):
                j += 2
                continue
            return j + 1
        j += 1
    return len(sql)


_SQLITE_REFUSED_FIRST = {
    **dict.fromkeys(("BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"), _TRANSACTION_CONTROL),
    "ATTACH": "ATTACH cannot run inside a transaction (and would let a migration reach another database)",
    "DETACH": "DETACH cannot run inside a transaction",
    "VACUUM": "VACUUM cannot run inside a transaction",
}

#: PRAGMAs that change journaling or durability, are ignored inside a transaction, or fail in one.
_SQLITE_REFUSED_PRAGMAS = frozenset(
    {
        "journal_mode", "journal_size_limit", "foreign_keys", "synchronous", "locking_mode",
        "temp_store", "temp_store_directory", "page_size", "auto_vacuum", "encoding",
        "wal_checkpoint", "wal_autocheckpoint", "mmap_size", "query_only", "writable_schema",
    }
)  # fmt: skip


def _sqlite_refusal(sql: str) -> str | None:
    """Decided by the statement's first keyword (and a PRAGMA's name), never by text elsewhere."""
    words = [word for _, _, word in itertools.islice(_sqlite_tokens(sql), 4)]
    if not words:
        return None
    if words[0] in _SQLITE_REFUSED_FIRST:
        return _SQLITE_REFUSED_FIRST[words[0]]
    if words[0] == "PRAGMA" and len(words) > 1:
        name = words[3] if len(words) > 3 and words[2] == "." else words[1]
        if name.lower() in _SQLITE_REFUSED_PRAGMAS:
            return f"PRAGMA {name.lower()} changes journaling or durability, or does not work inside a transaction"
    return None

