"""Export the corpus for training, in the file format of each trainer: TRL, OpenAI fine-tuning,
LLaMA-Factory and Axolotl, as JSONL or Parquet.

This module applies what every format shares: curation's gates (what is left out, counted by
reason), validation of the stored rows, and writing the file. The formats themselves, one per
trainer's documented format, are in :mod:`dramaturg.outputs` (docs/exports.md shows a row of
each):

- TRL: ``dpo`` (conversational preference), ``dpo-text`` (the same as plain strings), ``sft``
  (one ``messages`` list per finished episode), ``trl-kto`` (unpaired preference: prompt,
  completion, label);
- OpenAI fine-tuning JSONL: ``openai`` (chat, ``weight: 0`` on turns not to learn),
  ``openai-dpo`` (preference);
- LLaMA-Factory ShareGPT: ``llamafactory`` (SFT) and ``llamafactory-ranking`` (pairs), each
  registered in the ``dataset_info.json`` next to the file;
- Axolotl: ``axolotl`` (``chat_template``) and ``axolotl-dpo`` (``chat_template.default``).

DuckDB builds every row and writes the file itself (``COPY ... TO``), so exporting needs
neither pyarrow nor pandas, and nested columns get one fixed type for the whole file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import duckdb

from dramaturg._errors import ConfigError, StoreError
from dramaturg.evaluators import (
    FILTER_REASONS,
    FilterReason,
    duplicate_filter_sql,
    ensure_curated,
    filtered_filter_sql,
)
from dramaturg.memory import Store
from dramaturg.outputs import (
    FORMATS,
    PAIRS,
    PROMPT_TYPE,
    ExportFormat,
    Format,
    ToolCalls,
    checks_for,
    items_sql,
)

__all__ = ["EXPORT_FORMATS", "FORMAT_HELP", "LEFT_OUT_REASONS", "ExportFormat", "ExportSummary", "export"]

EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


def _format_help() -> str:
    """`dramaturg export --format`'s help: every format, grouped by the trainer it is for."""
    consumers: dict[str, list[Format]] = {}
    for f in FORMATS.values():
        consumers.setdefault(f.consumer, []).append(f)
    groups = [
        f"{consumer}: " + ", ".join(f"{f.name} ({f.summary})" for f in formats)
        for consumer, formats in consumers.items()
    ]
    return "; ".join(groups) + ". See docs/exports.md."


FORMAT_HELP = _format_help()

# Why a row is left out, in the order rows are counted: a row left out for several reasons is
# counted once, under the first. The episode's own state comes first, then duplicates, then
# curation's filters (the `filtered` table) in the order curation documents them.
LEFT_OUT_REASONS: tuple[str, ...] = (
    "unfinished",
    "invalid_turn",
    "rejected",
    "duplicates",
    *get_args(FilterReason),
)

# A failed or still running episode has no finished dialogue (nor checked pairs): it is never
# training data, so `unfinished` cannot be included back.
_ALWAYS_LEFT_OUT = "unfinished"

# File extension -> DuckDB COPY format. DuckDB's FORMAT json writes newline-delimited JSON.
_FILE_FORMATS = {".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote, and what it left out.

    Attributes:
        format: the export format.
        path: the file written.
        rows: rows written.
        left_out: ``(reason, rows)`` for every reason applied (not the included ones), in the
            order of :data:`LEFT_OUT_REASONS` (then ``min_margin``, then ``tool_calls``: the
            pairs with tool calls that a format cannot hold), zeros included; ``rows`` counts the
            rows that reason left out of what the ones before it kept, so
            ``rows + left_out_total`` is every row of the exported run(s). Counts are rows of the
            file: a ``trl-kto`` pair is two rows.
        side_files: files written next to ``path``: the ``dataset_info.json`` that registers a
            LLaMA-Factory export.
    """

    format: ExportFormat
    path: Path
    rows: int
    left_out: tuple[tuple[str, int], ...] = ()
    side_files: tuple[Path, ...] = ()

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
    only_accepted: bool = False,
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
      (the revision where there is one) failed a check; a pair, when its chosen reply did;
    - ``tool_calls``: a pair with tool calls where the format has no place for them
      (``dpo-text`` and ``axolotl-dpo`` anywhere, ``openai-dpo`` and ``llamafactory-ranking``
      in the replies). It cannot be included back.

    Every format applies the same gates: dialogue formats those of dialogues, pair formats
    those of pairs. ``include`` brings reasons back: ``include=["failed_check"]`` exports the
    rows that only failed a check, ``include=["all"]`` every row but the unfinished ones.

    The file type follows ``out``'s extension: ``.jsonl`` (one JSON object per line) or
    ``.parquet`` (``openai`` and ``openai-dpo``: JSONL only, OpenAI's file type). Rows are
    ordered by episode, turn and pair id, so the same store always gives the same file, and
    each carries its ids (``pair_id``, ``episode_id``, ``turn_idx``) back to the store, but in
    OpenAI's files, which hold the documented keys only. The file is written under a temporary
    name and renamed at the end: a failed or interrupted export never leaves a partial file
    behind. A LLaMA-Factory export then registers the file in the ``dataset_info.json`` of its
    folder (merged into the one there).

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
        format: one of :data:`EXPORT_FORMATS` (see :mod:`dramaturg.outputs`).
        out: the file to write; ``.jsonl`` or ``.parquet``. Replaced if it exists.
        run_id: export only this run (default: every run in the store).
        min_margin: pairs only: also leave out pairs whose critic margin is below this.
        include: reasons (of :data:`LEFT_OUT_REASONS` but ``unfinished``) whose rows are
            exported anyway, or ``"all"``.

    Returns:
        What was written and how many rows each reason left out.

    Raises:
        ConfigError: an unknown extension, format, reason or run id, a missing store or
            output folder, ``min_margin`` with a dialogue format, or a ``dataset_info.json``
            that cannot be read.
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
    spec = FORMATS[format]
    included = _included(include)
    if not Path(db).exists():
        raise ConfigError(f"{db}: no such store (run `dramaturg run ... --db {db}` first)")
    if spec.companion is not None:
        spec.companion.check(out)
    table = "episodes" if spec.items == "dialogue" else PAIRS
    scope = [] if run_id is None else [_Filter("run_id", "run_id = ?", (run_id,))]
    filters = _filters(spec, min_margin, included, only_accepted=only_accepted)
    with _interruptible():
        _curate_runs(db, run_id)
        with Store.open(db, read_only=True) as store:
            try:
                _annotated_pairs_view(store)
                with_tools = bool(_scenarios_with_tools(store, run_id))
                if with_tools and spec.tool_calls != "anywhere":
                    filters.append(_NO_TOOL_CALLS[spec.tool_calls])
                kept, left_out = _count_left_out(store, table, scope, filters, spec.rows_per_item)
                where, params = _where([*scope, *filters])
                for check in checks_for(spec.items, tools=with_tools):
                    _validate(store, db, check(where), params)
                query = f"{items_sql(spec.items, where)}\n{spec.select(with_tools)}"
                _write(store, query, params, out, copy_format, expected_rows=kept)
            except duckdb.Error as exc:
                raise StoreError(f"{db}: cannot export {format}: {exc}") from exc
    side_files = () if spec.companion is None else (spec.companion.write(out),)
    return ExportSummary(format=format, path=out, rows=kept, left_out=left_out, side_files=side_files)


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


def _check_options(out: Path, format: ExportFormat, *, min_margin: float | None) -> str:
    """Check everything that needs no store; return the DuckDB COPY format for ``out``."""
    # `format` comes from Python callers too, where the Literal is not enforced.
    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}' (expected one of: {', '.join(EXPORT_FORMATS)})")
    spec = FORMATS[format]
    copy_format = _FILE_FORMATS.get(out.suffix.lower())
    if copy_format is None:
        expected = " or ".join(_FILE_FORMATS)
        raise ConfigError(f"{out}: unknown file type '{out.suffix}' (expected a file ending in {expected})")
    if spec.jsonl_only and copy_format != "json":
        raise ConfigError(
            f"{out}: --format {format} writes JSONL, the only file type its trainer reads: "
            "use a file ending in .jsonl"
        )
    if spec.items == "dialogue" and min_margin is not None:
        others = ", ".join(
            f.name for f in FORMATS.values() if f.items == "pair" and f.name not in ("dpo", "dpo-text")
        )
        raise ConfigError(
            "--min-margin filters preference pairs: use it with dpo or dpo-text, "
            f"or another pair format ({others})"
        )
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


def _annotated_pairs_view(store: Store) -> None:
    """The pairs as exported: an annotator's flip swaps a pair's sides (the rejected reply was
    the better one). A temporary view of this read-only connection; nothing is written."""
    flip = "pair_id IN (SELECT pair_id FROM pair_verdicts WHERE verdict = 'flip')"
    swapped = ", ".join(
        f"CASE WHEN {flip} THEN {b} ELSE {a} END AS {a}"
        for a, b in (
            ("chosen", "rejected"),
            ("rejected", "chosen"),
            ("chosen_call_id", "rejected_call_id"),
            ("rejected_call_id", "chosen_call_id"),
            ("chosen_tool_steps", "rejected_tool_steps"),
            ("rejected_tool_steps", "chosen_tool_steps"),
        )
    )
    store.sql(
        f"CREATE OR REPLACE TEMP VIEW {PAIRS} AS SELECT * REPLACE ({swapped}, "
        f"CASE WHEN {flip} THEN -margin ELSE margin END AS margin) FROM preference_pairs"
    )


# Human review (the viewer's annotations): a rejected pair is left out, and with only_accepted
# so is every pair no annotator accepted (or flipped).
_REJECTED = "pair_id NOT IN (SELECT pair_id FROM pair_verdicts WHERE verdict = 'reject')"
_ACCEPTED = "pair_id IN (SELECT pair_id FROM pair_verdicts WHERE verdict IN ('accept', 'flip'))"


def _filters(
    spec: Format, min_margin: float | None, included: frozenset[str], *, only_accepted: bool = False
) -> list[_Filter]:
    """The WHERE fragments over the exported table, in the order their rows are counted.

    Each reason of curation is its own filter over the ``filtered`` table, so a summary can
    say how many rows each one left out, and ``include`` can drop exactly one.
    """
    if spec.items == "dialogue":
        finished = "status = 'done'"
        # An episode whose turn kept failing validation is left out whole, pairs included.
        valid = "termination_reason IS DISTINCT FROM 'invalid_turn'"
    else:
        episodes = "SELECT episode_id FROM episodes WHERE"
        finished = f"episode_id IN ({episodes} status = 'done')"
        valid = f"episode_id NOT IN ({episodes} termination_reason = 'invalid_turn')"
    reviewed = [_Filter("rejected", _REJECTED)] if spec.items == "pair" else []
    filters = [
        _Filter("unfinished", finished),
        _Filter("invalid_turn", valid),
        *reviewed,
        _Filter("duplicates", duplicate_filter_sql(spec.items)),
        *(_Filter(reason, filtered_filter_sql(spec.items, reason)) for reason in FILTER_REASONS[spec.items]),
    ]
    filters = [f for f in filters if f.name not in included]
    if only_accepted and spec.items == "pair":
        filters.append(_Filter("not_accepted", _ACCEPTED))
    if min_margin is not None:
        filters.append(_Filter("min_margin", "margin >= ?", (min_margin,)))
    return filters


# The pairs a format keeps when it cannot hold tool calls everywhere, counted under their own
# reason, which cannot be included back: a format holding one message per reply keeps the
# pairs whose replies call no tools; one without tool calls at all keeps the pairs whose prompt
# has none either.
_REPLIES_WITHOUT_CALLS = "chosen_tool_steps IS NULL AND rejected_tool_steps IS NULL"
_NO_TOOL_CALLS: dict[ToolCalls, _Filter] = {
    "prompt": _Filter("tool_calls", _REPLIES_WITHOUT_CALLS),
    "nowhere": _Filter(
        "tool_calls",
        f"{_REPLIES_WITHOUT_CALLS} AND NOT list_contains("
        "[m.role = 'tool' OR coalesce(len(m.tool_calls), 0) > 0 "
        f"FOR m IN from_json(prompt, '{PROMPT_TYPE}')], true)",
    ),
}


def _where(filters: Sequence[_Filter]) -> tuple[str, list[object]]:
    where = " AND ".join(f"({f.where})" for f in filters) or "true"
    return where, [param for f in filters for param in f.params]


def _count_left_out(
    store: Store, table: str, scope: Sequence[_Filter], filters: Sequence[_Filter], rows_per_item: int
) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Rows in ``scope`` kept by every filter, and the rows each filter left out of what the
    ones before it kept, in one scan (each filter is evaluated once per row). Counts are file
    rows: ``rows_per_item`` per stored row."""
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
    totals = tuple(total * rows_per_item for total in totals)
    left_out = tuple((f.name, totals[i] - totals[i + 1]) for i, f in enumerate(filters))
    return totals[-1], left_out


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
