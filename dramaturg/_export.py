"""Export the corpus for training: DPO preference pairs and SFT dialogues, as JSONL or Parquet.

DuckDB builds every row and writes the file itself (``COPY ... TO``), so exporting needs
neither pyarrow nor pandas, and nested columns get one fixed type for the whole file.

Formats:

- ``dpo``: Hugging Face TRL's *conversational* preference format with an explicit prompt
  (https://huggingface.co/docs/trl/dataset_formats#preference): ``prompt`` is a list of
  ``{role, content}`` messages (an optional system message, then user and assistant
  alternating, ending with a user message); ``chosen`` and ``rejected`` are each a list holding
  one assistant message.
- ``dpo-text``: TRL's *standard* preference format: ``prompt``, ``chosen`` and ``rejected`` are
  plain strings. The prompt is the conversation as a transcript (see :func:`export`).
- ``sft``: one ``messages`` list per finished episode: the assistant's system prompt, then
  the dialogue as it was finally performed (revisions in place of the originals).
- ``openai``: OpenAI's chat fine-tuning JSONL (the ``FineTuneChatRequestInput`` of its API
  reference): the ``sft`` dialogues as ``{"messages": [...]}`` lines, plus ``tools`` when the
  exported runs have tools. Only the documented keys: a line's ids are those of the ``sft``
  row at the same position (same options, same order).

Tools. When a scenario of the exported runs gives the assistant tools, ``sft`` and ``dpo`` rows
follow TRL's tool-calling format (https://huggingface.co/docs/trl/dataset_formats#tool-calling):
a ``tools`` column holds the row's scenario's tools as JSON schemas
(``[{"type": "function", "function": {"name", "description", "parameters"}}]``; null for a
scenario without tools), and each assistant turn that called tools becomes, per round of calls,
an assistant message ``{"role": "assistant", "content": "", "tool_calls": [{"id", "type":
"function", "function": {"name", "arguments"}}]}`` followed by one ``{"role": "tool",
"content", "name", "tool_call_id"}`` message per result, then the turn's final assistant
message. ``arguments`` is a JSON object, as chat templates expect (transformers' docs: a dict,
not the JSON string of OpenAI's API); a call whose arguments were not a JSON object keeps the
text the model wrote, as a JSON string. Every message of such a file has the five keys
(``role``, ``content``, ``tool_calls``, ``name``, ``tool_call_id``; null where they do not
apply), since a Parquet or JSONL column has one type. In ``dpo``, ``chosen`` and ``rejected``
hold the reply's tool-call and tool messages before its final assistant message. ``dpo-text``
cannot hold tool calls: it leaves out the pairs that carry some (reason ``tool_calls``, which
cannot be included back) and exports the others as before. ``openai`` writes the calls as its API
does: ``arguments`` is the JSON text, a tool message has ``tool_call_id``, and each message
has only the keys that apply to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import duckdb

from dramaturg._errors import ConfigError, StoreError
from dramaturg.evaluators import (
    FILTER_REASONS,
    FilterReason,
    ItemKind,
    duplicate_filter_sql,
    ensure_curated,
    filtered_filter_sql,
)
from dramaturg.memory import Store

__all__ = ["EXPORT_FORMATS", "FORMAT_HELP", "LEFT_OUT_REASONS", "ExportFormat", "ExportSummary", "export"]

ExportFormat = Literal["dpo", "dpo-text", "sft", "openai"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
# `dramaturg export --format`'s help.
FORMAT_HELP = (
    "dpo: TRL conversational preference rows; dpo-text: the same as plain strings; "
    "sft: one messages list per finished episode; openai: OpenAI chat fine-tuning JSONL of "
    "the same dialogues. With tools, dpo and sft rows get a tools column and assistant "
    "tool_calls plus tool messages (TRL's tool-calling format)."
)

# Why a row is left out, in the order rows are counted: a row left out for several reasons is
# counted once, under the first. The episode's own state comes first, then duplicates, then
# curation's filters (the `filtered` table) in the order curation documents them.
LEFT_OUT_REASONS: tuple[str, ...] = ("unfinished", "invalid_turn", "duplicates", *get_args(FilterReason))

# A failed or still running episode has no finished dialogue (nor checked pairs): it is never
# training data, so `unfinished` cannot be included back.
_ALWAYS_LEFT_OUT = "unfinished"

# File extension -> DuckDB COPY format. DuckDB's FORMAT json writes newline-delimited JSON.
_FILE_FORMATS = {".jsonl": "json", ".parquet": "parquet"}

# The one message type of every conversational column, so every row has the same types.
_MESSAGES_TYPE = '[{"role":"VARCHAR","content":"VARCHAR"}]'

# The formats whose rows are dialogues (one per finished episode); the others hold pairs.
_DIALOGUE_FORMATS = ("sft", "openai")

# OpenAI's fine-tuning files are JSONL only.
_JSONL_FORMATS = ("openai",)

# The role labels of the dpo-text transcript.
_SPEAKER = "CASE m.role WHEN 'system' THEN 'System' WHEN 'user' THEN 'User' ELSE 'Assistant' END"

# How many problems an error message quotes (every bad row is counted).
_QUOTED_PROBLEMS = 3


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote, and what it left out.

    Attributes:
        format: the export format.
        path: the file written.
        rows: rows written.
        left_out: ``(reason, rows)`` for every reason applied (not the included ones), in the
            order of :data:`LEFT_OUT_REASONS` (then ``min_margin``, then ``tool_calls``: the
            pairs with tool calls that ``dpo-text`` cannot hold), zeros included; ``rows`` counts the
            rows that reason left out of what the ones before it kept, so
            ``rows + left_out_total`` is every row of the exported run(s).
    """

    format: ExportFormat
    path: Path
    rows: int
    left_out: tuple[tuple[str, int], ...] = ()

    @property
    def left_out_total(self) -> int:
        return sum(rows for _, rows in self.left_out)


@dataclass(frozen=True, slots=True)
class _Filter:
    """One named WHERE fragment over the exported table's own columns: the rows it keeps."""

    name: str
    where: str
    params: tuple[object, ...] = ()


def export(
    db: str | Path,
    *,
    format: ExportFormat,
    out: Path,
    run_id: str | None = None,
    min_margin: float | None = None,
    include: Iterable[str] = (),
) -> ExportSummary:
    """Write the store's preference pairs or dialogues that passed curation to a training file.

    An export writes what passed. The runs exported are curated first (see
    :func:`~dramaturg.evaluators.ensure_curated`: only when their data changed since they
    were last curated), then every row is left out that is:

    - ``unfinished``: of an episode that failed or is still running;
    - ``invalid_turn``: of an episode that ended on a turn that kept failing validation;
    - ``duplicates``: an exact or near copy of a dialogue or pair kept elsewhere in the store
      (the same run, or a run created earlier: an export over several runs never holds the
      same dialogue or pair twice, and an export of one run leaves out what repeats an
      earlier run);
    - marked by one of curation's filters (the ``filtered`` table, one reason each:
      ``too_short``, ``too_long``, ``refusal``, ``role_flip``, ``failed_check``,
      ``goal_not_met`` (off by default in curation), ``unverified``, ``judge_disagreement``,
      ``low_margin``). An SFT dialogue fails ``failed_check`` when one of its final replies
      (the revision where there is one) failed a check; a pair, when its chosen reply did.

    ``include`` brings reasons back: ``include=["failed_check"]`` exports the rows that only
    failed a check, ``include=["all"]`` every row but the unfinished ones.

    The file type follows ``out``'s extension: ``.jsonl`` (one JSON object per line) or
    ``.parquet``. Rows are ordered by episode, turn and pair id, so the same store always
    gives the same file, and each carries its ids (``pair_id``, ``episode_id``, ``turn_idx``)
    back to the store. The file is written under a temporary name and renamed at the end:
    a failed or interrupted export never leaves a partial file behind.

    Every pair row is validated before anything is written: the prompt is a non-empty list
    of messages, an optional system message first, then user and assistant alternating,
    ending with a user message; chosen and rejected are non-empty and differ. A store that
    holds a bad row is an error, never a silently broken training file.

    ``dpo-text`` renders the prompt as a transcript, one message per paragraph, each labelled
    with its speaker, ending with the last user message::

        System: You are a patient math tutor.

        User: How do I solve 2x + 3 = 7?

        Assistant: Subtract 3 from both sides first.

        User: Then what?

    ``chosen`` and ``rejected`` are the replies exactly as generated. A trainer wraps the
    prompt in its own chat template; one that concatenates prompt and completion directly
    should append its own cue such as ``"\\n\\nAssistant: "``.

    Args:
        db: the DuckDB store; curated if needed, then read read-only.
        format: ``dpo``, ``dpo-text`` or ``sft`` (see the module docstring).
        out: the file to write; ``.jsonl`` or ``.parquet``. Replaced if it exists.
        run_id: export only this run (default: every run in the store).
        min_margin: pairs only: also leave out pairs whose critic margin is below this.
        include: reasons (of :data:`LEFT_OUT_REASONS` but ``unfinished``) whose rows are
            exported anyway, or ``"all"``.

    Returns:
        What was written and how many rows each reason left out.

    Raises:
        ConfigError: an unknown extension, format, reason or run id, a missing store or
            output folder, or ``min_margin`` with ``sft``.
        StoreError: the store cannot be read, or holds a row that breaks the format.

    Example:
        >>> summary = export("corpus.duckdb", format="dpo", out=Path("pairs.parquet"))  # doctest: +SKIP
        >>> summary.rows, {reason: n for reason, n in summary.left_out if n}  # doctest: +SKIP
        (57, {'duplicates': 3, 'failed_check': 6})
        >>> from datasets import load_dataset  # doctest: +SKIP
        >>> load_dataset("parquet", data_files="pairs.parquet", split="train")[0]["chosen"]  # doctest: +SKIP
        [{'role': 'assistant', 'content': 'Subtract 3 from both sides: 2x = 4.'}]
    """
    out = Path(out)
    copy_format = _check_options(out, format, min_margin=min_margin)
    included = _included(include)
    if not Path(db).exists():
        raise ConfigError(f"{db}: no such store (run `dramaturg run ... --db {db}` first)")
    kind: ItemKind = "dialogue" if format in _DIALOGUE_FORMATS else "pair"
    table = "episodes" if kind == "dialogue" else "preference_pairs"
    scope = [] if run_id is None else [_Filter("run_id", "run_id = ?", (run_id,))]
    filters = _filters(kind, min_margin, included)
    with _interruptible():
        _curate_runs(db, run_id)
        with Store.open(db, read_only=True) as store:
            try:
                with_tools = bool(_scenarios_with_tools(store, run_id))
                if with_tools and format == "dpo-text":
                    filters.append(_TEXT_ONLY)
                kept, left_out = _count_left_out(store, table, scope, filters)
                where, params = _where([*scope, *filters])
                query, checks = _queries(format, tools=with_tools)
                for check in checks:
                    _validate(store, db, check(where), params)
                _write(store, query(where), params, out, copy_format, expected_rows=kept)
            except duckdb.Error as exc:
                raise StoreError(f"{db}: cannot export {format}: {exc}") from exc
    return ExportSummary(format=format, path=out, rows=kept, left_out=left_out)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Let Ctrl-C be a KeyboardInterrupt, also when it arrives while DuckDB runs a query.

    DuckDB checks for signals during a query and, when Python's handler raised
    KeyboardInterrupt, stops the query and raises ``RuntimeError('Query interrupted')``
    instead. The clean-up (rolling back a curation, removing the temporary file) has already
    run on the way out; the caller should see the interruption for what it is.
    """
    try:
        yield
    except RuntimeError as exc:
        if str(exc) == "Query interrupted":
            raise KeyboardInterrupt from exc
        raise


def _curate_runs(db: str | Path, run_id: str | None) -> None:
    """Curate the runs exported (only those whose data changed since they were last curated)."""
    with Store.open(db) as store:
        if run_id is not None and not store.run_exists(run_id):
            raise ConfigError(f"{db}: unknown run id '{run_id}' (runs in this store: {_run_ids(store)})")
        run_ids = [run_id] if run_id else [row[0] for row in store.sql("SELECT run_id FROM runs")]
        for each in run_ids:
            ensure_curated(store, each)


def _check_options(out: Path, format: str, *, min_margin: float | None) -> str:
    """Check everything that needs no store; return the DuckDB COPY format for ``out``."""
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{format}' (expected one of: {', '.join(EXPORT_FORMATS)})")
    copy_format = _FILE_FORMATS.get(out.suffix.lower())
    if copy_format is None:
        expected = " or ".join(_FILE_FORMATS)
        raise ConfigError(f"{out}: unknown file type '{out.suffix}' (expected a file ending in {expected})")
    if format in _JSONL_FORMATS and copy_format != "json":
        raise ConfigError(
            f"{out}: --format {format} writes JSONL, OpenAI's file type: use a file ending in .jsonl"
        )
    if format in _DIALOGUE_FORMATS and min_margin is not None:
        raise ConfigError("--min-margin filters preference pairs: use it with dpo or dpo-text")
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.parent} does not exist")
    return copy_format


def _included(include: Iterable[str]) -> frozenset[str]:
    """The reasons to include back; ``all`` is every reason that can be."""
    names = set([include] if isinstance(include, str) else include)
    includable = [reason for reason in LEFT_OUT_REASONS if reason != _ALWAYS_LEFT_OUT]
    if _ALWAYS_LEFT_OUT in names:
        raise ConfigError(
            "--include unfinished: a failed or still running episode has no finished dialogue to "
            "export; `dramaturg resume RUN_ID` finishes it"
        )
    unknown = sorted(names - {"all", *includable})
    if unknown:
        raise ConfigError(
            f"--include {unknown[0]}: unknown reason (expected all or one of: {', '.join(includable)})"
        )
    return frozenset(includable) if "all" in names else frozenset(names)


# -- filters -----------------------------------------------------------------------------------


def _filters(kind: ItemKind, min_margin: float | None, included: frozenset[str]) -> list[_Filter]:
    """The WHERE fragments over the exported table, in the order their rows are counted.

    Each reason of curation is its own filter over the ``filtered`` table, so a summary can
    say how many rows each one left out, and ``include`` can drop exactly one.
    """
    if kind == "dialogue":
        finished = "status = 'done'"
        # An episode whose turn kept failing validation is left out whole, pairs included.
        valid = "termination_reason IS DISTINCT FROM 'invalid_turn'"
    else:
        episodes = "SELECT episode_id FROM episodes WHERE"
        finished = f"episode_id IN ({episodes} status = 'done')"
        valid = f"episode_id NOT IN ({episodes} termination_reason = 'invalid_turn')"
    filters = [
        _Filter("unfinished", finished),
        _Filter("invalid_turn", valid),
        _Filter("duplicates", duplicate_filter_sql(kind)),
        *(_Filter(reason, filtered_filter_sql(kind, reason)) for reason in FILTER_REASONS[kind]),
    ]
    filters = [f for f in filters if f.name not in included]
    if min_margin is not None:
        filters.append(_Filter("min_margin", "margin >= ?", (min_margin,)))
    return filters


def _where(filters: Sequence[_Filter]) -> tuple[str, list[object]]:
    where = " AND ".join(f"({f.where})" for f in filters) or "true"
    return where, [param for f in filters for param in f.params]


def _count_left_out(
    store: Store, table: str, scope: Sequence[_Filter], filters: Sequence[_Filter]
) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Rows in ``scope`` kept by every filter, and the rows each filter left out of what the
    ones before it kept, in one scan (each filter is evaluated once per row)."""
    scope_where, scope_params = _where(scope)
    flags = [f"({f.where}) AS keep_{i}" for i, f in enumerate(filters)]
    counts = ["count(*)"] + [
        "count(*) FILTER (WHERE " + " AND ".join(f"keep_{j}" for j in range(i + 1)) + ")"
        for i in range(len(filters))
    ]
    params = [param for f in filters for param in f.params] + scope_params
    totals = store.sql(
        f"SELECT {', '.join(counts)} FROM (SELECT {', '.join(['1 AS row_', *flags])} "
        f"FROM {table} WHERE {scope_where})",
        params,
    )[0]
    left_out = tuple((f.name, totals[i] - totals[i + 1]) for i, f in enumerate(filters))
    return totals[-1], left_out


# -- queries -----------------------------------------------------------------------------------
# Each format has a query for the rows to write and a validation query that returns
# (bad rows, row id, problem) for the first few problems. Both take the same WHERE fragment
# and parameters, so they read the same rows.


def _pairs(where: str) -> str:
    return f"""
    WITH export_rows AS (
        SELECT pair_id, episode_id, turn_idx, source, margin, chosen, rejected,
               from_json(prompt, '{_MESSAGES_TYPE}') AS prompt
        FROM preference_pairs WHERE {where}
    )
    """


def _dpo(where: str) -> str:
    return f"""
    {_pairs(where)}
    SELECT prompt,
           [{{'role': 'assistant', 'content': chosen}}] AS chosen,
           [{{'role': 'assistant', 'content': rejected}}] AS rejected,
           pair_id, episode_id, turn_idx, source, margin
    FROM export_rows ORDER BY episode_id, turn_idx, pair_id
    """


def _dpo_text(where: str) -> str:
    # unnest, not a list lambda: DuckDB changed its lambda syntax in 1.3 (the old arrow form
    # is an error in 2.0); this works with every supported version.
    return f"""
    {_pairs(where)}
    SELECT (SELECT string_agg({_SPEAKER} || ': ' || m.content, chr(10) || chr(10) ORDER BY i)
            FROM (SELECT unnest(prompt) AS m, generate_subscripts(prompt, 1) AS i)) AS prompt,
           chosen, rejected, pair_id, episode_id, turn_idx, source, margin
    FROM export_rows ORDER BY episode_id, turn_idx, pair_id
    """


def _selected_with_system(where: str) -> str:
    """The episodes exported (``selected``) and the assistant's system prompt of each (``system``)."""
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
    )
    """


def _dialogues(where: str) -> str:
    return f"""
    {_selected_with_system(where)},
    dialogue AS (
        SELECT episode_id, list({{'role': role, 'content': content}} ORDER BY idx) AS turns
        FROM turns WHERE episode_id IN (SELECT episode_id FROM selected) GROUP BY episode_id
    ),
    export_rows AS (
        SELECT CASE WHEN s.system IS NULL OR d.turns[1].role = 'system' THEN d.turns
                    ELSE list_prepend({{'role': 'system', 'content': s.system}}, d.turns) END AS messages,
               e.episode_id, e.scenario
        FROM selected e LEFT JOIN dialogue d USING (episode_id) LEFT JOIN system s USING (episode_id)
    )
    """


def _sft(where: str) -> str:
    return f"{_dialogues(where)} SELECT messages, episode_id, scenario FROM export_rows ORDER BY episode_id"


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
    FROM problems ORDER BY {key}, problem LIMIT {_QUOTED_PROBLEMS}
    """


def _pair_checks(where: str) -> str:
    return _message_checks(
        _pairs(where),
        "pair_id",
        "prompt",
        [
            "WHEN prompt[-1].role IS DISTINCT FROM 'user' THEN 'prompt does not end with a user message'",
            "WHEN chosen = rejected THEN 'chosen and rejected are identical'",
            "WHEN trim(chosen) = '' OR trim(rejected) = '' THEN 'chosen or rejected is empty'",
        ],
    )


def _sft_checks(where: str) -> str:
    return _message_checks(_dialogues(where), "episode_id", "messages")


# format -> (rows to write, validation), when no exported scenario has tools
_QUERIES: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "dpo": (_dpo, _pair_checks),
    "dpo-text": (_dpo_text, _pair_checks),
    "sft": (_sft, _sft_checks),
}


def _queries(
    format: ExportFormat, *, tools: bool
) -> tuple[Callable[[str], str], tuple[Callable[[str], str], ...]]:
    """The query that writes ``format``'s rows, and the validations to run before it."""
    if format == "openai":
        return partial(_openai, tools=tools), (_sft_checks, _turn_step_checks)
    if not tools:
        query, check = _QUERIES[format]
        return query, (check,)
    if format == "sft":
        return _sft_tools, (_sft_checks, _turn_step_checks)
    return _dpo_tools, (_tool_pair_checks, _reply_step_checks)


# -- tools -------------------------------------------------------------------------------------
# An assistant turn that called tools is stored as its final text plus its rounds of calls
# (turns.tool_steps; preference_pairs.chosen_tool_steps and rejected_tool_steps for a pair's
# replies). The queries below first lay every message out as a flat row
# (k, pos, step, sub, role, content, calls, name, tool_call_id), ordered by (pos, step, sub),
# then render the rows in a format's own message shape.

# A turn's tool rounds as stored: `arguments` is the JSON text the model wrote.
_STEPS_TYPE = (
    '[{"calls": [{"id": "VARCHAR", "name": "VARCHAR", "arguments": "VARCHAR"}], '
    '"results": [{"call_id": "VARCHAR", "content": "VARCHAR"}]}]'
)

# The calls of one flat message row, before a format renders them.
_CALLS_TYPE = 'STRUCT(id VARCHAR, "name" VARCHAR, arguments VARCHAR)[]'

# A prompt message, which may carry tool calls: in OpenAI's shape (`function.name`,
# `function.arguments`) or flat like the stored steps (`name`, `arguments`).
_PROMPT_TYPE = (
    '[{"role": "VARCHAR", "content": "VARCHAR", "name": "VARCHAR", "tool_call_id": "VARCHAR", '
    '"tool_calls": [{"id": "VARCHAR", "name": "VARCHAR", "arguments": "JSON", '
    '"function": {"name": "VARCHAR", "arguments": "JSON"}}]}]'
)

# The one message type of a TRL file with tools.
_TOOL_MESSAGE_TYPE = (
    'STRUCT("role" VARCHAR, "content" VARCHAR, tool_calls STRUCT(id VARCHAR, "type" VARCHAR, '
    '"function" STRUCT("name" VARCHAR, arguments JSON))[], "name" VARCHAR, tool_call_id VARCHAR)'
)

# A turn's own message comes after its tool rounds.
_LAST_STEP = 2147483647

# Each scenario's tools, per run, as OpenAI function tools (TRL's `tools` column). The
# definition lists {name, description, parameters}; a scenario without tools has no row.
_TOOLS = """
    SELECT run_id, name AS scenario,
           list(json_object('type', 'function', 'function', json_object(
                'name', t ->> 'name', 'description', t ->> 'description', 'parameters', t -> 'parameters'))
                ORDER BY i) AS tools
    FROM (SELECT run_id, name, unnest(ts) AS t, generate_subscripts(ts, 1) AS i
          FROM (SELECT run_id, name, from_json(definition -> 'tools', '["JSON"]') AS ts FROM scenarios))
    GROUP BY run_id, name
"""


def _arguments_object(text: str) -> str:
    # Chat templates expect the arguments as an object (Qwen2.5's renders them with `tojson`).
    # Text that is no JSON object (a call that failed its schema, exported on request) stays
    # what the model wrote, as a JSON string. CASE evaluates json_type only on valid JSON.
    return (
        f"CASE WHEN NOT json_valid({text}) THEN to_json({text}) "
        f"WHEN json_type({text}) = 'OBJECT' THEN json({text}) ELSE to_json({text}) END"
    )


# A flat message row as TRL's tool-calling format has it: a struct of one fixed type.
_TRL_MESSAGE = (
    "{'role': role, 'content': content, 'tool_calls': CASE WHEN calls IS NOT NULL THEN "
    "[{'id': c.id, 'type': 'function', 'function': {'name': c.name, 'arguments': "
    + _arguments_object("c.arguments")
    + "}} FOR c IN calls] END, 'name': name, 'tool_call_id': tool_call_id}::"
    + _TOOL_MESSAGE_TYPE
)

# A flat message row as OpenAI's fine-tuning format has it: a JSON object with only the keys
# that apply (arguments as the JSON text; a message that calls tools has no content).
_OPENAI_MESSAGE = """CASE
    WHEN role = 'tool' THEN json_object('role', 'tool', 'tool_call_id', tool_call_id, 'content', content)
    WHEN calls IS NOT NULL THEN json_object('role', role, 'tool_calls', to_json([
        json_object('id', c.id, 'type', 'function',
                    'function', json_object('name', c.name, 'arguments', c.arguments))
        FOR c IN calls]))
    ELSE json_object('role', role, 'content', content) END"""


def _turn_messages(turns: str) -> str:
    """Flat message rows of the turns in CTE ``turns`` (k, pos, role, content, steps): for each
    round of tool calls an assistant message holding the calls, then a tool message per result
    (its name is the call's: results answer the calls in order, which validation checks), then
    the turn's own message."""
    rounds = f"""
        SELECT k, pos, unnest(s) AS r, generate_subscripts(s, 1) AS step
        FROM (SELECT k, pos, from_json(steps, '{_STEPS_TYPE}') AS s FROM {turns} WHERE steps IS NOT NULL)
    """
    return f"""
        SELECT k, pos, {_LAST_STEP} AS step, 0 AS sub, role, content, NULL::{_CALLS_TYPE} AS calls,
               NULL::VARCHAR AS name, NULL::VARCHAR AS tool_call_id
        FROM {turns}
        UNION ALL
        SELECT k, pos, step, 0, 'assistant', '', r.calls, NULL, NULL FROM ({rounds})
        UNION ALL
        SELECT k, pos, step, sub, 'tool', result.content, NULL, r.calls[sub].name, result.call_id
        FROM (SELECT k, pos, step, r, unnest(r.results) AS result, generate_subscripts(r.results, 1) AS sub
              FROM ({rounds}))
    """


def _dialogue_messages(where: str, message: str) -> str:
    """CTEs up to ``dialogue`` (k = episode_id, messages): each exported episode's system
    prompt and turns with their tool rounds, each message rendered by ``message``."""
    return f"""
    {_selected_with_system(where)},
    turn_rows AS (
        SELECT episode_id AS k, idx AS pos, role, content, tool_steps AS steps FROM turns
        WHERE episode_id IN (SELECT episode_id FROM selected)
    ),
    flat AS (
        {_turn_messages("turn_rows")}
        UNION ALL
        -- The system prompt, unless the dialogue starts with one (as in `sft` without tools).
        SELECT s.episode_id, -1, 0, 0, 'system', s.system, NULL, NULL, NULL FROM system s
        WHERE NOT EXISTS (
            SELECT 1 FROM turn_rows t WHERE t.k = s.episode_id AND t.role = 'system'
              AND t.pos = (SELECT min(u.pos) FROM turn_rows u WHERE u.k = t.k))
    ),
    dialogue AS (SELECT k, list({message} ORDER BY pos, step, sub) AS messages FROM flat GROUP BY k)
    """


def _sft_tools(where: str) -> str:
    return f"""
    {_dialogue_messages(where, _TRL_MESSAGE)}
    SELECT d.messages, t.tools, e.episode_id, e.scenario
    FROM selected e LEFT JOIN dialogue d ON d.k = e.episode_id
    LEFT JOIN ({_TOOLS}) t ON t.run_id = e.run_id AND t.scenario = e.scenario
    ORDER BY e.episode_id
    """


def _openai(where: str, *, tools: bool) -> str:
    # Only the keys of OpenAI's documented training line. `tools` is an empty list for a
    # scenario without tools (OpenAI's own preference example writes "tools": []).
    # parallel_tool_calls is left out: it defaults to true, as in the requests that made the data.
    tools_column = ", coalesce(t.tools, []::JSON[]) AS tools" if tools else ""
    return f"""
    {_dialogue_messages(where, _OPENAI_MESSAGE)}
    SELECT d.messages{tools_column}
    FROM selected e LEFT JOIN dialogue d ON d.k = e.episode_id
    LEFT JOIN ({_TOOLS}) t ON t.run_id = e.run_id AND t.scenario = e.scenario
    ORDER BY e.episode_id
    """


def _prompt_calls(calls: str) -> str:
    # A prompt message's calls as flat rows have them: arguments as the JSON text the model wrote.
    arguments = 'coalesce(c."function".arguments, c.arguments)'
    return (
        f"CASE WHEN len({calls}) > 0 THEN [{{'id': c.id, 'name': coalesce(c.\"function\".name, c.name), "
        f"'arguments': CASE WHEN json_type({arguments}) = 'VARCHAR' THEN {arguments} ->> '$' "
        f"ELSE {arguments}::VARCHAR END}} FOR c IN {calls}] END"
    )


def _dpo_tools(where: str) -> str:
    return f"""
    WITH export_rows AS (
        SELECT pair_id, run_id, scenario, episode_id, turn_idx, source, margin, chosen, rejected,
               chosen_tool_steps, rejected_tool_steps, from_json(prompt, '{_PROMPT_TYPE}') AS prompt
        FROM preference_pairs WHERE {where}
    ),
    prompt_flat AS (
        SELECT k, pos, 0 AS step, 0 AS sub, m.role, coalesce(m.content, '') AS content,
               {_prompt_calls("m.tool_calls")} AS calls, m.name, m.tool_call_id
        FROM (SELECT pair_id AS k, unnest(prompt) AS m, generate_subscripts(prompt, 1) AS pos
              FROM export_rows)
    ),
    chosen_turn AS (
        SELECT pair_id AS k, 0 AS pos, 'assistant' AS role, chosen AS content, chosen_tool_steps AS steps
        FROM export_rows
    ),
    rejected_turn AS (
        SELECT pair_id AS k, 0 AS pos, 'assistant' AS role, rejected AS content, rejected_tool_steps AS steps
        FROM export_rows
    ),
    prompts AS (SELECT k, list({_TRL_MESSAGE} ORDER BY pos, step, sub) AS m FROM prompt_flat GROUP BY k),
    chosen AS (
        SELECT k, list({_TRL_MESSAGE} ORDER BY pos, step, sub) AS m
        FROM ({_turn_messages("chosen_turn")}) GROUP BY k
    ),
    rejected AS (
        SELECT k, list({_TRL_MESSAGE} ORDER BY pos, step, sub) AS m
        FROM ({_turn_messages("rejected_turn")}) GROUP BY k
    )
    SELECT p.m AS prompt, c.m AS chosen, r.m AS rejected, t.tools,
           e.pair_id, e.episode_id, e.turn_idx, e.source, e.margin
    FROM export_rows e
    LEFT JOIN prompts p ON p.k = e.pair_id
    LEFT JOIN chosen c ON c.k = e.pair_id
    LEFT JOIN rejected r ON r.k = e.pair_id
    LEFT JOIN ({_TOOLS}) t ON t.run_id = e.run_id AND t.scenario = e.scenario
    ORDER BY e.episode_id, e.turn_idx, e.pair_id
    """


def _tool_pair_checks(where: str) -> str:
    # User and assistant alternate in the conversation's own messages; a tool message, or an
    # assistant message that only calls tools, sits between them.
    rows = f"""
    WITH parsed AS (
        SELECT pair_id, chosen, rejected, chosen_tool_steps, rejected_tool_steps,
               from_json(prompt, '{_PROMPT_TYPE}') AS full_prompt
        FROM preference_pairs WHERE {where}
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


def _step_checks(rows: str) -> str:
    """Validation SQL over the tool rounds of ``rows`` (k, label, role, steps): only an assistant
    turn calls tools; every round has calls, each with an id, a tool name and arguments; its
    results answer the calls in order, each with content."""
    return f"""
    WITH step_rows AS ({rows}),
    rounds AS (
        SELECT k, label, unnest(s) AS r, generate_subscripts(s, 1) AS step
        FROM (SELECT k, label, from_json(steps, '{_STEPS_TYPE}') AS s FROM step_rows WHERE steps IS NOT NULL)
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
    FROM problems ORDER BY k, problem LIMIT {_QUOTED_PROBLEMS}
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
        f"FROM preference_pairs, (VALUES ('chosen'), ('rejected')) AS side(label) WHERE {where}"
    )


# dpo-text's strings cannot hold tool calls: it leaves out the pairs whose replies (or prompt)
# carry some, counted under their own reason, which cannot be included back.
_TEXT_ONLY = _Filter(
    "tool_calls",
    "chosen_tool_steps IS NULL AND rejected_tool_steps IS NULL AND NOT list_contains("
    "[m.role = 'tool' OR coalesce(len(m.tool_calls), 0) > 0 "
    f"FOR m IN from_json(prompt, '{_PROMPT_TYPE}')], true)",
)


def _scenarios_with_tools(store: Store, run_id: str | None) -> list[str]:
    """The scenarios of the exported runs that give the assistant tools, or whose turns called
    some (a definition written before tools were stored)."""
    rows = store.sql(
        """
        SELECT name FROM scenarios
        WHERE ($1 IS NULL OR run_id = $1) AND coalesce(json_array_length(definition, '$.tools'), 0) > 0
        UNION
        SELECT e.scenario FROM turns t JOIN episodes e USING (episode_id)
        WHERE t.tool_steps IS NOT NULL AND ($1 IS NULL OR e.run_id = $1)
        ORDER BY 1
        """,
        [run_id],
    )
    return [name for (name,) in rows]


# -- validate and write ------------------------------------------------------------------------


def _validate(store: Store, db: str | Path, check: str, params: list[object]) -> None:
    problems = store.sql(check, params)
    if not problems:
        return
    bad_rows = problems[0][0]
    quoted = "; ".join(f"{key}: {problem}" for _, key, problem in problems)
    breaks = "row breaks" if bad_rows == 1 else "rows break"
    raise StoreError(f"{db}: nothing exported: {bad_rows} {breaks} the format: {quoted}")


def _write(
    store: Store, query: str, params: list[object], out: Path, copy_format: str, *, expected_rows: int
) -> None:
    # Write under a temporary name in the same folder, then rename: a reader never sees a
    # partial file, and a failed export leaves the previous file (if any) untouched. `finally`
    # also runs on KeyboardInterrupt (Ctrl-C), so an interrupted export removes its temporary
    # file; one a SIGKILL left behind has a fixed name, which the next export overwrites.
    partial = out.with_name(f".{out.name}.partial")
    try:
        copied = store.sql(f"COPY ({query}) TO '{_quote(partial)}' (FORMAT {copy_format})", params)[0][0]
        # The filter counts and the export read the same rows: a join that drops or repeats
        # rows would be a bug, so it must not produce a file.
        if copied != expected_rows:
            raise StoreError(
                f"{store.path}: the export wrote {copied} rows, the filters kept {expected_rows}"
            )
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def _quote(path: Path) -> str:
    # COPY takes its target as a literal, not a parameter.
    return str(path).replace("'", "''")


def _run_ids(store: Store) -> str:
    ids = [
        run_id for (run_id,) in store.sql("SELECT run_id FROM runs ORDER BY created_at DESC, run_id LIMIT 6")
    ]
    if not ids:
        return "none"
    return ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
