"""The store: migrations recorded once, newer files refused, one transaction per episode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dramaturg.memory import (
    MIGRATIONS,
    CallRecord,
    EpisodeResult,
    EpisodeStart,
    PairOutcomeRow,
    ReviewRows,
    Store,
    StoreWriter,
    TurnRecord,
    Write,
    utcnow,
)

from dramaturg import StoreError


def _call(i: int, **changes: Any) -> CallRecord:
    """A completed sim call's record, answer ``answer {i}``."""
    fields: dict[str, Any] = {
        "call_id": f"c{i}",
        "request_hash": f"h{i}",
        "run_id": "r",
        "episode_id": None,
        "backend": "sim",
        "model": "sim",
        "role": "assistant",
        "status": "ok",
        "request_json": "{}",
        "latency_ms": 1.0,
        "created_at": utcnow(),
        "response_text": f"answer {i}",
        "finish_reason": "stop",
        **changes,
    }
    return CallRecord(**fields)


def test_migrations_apply_once_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        assert store.applied_migrations() == [m.version for m in MIGRATIONS]
    with Store.open(path) as store:
        assert store.migrate() == []
        tables = {t for (t,) in store.sql("SELECT table_name FROM information_schema.tables")}
    assert {"runs", "scenarios", "episodes", "turns", "llm_calls", "schema_migrations"} <= tables


def test_a_store_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', now())")
    con.close()
    with pytest.raises(StoreError, match=r"newer dramaturg \(schema migrations \[999\]\)"):
        Store.open(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("hello")
    with pytest.raises(StoreError, match="not a DuckDB database"):
        Store.open(path)


def test_episode_rows_land_in_one_transaction(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    start = EpisodeStart("e1", "r", "sc", 0, 1, "P", "{}", utcnow())
    store.start_episode(start)
    turns = (TurnRecord(0, "user", "hi"), TurnRecord(1, "assistant", "hello"))
    result = EpisodeResult("e1", "done", "terminal_stage", turns, utcnow())
    # A review row the schema refuses fails the whole episode write, turns and status included.
    refused = ReviewRows(outcomes=[PairOutcomeRow("e1", 1, "revision", "not-an-outcome")])
    broken = EpisodeResult("e1", "done", "terminal_stage", turns, utcnow(), review=refused)

    with pytest.raises(duckdb.ConstraintException):
        store.finish_episode(broken)
    assert store.sql("SELECT status FROM episodes")[0][0] == "running"
    assert store.sql("SELECT count(*) FROM turns")[0][0] == 0
    store.finish_episode(result)
    assert store.sql("SELECT status, n_turns FROM episodes")[0] == ("done", 2)
    store.close()


def test_writer_batches_call_records_and_makes_them_durable(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    writer = StoreWriter(store)

    async def main() -> None:
        await asyncio.gather(*(writer.record_call(_call(i)) for i in range(50)))
        cached = await writer.cached_call("h7")
        assert cached is not None and cached.response_text == "answer 7"
        assert await writer.cached_call("missing") is None

    asyncio.run(main())
    writer.close()
    assert store.sql("SELECT count(*) FROM llm_calls")[0][0] == 50
    store.close()


def test_a_call_recorded_without_waiting_answers_its_repeat_before_it_is_durable(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    writer = StoreWriter(store)
    call = _call(
        1, episode_id="e1", role="critic", response_text="the same answer", annotations={"planted": "none"}
    )

    async def main() -> None:
        await writer.cached_call("warm")  # the answered hashes are loaded
        await writer.record_call(call, wait=False)
        queued = await writer.cached_call("h1")  # before any flush ran
        assert queued is not None and (queued.call_id, queued.response_text) == ("c1", "the same answer")
        assert queued.annotations == (("planted", "none"),)
        await writer.drain()
        durable = await writer.cached_call("h1")
        assert durable == queued

    asyncio.run(main())
    writer.close()
    store.close()


def test_calls_starting_together_read_the_answered_hashes_once(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    writer = StoreWriter(store)
    reads: list[int] = []
    answered = store.answered_hashes

    def counted() -> set[str]:
        reads.append(1)
        return answered()

    store.answered_hashes = counted  # type: ignore[method-assign]

    async def main() -> None:
        misses = await asyncio.gather(*(writer.cached_call(f"h{i}") for i in range(200)))
        assert misses == [None] * 200

    asyncio.run(main())
    writer.close()
    store.close()
    assert len(reads) == 1


def test_group_commit_delays_only_writes_that_follow_a_busy_transaction(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    writer = StoreWriter(store, commit_interval_s=0.5)
    started: list[tuple[float, int]] = []  # (when, writes) per transaction
    write = store.write

    def timed(writes: Sequence[Write]) -> list[duckdb.Error | None]:
        started.append((time.monotonic(), len(writes)))
        return write(writes)

    store.write = timed  # type: ignore[method-assign]

    async def main() -> None:
        # Lone writes, one after another: each commits at once, never waiting out an interval.
        for i in range(3):
            await writer.record_call(_call(i))
        # Many calls finishing together: one transaction; the next wave joins the one after,
        # which starts an interval after the first, carrying every write that came meanwhile.
        await asyncio.gather(*(writer.record_call(_call(i)) for i in range(10, 20)))
        second = [asyncio.ensure_future(writer.record_call(_call(i))) for i in range(20, 25)]
        await asyncio.sleep(0.1)
        third = [asyncio.ensure_future(writer.record_call(_call(i))) for i in range(25, 30)]
        await asyncio.gather(*second, *third)

    began = time.monotonic()
    asyncio.run(main())
    writer.close()
    assert [writes for _, writes in started] == [1, 1, 1, 10, 10]
    assert started[2][0] - began < 0.5  # three lone writes took less than one interval
    assert started[4][0] - started[3][0] >= 0.5
    assert store.sql("SELECT count(*) FROM llm_calls")[0][0] == 23
    store.close()


def test_writes_queued_together_share_a_transaction_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.duckdb")
    writer = StoreWriter(store)
    transactions: list[int] = []
    write = store.write

    def counted(writes: Sequence[Write]) -> list[duckdb.Error | None]:
        transactions.append(len(writes))
        return write(writes)

    store.write = counted  # type: ignore[method-assign]

    starts = [
        EpisodeStart(f"e{i}", "r", "sc", i, i, "P", "{}", utcnow(), attempted_before=False) for i in range(20)
    ]
    refused = ReviewRows(outcomes=[PairOutcomeRow("e3", 1, "revision", "not-an-outcome")])
    results = [
        EpisodeResult(
            f"e{i}",
            "done",
            "terminal_stage",
            (TurnRecord(0, "user", "hi"), TurnRecord(1, "assistant", f"hello {i}")),
            utcnow(),
            review=refused if i == 3 else None,
        )
        for i in range(20)
    ]

    async def main() -> list[BaseException | None]:
        await asyncio.gather(*(writer.start_episode(start) for start in starts))
        outcomes = await asyncio.gather(
            *(writer.record_call(_call(i, episode_id=f"e{i}")) for i in range(20)),
            *(writer.finish_episode(result) for result in results),
            return_exceptions=True,
        )
        return list(outcomes)

    outcomes = asyncio.run(main())
    writer.close()
    failed = [index for index, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [20 + 3]  # episode e3's result, and nothing else
    assert isinstance(outcomes[23], StoreError) and "episode e3" in str(outcomes[23])
    # 60 writes in a handful of transactions: the first of each burst goes alone, the rest queue.
    assert len(transactions) <= 6, transactions
    assert store.sql("SELECT count(*) FROM llm_calls")[0][0] == 20
    assert store.sql("SELECT count(*) FROM turns")[0][0] == 38
    statuses = dict(store.sql("SELECT episode_id, status FROM episodes"))
    assert statuses["e3"] == "running" and sum(s == "done" for s in statuses.values()) == 19
    store.close()


def test_schema_reference_is_current() -> None:
    from dramaturg.memory._schema_doc import render

    from tests.conftest import REPO

    assert (REPO / "docs" / "store.md").read_text() == render(), (
        "regenerate: python -m dramaturg.memory._schema_doc > docs/store.md"
    )
