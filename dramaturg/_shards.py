"""Shards: how episodes performed away from the store (on Ray workers) reach the one corpus.

The store has one writer, the run's driver. A worker never opens it: each attempt of a batch
of episodes writes a *shard*, a small dramaturg store of its own (same migrations, same
``StoreWriter``, so the rows are exactly the rows a local run writes), in the run's shard
folder::

    <db>.shards/<run id>/
        calls.parquet                the call cache the driver exported before dispatching
        b00003-5f2a9c1e.duckdb       one attempt of batch 3 (its calls and episodes)

A worker's model calls are durable in its shard before their answers are used (a DuckDB
commit per flush, as in the store), so a killed worker loses only its calls in flight. The
driver brings a finished shard into the store in one transaction and deletes it; shards left
by killed attempts or a killed driver are brought in by the next invocation of the run
(before it decides what is left to do) and at the end of the current one.

A worker answers ``cached_call`` from its own shard, then from the exported cache, then from
every shard no live process holds (a DuckDB file's lock says whether its writer is alive):
so the retry of a batch whose worker was killed replays the dead attempt's answered calls
instead of paying for them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from dramaturg._gateway import GatewayStats, Usage
from dramaturg.memory import EPISODE_TABLES, CachedCall, Store, StoreWriter

__all__ = [
    "CACHE_FILE",
    "CallCache",
    "Ingested",
    "ShardWriter",
    "export_call_cache",
    "ingest_leftover_shards",
    "ingest_shard",
    "remove_shard",
    "shard_folder",
    "shard_is_held",
]

CACHE_FILE = "calls.parquet"
_CACHED_COLUMNS = (
    "request_hash, call_id, response_text, finish_reason, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, annotations, tool_calls"
)


def shard_folder(db: str | Path, run_id: str, shard_dir: str | None = None) -> Path:
    """Where a run's shards live: ``<db>.shards/<run id>`` unless ``shard_dir`` says otherwise."""
    root = Path(shard_dir) if shard_dir else Path(f"{db}.shards")
    return root.absolute() / re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def export_call_cache(store: Store, path: Path) -> int:
    """Write every answered call the store holds (the first answer per request hash, as
    :meth:`Store.cached_call` picks it) to ``path`` as Parquet, sorted by hash so a lookup reads
    one row group. Written aside and renamed: a reader never sees half a file.

    Returns:
        How many answered requests it holds.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    store.sql(
        f"COPY (SELECT {_CACHED_COLUMNS} FROM llm_calls WHERE status = 'ok' "
        "QUALIFY row_number() OVER (PARTITION BY request_hash ORDER BY created_at) = 1 "
        f"ORDER BY request_hash) TO '{_quoted(partial)}' (FORMAT parquet)"
    )
    os.replace(partial, path)
    return int(store.sql(f"SELECT count(*) FROM read_parquet('{_quoted(path)}')")[0][0])


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _cached(row: tuple[Any, ...]) -> CachedCall:
    """A ``_CACHED_COLUMNS`` row as the gateway reads a cached answer (as Store.cached_call)."""
    _, call_id, text, finish, tokens_in, tokens_out, cache_read, cache_write, notes, calls = row
    annotations = tuple(sorted(json.loads(notes).items())) if notes else ()
    return CachedCall(
        call_id, text, finish, tokens_in, tokens_out, cache_read, cache_write, annotations, calls
    )


class CallCache:
    """The run's answered calls as a worker sees them when its batch starts: the exported
    cache, plus every shard in the folder that no live process holds.

    Only the hashes are held in memory; an answer is read from the Parquet file (or the shard
    rows read at start, which are few) when a request hits.
    """

    def __init__(self, parquet: Path | None, left: dict[str, CachedCall]) -> None:
        self._parquet = parquet
        self._con = duckdb.connect(":memory:")
        self._hashes: set[str] = set()
        if parquet is not None and parquet.exists():
            rows = self._con.execute(f"SELECT request_hash FROM read_parquet('{_quoted(parquet)}')")
            self._hashes = {str(value) for (value,) in rows.fetchall()}
        self._left = left

    @classmethod
    def load(cls, folder: Path, *, own: Path | None = None) -> CallCache:
        """The cache of the run whose shards are in ``folder`` (``own``, the caller's shard, aside)."""
        left: dict[str, CachedCall] = {}
        for shard in sorted(folder.glob("*.duckdb")):
            if shard == own:
                continue
            for row in _answered_in(shard):
                left.setdefault(str(row[0]), _cached(row))
        return cls(folder / CACHE_FILE, left)

    def lookup(self, request_hash: str) -> CachedCall | None:
        """The stored answer to a request, or None."""
        found = self._left.get(request_hash)
        if found is not None or request_hash not in self._hashes or self._parquet is None:
            return found
        rows = self._con.execute(
            f"SELECT {_CACHED_COLUMNS} FROM read_parquet('{_quoted(self._parquet)}') WHERE request_hash = ?",
            [request_hash],
        ).fetchall()
        return _cached(rows[0]) if rows else None

    def close(self) -> None:
        self._con.close()


def _answered_in(shard: Path) -> list[tuple[Any, ...]]:
    """The answered calls of a shard nobody writes any more; none for a shard still held."""
    try:
        con = duckdb.connect(str(shard), read_only=True)
    except duckdb.Error:
        return []  # held by a live worker (its lock), or just brought in and deleted
    try:
        return con.execute(
            f"SELECT {_CACHED_COLUMNS} FROM llm_calls WHERE status = 'ok' ORDER BY created_at"
        ).fetchall()
    except duckdb.Error:
        return []  # created but not yet migrated when its worker died: it holds no call
    finally:
        con.close()


class ShardWriter(StoreWriter):
    """A worker's writer: a ``StoreWriter`` over its shard whose cache also holds the run's.

    Everything is written to the shard exactly as a local run writes its store; only the
    cache lookup reaches further, to the calls the run answered elsewhere.
    """

    def __init__(self, shard: Store, cache: CallCache) -> None:
        super().__init__(shard)
        self.cache = cache

    async def cached_call(self, request_hash: str) -> CachedCall | None:
        own = await super().cached_call(request_hash)
        if own is not None:
            return own
        return await self.run(self.cache.lookup, request_hash)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What one shard (or several) brought into the store."""

    calls: int
    episodes: dict[str, str]  # episode id -> 'done' or 'failed', for those the store took
    # The calls brought in, counted as the gateway counts them: the summary of a run whose
    # worker died counts what the dead attempt paid for, too.
    stats: GatewayStats = field(default_factory=GatewayStats)


def ingest_shard(store: Store, shard: Path) -> Ingested:
    """Bring a shard's calls and finished episodes into the store in one transaction.

    Every call it holds that the store lacks is copied (paid calls are kept even when their
    episode did not finish). A finished episode replaces what the store holds of it, unless
    the store already has it 'done' (another attempt of the same batch got there first).
    Columns are matched by name: the shard and the store have the same migrations.

    Call it for a shard no live process holds (see :func:`shard_is_held`).
    """
    store.sql(f"ATTACH '{_quoted(shard)}' AS shard (READ_ONLY)")
    try:
        tables = {
            name
            for (name,) in store.sql("SELECT table_name FROM duckdb_tables() WHERE database_name = 'shard'")
        }
        if "llm_calls" not in tables:
            return Ingested(0, {})  # died before its store was made: nothing in it
        finished = dict(
            store.sql(
                "SELECT s.episode_id, s.status FROM shard.episodes s "
                "WHERE s.status IN ('done', 'failed') AND s.episode_id NOT IN "
                "(SELECT episode_id FROM episodes WHERE status = 'done')"
            )
        )
        ids = sorted(finished)
        with store.transaction() as con:
            before = con.execute("SELECT count(*) FROM llm_calls").fetchall()[0][0]
            stats = _stats_of_new_calls(con)
            con.execute(
                "INSERT INTO llm_calls BY NAME SELECT * FROM shard.llm_calls s "
                "WHERE s.call_id NOT IN (SELECT call_id FROM llm_calls)"
            )
            calls = con.execute("SELECT count(*) FROM llm_calls").fetchall()[0][0] - before
            if ids:
                for table in EPISODE_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE list_contains(?, episode_id)", [ids])
                    con.execute(
                        f"INSERT INTO {table} BY NAME SELECT * FROM shard.{table} "
                        "WHERE list_contains(?, episode_id)",
                        [ids],
                    )
        taken = {episode_id: str(status) for episode_id, status in finished.items()}
        return Ingested(int(calls), taken, stats)
    finally:
        store.sql("DETACH shard")


def _stats_of_new_calls(con: duckdb.DuckDBPyConnection) -> GatewayStats:
    """The shard's calls the store lacks, by role and model (answered) and by error kind."""
    stats = GatewayStats()
    rows = con.execute(
        "SELECT role, backend || ':' || model, status, error_kind, count(*), sum(input_tokens), "
        "sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_usd) "
        "FROM shard.llm_calls s WHERE s.call_id NOT IN (SELECT call_id FROM llm_calls) GROUP BY ALL"
    ).fetchall()
    for role, label, status, kind, n, tokens_in, tokens_out, cache_read, cache_write, cost in rows:
        if status != "ok":
            stats.failed_attempts += n
            stats.errors_by_kind[kind] += n
            continue
        paid = Usage(n, tokens_in, tokens_out, cache_read, cache_write, cost)
        stats.usage.setdefault((role, label), Usage()).include(paid)
        stats.total.include(paid)
    return stats


def shard_is_held(shard: Path) -> bool:
    """Whether a live process writes the shard: DuckDB's file lock dies with its holder."""
    try:
        duckdb.connect(str(shard), read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return True
        raise
    return False


def remove_shard(shard: Path) -> None:
    """Delete a shard and its write-ahead log once the store holds what it had."""
    for path in (shard, shard.with_name(f"{shard.name}.wal")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def ingest_leftover_shards(writer: StoreWriter, folder: Path, *, wait_s: float = 30.0) -> Ingested:
    """Bring in every shard an earlier invocation (or a killed attempt) left in ``folder``.

    A shard still held waits: after a driver is killed, Ray stops its tasks within seconds,
    and a shard brought in later than its episodes are dispatched again would be paid twice.
    After ``wait_s`` it is left for the next invocation.
    """
    calls, episodes, stats = 0, dict[str, str](), GatewayStats()
    if not folder.is_dir():
        return Ingested(0, {})
    deadline = time.monotonic() + wait_s
    pending = sorted(folder.glob("*.duckdb"))
    while pending:
        held = []
        for shard in pending:
            if shard_is_held(shard):
                held.append(shard)
                continue
            found = await writer.run(ingest_shard, writer.store, shard)
            remove_shard(shard)
            calls += found.calls
            stats.include(found.stats)
            episodes.update(found.episodes)
        pending = held
        if pending and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        elif pending:
            break
    return Ingested(calls, episodes, stats)
