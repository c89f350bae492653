"""Curate a run in the store: mark duplicates, filter with reasons, measure the corpus.

:func:`curate` reads a run's finished dialogues and preference pairs and rewrites, in one
transaction, the run's rows of three tables:

- ``duplicates``: exact and near-duplicate dialogues and pairs (:func:`find_duplicates`),
  each pointing at the kept item it repeats, in this run or in a run created before it.
  Nothing is deleted.
- ``filtered``: one row per (item, reason) for every filter an item fails
  (:class:`FilterSettings`), with a detail saying what tripped it.
- ``metrics``: diversity, coverage and quality metrics per run and per scenario
  (:mod:`dramaturg.evaluators._metrics`).

Curating again replaces those rows, so it is idempotent. Exports skip marked rows with
:func:`duplicate_filter_sql` and :func:`filtered_filter_sql`, one reason at a time
(:data:`FILTER_REASONS`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Literal, Self

import duckdb
from dramaturg.evaluators._dedup import DedupResult, find_duplicates
from dramaturg.evaluators._embed import Embedder, local_embedder
from dramaturg.evaluators._metrics import (
    CURATION_QUERIES,
    DONE_CTE,
    EPISODE_QUERIES,
    METRIC_FAMILIES,
    PAIR_QUERIES,
    PAIRS_CTE,
    REVIEW_QUERIES,
    MetricRow,
    coverage_metrics,
    spread_metrics,
    stream_rows,
    text_metrics,
)
from dramaturg.memory import Store, utcnow
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dramaturg._errors import ConfigError, StoreError

__all__ = [
    "DEFAULT_REFUSAL_PATTERN",
    "FILTER_REASONS",
    "CurationResult",
    "FilterReason",
    "FilterSettings",
    "ItemKind",
    "curate",
    "duplicate_filter_sql",
    "ensure_curated",
    "filtered_filter_sql",
]

ItemKind = Literal["dialogue", "pair"]

FilterReason = Literal[
    "too_short",
    "too_long",
    "refusal",
    "role_flip",
    "failed_check",
    "goal_not_met",
    "unverified",
    "judge_disagreement",
    "low_margin",
]

# The reasons each kind of item can be filtered for, in the order they are documented (and
# exports count them). One name, one cause: a pair whose chosen reply failed a check is
# `failed_check`, never also `unverified`, so an export can bring back exactly one cause.
FILTER_REASONS: Mapping[ItemKind, tuple[FilterReason, ...]] = {
    "dialogue": ("too_short", "too_long", "refusal", "role_flip", "failed_check", "goal_not_met"),
    "pair": (
        "too_short",
        "too_long",
        "refusal",
        "role_flip",
        "failed_check",
        "unverified",
        "judge_disagreement",
        "low_margin",
    ),
}

# Bump when curation computes something differently: stored metrics of an older version are
# then stale, and `dramaturg stats` (and `dramaturg export`) recompute them.
# 2: duplicates across the whole store; `unverified` is the judges only, checks are `failed_check`;
#    an unchecked revision (identical to its original) keeps the original's failed check.
CURATION_VERSION = 2

# Refusals a model gives instead of doing the task. Deliberately narrow: a support agent
# saying "I can't offer a cash refund after 30 days" is following policy, not refusing, so
# bare "I can't" / "I'm sorry, but" are not matched. Written for both Python's re (checked
# when settings are made) and RE2 (what DuckDB runs): no lookarounds, no backreferences.
_REFUSAL_PHRASES = (
    # "I can't help with that", "I'm not able to assist you with this request"
    r"\bi(?:['’]m| am)? (?:can['’]?t|cannot|can not|won['’]?t be able to|unable to|not able to) "
    r"(?:help|assist)(?: you)? with (?:that|this|your request|the request)\b",
    # "As an AI, I cannot ...", "As an AI language model I don't ..."
    r"\bas an ai(?: language model| assistant)?,? i (?:can['’]?t|cannot|am unable|['’]m unable|am not able"
    r"|don['’]?t|do not)\b",
    # "I must decline", "I have to refuse"
    r"\bi (?:must|have to) (?:decline|refuse)\b",
)
DEFAULT_REFUSAL_PATTERN = "(?i)" + "|".join(_REFUSAL_PHRASES)


class FilterSettings(BaseModel):
    """Which dialogues and pairs curation filters, and what counts as a near-duplicate.

    Dialogues are a run's finished episodes; pairs are its preference pairs. A filtered
    item keeps a row in ``filtered`` per reason; exports can skip it.

    Attributes:
        min_chars: Shortest acceptable assistant reply, in characters after trimming
            (every reply of a dialogue; the chosen reply of a pair). 0 turns it off.
        max_chars: Longest acceptable assistant reply, in characters; None for no limit.
        refusals: Filter dialogues with a refusing assistant reply, and pairs whose chosen
            reply refuses.
        refusal_pattern: What a refusal looks like: a regular expression in the syntax both
            Python and RE2 accept; ``(?i)`` for case-insensitive.
        role_flips: Filter dialogues in which the user simulator spoke as the assistant,
            and pairs whose prompt holds such a turn.
        failed_checks: Filter dialogues whose final replies fail a programmatic check (or
            whose user simulator broke character), and pairs whose chosen reply fails one
            (a failing row in ``checks``, or ``checks_passed`` false).
        goal_not_met: Filter dialogues whose goal the verifier judged not met. Off by
            default: in a scenario where the right answer is "no" (a refund outside
            policy), the user's goal is rightly unmet, and dropping those dialogues would
            teach the assistant to give in.
        unverified: Filter pairs whose judges did not agree in both orders
            (``judge_agreement`` false). A failed check is ``failed_checks``' reason.
        judge_disagreement: Filter pairs whose stored judgments do not both prefer the
            chosen reply, re-read from the ``judgments`` table.
        min_margin: Filter pairs whose critic margin is below this; None to keep all.
        near_duplicate_threshold: Estimated Jaccard similarity of word bigrams at or above
            which two items are near-duplicates (see :func:`find_duplicates`).

    Example:
        >>> FilterSettings(min_margin=2.0, max_chars=4000).min_margin
        2.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    refusals: bool = True
    refusal_pattern: str = DEFAULT_REFUSAL_PATTERN
    role_flips: bool = True
    failed_checks: bool = True
    goal_not_met: bool = False
    unverified: bool = True
    judge_disagreement: bool = True
    min_margin: float | None = None
    near_duplicate_threshold: float = Field(default=0.8, gt=0.0, le=1.0)

    @field_validator("refusal_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        return self


@dataclass(frozen=True, slots=True)
class CurationResult:
    """What :func:`curate` found and wrote.

    Attributes:
        run_id: The run curated.
        dialogues: Finished dialogues examined.
        pairs: Preference pairs examined (those of finished dialogues).
        duplicates: ``(kind, method)`` → items marked duplicate.
        filtered: ``(kind, reason)`` → items filtered for that reason (an item can have several).
        kept: kind → items neither duplicate nor filtered.
        metrics: Metric rows written.
        embedding: The embedding model used, or why spread was not measured.
        elapsed_s: Wall time of the whole curation.
        timings: Seconds per step: dedup, text_metrics, embedding, coverage, write.
        cpu_timings: CPU seconds of this process per step, the same steps: on a busy machine
            wall time also measures the neighbours.
    """

    run_id: str
    dialogues: int
    pairs: int
    duplicates: Mapping[tuple[ItemKind, str], int]
    filtered: Mapping[tuple[ItemKind, str], int]
    kept: Mapping[ItemKind, int]
    metrics: int
    embedding: str
    elapsed_s: float
    timings: Mapping[str, float]
    cpu_timings: Mapping[str, float] = field(default_factory=dict)


def duplicate_filter_sql(kind: ItemKind) -> str:
    """A WHERE fragment that keeps rows not marked as duplicates.

    For ``'pair'`` it reads ``preference_pairs.pair_id``; for ``'dialogue'``,
    ``episodes.episode_id``. The store must have the ``duplicates`` table (schema
    migration 4; any store opened for writing by this version has it).

    Args:
        kind: ``'pair'`` or ``'dialogue'``.

    Returns:
        SQL without parameters, to AND into a query over that table.

    Raises:
        ValueError: An unknown kind.

    Example:
        >>> duplicate_filter_sql("pair")
        "pair_id NOT IN (SELECT item_id FROM duplicates WHERE kind = 'pair')"
    """
    return f"{_id_column(kind)} NOT IN (SELECT item_id FROM duplicates WHERE kind = '{kind}')"


def filtered_filter_sql(kind: ItemKind, reason: FilterReason | None = None) -> str:
    """A WHERE fragment that keeps rows no curation filter marked; see :func:`duplicate_filter_sql`.

    Args:
        kind: ``'pair'`` or ``'dialogue'``.
        reason: Keep rows not marked for this reason (one of :data:`FILTER_REASONS`); None
            for any reason.

    Example:
        >>> filtered_filter_sql("dialogue")
        "episode_id NOT IN (SELECT item_id FROM filtered WHERE kind = 'dialogue')"
        >>> filtered_filter_sql("pair", "failed_check")
        "pair_id NOT IN (SELECT item_id FROM filtered WHERE kind = 'pair' AND reason = 'failed_check')"
    """
    column = _id_column(kind)
    if reason is None:
        return f"{column} NOT IN (SELECT item_id FROM filtered WHERE kind = '{kind}')"
    if reason not in FILTER_REASONS[kind]:
        raise ValueError(f"unknown {kind} filter reason {reason!r} (expected one of {FILTER_REASONS[kind]})")
    return f"{column} NOT IN (SELECT item_id FROM filtered WHERE kind = '{kind}' AND reason = '{reason}')"


def _id_column(kind: str) -> str:
    columns = {"pair": "pair_id", "dialogue": "episode_id"}
    if kind not in columns:
        raise ValueError(f"unknown item kind {kind!r} (expected 'dialogue' or 'pair')")
    return columns[kind]


def curate(
    store: Store,
    run_id: str,
    *,
    filters: FilterSettings | None = None,
    embedder: Embedder | None = None,
) -> CurationResult:
    """Mark duplicates, apply filters and compute metrics for one run, replacing earlier results.

    Dialogue text is the episode's turns joined in order; pair text is the prompt's last user
    message, the chosen and the rejected reply. Duplicates are found across the whole store:
    the run's items are compared with each other and with the items of every run created
    before it (by ``runs.created_at``, then run id). The earliest item of a duplicate group is
    kept (earlier runs first, then by id), and only this run's items are marked: a later run
    never takes an earlier run's item away, so curating runs in any order gives the same marks,
    and a run that repeats an earlier one (same scenarios and seed) is marked whole.

    Cost is linear in the size of the run and the runs before it, and memory is bounded:
    texts are streamed from DuckDB in batches and never held together, dedup keeps ~300 bytes
    per item, distinct-n a few MiB per role and scenario, and DuckDB is capped at 512 MiB
    while they run (it spills sorts to the store's temp folder), at 1 GiB while the results
    are written. 1M dialogues (10M turns) take ~370 s of CPU time and 1.2 GiB at peak, 10.4x
    the CPU time of 100k (bench/curate.py). Curating every run of a store for the first time
    therefore reads the early runs once per later run.

    Args:
        store: An open, writable store.
        run_id: The run to curate.
        filters: What to filter; the defaults of :class:`FilterSettings` if None.
        embedder: Measures embedding spread. None uses the local model of the ``embed``
            extra when it is installed, and skips spread when it is not.

    Returns:
        Counts of what was marked and written.

    Raises:
        ConfigError: An unknown run id, or a refusal pattern DuckDB's regex engine rejects.
        StoreError: The store refused a read or the write.

    Example:
        >>> with Store.open("corpus.duckdb") as store:                     # doctest: +SKIP
        ...     result = curate(store, store.latest_run_id(), filters=FilterSettings(min_margin=2))
        >>> result.duplicates, result.kept                                 # doctest: +SKIP
        ({('dialogue', 'exact'): 3}, {'dialogue': 187, 'pair': 301})
    """
    settings = filters or FilterSettings()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}
    seed = _run_seed(store, run_id)
    fingerprint = _fingerprint(store, run_id)
    with _duckdb_memory_capped(store, _READ_MEMORY):
        # One read transaction: dedup reads candidate texts a second time, and must see what
        # its first read saw.
        try:
            with store.transaction() as con:
                with _timed(timings, cpu_timings, "dedup"):
                    runs = _runs_through(store, run_id)
                    threshold = settings.near_duplicate_threshold
                    dialogues, dialogue_dups = _dedup(con, run_id, runs, _DIALOGUES, threshold)
                    pairs, pair_dups = _dedup(con, run_id, runs, _PAIRS, threshold)
                with _timed(timings, cpu_timings, "text_metrics"):
                    rows, samples = text_metrics(con, run_id, seed=seed)
        except duckdb.Error as exc:
            raise StoreError(f"{store.path}: cannot read run {run_id} to curate it: {exc}") from exc
        with _timed(timings, cpu_timings, "embedding"):
            model = embedder if embedder is not None else local_embedder()
            if model is None:
                note = "not measured: the `embed` extra is not installed"
            else:
                rows += spread_metrics(samples, model)
                note = model.name
        with _timed(timings, cpu_timings, "coverage"):
            rows += coverage_metrics(store, run_id)
    with _duckdb_memory_capped(store, _WRITE_MEMORY):
        now = utcnow()
        try:
            with store.transaction() as con:
                # Timed before the curation row is written: it carries the timings.
                with _timed(timings, cpu_timings, "write"):
                    _clear(con, run_id)
                    _write_duplicates(con, run_id, "dialogue", dialogue_dups)
                    _write_duplicates(con, run_id, "pair", pair_dups)
                    for query in _filter_queries(settings):
                        query.insert(con, run_id)
                    for sql in (*EPISODE_QUERIES, *REVIEW_QUERIES, *PAIR_QUERIES, *CURATION_QUERIES):
                        con.execute(
                            f"INSERT INTO metrics SELECT $1, m.*, $2 "
                            f"FROM ({sql}) AS m(scenario, name, value, detail)",
                            [run_id, now],
                        )
                rows.append(
                    MetricRow(
                        None,
                        "curation",
                        float(dialogues),
                        json.dumps(
                            {
                                "fingerprint": fingerprint,
                                "filters": settings.model_dump(),
                                "embedding": note,
                                "timings": {k: round(v, 3) for k, v in timings.items()},
                            }
                        ),
                    )
                )
                con.executemany(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                    [[run_id, r.scenario, r.name, r.value, r.detail, now] for r in rows],
                )
                written = con.execute(
                    "SELECT count(*) FROM metrics WHERE run_id = ? AND computed_at = ?", [run_id, now]
                )
                metric_count = _scalar(written.fetchone())
        except duckdb.Error as exc:
            raise StoreError(f"{store.path}: cannot write the curation of run {run_id}: {exc}") from exc
    return _result(store, run_id, dialogues, pairs, metric_count, note, started, timings, cpu_timings)


def ensure_curated(
    store: Store, run_id: str, *, refresh: bool = False, embedder: Embedder | None = None
) -> CurationResult | None:
    """Curate ``run_id`` unless its stored metrics are current.

    Metrics are current when the episodes, turns and pairs of the run, and of the runs created
    before it (its duplicates point at them), are unchanged since the last curation, by the
    same version of curation. A re-curation reuses the filter settings of the last one, so
    metrics computed with custom filters stay comparable.

    Args:
        store: An open, writable store.
        run_id: The run.
        refresh: Curate even if the metrics are current.
        embedder: As for :func:`curate`.

    Returns:
        The result if it curated, None if the stored metrics were current.
    """
    stored = store.sql(
        "SELECT detail FROM metrics WHERE run_id = ? AND scenario IS NULL AND name = 'curation'", [run_id]
    )
    settings = None
    if stored:
        detail = json.loads(stored[0][0])
        if not refresh and detail.get("fingerprint") == _fingerprint(store, run_id):
            return None
        try:
            settings = FilterSettings.model_validate(detail.get("filters", {}))
        except ValidationError:
            settings = None  # settings of another dramaturg version: curate with today's defaults
    return curate(store, run_id, filters=settings, embedder=embedder)


# -- reading the run ---------------------------------------------------------------------------


def _scalar(row: tuple[object, ...] | None) -> int:
    value = row[0] if row else 0
    return int(value) if isinstance(value, int | float) else 0


def _run_seed(store: Store, run_id: str) -> int:
    rows = store.sql("SELECT seed FROM runs WHERE run_id = ?", [run_id])
    if not rows:
        known = [r for (r,) in store.sql("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 5")]
        raise ConfigError(
            f"{store.path}: unknown run id '{run_id}' (latest runs: {', '.join(known) or 'none'})"
        )
    return int(rows[0][0])


# The runs created before run $1, in the order their items come first in dedup.
_EARLIER_RUNS = """
    earlier AS (
        SELECT r.run_id FROM runs r, (SELECT created_at, run_id FROM runs WHERE run_id = $1) AS this
        WHERE r.created_at < this.created_at OR (r.created_at = this.created_at AND r.run_id < this.run_id)
    )
"""


def _fingerprint(store: Store, run_id: str) -> str:
    """What the run's curation depends on: changes whenever the episodes, turns or pairs of the
    run change, or the finished ones of an earlier run (which its duplicates are found against)."""
    row = store.sql(
        f"""
        WITH {_EARLIER_RUNS}
        SELECT (SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) || '/'
                       || coalesce(max(finished_at)::VARCHAR, '-')
                FROM episodes WHERE run_id = $1),
               (SELECT count(*) FROM turns t JOIN episodes e USING (episode_id) WHERE e.run_id = $1),
               (SELECT count(*) || '/' || coalesce(max(created_at)::VARCHAR, '-')
                FROM preference_pairs WHERE run_id = $1),
               (SELECT 'earlier ' || count(DISTINCT e.run_id) || '/' || count(DISTINCT e.episode_id) || '/'
                       || count(t.idx) || '/' || coalesce(max(e.finished_at)::VARCHAR, '-')
                FROM episodes e LEFT JOIN turns t USING (episode_id)
                WHERE e.status = 'done' AND e.run_id IN (SELECT run_id FROM earlier)),
               (SELECT count(*) || '/' || coalesce(max(created_at)::VARCHAR, '-')
                FROM preference_pairs WHERE run_id IN (SELECT run_id FROM earlier))
        """,
        [run_id],
    )[0]
    return f"v{CURATION_VERSION}:" + "|".join(str(part) for part in row)


def _runs_through(store: Store, run_id: str) -> list[str]:
    """The runs created before ``run_id``, oldest first, then ``run_id`` itself."""
    rows = store.sql(
        f"WITH {_EARLIER_RUNS} SELECT run_id FROM runs WHERE run_id IN (SELECT run_id FROM earlier) "
        "ORDER BY created_at, run_id",
        [run_id],
    )
    return [earlier for (earlier,) in rows] + [run_id]


@dataclass(frozen=True, slots=True)
class _Items:
    """How dedup reads one kind of item from the store: a run's items in order, and items by id.

    Both queries return ``(id, text)``; for dialogues, one row per turn (in turn order), which
    :meth:`rows` joins, so DuckDB sorts turns (spilling to disk if it must) but never holds a
    whole run's dialogues as strings.
    """

    of_run: str  # $1: the run id
    by_id: str  # $1: the ids
    per_turn: bool

    def read(self, con: duckdb.DuckDBPyConnection, run_id: str) -> Iterator[tuple[str, str]]:
        return self.rows(stream_rows(con, self.of_run, [run_id]))

    def reread(self, con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        return self.rows(stream_rows(con, self.by_id, [list(ids)]))

    def rows(self, rows: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        if not self.per_turn:
            yield from rows
            return
        for item_id, turns in groupby(rows, key=itemgetter(0)):
            yield item_id, "\n".join(text for _, text in turns)


# Dialogue text is the episode's turns joined in order; pair text is the prompt's last user
# message, the chosen and the rejected reply. (The prompt's earlier turns are shared with every
# other pair of the episode, so they would only make pairs look alike.)
_DIALOGUES = _Items(
    # Turns sort by their episode's rank rather than its id: integer keys sort faster than
    # strings, and the order is the same.
    of_run="WITH done AS (SELECT episode_id, row_number() OVER (ORDER BY episode_id) AS rank "
    "FROM episodes WHERE run_id = $1 AND status = 'done') "
    "SELECT t.episode_id, t.content FROM turns t JOIN done USING (episode_id) ORDER BY done.rank, t.idx",
    by_id="SELECT episode_id, content FROM turns WHERE episode_id IN (SELECT unnest($1::VARCHAR[])) "
    "ORDER BY episode_id, idx",
    per_turn=True,
)
_PAIR_TEXT = "concat_ws(chr(10), p.prompt ->> '$[#-1].content', p.chosen, p.rejected)"
_PAIRS = _Items(
    of_run=f"SELECT p.pair_id, {_PAIR_TEXT} FROM preference_pairs p JOIN episodes e USING (episode_id) "
    "WHERE p.run_id = $1 AND e.status = 'done' ORDER BY p.episode_id, p.turn_idx, p.source, p.pair_id",
    by_id=f"SELECT p.pair_id, {_PAIR_TEXT} FROM preference_pairs p "
    "WHERE p.pair_id IN (SELECT unnest($1::VARCHAR[]))",
    per_turn=False,
)


def _dedup(
    con: duckdb.DuckDBPyConnection, run_id: str, runs: Sequence[str], items: _Items, threshold: float
) -> tuple[int, DedupResult]:
    """Find duplicates among the items of ``runs``, in that order; also count ``run_id``'s items.

    Items stream from DuckDB run after run; candidates for near-duplicates are read again by
    id (see :func:`find_duplicates`), so memory does not grow with the texts.
    """
    own = 0

    def read() -> Iterator[tuple[str, str]]:
        nonlocal own
        for each in runs:
            for item in items.read(con, each):
                own += each == run_id
                yield item

    found = find_duplicates(read(), threshold=threshold, reread=lambda ids: items.reread(con, ids))
    return own, found


# DuckDB's memory while curation runs. Its default limit (80 % of RAM) lets it sort a large
# run's turns in memory (2.4 GiB to sort 10M turns) before spilling anything; capped, sorts and
# joins spill to the store's temp folder at no measured cost in speed, and curation's peak
# stays bounded. While dedup and the text metrics run, this process holds their state
# (~300 bytes per item), so DuckDB gets less; the write phase holds only results, and its SQL
# metrics include quantiles, which DuckDB cannot spill. A lower limit the user set is kept.
_READ_MEMORY = 512 * 2**20
_WRITE_MEMORY = 1024 * 2**20
_SIZE_UNITS = {
    "bytes": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def _setting_bytes(value: str) -> float | None:
    """Bytes of a DuckDB size setting as it prints ('18.8 GiB'); None if it reads otherwise."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)\s*", value)
    if found is None or found.group(2) not in _SIZE_UNITS:
        return None
    return float(found.group(1)) * _SIZE_UNITS[found.group(2)]


@contextmanager
def _duckdb_memory_capped(store: Store, cap: int) -> Iterator[None]:
    """Hold DuckDB's memory limit at ``cap`` bytes or below, restoring it afterwards."""
    current = str(store.sql("SELECT current_setting('memory_limit')")[0][0])
    limit = _setting_bytes(current)
    if limit is not None and limit <= cap:
        yield
        return
    store.sql(f"SET memory_limit = '{cap}B'")
    try:
        yield
    finally:
        # RESET restores the default exactly; a limit the user set is put back as it printed.
        store.sql("RESET memory_limit")
        if store.sql("SELECT current_setting('memory_limit')")[0][0] != current:
            store.sql(f"SET memory_limit = '{current}'")


@contextmanager
def _timed(timings: dict[str, float], cpu_timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    cpu = time.process_time()
    yield
    timings[step] = time.perf_counter() - started
    cpu_timings[step] = time.process_time() - cpu


# -- writing -----------------------------------------------------------------------------------


def _clear(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    con.execute("DELETE FROM duplicates WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM filtered WHERE run_id = ?", [run_id])
    con.execute(
        "DELETE FROM metrics WHERE run_id = ? AND list_contains(?, split_part(name, '.', 1))",
        [run_id, sorted(METRIC_FAMILIES)],
    )


def _write_duplicates(
    con: duckdb.DuckDBPyConnection, run_id: str, kind: ItemKind, found: DedupResult
) -> None:
    """Mark the duplicates among the run's items; earlier runs' marks are their own."""
    ids, kept, methods, similarities = [], [], [], []
    for duplicate, original in found.duplicates.items():
        ids.append(duplicate)
        kept.append(original)
        if duplicate in found.exact:
            # An exact copy of a near-duplicate points at that one's kept item.
            methods.append("exact")
            similarities.append(found.similarity.get(found.exact[duplicate], 1.0))
        else:
            methods.append("near")
            similarities.append(found.similarity[duplicate])
    if ids:
        # Which duplicates are the run's own is asked of the store, not of a set of every id
        # read: item ids are unique across the store.
        own = (
            "SELECT episode_id FROM episodes"
            if kind == "dialogue"
            else "SELECT pair_id FROM preference_pairs"
        )
        con.execute(
            "INSERT INTO duplicates SELECT $1, d.item_id, d.kept, d.method, d.similarity, $6 FROM ("
            "SELECT unnest($2::VARCHAR[]) AS item_id, unnest($3::VARCHAR[]) AS kept, "
            "unnest($4::VARCHAR[]) AS method, unnest($5::DOUBLE[]) AS similarity) AS d "
            f"WHERE d.item_id IN ({own} WHERE run_id = $6)",
            [kind, ids, kept, methods, similarities, run_id],
        )


@dataclass(frozen=True, slots=True)
class _FilterQuery:
    """One filter: SQL selecting (item_id, detail) of the failing items; $1 is the run id."""

    kind: ItemKind
    reason: FilterReason
    select: str
    params: Sequence[object] = ()

    def insert(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        try:
            con.execute(
                f"INSERT INTO filtered SELECT '{self.kind}', f.item_id, '{self.reason}', $1, f.detail "
                f"FROM ({self.select}) AS f(item_id, detail)",
                [run_id, *self.params],
            )
        except duckdb.InvalidInputException as exc:
            if self.reason == "refusal":
                raise ConfigError(f"refusal_pattern: DuckDB's regex engine (RE2) rejects it: {exc}") from exc
            raise


_ASSISTANT_TURNS = f"""
    WITH {DONE_CTE}
    SELECT t.* FROM turns t JOIN done e USING (episode_id) WHERE t.role = 'assistant'
"""


def _filter_queries(settings: FilterSettings) -> list[_FilterQuery]:
    """The enabled filters, dialogues first, in the order their reasons are documented."""
    queries: list[_FilterQuery] = []
    pairs = f"WITH {PAIRS_CTE}"
    if settings.min_chars > 0:
        queries += [
            _FilterQuery(
                "dialogue",
                "too_short",
                f"SELECT episode_id, 'shortest assistant reply: ' || min(length(trim(content))) || ' chars' "
                f"FROM ({_ASSISTANT_TURNS}) GROUP BY episode_id HAVING min(length(trim(content))) < $2",
                (settings.min_chars,),
            ),
            _FilterQuery(
                "pair",
                "too_short",
                f"{pairs} SELECT pair_id, 'chosen: ' || length(trim(chosen)) || ' chars' FROM pairs "
                "WHERE length(trim(chosen)) < $2",
                (settings.min_chars,),
            ),
        ]
    if settings.max_chars is not None:
        queries += [
            _FilterQuery(
                "dialogue",
                "too_long",
                f"SELECT episode_id, 'longest assistant reply: ' || max(length(content)) || ' chars' "
                f"FROM ({_ASSISTANT_TURNS}) GROUP BY episode_id HAVING max(length(content)) > $2",
                (settings.max_chars,),
            ),
            _FilterQuery(
                "pair",
                "too_long",
                f"{pairs} SELECT pair_id, 'chosen: ' || length(chosen) || ' chars' FROM pairs "
                "WHERE length(chosen) > $2",
                (settings.max_chars,),
            ),
        ]
    if settings.refusals:
        queries += [
            _FilterQuery(
                "dialogue",
                "refusal",
                "SELECT episode_id, arg_min('turn ' || idx || ': ' || regexp_extract(content, $2), idx) "
                f"FROM ({_ASSISTANT_TURNS}) WHERE regexp_matches(content, $2) GROUP BY episode_id",
                (settings.refusal_pattern,),
            ),
            _FilterQuery(
                "pair",
                "refusal",
                f"{pairs} SELECT pair_id, 'chosen: ' || regexp_extract(chosen, $2) FROM pairs "
                "WHERE regexp_matches(chosen, $2)",
                (settings.refusal_pattern,),
            ),
        ]
    if settings.role_flips:
        queries += [
            _FilterQuery(
                "dialogue",
                "role_flip",
                f"WITH {DONE_CTE} SELECT episode_id, role_flips || ' user turn(s) in the assistant''s voice' "
                "FROM done WHERE role_flips > 0",
            ),
            # A flipped user turn before the pair's turn is part of the pair's prompt.
            _FilterQuery(
                "pair",
                "role_flip",
                f"{pairs} SELECT p.pair_id, 'prompt turn ' || min(t.idx) || ' is in the assistant''s voice' "
                "FROM pairs p JOIN turns t "
                "ON t.episode_id = p.episode_id AND t.idx < p.turn_idx AND t.role_flip "
                "GROUP BY p.pair_id",
            ),
        ]
    if settings.failed_checks:
        queries += [
            # The final dialogue holds the revision where there is one, else the original. A
            # revision is not checked when it repeats the original (outcome 'identical') or its
            # critique failed: the original's verdict then stands, as the only one there is.
            # goal_met is an episode check too, but has its own filter (off by default).
            _FilterQuery(
                "dialogue",
                "failed_check",
                f"""
                WITH {DONE_CTE}
                SELECT c.episode_id, string_agg(DISTINCT c.name, ', ' ORDER BY c.name)
                FROM checks c JOIN done e USING (episode_id)
                WHERE NOT c.passed AND c.name <> 'goal_met'
                  AND (c.target IN ('episode', 'revision')
                       OR (c.target = 'original' AND NOT EXISTS (
                           SELECT 1 FROM checks r
                           WHERE r.episode_id = c.episode_id AND r.turn_idx = c.turn_idx
                             AND r.target = 'revision')))
                GROUP BY c.episode_id
                """,
            ),
            # A revision pair's chosen side was checked as 'revision', a best-of-n pair's as
            # 'candidate' (only the best candidate is checked). checks_passed is the same verdict
            # as the pair was made; it names no check.
            _FilterQuery(
                "pair",
                "failed_check",
                f"""
                {pairs}
                SELECT p.pair_id, coalesce(string_agg(DISTINCT c.name, ', ' ORDER BY c.name),
                                           'checks_passed is false')
                FROM pairs p LEFT JOIN checks c
                  ON c.episode_id = p.episode_id AND c.turn_idx = p.turn_idx AND NOT c.passed
                 AND c.target = CASE p.source WHEN 'revision' THEN 'revision' ELSE 'candidate' END
                GROUP BY p.pair_id, p.checks_passed
                HAVING count(c.name) > 0 OR NOT p.checks_passed
                """,
            ),
        ]
    if settings.goal_not_met:
        queries.append(
            _FilterQuery(
                "dialogue",
                "goal_not_met",
                f"WITH {DONE_CTE} SELECT episode_id, 'the verifier judged the goal not met' FROM done "
                "WHERE goal_met = false",
            )
        )
    if settings.unverified:
        queries.append(
            _FilterQuery(
                "pair",
                "unverified",
                f"{pairs} SELECT pair_id, 'judges did not agree in both orders' "
                "FROM pairs WHERE NOT judge_agreement",
            )
        )
    if settings.judge_disagreement:
        queries.append(
            _FilterQuery(
                "pair",
                "judge_disagreement",
                f"""
                {pairs},
                listed AS (
                    SELECT pair_id, unnest(from_json(judgment_ids, '["VARCHAR"]')) AS judgment_id FROM pairs
                ),
                verdicts AS (
                    SELECT l.pair_id, count(*) AS judged,
                           count(*) FILTER (WHERE j.status = 'ok'
                                              AND ((j.winner = 'A' AND j.first_text = p.chosen)
                                                   OR (j.winner = 'B' AND j.second_text = p.chosen))) AS won,
                           string_agg(j.orientation || '=' || coalesce(j.winner, j.status), ', '
                                      ORDER BY j.orientation) AS orders
                    FROM listed l JOIN judgments j USING (judgment_id) JOIN pairs p USING (pair_id)
                    GROUP BY l.pair_id
                )
                SELECT p.pair_id,
                       coalesce('chosen won ' || v.won || ' of ' || v.judged || ' (' || v.orders || ')',
                                'no judgment recorded')
                FROM pairs p LEFT JOIN verdicts v USING (pair_id)
                WHERE coalesce(v.won, 0) < greatest(2, coalesce(v.judged, 0))
                """,
            )
        )
    if settings.min_margin is not None:
        queries.append(
            _FilterQuery(
                "pair",
                "low_margin",
                f"{pairs} SELECT pair_id, 'margin ' || margin FROM pairs WHERE margin < $2",
                (settings.min_margin,),
            )
        )
    return queries


def _result(
    store: Store,
    run_id: str,
    dialogues: int,
    pairs: int,
    metrics: int,
    embedding: str,
    started: float,
    timings: dict[str, float],
    cpu_timings: dict[str, float],
) -> CurationResult:
    duplicates = {
        (kind, method): n
        for kind, method, n in store.sql(
            "SELECT kind, method, count(*) FROM duplicates WHERE run_id = ? GROUP BY ALL ORDER BY ALL",
            [run_id],
        )
    }
    filtered = {
        (kind, reason): n
        for kind, reason, n in store.sql(
            "SELECT kind, reason, count(*) FROM filtered WHERE run_id = ? GROUP BY ALL ORDER BY ALL", [run_id]
        )
    }
    kept = {
        name.removeprefix("kept_").removesuffix("s"): int(value)
        for name, value in store.sql(
            "SELECT name, value FROM metrics WHERE run_id = ? AND scenario IS NULL "
            "AND name IN ('kept_dialogues', 'kept_pairs')",
            [run_id],
        )
    }
    return CurationResult(
        run_id=run_id,
        dialogues=dialogues,
        pairs=pairs,
        duplicates=duplicates,
        filtered=filtered,
        kept={"dialogue": kept.get("dialogue", 0), "pair": kept.get("pair", 0)},
        metrics=metrics,
        embedding=embedding,
        elapsed_s=time.perf_counter() - started,
        timings=timings,
        cpu_timings=cpu_timings,
    )
