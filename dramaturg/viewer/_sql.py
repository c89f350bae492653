"""The SQL page: one read-only statement over the store, and the README's example queries.

Two locks, because either alone has a gap. The statement is parsed first and anything but one
SELECT (which covers WITH, FROM-first, DESCRIBE, SUMMARIZE and SHOW) or EXPLAIN is refused
with its kind named. It then runs inside a READ ONLY transaction that is rolled back: DuckDB
parses a data-modifying CTE (``WITH d AS (DELETE ... RETURNING *) SELECT ...``) as a SELECT,
and the transaction is what refuses its write.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from dramaturg.memory import Store

__all__ = ["EXAMPLE_QUERIES", "MAX_ROWS", "ExampleQuery", "QueryRefused", "QueryResult", "run_read_only"]

MAX_ROWS = 500


@dataclass(frozen=True, slots=True)
class ExampleQuery:
    title: str
    sql: str


# Each appears verbatim in README.md (tests/test_viewer.py checks), where it is explained.
EXAMPLE_QUERIES: tuple[ExampleQuery, ...] = (
    ExampleQuery(
        "Which scenario produces the most rejected revisions?",
        """SELECT e.scenario, count(*) FILTER (WHERE o.outcome = 'judge_rejected') AS rejected_revisions,
       count(*) AS revisions_judged
FROM pair_outcomes o JOIN episodes e USING (episode_id)
WHERE o.source = 'revision'
GROUP BY ALL ORDER BY rejected_revisions DESC;""",
    ),
    ExampleQuery(
        "Which tools does the assistant misuse, and how?",
        """SELECT e.scenario, t.tool, t.status, count(*) AS calls, any_value(t.error) AS for_example
FROM tool_calls t JOIN episodes e USING (episode_id)
GROUP BY ALL ORDER BY e.scenario, t.tool, calls DESC;""",
    ),
    ExampleQuery(
        "Which personas end their conversations early, per scenario?",
        """SELECT scenario, persona, count(*) AS episodes,
       round(avg(n_turns), 1) AS avg_turns,
       count(*) FILTER (WHERE termination_reason = 'user_ended') AS ended_by_user
FROM episodes WHERE status = 'done'
GROUP BY ALL ORDER BY scenario, ended_by_user DESC;""",
    ),
    ExampleQuery(
        "Why were rows filtered by curation?",
        """SELECT kind, reason, count(*) AS items, min(detail) AS example
FROM filtered GROUP BY ALL ORDER BY kind, items DESC;""",
    ),
)

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class QueryRefused(Exception):
    """The statement is not a single read-only query; the message says what it is."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    truncated: bool  # more than MAX_ROWS rows: only the first MAX_ROWS are kept


def check_read_only(query: str) -> str:
    """The one statement of ``query``, without its trailing semicolon.

    Raises:
        QueryRefused: no statement, several, or one that is not a SELECT or EXPLAIN.
        duckdb.Error: the text does not parse (the message is DuckDB's).
    """
    statements = duckdb.extract_statements(query)
    if not statements:
        raise QueryRefused("no statement to run")
    if len(statements) > 1:
        raise QueryRefused(f"{len(statements)} statements: run one query at a time")
    statement = statements[0]
    if statement.type not in _ALLOWED:
        kind = statement.type.name
        raise QueryRefused(
            f"refused: a {kind} statement; this page runs read-only queries "
            "(SELECT, WITH, DESCRIBE, SUMMARIZE, SHOW, EXPLAIN)"
        )
    return statement.query.strip().rstrip(";").strip()


def run_read_only(store: Store, query: str) -> QueryResult:
    """Run one read-only query in a READ ONLY transaction that is rolled back.

    Raises:
        QueryRefused: see :func:`check_read_only`.
        duckdb.Error: the query failed; a write hidden in a SELECT fails here.
    """
    statement = check_read_only(query)
    store.sql("BEGIN TRANSACTION READ ONLY")
    try:
        relation = store.relation(statement)
        if relation is None:  # a statement that returned nothing
            return QueryResult((), (), False)
        rows = relation.limit(MAX_ROWS + 1).fetchall()
        columns = tuple(relation.columns)
    finally:
        store.sql("ROLLBACK")
    return QueryResult(columns, tuple(rows[:MAX_ROWS]), len(rows) > MAX_ROWS)
