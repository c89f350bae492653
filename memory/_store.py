"""The DuckDB store: one file, numbered migrations, one writer.

:class:`Store` is the synchronous core (used by the CLI's read commands and by tests).
:class:`StoreWriter` is how a running job writes: every statement goes through one
dedicated thread, so there is exactly one writer, and writes that queue together (call
records, episode starts and results) share one transaction.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from dramaturg.memory._migrations import MIGRATIONS, Migration
from dramaturg.memory._records import CallRecord, EpisodeResult, EpisodeStart, RunRecord

from dramaturg._errors import StoreError

__all__ = ["EPISODE_TABLES", "CachedCall", "Store", "StoreWriter", "Write"]

T = TypeVar("T")

_CALL_COLUMNS = (
    "call_id", "request_hash", "run_id", "episode_id", "backend", "model", "role", "status", "request",
    "latency_ms", "created_at", "response_text", "finish_reason", "input_tokens", "output_tokens",
    "cache_read_tokens", "cache_write_tokens", "cost_usd", "attempt", "error_kind", "error",
    "annotations", "tool_calls",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CachedCall:
    """A completed call found by its request hash."""

    call_id: str
    response_text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    annotations: tuple[tuple[str, str], ...] = ()
    tool_calls_json: str | None = None


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():  # DuckDB's message names the holder's PID
            raise StoreError(_held_by(path, str(exc))) from exc
        raise _damaged(path, exc) from exc
    except duckdb.Error as exc:
        raise _damaged(path, exc) from exc


def _held_by(path: str, message: str) -> str:
    """One line naming the process that holds ``path`` and how to look while it runs."""
    found = re.search(r"\(PID (\d+)\)", message)
    if found is None:
        return f"{path}: the store is in use by another process: {message.splitlines()[0]}"
    pid = found.group(1)
    try:
        command = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        )
    except OSError:
        command = ""
    command = re.sub(
        r"^\S*python[\d.]*\s+\S*/(dramaturg)\b", r"\1", command
    )  # python .../dramaturg -> dramaturg
    shown = f"PID {pid}: {command}" if command else f"PID {pid}"
    viewer = serving_url(path)
    look = (
        f"its viewer is at {viewer}"
        if viewer
        else "a run is the store's only writer: start it with --serve to watch it in the viewer"
    )
    return f"{path} is held by a running process ({shown}); {look}, or wait until it ends"


def serving_marker(path: str | Path) -> Path:
    """The file next to a store where the process serving it (``dramaturg serve``, ``dramaturg
    run --serve``) announces its viewer's URL while it holds the store."""
    return Path(f"{path}.serving")


def serving_url(path: str | Path) -> str | None:
    """The viewer URL announced next to the store, if a process serving it holds it."""
    try:
        return serving_marker(path).read_text().strip() or None
    except OSError:
        return None


def _is_damage(exc: duckdb.Error) -> bool:
    """Whether an error says the file is unreadable, not that a statement is wrong."""
    return isinstance(exc, duckdb.IOException | duckdb.FatalException) or "corrupt" in str(exc).lower()


def _damaged(path: str, exc: duckdb.Error) -> StoreError:
    return StoreError(
        f"{path}: cannot read the store, the file is damaged, truncated or not a DuckDB database "
        f"({_first_line(exc)}); restore it from a copy or pass another --db"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Store:
    """A dramaturg DuckDB file, migrated to the current schema on open.

    Example:
        >>> store = Store.open("corpus.duckdb")            # doctest: +SKIP
        >>> store.sql("SELECT status, count(*) FROM episodes GROUP BY 1")  # doctest: +SKIP
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str):
        self._con = connection
        self.path = path
        self._insert = _Inserter()

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False) -> Store:
        """Open (creating if needed) and migrate the store at ``path``.

        An existing file is first inspected read-only, so a file that is damaged or is not a
        dramaturg store is refused with not one byte changed.

        Raises:
            StoreError: the file is not a readable DuckDB database, holds tables but no
                dramaturg migration record (another program's database), is locked by
                another process, or holds a schema newer than this version understands.
        """
        path = str(path)
        exists = Path(path).exists()
        if read_only and not exists:
            raise StoreError(f"{path}: no such store (run `dramaturg run ... --db {path}` first)")
        if exists and not read_only:
            cls.open(path, read_only=True).close()
        con = _connect(path, read_only)
        store = cls(con, path)
        try:
            store._check_is_ours()
            store._check_version()
            if not read_only:
                store.migrate()
        except BaseException:
            con.close()
            raise
        return store

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------

    def applied_migrations(self) -> list[int]:
        exists = self.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        )
        if not exists[0][0]:
            return []
        return [row[0] for row in self.sql("SELECT version FROM schema_migrations ORDER BY 1")]

    def _check_is_ours(self) -> None:
        """Refuse a database another program made: it has tables, but no migration record."""
        tables = [
            name
            for (name,) in self.sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            )
        ]
        if tables and "schema_migrations" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(
                f"{self.path}: not a dramaturg store (a DuckDB database with tables {shown} and no "
                "schema_migrations); it was left untouched. Pass another --db"
            )

    def _check_version(self) -> None:
        applied = self.applied_migrations()
        known = {migration.version for migration in MIGRATIONS}
        unknown = [version for version in applied if version not in known]
        if unknown:
            raise StoreError(
                f"{self.path}: written by a newer dramaturg (schema migrations {unknown}); upgrade dramaturg"
            )

    def migrate(self) -> list[Migration]:
        """Apply every migration not yet recorded, each in its own transaction."""
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        self._check_version()
        done = set(self.applied_migrations())
        applied: list[Migration] = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            with self.transaction():
                self._con.execute(migration.sql)
                self._con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    [migration.version, migration.name, utcnow()],
                )
            applied.append(migration)
        return applied

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------------

    def sql(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return all rows.

        Raises:
            StoreError: the file could not be read (damaged or truncated).
        """
        try:
            return self._con.execute(query, list(params)).fetchall()
        except duckdb.Error as exc:
            if _is_damage(exc):
                raise _damaged(self.path, exc) from exc
            raise

    def relation(self, query: str) -> duckdb.DuckDBPyRelation:
        """A lazy DuckDB relation, e.g. for ``.df()`` or ``.arrow()`` in a notebook."""
        return self._con.sql(query)

    def run_exists(self, run_id: str) -> bool:
        return bool(self.sql("SELECT count(*) FROM runs WHERE run_id = ?", [run_id])[0][0])

    def episode_statuses(self, run_id: str) -> dict[str, str]:
        rows = self.sql("SELECT episode_id, status FROM episodes WHERE run_id = ?", [run_id])
        return {episode_id: status for episode_id, status in rows}

    def latest_run_id(self) -> str | None:
        rows = self.sql("SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1")
        return rows[0][0] if rows else None

    def answered_hashes(self) -> set[str]:
        """Hashes of every request the store holds a completed answer for."""
        rows = self._con.execute("SELECT DISTINCT request_hash FROM llm_calls WHERE status = 'ok'").fetchall()
        return {request_hash for (request_hash,) in rows}

    def cached_call(self, request_hash: str) -> CachedCall | None:
        rows = self.sql(
            "SELECT call_id, response_text, finish_reason, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, annotations, tool_calls FROM llm_calls "
            "WHERE request_hash = ? AND status = 'ok' ORDER BY created_at LIMIT 1",
            [request_hash],
        )
        if not rows:
            return None
        call_id, text, finish, tokens_in, tokens_out, cache_read, cache_write, annotations, calls = rows[0]
        notes = tuple(sorted(json.loads(annotations).items())) if annotations else ()
        return CachedCall(call_id, text, finish, tokens_in, tokens_out, cache_read, cache_write, notes, calls)

    # -- writes --------------------------------------------------------------------------------

    def insert_run(self, run: RunRecord) -> None:
        self._con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)", list(astuple(run)))

    def upsert_scenario(self, run_id: str, name: str, source: str, definition: dict[str, Any]) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO scenarios VALUES (?, ?, ?, ?)",
            [run_id, name, source, json.dumps(definition, sort_keys=True)],
        )

    def start_episode(self, start: EpisodeStart) -> None:
        """Mark an episode running, discarding any rows a crashed attempt left behind."""
        with self.transaction() as con:
            _apply(con, self._insert, [start])

    def finish_episode(self, result: EpisodeResult) -> None:
        """Write an episode's turns, review rows (critiques, pairs, …) and status in one transaction.

        Rows an earlier write of the same episode left are replaced. (The run's writer skips
        that clean-up: :meth:`start_episode` already cleared the episode.)
        """
        with self.transaction() as con:
            for table in EPISODE_TABLES[1:]:
                con.execute(f"DELETE FROM {table} WHERE episode_id = ?", [result.episode_id])
            _finish_episodes(con, self._insert, [result])

    def insert_calls(self, calls: Sequence[CallRecord]) -> None:
        with self.transaction() as con:
            _apply(con, self._insert, calls)

    def write(self, writes: Sequence[Write]) -> list[duckdb.Error | None]:
        """Apply call records, episode starts and episode results in one transaction.

        The records go in with one multi-row ``INSERT`` per table, whatever their number:
        a transaction and a statement cost far more than a row. If the transaction fails,
        each write is tried again on its own, so one bad write fails alone.

        Returns:
            Per write, None when it is durable, else the error that refused it.

        Raises:
            StoreError: the file is damaged (nothing was written).
        """
        try:
            with self.transaction() as con:
                _apply(con, self._insert, writes)
            return [None] * len(writes)
        except duckdb.Error as exc:
            if _is_damage(exc):
                raise _damaged(self.path, exc) from exc
            if len(writes) == 1:
                return [exc]
        errors: list[duckdb.Error | None] = []
        for write in writes:
            try:
                with self.transaction() as con:
                    _apply(con, self._insert, [write])
                errors.append(None)
            except duckdb.Error as exc:
                if _is_damage(exc):
                    raise _damaged(self.path, exc) from exc
                errors.append(exc)
        return errors


Write = CallRecord | EpisodeStart | EpisodeResult
"""What a running job writes through :class:`StoreWriter`, batched into shared transactions."""

# Rows above which an INSERT passes one list per column (``unnest``) instead of a VALUES
# tuple per row: binding per column is several times cheaper per row, but it pays a cast per
# column, which a few rows do not repay. Each statement carries at most _ROWS_PER_INSERT rows.
_COLUMNWISE_FROM = 8
_ROWS_PER_INSERT = 2048


class _Inserter:
    """Multi-row INSERTs into the store's tables, with each table's column types looked up
    once (a column-wise insert casts each list to its column's type)."""

    def __init__(self) -> None:
        self._types: dict[str, dict[str, str]] = {}

    def __call__(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        columns: Sequence[str] | None,
        rows: Sequence[Sequence[object]],
    ) -> None:
        if not rows:
            return
        types = self._column_types(con, table)
        names = list(columns) if columns is not None else list(types)
        target = f"{table} ({', '.join(names)})"
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            if len(chunk) < _COLUMNWISE_FROM:
                marks = "(" + ", ".join("?" * len(names)) + ")"
                con.execute(
                    f"INSERT INTO {target} VALUES {', '.join([marks] * len(chunk))}",
                    [value for row in chunk for value in row],
                )
                continue
            unnests = ", ".join(f"unnest(${i + 1}::{types[name]}[])" for i, name in enumerate(names))
            con.execute(
                f"INSERT INTO {target} SELECT {unnests}",
                [list(column) for column in zip(*chunk, strict=True)],
            )

    def _column_types(self, con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
        if table not in self._types:
            rows = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                [table],
            ).fetchall()
            self._types[table] = dict(rows)
        return self._types[table]


def _apply(con: duckdb.DuckDBPyConnection, insert: _Inserter, writes: Sequence[Write]) -> None:
    """Write a batch inside an open transaction: calls, then starts, then results.

    Calls are independent of episode rows; an episode's start is always submitted (and so
    applied) before its result.
    """
    calls = [write for write in writes if isinstance(write, CallRecord)]
    starts = [write for write in writes if isinstance(write, EpisodeStart)]
    results = [write for write in writes if isinstance(write, EpisodeResult)]
    insert(con, "llm_calls", _CALL_COLUMNS, [_call_row(call) for call in calls])
    for start in starts:
        if start.attempted_before:
            for table in EPISODE_TABLES:
                con.execute(f"DELETE FROM {table} WHERE episode_id = ?", [start.episode_id])
    insert(
        con,
        "episodes",
        ("episode_id", "run_id", "scenario", "idx", "seed", "status", "persona", "spec", "started_at"),
        [
            [
                s.episode_id,
                s.run_id,
                s.scenario,
                s.idx,
                s.seed,
                "running",
                s.persona,
                s.spec_json,
                s.started_at,
            ]
            for s in starts
        ],
    )
    _finish_episodes(con, insert, results)


def _finish_episodes(
    con: duckdb.DuckDBPyConnection, insert: _Inserter, results: Sequence[EpisodeResult]
) -> None:
    """Insert finished episodes' turns and review rows and set their status."""
    insert(
        con,
        "turns",
        ("episode_id", "idx", "role", "content", "stage", "call_id", "role_flip", "tool_steps", "origin"),
        [
            [
                result.episode_id,
                t.idx,
                t.role,
                t.content,
                t.stage,
                t.call_id,
                t.role_flip,
                t.tool_steps_json,
                t.origin,
            ]
            for result in results
            for t in result.turns
        ],
    )
    for result in results:
        con.execute(
            "UPDATE episodes SET status = ?, termination_reason = ?, n_turns = ?, role_flips = ?, "
            "error = ?, finished_at = ?, goal_met = ?, user_consistent = ?, consistency_detail = ? "
            "WHERE episode_id = ?",
            [
                result.status,
                result.termination_reason,
                len(result.turns),
                result.role_flips,
                result.error,
                result.finished_at,
                result.goal_met,
                result.user_consistent,
                result.consistency_detail,
                result.episode_id,
            ],
        )
    reviews = [result.review for result in results if result.review is not None]
    for table, attribute in _REVIEW_TABLES:
        insert(
            con, table, None, [list(astuple(row)) for review in reviews for row in getattr(review, attribute)]
        )


# Tables whose rows belong to one episode (keyed by episode_id): cleared when an episode
# (re)starts. No foreign keys, so the order only matters to readers: the episode first.
EPISODE_TABLES = (
    "episodes",
    "turns",
    "critiques",
    "revisions",
    "judgments",
    "checks",
    "preference_pairs",
    "pair_outcomes",
    "turn_rejections",
    "tool_calls",
    "openings",
)
_REVIEW_TABLES = (
    ("critiques", "critiques"),
    ("revisions", "revisions"),
    ("judgments", "judgments"),
    ("checks", "checks"),
    ("preference_pairs", "pairs"),
    ("pair_outcomes", "outcomes"),
    ("turn_rejections", "rejections"),
    ("tool_calls", "tool_calls"),
    ("openings", "openings"),
)


_CALL_FIELDS = tuple(field.name for field in fields(CallRecord))


def _call_row(call: CallRecord) -> list[object]:
    # Field by field, not astuple: that deep-copies every value, once per call of the run.
    row: list[object] = [getattr(call, name) for name in _CALL_FIELDS]
    row[-2] = json.dumps(call.annotations, sort_keys=True) if call.annotations else None
    return row


# Group commit, after PostgreSQL's commit_delay and commit_siblings: a transaction with data
# costs DuckDB about 4 ms of CPU however few rows it holds (the statement, then the commit).
# When the last transaction carried at least _COMMIT_SIBLINGS writes someone waited for, many
# calls are finishing at once, and the next transaction starts no sooner than
# _COMMIT_INTERVAL_S after it: that keeps the writer near 5% of a core at any call rate, for
# at most 0.1 s more wait on a model call that took seconds. A lone write is never delayed.
_COMMIT_INTERVAL_S = 0.1
_COMMIT_SIBLINGS = 5


class StoreWriter:
    """The single writer of a running job.

    All statements run on one dedicated thread, in submission order. Writes (call records,
    episode starts and results) are batched: whatever arrives while a transaction is being
    written goes into the next one, and under load (many waiting writes in the last
    transaction) the next one starts ``commit_interval_s`` after the last one's start, so a
    transaction carries many rows and the writer's cost per row stays small. ``await
    record_call(...)`` and ``await finish_episode(...)`` return only once the write is durable:
    a paid model's answer is never used before its record could survive a crash. Two kinds
    of write are only queued: episode starts, and the records of calls that cost nothing to
    repeat (``wait=False``); every later write is applied after them, and a failure among
    them is raised by the next write.
    """

    def __init__(self, store: Store, *, commit_interval_s: float = _COMMIT_INTERVAL_S):
        self.store = store
        self.commit_interval_s = commit_interval_s
        self._last_commit_start = -math.inf
        self._under_load = False  # the last transaction carried many waited writes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dramaturg-store")
        self._pending: list[tuple[Write, asyncio.Future[None], bool]] = []  # (write, done, waited)
        self._flushing = False
        self._answered: set[str] | None = None
        self._answered_load: asyncio.Future[set[str]] | None = None
        self._queued_answers: dict[str, CallRecord] = {}  # by request hash, not yet durable
        self._unwaited_failure: StoreError | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread.

        Raises:
            StoreError: the file could not be read or written (damaged or truncated).
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except duckdb.Error as exc:
            if _is_damage(exc):
                raise _damaged(self.store.path, exc) from exc
            raise

    async def cached_call(self, request_hash: str) -> CachedCall | None:
        # Most lookups of a fresh run miss; answering those from an in-memory set of the
        # store's answered hashes saves a round trip through the writer thread per call.
        queued = self._queued_answers.get(request_hash)
        if queued is not None:  # answered, its record not yet durable: the same answer
            return _cached(queued)
        if self._answered is None:
            # One read for all: the calls that start together must not each read the store.
            if self._answered_load is None:
                self._answered_load = asyncio.ensure_future(self.run(self.store.answered_hashes))
            answered = await asyncio.shield(self._answered_load)
            if self._answered is None:
                self._answered = answered
        if request_hash not in self._answered:
            return None
        return await self.run(self.store.cached_call, request_hash)

    async def record_call(self, call: CallRecord, *, wait: bool = True) -> None:
        """Record a model call; returns once the record is durable.

        With ``wait=False`` it returns at once: for calls that cost nothing to make again
        (the sim's), whose records then batch freely. They still reach the store before any
        later write (an episode's result, say), so a crash can only lose records the run
        had not yet built on.
        """
        if not wait and call.status == "ok":
            # Until its record is durable, a repeat of the request is answered from here.
            self._queued_answers.setdefault(call.request_hash, call)
        await self._write(call, wait=wait)

    async def start_episode(self, start: EpisodeStart) -> None:
        """Queue an episode's start. Nothing waits for it: everything the episode writes
        later is queued after it, so no crash can keep its rows without its start."""
        await self._write(start, wait=False)

    async def finish_episode(self, result: EpisodeResult) -> None:
        """Write an episode's result; returns once it is durable."""
        await self._write(result)

    async def _write(self, write: Write, *, wait: bool = True) -> None:
        if self._unwaited_failure is not None:
            raise self._unwaited_failure
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future, wait))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        if wait:
            await future
        else:
            future.add_done_callback(self._note_unwaited_failure)

    def _note_unwaited_failure(self, future: asyncio.Future[None]) -> None:
        # A write nobody waits for must not fail silently: the next write raises its error.
        if not future.cancelled() and future.exception() is not None and self._unwaited_failure is None:
            error = future.exception()
            self._unwaited_failure = error if isinstance(error, StoreError) else StoreError(str(error))

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self._under_load:
                    await asyncio.sleep(self._last_commit_start + self.commit_interval_s - loop.time())
                self._last_commit_start = loop.time()
                batch, self._pending = self._pending, []
                self._under_load = sum(waited for _, _, waited in batch) >= _COMMIT_SIBLINGS
                try:
                    errors = await self.run(self.store.write, [write for write, _, _ in batch])
                except BaseException as exc:  # every waiter must learn its write is not durable
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"cannot write to the store: {exc}"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (write, future, _), error in zip(batch, errors, strict=True):
                    if future.done():
                        continue
                    if error is not None:
                        future.set_exception(StoreError(f"cannot write {_what(write)}: {error}"))
                        continue
                    if isinstance(write, CallRecord) and write.status == "ok":
                        if self._answered is not None:
                            self._answered.add(write.request_hash)
                        if self._queued_answers.get(write.request_hash) is write:
                            del self._queued_answers[write.request_hash]
                    future.set_result(None)
        finally:
            self._flushing = False

    async def drain(self) -> None:
        """Return once every queued write is durable (or raise the error of one that failed)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._unwaited_failure is not None:
            raise self._unwaited_failure

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def _cached(call: CallRecord) -> CachedCall:
    notes = tuple(sorted(call.annotations.items())) if call.annotations else ()
    return CachedCall(
        call.call_id,
        call.response_text or "",
        call.finish_reason or "stop",
        call.input_tokens,
        call.output_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        notes,
        call.tool_calls_json,
    )


def _what(write: Write) -> str:
    if isinstance(write, CallRecord):
        return "a model call's record"
    if isinstance(write, EpisodeStart):
        return f"the start of episode {write.episode_id}"
    return f"episode {write.episode_id}"
