"""Whole runs against the local fake API through the real SDKs: faults, crashes, bad keys, budgets.

The fake plays every role with the sim's responder, so episodes are plausible end to end. These
are the acceptance tests of "real model backends that never pay twice".
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dramaturg import BackendError, FunctionBackend, ModelRequest, RunConfig, run
from dramaturg._limits import BreakerSettings, CircuitBreaker
from dramaturg.testing import FakeAPI, FakeAPIConfig
from tests.conftest import dramaturg_subprocess, query

BASE = FakeAPIConfig(responder="dramaturg.backends._sim:respond_text", retry_after_s=0.05)
ANTHROPIC_KEY = "sk-ant-test-KEEPOUT-1234"
OPENAI_KEY = "sk-openai-test-KEEPOUT-5678"
FAULT_MIX = {"rate_500": 0.05, "rate_529": 0.05, "rate_drop": 0.02, "rate_malformed": 0.01}

Cli = Callable[..., Any]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    with FakeAPI.start(BASE) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    server.configure(**BASE.model_dump())
    server.reset()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return server


def models(fake: FakeAPI) -> tuple[str, ...]:
    """Claude for every role but the assistant, which is OpenAI-compatible: both SDKs in one run."""
    return (
        "--model",
        "anthropic:claude-test",
        "--assistant-model",
        "openai:gpt-test",
        "--base-url",
        fake.openai_base_url,
    )


def statuses(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT status, count(*) FROM episodes GROUP BY 1"))


def assert_no_garbage(db: Path) -> None:
    """Every stored answer has text or tool calls, every turn points at one, nothing was paid twice."""
    empty = (
        "SELECT count(*) FROM llm_calls WHERE status = 'ok' AND coalesce(trim(response_text), '') = '' "
        "AND tool_calls IS NULL"
    )
    assert query(db, empty) == [(0,)]
    orphans = (
        "SELECT count(*) FROM turns WHERE call_id IS NOT NULL "
        "AND call_id NOT IN (SELECT call_id FROM llm_calls WHERE status = 'ok')"
    )
    assert query(db, orphans) == [(0,)]
    blank_turns = "SELECT count(*) FROM turns WHERE trim(content) = ''"
    assert query(db, blank_turns) == [(0,)]
    paid = "SELECT count(*), count(DISTINCT request_hash) FROM llm_calls WHERE status = 'ok'"
    ((rows, distinct),) = query(db, paid)
    assert rows == distinct, "a request answered before was paid for again"


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_fault_mix_completes_every_episode_and_counts_failures(
    cli: Cli, fake: FakeAPI, tmp_path: Path
) -> None:
    fake.configure(**FAULT_MIX)
    db = tmp_path / "faults.duckdb"
    rpm = 3000
    result = cli(
        "run", "support-refund", "math-tutor", "-n", "3", "--concurrency", "6", *models(fake),
        "--rpm", str(rpm), "--run-id", "faults", "--db", db,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "6 done, 0 failed" in result.output
    assert statuses(db) == {"done": 6}
    assert_no_garbage(db)
    stats = fake.stats()
    by_status = stats["by_status"]
    injected = stats["requests"] - by_status["200"]
    assert injected > 0
    # Every failed attempt the fake caused is recorded under the right kind, and shown.
    recorded = dict(query(db, "SELECT error_kind, count(*) FROM llm_calls WHERE status = 'error' GROUP BY 1"))
    expected = {
        "server": by_status.get("500", 0),
        "overloaded": by_status.get("529", 0) + by_status.get("503", 0),
        "connection": by_status.get("drop", 0),
        "malformed": by_status.get("malformed", 0),
    }
    assert recorded == {kind: n for kind, n in expected.items() if n}
    assert f"{injected} failed attempts (" in result.output
    # Each 200 was stored exactly once; nothing answered was asked for again.
    assert query(db, "SELECT count(*) FROM llm_calls WHERE status = 'ok'") == [(stats["answered_200"],)]
    assert stats["repeats_after_200"] == 0
    # Paced, never bursty: the requests cannot have arrived faster than the limit allows.
    span = stats["last_response_at"] - stats["first_request_at"]
    assert span >= 0.9 * (stats["requests"] - 1) * 60 / rpm
    # Tokens and cost by role and model are in the summary.
    assert "openai:gpt-test" in result.output
    assert "anthropic:claude-test" in result.output
    # API keys are never written down: not in requests, errors, config or anywhere else.
    assert tables_containing(db, "KEEPOUT") == []
    assert "llm_calls" in tables_containing(db, "claude-test"), "the scan itself works"


def tables_containing(db: Path, needle: str) -> list[str]:
    """The tables with ``needle`` in any column, as text."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        columns: dict[str, list[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
        ).fetchall():
            columns.setdefault(table, []).append(f"coalesce(CAST(\"{column}\" AS VARCHAR), '')")
        hits = []
        for table, casts in columns.items():
            text = " || '|' || ".join(casts)
            sql = f'SELECT count(*) FROM "{table}" WHERE {text} LIKE ?'
            if con.execute(sql, [f"%{needle}%"]).fetchall() != [(0,)]:
                hits.append(table)
        return hits
    finally:
        con.close()


@pytest.mark.parametrize("responder", ["text", "sim"])
def test_sigkill_then_resume_resends_only_calls_that_were_in_flight(
    cli: Cli, fake: FakeAPI, tmp_path: Path, responder: str
) -> None:
    # "sim" plays the whole SimBackend behind the API, tool calls included: support-refund's
    # assistant then calls its tools through the real SDK, and the kill lands among them.
    fake.configure(latency_ms=40, **({"responder": "sim"} if responder == "sim" else {}))
    db = tmp_path / "kill.duckdb"
    concurrency = 4
    process = dramaturg_subprocess(
        "run", "support-refund", "math-tutor", "-n", "4", "--concurrency", str(concurrency),
        *models(fake), "--run-id", "kill", "--db", str(db),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while fake.stats()["answered_200"] < 80:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert statuses(db).get("running", 0) > 0, "killed mid-run"
    assert fake.stats()["repeats_after_200"] == 0

    resumed = cli("resume", "kill", "--db", db)

    assert resumed.exit_code == 0, resumed.output
    assert statuses(db) == {"done": 8}
    assert_no_garbage(db)
    stats = fake.stats()
    # Only the calls in flight at the kill were answered but never stored, so only they
    # were sent again.
    assert stats["repeats_after_200"] <= concurrency
    stored = query(db, "SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert stats["answered_200"] - stored == stats["repeats_after_200"]
    if responder == "sim":
        (valid,) = query(db, "SELECT count(*) FROM tool_calls WHERE status = 'ok'")[0]
        assert valid > 0


def test_bad_key_stops_within_seconds_with_one_line_and_stays_resumable(
    cli: Cli, fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.configure(reject_keys=["revoked-key"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "revoked-key")
    db = tmp_path / "badkey.duckdb"
    args = ("run", "support-refund", "-n", "6", "--concurrency", "6", "--model", "anthropic:claude-test")
    started = time.monotonic()
    result = cli(*args, "--run-id", "badkey", "--db", db)
    elapsed = time.monotonic() - started

    assert result.exit_code == 1
    assert elapsed < 10
    (line,) = error_lines(result.stderr)
    assert "401" in line
    assert "ANTHROPIC_API_KEY" in line
    assert f"dramaturg resume badkey --db {db}" in line
    assert "revoked-key" not in result.output
    # Each episode's first call went out at once; after the first 401 nothing more was sent.
    assert fake.stats()["requests"] <= 6
    assert statuses(db).get("failed", 0) == 0

    monkeypatch.setenv("ANTHROPIC_API_KEY", "good-key")
    resumed = cli("resume", "badkey", "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert "6 done, 0 failed" in resumed.output
    assert statuses(db) == {"done": 6}


def test_budget_is_kept_within_one_call_and_resume_can_raise_it(
    cli: Cli, fake: FakeAPI, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"claude-test": {"input": 3.0, "output": 15.0}, "gpt-test": {"input": 2.0, "output": 8.0}})
    )
    db = tmp_path / "budget.duckdb"
    budget = 0.05
    result = cli(
        "run", "support-refund", "-n", "6", "--concurrency", "3", *models(fake),
        "--budget-usd", str(budget), "--prices", prices, "--run-id", "budget", "--db", db,
    )  # fmt: skip

    assert result.exit_code == 1
    (line,) = error_lines(result.stderr)
    assert "run stopped: budget: limit $0.0500 reached" in line
    spent, most = query(db, "SELECT sum(cost_usd), max(cost_usd) FROM llm_calls WHERE status = 'ok'")[0]
    assert 0 < spent <= budget + most
    assert statuses(db).get("failed", 0) == 0
    assert statuses(db).get("running", 0) > 0
    assert f"${spent:.4f}" in result.output

    resumed = cli("resume", "budget", "--db", db, "--budget-usd", "10")
    assert resumed.exit_code == 0, resumed.output
    assert statuses(db) == {"done": 6}
    total = query(db, "SELECT sum(cost_usd) FROM llm_calls")[0][0]
    assert f"run total ${total:.4f}" in resumed.output
    assert fake.stats()["repeats_after_200"] == 0


def test_budget_without_a_price_is_refused_before_anything_is_written(
    cli: Cli, fake: FakeAPI, tmp_path: Path
) -> None:
    db = tmp_path / "never.duckdb"
    result = cli("run", "math-tutor", "--model", "anthropic:claude-test", "--budget-usd", "1", "--db", db)
    assert result.exit_code == 2
    assert "--budget-usd needs a price for anthropic:claude-test" in result.output
    assert not db.exists()


def test_resume_errors_are_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert cli("run", "math-tutor", "-n", "1", "--run-id", "r1", "--db", db).exit_code == 0

    unknown = cli("resume", "nope", "--db", db)
    assert unknown.exit_code == 2
    assert "no run 'nope' (recent runs: r1)" in unknown.output

    changed = cli("run", "math-tutor", "-n", "1", "--seed", "5", "--run-id", "r1", "--db", db)
    assert changed.exit_code == 2
    assert "run 'r1' already exists with other settings (seed 0 -> 5)" in changed.output
    grouped = cli("run", "math-tutor", "-n", "1", "--best-of-n", "2", "--run-id", "r1", "--db", db)
    assert "other settings (review.best_of_n 3 -> 2)" in grouped.output
    # A role's model and the limits may change (a resumed run may swap a failing critic).
    swapped = cli(
        "run",
        "math-tutor",
        "-n",
        "1",
        "--critic-model",
        "sim:other",
        "--rpm",
        "60",
        "--run-id",
        "r1",
        "--db",
        db,
    )
    assert "other settings" not in swapped.output

    again = cli("resume", "r1", "--db", db, "--concurrency", "2")
    assert again.exit_code == 0
    assert "(1 already done)" in again.output


def test_a_config_stored_flat_by_an_earlier_version_still_resumes(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert cli("run", "math-tutor", "-n", "2", "--run-id", "old", "--db", db).exit_code == 0
    flat = {
        "scenarios": ["math-tutor"],
        "episodes": 3,
        "run_id": "old",
        "best_of_n": 3,
        "sim_mistake_rate": 0.25,
    }
    con = duckdb.connect(str(db))
    con.execute("UPDATE runs SET config = ? WHERE run_id = 'old'", [json.dumps(flat)])
    con.close()
    resumed = cli("resume", "old", "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert "(2 already done)" in resumed.output
    (stored,) = query(db, "SELECT config FROM runs WHERE run_id = 'old'")[0]
    assert json.loads(stored)["review"]["best_of_n"] == 3  # stored again, grouped


def test_circuit_breaker_stops_the_run_resumably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dramaturg import _gateway, _run

    monkeypatch.setattr(_gateway.RetryPolicy, "delay", lambda self, attempt, retry_after, rng: 0.0)
    monkeypatch.setattr(
        _run, "CircuitBreaker", lambda: CircuitBreaker(BreakerSettings(window=10, cooldown_s=0.01))
    )

    def down(request: ModelRequest) -> str:
        raise BackendError("upstream down", kind="overloaded", status=529)

    config = RunConfig(scenarios=["math-tutor"], episodes=4, concurrency=2, run_id="cb")
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(down)}))
    assert summary.stopped is not None
    assert summary.stopped.startswith("circuit_open: ")
    assert summary.failed == 0
    # Calls that ran out of attempts while the breaker was tripped stop the run rather than
    # failing their episodes: the API is down, the episodes are fine.
    assert summary.calls.failed_attempts <= 20  # at most a window, a pause, a window

    resumed = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert resumed.done == 4
