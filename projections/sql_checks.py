"""Checking SQL a user hands in, on DuckDB's own parse tree, before anything runs.

Two checks, both on the tree DuckDB's parser gives (``json_serialize_sql``), never on words:

- ``check_read_statement``: the ``sql`` command and any read API. One statement that only
  reads: a SELECT (FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE and PIVOT subqueries parse as
  SELECT too), ``EXPLAIN [ANALYZE]`` of one, or ``CALL``/``PRAGMA`` of a read-only table
  function (run as ``SELECT * FROM f(...)``). Inside the SELECT every query node must read
  (DuckDB 2 accepts ``WITH d AS (DELETE ... RETURNING *)`` and ``WITH c AS (COPY ...)`` as a
  SELECT statement), every table function must be on a list of read-only ones (or a table macro
  of the projection such as ``mau_for_month``), and no scalar function may change state
  (``nextval``). The text that runs is the text that was checked.
- ``check_where``: ``export --where``. One boolean expression over the export columns, built
  from a short list of node kinds; the export statement is generated from the checked tree by
  DuckDB (``json_deserialize_sql``), so the user's text is never pasted into SQL.

These checks are the first wall; the sandbox of the connection
(``projections.connection.sandbox``) is the second: even a statement that slipped through could
reach no file, network or extension. Both are needed because a reader may share a writable
instance with the fold, where only the checks stop a write to the database itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from profile_engine.errors import BadInput, first_line


class QueryError(BadInput):
    """A query the user asked for cannot run; str() is one line naming what is wrong."""


Tree = dict[str, Any]

# Query nodes that only read. Anything else (DELETE_QUERY_NODE, COPY_QUERY_NODE, ...) is a
# statement that writes, hidden in a CTE.
READ_QUERY_NODES = frozenset(
    {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
)

# Table functions that read the database's own catalog or compute rows from their arguments.
# Everything else is refused: file readers (read_*, glob, parquet_*, sniff_csv), statements in
# disguise (query, query_table, json_execute_serialized_sql, checkpoint, enable_logging, ...).
READ_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "icu_calendar_names",
        "pg_timezone_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_collations",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_version",
    }
)

# Scalar functions with an effect beyond their result, or that read the machine's settings.
REFUSED_SCALAR_FUNCTIONS = {
    "nextval": "changes state",
    "setval": "changes state",
    "write_log": "changes state",
    "getenv": "reads the environment",
    "current_setting": "reads DuckDB's settings (paths, limits)",
}

# DuckDB's own catalog views that tell the machine's paths or settings (the database file's
# path, the memory limit, the secret directory): not the projection's business. (The table
# functions behind them, duckdb_settings() and duckdb_databases(), are not in the list above.)
REFUSED_CATALOG_VIEWS = frozenset(
    {"duckdb_databases", "pragma_database_list", "pg_settings", "duckdb_logs"}
)

ANALYZE = ("ANALYZE", "ANALYSE")
WHAT_SQL_RUNS = (
    "`sql` runs one statement that only reads: SELECT, EXPLAIN [ANALYZE] SELECT, or CALL/PRAGMA "
    "of a read-only table function"
)


# -- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    kind: str  # keyword, identifier, operator, string_const, numeric_const (comments dropped)
    start: int


def split_statements(con: duckdb.DuckDBPyConnection, text: str) -> list[tuple[str, str]]:
    """(statement type, statement text) of each statement, by DuckDB's parser."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as error:
        raise QueryError(first_line(error)) from None
    return [(statement.type.name, statement.query) for statement in statements]


def parse_select(con: duckdb.DuckDBPyConnection, text: str) -> Tree:
    """The parse tree of one SELECT statement (QueryError when it is anything else)."""
    statements = split_statements(con, text)
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
    kind, query = statements[0]
    if kind != "SELECT":
        raise QueryError(f"refused: {_a_statement(kind, query)}; {WHAT_SQL_RUNS}")
    document = _serialize(con, query)
    tree: Tree = document["statements"][0]
    return tree


def _serialize(con: duckdb.DuckDBPyConnection, text: str) -> Tree:
    # fetchall, not fetchone: an unfinished result would block the next query on `con`.
    rows = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [text]).fetchall()
    document: Tree = json.loads(rows[0][0]) if rows else {"error": True}
    if document.get("error"):
        message = str(document.get("error_message") or "does not parse")
        raise QueryError(message.strip().splitlines()[0])
    return document


def tokens(text: str) -> list[Token]:
    """DuckDB's own tokens of ``text``, comments left out."""
    found = duckdb.tokenize(text)
    result = []
    for index, (start, kind) in enumerate(found):
        end = found[index + 1][0] if index + 1 < len(found) else len(text)
        if kind.name != "comment":
            result.append(Token(text[start:end].strip(), kind.name, start))
    return result


def walk(tree: object) -> Iterator[Tree]:
    """Every JSON object in a parse tree, depth first in document order (so an error names
    the leftmost offending node)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))


# -- the sql command -----------------------------------------------------------------------


def utf8_text(text: str, what: str) -> str:
    """``text`` when it is valid Unicode text; QueryError otherwise (bytes that are not UTF-8
    reach Python's arguments as lone surrogates, and so can a JSON \\ud800 escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise QueryError(
            f"{what} is not valid UTF-8 text (at character {error.start + 1})"
        ) from None
    return text


def check_read_statement(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """The statement to run for ``text``, or QueryError naming what was refused."""
    statements = split_statements(con, utf8_text(text, "the statement"))
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
    kind, query = statements[0]
    if kind == "SELECT":
        return check_select(con, query)
    if kind == "EXPLAIN":
        return _check_explain(con, query)
    if kind == "CALL":
        return _check_call(con, query)
    if kind == "PRAGMA":
        return _check_pragma(con, query)
    if kind == "MULTI" and any(word.text.upper().startswith("PIVOT") for word in tokens(query)):
        # DuckDB runs a PIVOT whose values it must find first as several statements.
        raise QueryError(
            "refused: a PIVOT without its values runs as several statements; name them, "
            "e.g. PIVOT identifiers ON id_type IN ('email', 'phone') USING count(*)"
        )
    raise QueryError(f"refused: {_a_statement(kind, query)}; {WHAT_SQL_RUNS}")


def _a_statement(kind: str, query: str = "") -> str:
    """Names a refused statement: "a SELECT statement", "an ATTACH statement" (DuckDB's kind of
    statement, except that it calls INSTALL a LOAD)."""
    words = [word.text.upper() for word in tokens(query)][:1]
    name = "INSTALL" if kind == "LOAD" and words == ["INSTALL"] else kind
    article = "an" if name[:1] in "AEIOU" else "a"
    return f"{article} {name} statement"


def check_select(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """``text`` when it is one SELECT that only reads the projection."""
    tree = parse_select(con, text)
    _check_table_names(con, tree)
    macros = _table_macros(con)
    for item in walk(tree):
        node_type = item.get("type")
        if (
            isinstance(node_type, str)
            and node_type.endswith("_NODE")
            and node_type not in READ_QUERY_NODES
        ):
            what = node_type.removesuffix("_NODE").removesuffix("_QUERY")
            raise QueryError(
                f"refused: the query holds a {what} statement (in a WITH clause); {WHAT_SQL_RUNS}"
            )
        if node_type == "TABLE_FUNCTION":
            name = _function_name(item.get("function"))
            if name not in READ_TABLE_FUNCTIONS and name not in macros:
                raise QueryError(
                    f"refused: table function {name}() reads or changes something outside the "
                    "projections; queries read the projection's tables and views"
                )
        if item.get("class") == "FUNCTION":
            name = _function_name(item)
            if name in REFUSED_SCALAR_FUNCTIONS:
                why = REFUSED_SCALAR_FUNCTIONS[name]
                raise QueryError(f"refused: {name}() {why}; {WHAT_SQL_RUNS}")
    return text


def _check_table_names(con: duckdb.DuckDBPyConnection, tree: Tree) -> None:
    """Every table a query names is one of the database's tables or views, or a WITH
    clause's: a quoted name that is not (``FROM 'file.csv'``, ``DESCRIBE 'x.parquet'``) is a
    file DuckDB would read, which the sandbox still allows in its temporary folder."""
    ctes = {
        str(entry["key"]).lower()
        for item in walk(tree)
        if isinstance(item.get("cte_map"), dict)
        for entry in item["cte_map"].get("map", [])
    }
    known: set[str] | None = None
    for item in walk(tree):
        kind = item.get("type")
        named = kind == "BASE_TABLE" or (kind == "SHOW_REF" and item.get("show_type") == "SHOW")
        name = str(item.get("table_name") or "") if named else ""
        if not name or (name.lower() in ctes and not item.get("schema_name")):
            continue
        if known is None:
            known = _catalog_names(con)
        if name.lower() not in known:
            raise QueryError(
                f"refused: {name!r} is not a table or view of the projection (SHOW TABLES "
                "lists them); queries read nothing else"
            )


def _catalog_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views()"
    ).fetchall()
    return {str(name).lower() for (name,) in rows} - REFUSED_CATALOG_VIEWS


def _check_explain(con: duckdb.DuckDBPyConnection, text: str) -> str:
    words = tokens(text)  # words[0] is EXPLAIN
    analyze = len(words) > 1 and words[1].kind == "keyword" and words[1].text.upper() in ANALYZE
    position = 2 if analyze else 1
    if position >= len(words):
        raise QueryError("EXPLAIN needs a statement to explain")
    if words[position].text == "(":
        raise QueryError("refused: EXPLAIN options; use EXPLAIN or EXPLAIN ANALYZE")
    prefix = "EXPLAIN ANALYZE" if analyze else "EXPLAIN"
    statements = split_statements(con, text[words[position].start :])
    if len(statements) != 1 or statements[0][0] != "SELECT":
        what = statements[0][0] if len(statements) == 1 else f"{len(statements)} statements"
        raise QueryError(
            f"refused: {prefix} of {what}; EXPLAIN ANALYZE runs what it explains, "
            "so only a SELECT may be explained"
        )
    return f"{prefix} {check_select(con, statements[0][1])}"


def _check_call(con: duckdb.DuckDBPyConnection, text: str) -> str:
    words = tokens(text)
    if words and words[0].text.upper() != "CALL":  # DuckDB parses CHECKPOINT as a CALL
        what = " ".join(word.text.upper() for word in words[:2] if word.kind == "keyword")
        raise QueryError(f"refused: {_a_statement(what or 'CALL')}; {WHAT_SQL_RUNS}")
    if len(words) < 2:
        raise QueryError("CALL needs a table function")
    # CALL f(args) is SELECT * FROM f(args); the SELECT is what gets checked and run.
    return check_select(con, f"SELECT * FROM {text[words[1].start :]}")


def _check_pragma(con: duckdb.DuckDBPyConnection, text: str) -> str:
    words = tokens(text)
    if len(words) < 2 or words[1].kind not in ("identifier", "keyword"):
        raise QueryError("PRAGMA needs a name")
    name = words[1].text.lower()
    if len(words) > 2 and words[2].text == "=":
        raise QueryError(f"refused: PRAGMA {name} = ... changes a setting; {WHAT_SQL_RUNS}")
    function = f"pragma_{name}"
    if function not in READ_TABLE_FUNCTIONS:
        readable = sorted(f.removeprefix("pragma_") for f in READ_TABLE_FUNCTIONS if "pragma_" in f)
        raise QueryError(
            f"refused: PRAGMA {name} is not a read-only pragma (those are {', '.join(readable)};"
            " SHOW TABLES and DESCRIBE <table> list tables and columns)"
        )
    rest = text[words[2].start :] if len(words) > 2 else "()"
    return check_select(con, f"SELECT * FROM {function}{rest}")


def _function_name(node: object) -> str:
    if not isinstance(node, dict):
        return ""
    return str(node.get("function_name", "")).lower()


def _table_macros(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """The projection's own table macros (mau_for_month): views with parameters."""
    rows = con.execute(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions()"
        " WHERE function_type = 'table_macro' AND NOT internal"
    ).fetchall()
    return frozenset(row[0] for row in rows)


# -- export --where ------------------------------------------------------------------------

# (class, type) of the expression nodes a --where may hold.
WHERE_NODES = frozenset(
    {
        ("COLUMN_REF", "COLUMN_REF"),
        ("CONSTANT", "VALUE_CONSTANT"),
        ("CAST", "OPERATOR_CAST"),
        ("TYPE", "TYPE"),
        ("CONJUNCTION", "CONJUNCTION_AND"),
        ("CONJUNCTION", "CONJUNCTION_OR"),
        ("OPERATOR", "OPERATOR_NOT"),
        ("OPERATOR", "OPERATOR_IS_NULL"),
        ("OPERATOR", "OPERATOR_IS_NOT_NULL"),
        ("OPERATOR", "OPERATOR_COALESCE"),
        ("OPERATOR", "COMPARE_IN"),
        ("OPERATOR", "COMPARE_NOT_IN"),
        ("BETWEEN", "COMPARE_BETWEEN"),
        ("COMPARISON", "COMPARE_EQUAL"),
        ("COMPARISON", "COMPARE_NOTEQUAL"),
        ("COMPARISON", "COMPARE_LESSTHAN"),
        ("COMPARISON", "COMPARE_GREATERTHAN"),
        ("COMPARISON", "COMPARE_LESSTHANOREQUALTO"),
        ("COMPARISON", "COMPARE_GREATERTHANOREQUALTO"),
        ("COMPARISON", "COMPARE_DISTINCT_FROM"),
        ("COMPARISON", "COMPARE_NOT_DISTINCT_FROM"),
        ("FUNCTION", "FUNCTION"),
    }
)

# Operators (arithmetic; ~~ is LIKE, ~~* ILIKE, !~~ NOT LIKE) and a few scalar functions.
WHERE_FUNCTIONS = frozenset(
    {
        "+", "-", "*", "/", "//", "%",
        "~~", "!~~", "~~*", "!~~*", "like_escape", "not_like_escape",
        "lower", "upper", "trim", "length", "abs", "round", "floor", "ceil",
        "contains", "starts_with", "ends_with", "list_contains", "len",
        "year", "month", "day", "date_trunc", "date_part",
    }
)  # fmt: skip

WHERE_EXAMPLE = 'e.g. "email_reachable AND revenue > 100"'


def check_where(con: duckdb.DuckDBPyConnection, where: str, columns: Sequence[str]) -> Tree:
    """The parse tree of ``where`` when it is one expression over ``columns`` made of
    WHERE_NODES; QueryError naming the first thing refused otherwise."""
    utf8_text(where, "--where")
    if not where.strip():
        raise QueryError(f"--where is empty; give a condition, {WHERE_EXAMPLE}")
    # Parsed (never run) as the select list of an otherwise empty SELECT: anything beyond one
    # expression (FROM, a second statement, a closing parenthesis) shows in the tree's shape.
    try:
        tree = parse_select(con, f"SELECT {where}")
    except QueryError as error:
        raise QueryError(f"--where: {error}") from None
    node = tree["node"]
    if (
        node.get("type") != "SELECT_NODE"
        or len(node.get("select_list", [])) != 1
        or node.get("from_table", {}).get("type") != "EMPTY"
        or any(node.get(key) for key in _SELECT_CLAUSES)
        or node.get("cte_map", {}).get("map")
    ):
        raise QueryError(f"--where must be one condition over the export columns, {WHERE_EXAMPLE}")
    expression: Tree = copy.deepcopy(node["select_list"][0])
    expression["alias"] = ""
    known = {name.lower() for name in columns}
    for item in walk(expression):
        if "class" in item:
            _check_where_node(item, known, columns)
    return expression


_SELECT_CLAUSES = (
    "modifiers",
    "where_clause",
    "group_expressions",
    "group_sets",
    "having",
    "sample",
    "qualify",
)


def _check_where_node(item: Tree, known: set[str], columns: Sequence[str]) -> None:
    kind = (item.get("class"), item.get("type"))
    if kind not in WHERE_NODES:
        raise QueryError(f"--where: refused: {_describe(item)}; {_WHERE_RULE}")
    if kind == ("COLUMN_REF", "COLUMN_REF"):
        names = item.get("column_names", [])
        if len(names) != 1 or str(names[0]).lower() not in known:
            shown = ".".join(str(n) for n in names)
            raise QueryError(
                f"--where: {shown!r} is not an export column (columns: {', '.join(columns)})"
            )
    elif kind == ("FUNCTION", "FUNCTION"):
        name = _function_name(item)
        plain = (
            not item.get("schema")
            and not item.get("catalog")
            and not item.get("distinct")
            and not item.get("export_state")
            and item.get("filter") is None
            and not (item.get("order_bys") or {}).get("orders")
        )
        if name not in WHERE_FUNCTIONS or not plain:
            raise QueryError(
                f"--where: refused: function {name}(); allowed: "
                f"{', '.join(sorted(f for f in WHERE_FUNCTIONS if f[0].isalpha()))}"
                " and arithmetic, LIKE, ILIKE"
            )
    elif kind[1] in ("COMPARE_IN", "COMPARE_NOT_IN"):
        for child in item.get("children", [])[1:]:
            if any(sub.get("class") == "COLUMN_REF" for sub in walk(child)):
                raise QueryError("--where: refused: IN takes a list of constants")


_WHERE_RULE = (
    "--where is one condition over the export columns: comparisons, AND/OR/NOT, IS NULL, "
    "IN (constants), BETWEEN, LIKE/ILIKE, arithmetic, casts and a few functions"
)


def _describe(item: Tree) -> str:
    kind = str(item.get("class", "")).lower().replace("_", " ")
    if item.get("class") == "SUBQUERY":
        return "a subquery"
    if item.get("class") == "STAR":
        return "*"
    if item.get("class") == "PARAMETER":
        return "a parameter"
    return f"a {kind} expression ({str(item.get('type', '')).lower()})"


def statement_with_where(
    con: duckdb.DuckDBPyConnection, select: str, condition: Tree | None
) -> str:
    """``select`` (our own SELECT ... FROM ... without WHERE) with a checked condition as its
    WHERE clause, generated from the tree by DuckDB."""
    if condition is None:
        return select
    tree = parse_select(con, select)
    tree["node"]["where_clause"] = condition
    return _generate(con, tree)


def expression_select(con: duckdb.DuckDBPyConnection, relation: str, expression: Tree) -> str:
    """``SELECT <expression> FROM <relation>`` generated from a checked tree (to bind it)."""
    tree = parse_select(con, f"SELECT NULL FROM {relation}")
    tree["node"]["select_list"] = [expression]
    return _generate(con, tree)


def _generate(con: duckdb.DuckDBPyConnection, statement: Tree) -> str:
    """The SQL text of a parse tree, written by DuckDB (json_deserialize_sql)."""
    document = json.dumps({"error": False, "statements": [statement]})
    rows = con.execute("SELECT json_deserialize_sql(?::JSON)", [document]).fetchall()
    if not rows or not isinstance(rows[0][0], str):  # pragma: no cover - DuckDB always answers
        raise QueryError("could not generate SQL from a checked parse tree")
    return rows[0][0]
