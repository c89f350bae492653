"""The rows every format renders: the ``items`` CTE, one row per exported dialogue or pair.

Each message of an item is one struct of :data:`MESSAGE_TYPE`, whatever the format:

- ``role``: ``system``, ``user``, ``assistant`` or ``tool``;
- ``content``: the text (``''`` on an assistant message that only calls tools);
- ``tool_calls``: ``[{id, name, arguments}]`` on an assistant message that calls tools, else
  null; ``arguments`` is the text the model wrote (JSON, or not when the call was invalid);
- ``name``, ``tool_call_id``: on a tool message, the tool and the call it answers;
- ``train``: whether a dialogue format should train on the message (see ``untrained`` below).

An assistant turn that called tools is stored as its final text plus its rounds of calls
(``turns.tool_steps``; ``preference_pairs.chosen_tool_steps`` and ``rejected_tool_steps``). It
becomes, per round, an assistant message holding the round's calls and a tool message per
result, then the turn's own message.

Dialogue items (``items = 'dialogue'``): ``episode_id``, ``run_id``, ``scenario``, ``messages``
(the assistant's system prompt first where there is one, then the dialogue as finally
performed), ``tools`` (the scenario's tools as OpenAI function tools, ``[{type: 'function',
function: {name, description, parameters}}]`` as JSON; null for a scenario without tools).

Pair items (``items = 'pair'``): ``pair_id``, ``episode_id``, ``turn_idx``, ``source``,
``margin``, ``prompt`` (messages ending with a user message), ``chosen`` and ``rejected`` (the
reply's tool messages, then its final assistant message), ``tools``.
"""

from __future__ import annotations

from dramaturg.outputs._format import Items

# The pairs an export reads: preference_pairs with the annotators' flips applied (a temporary
# view the export makes on its connection; see dramaturg._export).
PAIRS = "exported_pairs"

__all__ = [
    "CALLS_TYPE",
    "MESSAGE_TYPE",
    "PAIRS",
    "PROMPT_TYPE",
    "STEPS_TYPE",
    "arguments_object",
    "items_sql",
    "plain",
]

# A turn's tool rounds as stored: `arguments` is the JSON text the model wrote.
STEPS_TYPE = (
    '[{"calls": [{"id": "VARCHAR", "name": "VARCHAR", "arguments": "VARCHAR"}], '
    '"results": [{"call_id": "VARCHAR", "content": "VARCHAR"}]}]'
)

# The calls of one message.
CALLS_TYPE = 'STRUCT(id VARCHAR, "name" VARCHAR, arguments VARCHAR)[]'

# A stored prompt message, which may carry tool calls: in OpenAI's shape (`function.name`,
# `function.arguments`) or flat like the stored steps (`name`, `arguments`).
PROMPT_TYPE = (
    '[{"role": "VARCHAR", "content": "VARCHAR", "name": "VARCHAR", "tool_call_id": "VARCHAR", '
    '"tool_calls": [{"id": "VARCHAR", "name": "VARCHAR", "arguments": "JSON", '
    '"function": {"name": "VARCHAR", "arguments": "JSON"}}]}]'
)

# One message of an item, before a format renders it.
MESSAGE_TYPE = (
    f'STRUCT("role" VARCHAR, "content" VARCHAR, tool_calls {CALLS_TYPE}, "name" VARCHAR, '
    "tool_call_id VARCHAR, train BOOLEAN)"
)

# A turn's own message comes after its tool rounds.
_LAST_STEP = 2147483647

# Each scenario's tools, per run, as OpenAI function tools. The definition lists
# {name, description, parameters}; a scenario without tools has no row.
_TOOLS = """
    SELECT run_id, name AS scenario,
           list(json_object('type', 'function', 'function', json_object(
                'name', t ->> 'name', 'description', t ->> 'description', 'parameters', t -> 'parameters'))
                ORDER BY i) AS tools
    FROM (SELECT run_id, name, unnest(ts) AS t, generate_subscripts(ts, 1) AS i
          FROM (SELECT run_id, name, from_json(definition -> 'tools', '["JSON"]') AS ts FROM scenarios))
    GROUP BY run_id, name
"""

# A flat message row (k, pos, step, sub, role, content, calls, name, tool_call_id, train) as
# an item message, ordered by (pos, step, sub) when aggregated.
_MESSAGE = (
    "{'role': role, 'content': content, 'tool_calls': calls, 'name': name, "
    f"'tool_call_id': tool_call_id, 'train': train}}::{MESSAGE_TYPE}"
)


def plain(m: str) -> str:
    """Message ``m`` as ``{role, content}``: the shape of a file without tool calls."""
    return f"{{'role': {m}.role, 'content': {m}.content}}"


def arguments_object(text: str) -> str:
    """JSON of a call's ``arguments`` text: the object it holds, or the text as a JSON string.

    Chat templates expect the arguments as an object (Qwen2.5's renders them with ``tojson``).
    Text that is no JSON object (a call that failed its schema, exported on request) stays what
    the model wrote. CASE evaluates json_type only on valid JSON.
    """
    return (
        f"CASE WHEN NOT json_valid({text}) THEN to_json({text}) "
        f"WHEN json_type({text}) = 'OBJECT' THEN json({text}) ELSE to_json({text}) END"
    )


def items_sql(items: Items, where: str) -> str:
    """``WITH ...`` CTEs ending in ``items`` over the rows of ``episodes`` (dialogues) or
    ``preference_pairs`` (pairs) that ``where`` keeps; a format's SELECT follows."""
    return _dialogues(where) if items == "dialogue" else _pairs(where)


def _turn_messages(turns: str) -> str:
    """Flat message rows of the turns in CTE ``turns`` (k, pos, role, content, steps, train):
    for each round of tool calls an assistant message holding the calls, then a tool message
    per result (its name is the call's: results answer the calls in order, which validation
    checks), then the turn's own message."""
    rounds = f"""
        SELECT k, pos, train, unnest(s) AS r, generate_subscripts(s, 1) AS step
        FROM (SELECT k, pos, train, from_json(steps, '{STEPS_TYPE}') AS s
              FROM {turns} WHERE steps IS NOT NULL)
    """
    return f"""
        SELECT k, pos, {_LAST_STEP} AS step, 0 AS sub, role, content, NULL::{CALLS_TYPE} AS calls,
               NULL::VARCHAR AS name, NULL::VARCHAR AS tool_call_id, train
        FROM {turns}
        UNION ALL
        SELECT k, pos, step, 0, 'assistant', '', r.calls, NULL, NULL, train FROM ({rounds})
        UNION ALL
        SELECT k, pos, step, sub, 'tool', result.content, NULL, r.calls[sub].name, result.call_id, false
        FROM (SELECT k, pos, step, r, unnest(r.results) AS result, generate_subscripts(r.results, 1) AS sub
              FROM ({rounds}))
    """


# Assistant turns a dialogue keeps for context but a trainer should not learn (OpenAI's
# `weight: 0`, Axolotl's `train: false`): the reply the dialogue kept (the revision where one
# replaced the original) failed a programmatic check, or the critic scored it below the run's
# revision threshold (`revise_below`, the scenario's own where it sets one): an original whose
# revisions all failed validation, or a revision that still fell short. A check's verdict is
# curation's for a final reply: the revision's checks where it was checked, else the
# original's. A reply the critic could not score, or no critic saw, counts as passed. An
# imported turn (`turns.origin`: a real dialogue's, continued by the run) is context too: no
# role of the run wrote or checked it.
_UNTRAINED = """
    kept_scores AS (
        -- The critique of the kept text: a revision's (the lowest, should it repeat), else the
        -- original's.
        SELECT r.episode_id, r.turn_idx, min(k.overall) AS overall
        FROM revisions r
        JOIN turns t ON t.episode_id = r.episode_id AND t.idx = r.turn_idx AND t.content = r.revised
        JOIN critiques k ON k.critique_id = r.revision_critique_id
        WHERE r.episode_id IN (SELECT episode_id FROM selected)
        GROUP BY r.episode_id, r.turn_idx
        UNION ALL
        SELECT k.episode_id, k.turn_idx, k.overall
        FROM critiques k JOIN turns t ON t.episode_id = k.episode_id AND t.idx = k.turn_idx
        WHERE k.target = 'original' AND k.episode_id IN (SELECT episode_id FROM selected)
          AND NOT EXISTS (SELECT 1 FROM revisions r
                          WHERE r.episode_id = t.episode_id AND r.turn_idx = t.idx AND r.revised = t.content)
    ),
    thresholds AS (
        SELECT e.episode_id, coalesce(
                   TRY_CAST(s.definition ->> '$.revise_below' AS DOUBLE),
                   TRY_CAST(ru.config ->> '$.review.revise_below' AS DOUBLE),
                   -- A run stored before its options were grouped.
                   TRY_CAST(ru.config ->> '$.revise_below' AS DOUBLE)) AS revise_below
        FROM selected e JOIN runs ru ON ru.run_id = e.run_id
        LEFT JOIN scenarios s ON s.run_id = e.run_id AND s.name = e.scenario
    ),
    untrained AS (
        SELECT k.episode_id, k.turn_idx FROM kept_scores k JOIN thresholds USING (episode_id)
        WHERE k.overall < revise_below
        UNION
        SELECT episode_id, idx FROM turns
        WHERE origin = 'imported' AND episode_id IN (SELECT episode_id FROM selected)
        UNION
        SELECT c.episode_id, c.turn_idx FROM checks c
        WHERE NOT c.passed AND c.turn_idx IS NOT NULL AND c.episode_id IN (SELECT episode_id FROM selected)
          AND (c.target = 'revision'
               OR (c.target = 'original' AND NOT EXISTS (
                   SELECT 1 FROM checks r
                   WHERE r.episode_id = c.episode_id AND r.turn_idx = c.turn_idx AND r.target = 'revision')))
    )
"""


def _dialogues(where: str) -> str:
    return f"""
    WITH selected AS (SELECT episode_id, run_id, scenario FROM episodes WHERE {where}),
    -- The assistant's system prompt, from the request of its first turn. Joined via
    -- turns.call_id, not llm_calls.episode_id: a cached call's row belongs to the episode
    -- that first made it. A revision is asked under the same system prompt.
    system AS (
        SELECT t.episode_id, arg_min(c.request ->> '$.system', t.idx) AS system
        FROM turns t JOIN llm_calls c ON c.call_id = t.call_id
        -- Parenthesized: DuckDB 1.1 binds `->>` looser than AND.
        WHERE t.role = 'assistant' AND c.role = 'assistant' AND (c.request ->> '$.system') IS NOT NULL
          AND t.episode_id IN (SELECT episode_id FROM selected)
        GROUP BY t.episode_id
    ),
    {_UNTRAINED},
    turn_rows AS (
        SELECT t.episode_id AS k, t.idx AS pos, t.role, t.content, t.tool_steps AS steps,
               t.role = 'assistant' AND u.turn_idx IS NULL AS train
        FROM turns t LEFT JOIN untrained u ON u.episode_id = t.episode_id AND u.turn_idx = t.idx
        WHERE t.episode_id IN (SELECT episode_id FROM selected)
    ),
    flat AS (
        {_turn_messages("turn_rows")}
        UNION ALL
        -- The system prompt, unless the dialogue starts with one.
        SELECT s.episode_id, -1, 0, 0, 'system', s.system, NULL, NULL, NULL, false FROM system s
        WHERE NOT EXISTS (
            SELECT 1 FROM turn_rows t WHERE t.k = s.episode_id AND t.role = 'system'
              AND t.pos = (SELECT min(u.pos) FROM turn_rows u WHERE u.k = t.k))
    ),
    dialogue AS (SELECT k, list({_MESSAGE} ORDER BY pos, step, sub) AS messages FROM flat GROUP BY k),
    items AS (
        SELECT e.episode_id, e.run_id, e.scenario, d.messages, t.tools
        FROM selected e LEFT JOIN dialogue d ON d.k = e.episode_id
        LEFT JOIN ({_TOOLS}) t ON t.run_id = e.run_id AND t.scenario = e.scenario
    )
    """


def _prompt_calls(calls: str) -> str:
    # A prompt message's calls as flat rows have them: arguments as the JSON text the model wrote.
    arguments = 'coalesce(c."function".arguments, c.arguments)'
    return (
        f"CASE WHEN len({calls}) > 0 THEN [{{'id': c.id, 'name': coalesce(c.\"function\".name, c.name), "
        f"'arguments': CASE WHEN json_type({arguments}) = 'VARCHAR' THEN {arguments} ->> '$' "
        f"ELSE {arguments}::VARCHAR END}} FOR c IN {calls}] END"
    )


def _pairs(where: str) -> str:
    return f"""
    WITH export_rows AS (
        SELECT pair_id, run_id, scenario, episode_id, turn_idx, source, margin, chosen, rejected,
               chosen_tool_steps, rejected_tool_steps, from_json(prompt, '{PROMPT_TYPE}') AS prompt
        FROM {PAIRS} WHERE {where}
    ),
    prompt_flat AS (
        SELECT k, pos, 0 AS step, 0 AS sub, m.role, coalesce(m.content, '') AS content,
               {_prompt_calls("m.tool_calls")} AS calls, m.name, m.tool_call_id, m.role = 'assistant' AS train
        FROM (SELECT pair_id AS k, unnest(prompt) AS m, generate_subscripts(prompt, 1) AS pos
              FROM export_rows)
    ),
    chosen_turn AS (
        SELECT pair_id AS k, 0 AS pos, 'assistant' AS role, chosen AS content, chosen_tool_steps AS steps,
               true AS train
        FROM export_rows
    ),
    rejected_turn AS (
        SELECT pair_id AS k, 0 AS pos, 'assistant' AS role, rejected AS content,
               rejected_tool_steps AS steps, true AS train
        FROM export_rows
    ),
    prompts AS (SELECT k, list({_MESSAGE} ORDER BY pos, step, sub) AS m FROM prompt_flat GROUP BY k),
    chosen AS (
        SELECT k, list({_MESSAGE} ORDER BY pos, step, sub) AS m
        FROM ({_turn_messages("chosen_turn")}) GROUP BY k
    ),
    rejected AS (
        SELECT k, list({_MESSAGE} ORDER BY pos, step, sub) AS m
        FROM ({_turn_messages("rejected_turn")}) GROUP BY k
    ),
    items AS (
        SELECT e.pair_id, e.episode_id, e.turn_idx, e.source, e.margin,
               p.m AS prompt, c.m AS chosen, r.m AS rejected, t.tools
        FROM export_rows e
        LEFT JOIN prompts p ON p.k = e.pair_id
        LEFT JOIN chosen c ON c.k = e.pair_id
        LEFT JOIN rejected r ON r.k = e.pair_id
        LEFT JOIN ({_TOOLS}) t ON t.run_id = e.run_id AND t.scenario = e.scenario
    )
    """
