"""The Ray executor on a real local cluster: a head and two worker nodes on 127.0.0.1.

Acceptance of issue 14: a run on Ray stores the same episodes as the same run performed here;
a worker killed mid-run costs only its calls in flight; a driver killed mid-run resumes
without paying again for any answered call. The cluster is started once for the module
(``ray start`` processes, stopped by PID) and kept small: no dashboard, one CPU per worker.

The test process itself connects once, so the runs it drives share one Ray job and its warm
worker processes (a fresh worker spends seconds importing the SDKs and autogen); the run
killed with its driver is a process of its own, connecting as the CLI does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest
import ray  # the suite runs these tests: `ray` is in the install command (README, .ci/run)
from dramaturg.memory import CallRecord, Store, StoreWriter, utcnow

from dramaturg import (
    EpisodeRecord,
    ExecutionOptions,
    LimitOptions,
    ModelOptions,
    ReviewOptions,
    RunConfig,
    run_sync,
)
from dramaturg._model import RateLimits
from dramaturg._pricing import PriceTable
from dramaturg._ray import RayRun, ShareOfLimiter, _batch, _batch_size
from dramaturg._run import RunSummary
from dramaturg._shards import CallCache, ShardWriter, ingest_leftover_shards, shard_folder
from dramaturg.testing import FakeAPI, FakeAPIConfig, LocalRayCluster
from tests.conftest import dramaturg_subprocess, query
from tests.test_python_api import GREETER

Cli = Callable[..., Any]
FAKE = FakeAPIConfig(responder="sim", latency_ms=60, retry_after_s=0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    with LocalRayCluster.start(workers=2, root=tmp_path_factory.mktemp("ray")) as running:
        yield running


@pytest.fixture(scope="module")
def connected(cluster: LocalRayCluster) -> Iterator[LocalRayCluster]:
    """This process connected to the cluster: a run here uses the connection, and keeps it."""
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    yield cluster
    ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    with FakeAPI.start(FAKE) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    """The fake API, reset, with the driver's environment pointing both SDKs at it (the driver
    forwards these variables to its Ray tasks)."""
    server.configure(**FAKE.model_dump())
    server.reset()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return server


def models(fake: FakeAPI) -> tuple[str, ...]:
    # One SDK: a fresh Ray worker spends seconds importing each.
    return ("--model", "openai:gpt-test", "--base-url", fake.openai_base_url)


def stored_episodes(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a run decided, table by table, without the ids and times it drew at random."""
    tables = {
        "episodes": "SELECT episode_id, scenario, idx, seed, status, persona, spec, termination_reason, "
        "n_turns, goal_met, user_consistent FROM episodes",
        "turns": "SELECT episode_id, idx, role, content, stage, role_flip, tool_steps, origin FROM turns",
        "pairs": "SELECT episode_id, turn_idx, source, prompt, chosen, rejected, margin, judge_agreement, "
        "checks_passed FROM preference_pairs",
        "critiques": "SELECT episode_id, turn_idx, target, status, overall, feedback FROM critiques",
        "checks": "SELECT episode_id, turn_idx, target, name, passed, detail FROM checks",
        "tool_calls": "SELECT episode_id, turn_idx, target, attempt, seq, tool, arguments, status, result "
        "FROM tool_calls",
    }
    return {name: sorted(query(db, sql), key=repr) for name, sql in tables.items()}


def assert_paid_once(db: Path) -> None:
    """No request answered before was paid for again, and every turn points at a stored call."""
    ((rows, distinct),) = query(
        db, "SELECT count(*), count(DISTINCT request_hash) FROM llm_calls WHERE status = 'ok'"
    )
    assert rows == distinct
    orphans = (
        "SELECT count(*) FROM turns WHERE call_id IS NOT NULL "
        "AND call_id NOT IN (SELECT call_id FROM llm_calls)"
    )
    assert query(db, orphans) == [(0,)]


def test_a_run_on_ray_stores_the_same_episodes_as_the_same_run_here(
    connected: LocalRayCluster, cli: Cli, tmp_path: Path
) -> None:
    args = ("run", "support-refund", "math-tutor", "-n", "3", "--run-id", "same", "--seed", "7")
    here = cli(*args, "--db", tmp_path / "here.duckdb")
    assert here.exit_code == 0, here.output
    on_ray = cli(*args, "--db", tmp_path / "ray.duckdb", "--executor", "ray")

    assert on_ray.exit_code == 0, on_ray.output
    assert "6 done, 0 failed" in on_ray.output
    left, right = stored_episodes(tmp_path / "here.duckdb"), stored_episodes(tmp_path / "ray.duckdb")
    assert len(right["episodes"]) == 6
    assert len(right["turns"]) > 30 and right["pairs"] and right["tool_calls"]
    for table in left:
        assert left[table] == right[table], table
    assert_paid_once(tmp_path / "ray.duckdb")
    # Every shard was brought in and removed.
    assert not (tmp_path / "ray.duckdb.shards").exists()


def test_run_sync_on_ray_hands_over_every_record_and_resumes_here(
    connected: LocalRayCluster, tmp_path: Path
) -> None:
    records: list[EpisodeRecord] = []
    config = RunConfig(
        scenarios=[GREETER],
        episodes=4,
        run_id="api",
        review=ReviewOptions(best_of_n=0),
        execution=ExecutionOptions(executor="ray", ray_address=connected.address),
    )
    summary = run_sync(config, tmp_path / "api.duckdb", on_episode=records.append)

    assert (summary.done, summary.failed, summary.stopped) == (4, 0, None)
    assert sorted(record.episode_id for record in records) == [f"api/greeter/{i:05d}" for i in range(4)]
    assert all(record.turns for record in records)
    assert summary.calls.calls == query(tmp_path / "api.duckdb", "SELECT count(*) FROM llm_calls")[0][0]
    stored = query(tmp_path / "api.duckdb", "SELECT config->'execution'->>'executor' FROM runs")
    assert stored == [("ray",)]
    # A rerun performs nothing: every episode is done, whatever the executor.
    again = run_sync(config.with_changes(executor="local", ray_address=None), tmp_path / "api.duckdb")
    assert (again.done, again.skipped) == (0, 4)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killing_a_worker_mid_run_costs_only_its_calls_in_flight(
    connected: LocalRayCluster, fake: FakeAPI, tmp_path: Path
) -> None:
    db = tmp_path / "kill-worker.duckdb"
    concurrency = 4
    config = RunConfig(
        scenarios=["support-refund", "math-tutor"],
        episodes=4,
        run_id="kill-worker",
        models=ModelOptions(model="openai:gpt-test", base_url=fake.openai_base_url),
        review=ReviewOptions(best_of_n=0),
        limits=LimitOptions(concurrency=concurrency),
        execution=ExecutionOptions(executor="ray"),
    )
    with ThreadPoolExecutor(max_workers=1) as driver:
        running = driver.submit(run_sync, config, db)
        wait_for(lambda: fake.stats()["answered_200"] >= 40, "calls")
        wait_for(lambda: bool(connected.task_processes("perform_batch")), "a worker running a batch")
        victim = connected.task_processes("perform_batch")[0]
        answered_at_kill = fake.stats()["answered_200"]
        os.kill(victim, signal.SIGKILL)
        summary = running.result(timeout=240)

    assert (summary.done, summary.failed, summary.stopped) == (8, 0, None)
    assert query(db, "SELECT status, count(*) FROM episodes GROUP BY 1") == [("done", 8)]
    assert_paid_once(db)
    stats = fake.stats()
    assert stats["answered_200"] > answered_at_kill, "the run went on after the kill"
    assert summary.calls.cache_hits > 0, "the retried batch replayed the killed attempt's answers"
    # Ray ran the killed worker's batch again, replaying what it had been answered: only the
    # calls in flight at the kill (at most its concurrency) were answered twice.
    assert stats["repeats_after_200"] <= concurrency
    stored = query(db, "SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert stats["answered_200"] - stored == stats["repeats_after_200"]
    # The summary counts every stored call, the killed attempt's too (brought in at the end).
    assert summary.calls.calls == stored


def test_resume_after_killing_the_driver_pays_no_answered_call_again(
    connected: LocalRayCluster, fake: FakeAPI, cli: Cli, tmp_path: Path
) -> None:
    db = tmp_path / "kill-driver.duckdb"
    concurrency = 3
    process = dramaturg_subprocess(
        "run", "support-refund", "math-tutor", "-n", "4", "--concurrency", str(concurrency),
        "--best-of-n", "0", *models(fake), "--run-id", "kill-driver", "--db", str(db),
        "--executor", "ray", "--ray-address", connected.address,
    )  # fmt: skip
    wait_for(lambda: fake.stats()["answered_200"] >= 60, "calls")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    shards = shard_folder(db, "kill-driver")
    assert list(shards.glob("*.duckdb")), "the killed run left its workers' shards"

    resumed = cli("resume", "kill-driver", "--db", db)

    assert resumed.exit_code == 0, resumed.output
    assert query(db, "SELECT status, count(*) FROM episodes GROUP BY 1") == [("done", 8)]
    assert_paid_once(db)
    stats = fake.stats()
    # Answered but never durable: only calls in flight in the two workers when Ray stopped
    # them (each worker at most --concurrency).
    assert stats["repeats_after_200"] <= 2 * concurrency
    stored = query(db, "SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert stats["answered_200"] - stored == stats["repeats_after_200"]
    assert not shards.exists()


# -- without a cluster -------------------------------------------------------------------------


def test_batches_are_even_rounds_of_at_most_twice_the_concurrency() -> None:
    assert _batch_size(todo=100, slots=2, concurrency=8) == 13  # 4 rounds of 2 batches
    assert _batch_size(todo=6, slots=2, concurrency=8) == 3
    assert _batch_size(todo=1, slots=4, concurrency=8) == 1
    assert _batch_size(todo=10**8, slots=2, concurrency=8) == 16


def test_tasks_running_at_once_split_the_rate_limits_and_can_never_overspend_the_budget(
    tmp_path: Path,
) -> None:
    config = RunConfig(
        scenarios=["math-tutor"],
        limits=LimitOptions(rpm=600, tpm=90_000, budget_usd=10.0),
        execution=ExecutionOptions(executor="ray"),
    )
    ray_run = RayRun(config, "r", tmp_path / "s.duckdb", cast(StoreWriter, None), RunSummary("r", "s"))
    ray_run.prior_cost_usd = 2.0  # spent by an earlier invocation
    first = _batch(ray_run, 1, (), slots=2, running=0, prices=PriceTable())
    second = _batch(ray_run, 2, (), slots=2, running=1, prices=PriceTable())
    assert (first.rpm, first.tpm, first.shares) == (300, 45_000, 2)
    assert (first.budget_usd, second.budget_usd) == (4.0, 4.0)
    # The first task finished having spent 1.5 of its 4: the next may spend what is left.
    ray_run._held.pop(1)
    ray_run.summary.calls.total.cost_usd = 1.5
    third = _batch(ray_run, 3, (), slots=2, running=1, prices=PriceTable())
    assert third.budget_usd == pytest.approx(10.0 - 2.0 - 1.5 - 4.0)


def test_each_task_keeps_its_share_of_the_limits_the_provider_names() -> None:
    limiter = ShareOfLimiter(shares=2, rpm=300)
    limiter.observe(RateLimits(requests_per_minute=1000, tokens_per_minute=80_000))
    assert (limiter.rpm, limiter.tpm) == (300, 40_000)  # the configured share was lower
    limiter.rejected(0.0, 0.0, RateLimits(requests_per_minute=400))
    assert limiter.rpm == 200


def call(request_hash: str, text: str) -> CallRecord:
    return CallRecord(
        call_id=f"id-{request_hash}",
        request_hash=request_hash,
        run_id="r",
        episode_id="r/s/00000",
        backend="sim",
        model="sim",
        role="assistant",
        status="ok",
        request_json="{}",
        latency_ms=1.0,
        created_at=utcnow(),
        response_text=text,
        finish_reason="stop",
        annotations={"planted": "x"},
    )


def test_a_retried_attempt_reads_the_dead_attempts_answers_and_the_store_takes_them_once(
    tmp_path: Path,
) -> None:
    folder = shard_folder(tmp_path / "s.duckdb", "r")
    folder.mkdir(parents=True)

    async def attempt(name: str, records: list[CallRecord], hashes: list[str]) -> list[str | None]:
        store = Store.open(folder / name)
        cache = CallCache.load(folder, own=folder / name)
        writer = ShardWriter(store, cache)
        try:
            for record in records:
                await writer.record_call(record)
            found = [await writer.cached_call(h) for h in hashes]
        finally:
            writer.close()
            store.close()
            cache.close()
        return [None if hit is None else hit.response_text for hit in found]

    # The first attempt answered h1 and died (its shard stays); the retry sees h1, not h2.
    assert asyncio.run(attempt("b1-dead.duckdb", [call("h1", "one")], [])) == []
    assert asyncio.run(attempt("b1-retry.duckdb", [call("h2", "two")], ["h1", "h2", "h3"])) == [
        "one",
        "two",
        None,
    ]

    async def bring_in() -> tuple[int, int, int]:
        store = Store.open(tmp_path / "s.duckdb")
        writer = StoreWriter(store)
        try:
            first = await ingest_leftover_shards(writer, folder)
            second = await ingest_leftover_shards(writer, folder)
        finally:
            writer.close()
            store.close()
        return first.calls, second.calls, first.stats.usage[("assistant", "sim:sim")].calls

    assert asyncio.run(bring_in()) == (2, 0, 2)
    assert query(tmp_path / "s.duckdb", "SELECT request_hash, annotations FROM llm_calls ORDER BY 1") == [
        ("h1", '{"planted": "x"}'),
        ("h2", '{"planted": "x"}'),
    ]
    assert not list(folder.glob("*.duckdb"))


def test_executor_ray_without_ray_installed_is_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = cli("run", "math-tutor", "-n", "1", "--executor", "ray", "--db", tmp_path / "x.duckdb")
    assert result.exit_code == 2
    assert "pip install 'dramaturg[ray]'" in result.output
    assert not (tmp_path / "x.duckdb").exists()


def test_ray_options_without_the_ray_executor_are_refused(cli: Cli, tmp_path: Path) -> None:
    result = cli(
        "run", "math-tutor", "-n", "1", "--ray-address", "10.0.0.1:6379", "--db", tmp_path / "x.duckdb"
    )
    assert result.exit_code == 2
    assert "option 'ray_address'" in result.output
    assert "applies to executor 'ray' only (pass --executor ray)" in result.output
