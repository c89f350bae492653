"""Validation of the stored rows an export reads, before anything is written.

Each check is a query that takes the export's WHERE fragment and returns
``(bad rows, row id, problem)`` for the first few problems; an empty result is a pass.
A store that holds a bad row is an error, never a silently broken training file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dramaturg.outputs._format import Items
from dramaturg.outputs._items import PAIRS, PROMPT_TYPE, STEPS_TYPE

__all__ = ["QUOTED_PROBLEMS", "checks_for"]

# How many problems an error message quotes (every bad row is counted).
QUOTED_PROBLEMS = 3

# The one message type of a prompt without tool calls.
_MESSAGES_TYPE = '[{"role":"VARCHAR","content":"VARCHAR"}]'

Check = Callable[[str], str]


def checks_for(items: Items, *, tools: bool) -> tuple[Check, ...]:
    """The validations of the rows an export of ``items`` reads.

    Dialogues: the turns alternate (user first, after an optional system turn) and their tool
    rounds are well formed. Pairs: the prompt alternates and ends with a user message; chosen
    and rejected are non-empty and differ; with tools, their tool rounds are well formed.
    """
    if items == "dialogue":
        return (_dialogue_checks, _turn_step_checks)
    if tools:
        return (_tool_pair_checks, _reply_step_checks)
    return (_pair_checks,)


def _message_checks(rows: str, key: str, column: str, row_checks: Sequence[str] = ()) -> str:
    """Validation SQL: each row's ``column`` is a non-empty list of messages, an optional
    system message first, then user and assistant alternating, starting with the user.

    ``rows`` defines the ``export_rows`` CTE; ``row_checks`` are more
    ``WHEN condition THEN 'problem'`` clauses over a whole row.
    """
    return f"""
    {rows},
    messages AS (
        SELECT {key}, unnest({column}) AS m, generate_subscripts({column}, 1) AS i,
               ({column}[1].role = 'system')::INTEGER AS offset_
        FROM export_rows
    ),
    problems AS (
        SELECT {key}, problem FROM (
        SELECT {key}, CASE
            WHEN {column} IS NULL THEN '{column} is missing or not a list of {{role, content}} messages'
            WHEN len({column}) = 0 THEN '{column} has no messages'
            {" ".join(row_checks)}
        END AS problem FROM export_rows
        UNION ALL
        SELECT {key}, CASE
            WHEN m.role IS NULL OR m.content IS NULL
                THEN format('{column} message {{}} has no role or no content', i)
            WHEN m.role IS DISTINCT FROM expected
                THEN format('{column} message {{}} is ''{{}}'', expected ''{{}}''', i, m.role, expected)
        END FROM (
            SELECT *, CASE WHEN offset_ = 1 AND i = 1 THEN 'system'
                           WHEN (i - offset_) % 2 = 1 THEN 'user' ELSE 'assistant' END AS expected
            FROM messages
        )
        ) WHERE problem IS NOT NULL
    )
    -- Every bad row is counted; only the first few problems are quoted.
    SELECT (SELECT count(DISTINCT {key}) FROM problems), {key}, problem
    FROM problems ORDER BY {key}, problem LIMIT {QUOTED_PROBLEMS}
    """


def _pair_checks(where: str) -> str:
    rows = f"""
    WITH export_rows AS (
        SELECT pair_id, chosen, rejected, from_json(prompt, '{_MESSAGES_TYPE}') AS prompt
        FROM {PAIRS} WHERE {where}
    )
    """
    return _message_checks(
        rows,
        "pair_id",
        "prompt",
        [
            "WHEN prompt[-1].role IS DISTINCT FROM 'user' THEN 'prompt does not end with a user message'",
            "WHEN chosen = rejected THEN 'chosen and rejected are identical'",
            "WHEN trim(chosen) = '' OR trim(rejected) = '' THEN 'chosen or rejected is empty'",
        ],
    )


def _tool_pair_checks(where: str) -> str:
    # User and assistant alternate in the conversation's own messages; a tool message, or an
    # assistant message that only calls tools, sits between them.
    rows = f"""
    WITH parsed AS (
        SELECT pair_id, chosen, rejected, chosen_tool_steps, rejected_tool_steps,
               from_json(prompt, '{PROMPT_TYPE}') AS full_prompt
        FROM {PAIRS} WHERE {where}
    ),
    export_rows AS (
        SELECT *, [m FOR m IN full_prompt
                   IF m.role IS DISTINCT FROM 'tool' AND coalesce(len(m.tool_calls), 0) = 0] AS prompt
        FROM parsed
    )
    """
    return _message_checks(
        rows,
        "pair_id",
        "prompt",
        [
            "WHEN full_prompt[-1].role IS DISTINCT FROM 'user' "
            "THEN 'prompt does not end with a user message'",
            # A revision may redo only the tool calls: the replies differ in their tool rounds.
            "WHEN chosen = rejected AND chosen_tool_steps IS NOT DISTINCT FROM rejected_tool_steps "
            "THEN 'chosen and rejected are identical'",
            "WHEN trim(chosen) = '' OR trim(rejected) = '' THEN 'chosen or rejected is empty'",
        ],
    )


def _dialogue_checks(where: str) -> str:
    # The dialogue as `sft` writes it without tools: the system prompt, then the turns.
    rows = f"""
    WITH selected AS (SELECT episode_id FROM episodes WHERE {where}),
    system AS (
        SELECT t.episode_id, arg_min(c.request ->> '$.system', t.idx) AS system
        FROM turns t JOIN llm_calls c ON c.call_id = t.call_id
        WHERE t.role = 'assistant' AND c.role = 'assistant' AND (c.request ->> '$.system') IS NOT NULL
          AND t.episode_id IN (SELECT episode_id FROM selected)
        GROUP BY t.episode_id
    ),
    dialogue AS (
        SELECT episode_id, list({{'role': role, 'content': content}} ORDER BY idx) AS turns
        FROM turns WHERE episode_id IN (SELECT episode_id FROM selected) GROUP BY episode_id
    ),
    export_rows AS (
        SELECT CASE WHEN s.system IS NULL OR d.turns[1].role = 'system' THEN d.turns
                    ELSE list_prepend({{'role': 'system', 'content': s.system}}, d.turns) END AS messages,
               e.episode_id
        FROM selected e LEFT JOIN dialogue d USING (episode_id) LEFT JOIN system s USING (episode_id)
    )
    """
    return _message_checks(rows, "episode_id", "messages")


def _step_checks(rows: str) -> str:
    """Validation SQL over the tool rounds of ``rows`` (k, label, role, steps): only an assistant
    turn calls tools; every round has calls, each with an id, a tool name and arguments; its
    results answer the calls in order, each with content."""
    return f"""
    WITH step_rows AS ({rows}),
    rounds AS (
        SELECT k, label, unnest(s) AS r, generate_subscripts(s, 1) AS step
        FROM (SELECT k, label, from_json(steps, '{STEPS_TYPE}') AS s FROM step_rows WHERE steps IS NOT NULL)
    ),
    problems AS (
        SELECT k, problem FROM (
        SELECT k, format('{{}} is a {{}} turn with tool calls', label, role) AS problem FROM step_rows
        WHERE steps IS NOT NULL AND role IS DISTINCT FROM 'assistant'
        UNION ALL
        SELECT k, CASE
            WHEN coalesce(len(r.calls), 0) = 0 THEN format('{{}} tool round {{}} has no calls', label, step)
            WHEN list_contains([c.id IS NULL OR c.arguments IS NULL OR coalesce(trim(c.name), '') = ''
                                FOR c IN r.calls], true)
                THEN format('{{}} tool round {{}} has a call without an id, a tool name or arguments',
                            label, step)
            WHEN [x.call_id FOR x IN r.results] IS DISTINCT FROM [c.id FOR c IN r.calls]
                THEN format('{{}} tool round {{}}: its results do not answer its calls in order', label, step)
            WHEN list_contains([x.content IS NULL FOR x IN r.results], true)
                THEN format('{{}} tool round {{}} has a result without content', label, step)
        END FROM rounds
        ) WHERE problem IS NOT NULL
    )
    SELECT (SELECT count(DISTINCT k) FROM problems), k, problem
    FROM problems ORDER BY k, problem LIMIT {QUOTED_PROBLEMS}
    """


def _turn_step_checks(where: str) -> str:
    return _step_checks(
        "SELECT episode_id AS k, 'turn ' || idx AS label, role, tool_steps AS steps FROM turns "
        f"WHERE episode_id IN (SELECT episode_id FROM episodes WHERE {where})"
    )


def _reply_step_checks(where: str) -> str:
    # `where` once: its parameters are bound once.
    return _step_checks(
        "SELECT pair_id AS k, side.label, 'assistant' AS role, "
        "CASE side.label WHEN 'chosen' THEN chosen_tool_steps ELSE rejected_tool_steps END AS steps "
        f"FROM {PAIRS}, (VALUES ('chosen'), ('rejected')) AS side(label) WHERE {where}"
    )
