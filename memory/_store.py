"""The DuckDB store: one file, numbered migrations, one writer.

:class:`Store` is the synchronous core (used by the CLI's read commands and by tests).
:class:`StoreWriter` is how a running job writes: every statement goes through one
dedicated thread, so there is exactly one writer, and call records that complete together
are flushed together in one transaction before any caller may use their result.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from dramaturg.memory._migrations import MIGRATIONS, Migration
from dramaturg.memory._records import CallRecord, EpisodeResult, EpisodeStart, ReviewRows, RunRecord

from dramaturg._errors import StoreError

__all__ = ["EPISODE_TABLES", "CachedCall", "Store", "StoreWriter"]

T = TypeVar("T")

_CALL_COLUMNS = (
    "call_id, request_hash, run_id, episode_id, backend, model, role, status, request, "
    "latency_ms, created_at, response_text, finish_reason, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_usd, attempt, error_kind, error, annotations, tool_calls"
)


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
            for table in EPISODE_TABLES:
                con.execute(f"DELETE FROM {table} WHERE episode_id = ?", [start.episode_id])
            con.execute(
                "INSERT INTO episodes (episode_id, run_id, scenario, idx, seed, status, persona, "
                "spec, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                [
                    start.episode_id,
                    start.run_id,
                    start.scenario,
                    start.idx,
                    start.seed,
                    start.persona,
                    start.spec_json,
                    start.started_at,
                ],
            )

    def finish_episode(self, result: EpisodeResult) -> None:
        """Write an episode's turns, review rows (critiques, pairs, …) and status in one transaction."""
        with self.transaction() as con:
            con.execute("DELETE FROM turns WHERE episode_id = ?", [result.episode_id])
            if result.turns:
                con.executemany(
                    "INSERT INTO turns (episode_id, idx, role, content, stage, call_id, role_flip, "
                    "tool_steps, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        for t in result.turns
                    ],
                )
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
            _write_review(con, result.episode_id, result.review or ReviewRows())

    def insert_calls(self, calls: Sequence[CallRecord]) -> None:
        with self.transaction() as con:
            con.executemany(
                f"INSERT INTO llm_calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 23)})",
                [_call_row(call) for call in calls],
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


def _write_review(con: duckdb.DuckDBPyConnection, episode_id: str, review: ReviewRows) -> None:
    for table, attribute in _REVIEW_TABLES:
        con.execute(f"DELETE FROM {table} WHERE episode_id = ?", [episode_id])
        rows = [list(astuple(row)) for row in getattr(review, attribute)]
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _call_row(call: CallRecord) -> list[object]:
    row: list[object] = list(astuple(call))
    row[-2] = json.dumps(call.annotations, sort_keys=True) if call.annotations else None
    return row


class StoreWriter:
    """The single writer of a running job.

    All statements run on one dedicated thread, in submission order. Call records are
    batched: records that arrive while a flush is running go into the next transaction.
    ``await record_call(...)`` returns only once the record is durable.
    """

    def __init__(self, store: Store):
        self.store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dramaturg-store")
        self._pending: list[tuple[CallRecord, asyncio.Future[None]]] = []
        self._flushing = False
        self._answered: set[str] | None = None

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
        if self._answered is None:
            self._answered = await self.run(self.store.answered_hashes)
        if request_hash not in self._answered:
            return None
        return await self.run(self.store.cached_call, request_hash)

    async def record_call(self, call: CallRecord) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self.run(self.store.insert_calls, [call for call, _ in batch])
                except BaseException as exc:  # every waiter must learn its record is not durable
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreError(f"cannot record a model call: {exc}"))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for call, future in batch:
                    if call.status == "ok" and self._answered is not None:
                        self._answered.add(call.request_hash)
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing = False

    async def start_episode(self, start: EpisodeStart) -> None:
        await self.run(self.store.start_episode, start)

    async def finish_episode(self, result: EpisodeResult) -> None:
        await self.run(self.store.finish_episode, result)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
