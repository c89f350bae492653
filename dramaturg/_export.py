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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

__all__ = ["EXPORT_FORMATS", "LEFT_OUT_REASONS", "ExportFormat", "ExportSummary", "export"]

ExportFormat = Literal["dpo", "dpo-text", "sft"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)

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
            order of :data:`LEFT_OUT_REASONS` (then ``min_margin``), zeros included; ``rows`` counts the
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
    kind: ItemKind = "dialogue" if format == "sft" else "pair"
    table = "episodes" if kind == "dialogue" else "preference_pairs"
    scope = [] if run_id is None else [_Filter("run_id", "run_id = ?", (run_id,))]
    filters = _filters(kind, min_margin, included)
    with _interruptible():
        _curate_runs(db, run_id)
        with Store.open(db, read_only=True) as store:
            try:
                kept, left_out = _count_left_out(store, table, scope, filters)
                where, params = _where([*scope, *filters])
                query, check = _QUERIES[format]
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
    if format == "sft" and min_margin is not None:
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


def _dialogues(where: str) -> str:
    return f"""
    WITH selected AS (SELECT episode_id, scenario FROM episodes WHERE {where}),
    dialogue AS (
        SELECT episode_id, list({{'role': role, 'content': content}} ORDER BY idx) AS turns
        FROM turns WHERE episode_id IN (SELECT episode_id FROM selected) GROUP BY episode_id
    ),
    -- The assistant's system prompt, from the request of its first turn. Joined via
    -- turns.call_id, not llm_calls.episode_id: a cached call's row belongs to the episode
    -- that first made it. A revision is asked under the same system prompt.
    system AS (
        SELECT t.episode_id, arg_min(c.request ->> '$.system', t.idx) AS system
        FROM turns t JOIN llm_calls c ON c.call_id = t.call_id
        WHERE t.role = 'assistant' AND c.role = 'assistant' AND c.request ->> '$.system' IS NOT NULL
          AND t.episode_id IN (SELECT episode_id FROM selected)
        GROUP BY t.episode_id
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


# format -> (rows to write, validation)
_QUERIES: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "dpo": (_dpo, _pair_checks),
    "dpo-text": (_dpo_text, _pair_checks),
    "sft": (_sft, _sft_checks),
}


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
