"""Semantic failure is loud: a role whose replies cannot be used stops the run, names itself,
shows what it said, exits non-zero — and the run resumes once a working model is given."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer

from dramaturg import FunctionBackend, ModelRequest, ModelResponse, RunConfig, SimBackend, run
from dramaturg._cli import _finish
from dramaturg._health import RoleFailing, RoleHealth
from dramaturg._markers import JUDGE_HEADER
from dramaturg._model import ModelSpec
from dramaturg.testing import FakeAPI, FakeAPIConfig

PROSE = FakeAPIConfig(responder="dramaturg.testing._fake_api:prose_critic_responder")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAPI]:
    with FakeAPI.start(PROSE) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    server.configure(**PROSE.model_dump())
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-loud")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return server


def critic_requests(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM llm_calls WHERE role = 'critic'").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_a_prose_critic_stops_the_run_within_20_critiques_then_it_resumes(
    cli: Callable[..., Any], fake: FakeAPI, tmp_path: Path
) -> None:
    db = tmp_path / "x.duckdb"
    args = ["support-refund", "-n", "2", "--model", "openai:m", "--base-url", fake.openai_base_url]
    stopped = cli("run", *args, "--run-id", "prose", "--db", db)
    assert stopped.exit_code == 1
    line = next(line for line in stopped.output.splitlines() if "replies unusable" in line)
    # One line: the role, the model, how many failed, and what it said.
    assert "critic (openai:m)" in line and "did not parse" in line
    assert re.search(r"e\.g\. [\"'](Score: |I'd give this)", line), line
    assert "dramaturg resume prose" in stopped.output
    assert critic_requests(db) <= 20 * 3  # within 20 critiques, each asked at most 3 times
    # The summary counts the failures per role and model too.
    assert re.search(r"replies\s+critic\s+openai:m\s+\d+ replies: \d+ did not parse", stopped.output)

    before = fake.stats()["answered_200"]
    fake.configure(responder="dramaturg.backends._sim:respond_text")  # a critic that answers JSON
    resumed = cli("resume", "prose", "--db", db, "--critic-model", "openai:working-critic")
    assert resumed.exit_code == 0, resumed.output
    assert "2 done, 0 failed" in resumed.output
    assert fake.stats()["repeats_after_200"] == 0  # nothing answered before was paid again
    assert fake.stats()["answered_200"] > before


def test_a_run_that_builds_no_pair_because_reviews_failed_exits_non_zero(tmp_path: Path) -> None:
    sim = SimBackend()
    judged = 0

    def answer(request: ModelRequest) -> str | Awaitable[ModelResponse]:
        # A judge that first answers prose (fewer replies than stop a run), then only ties.
        nonlocal judged
        if not request.system.startswith(JUDGE_HEADER):
            return sim.complete(request)
        judged += 1
        return "I prefer the first one." if judged <= 9 else '{"reason": "same", "winner": "tie"}'

    config = RunConfig(scenarios=["support-refund"], episodes=2, best_of_n=0, sim_mistake_rate=1.0)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(answer)}))
    assert summary.stopped is None
    assert summary.pair_report is not None and summary.pair_report.outcomes.get("judge_failed", 0) > 0
    assert summary.failed_without_pairs
    with pytest.raises(typer.Exit) as exit_info:
        _finish(summary)
    assert exit_info.value.exit_code == 1


def test_role_health_trips_on_most_recent_failures_only() -> None:
    health = RoleHealth(lambda role: ModelSpec("openai", "m"), window=20, threshold=12)
    for _ in range(30):  # an occasional failure never stops the run
        health.record("critic", True)
        health.record("critic", False, "Score: 7/10")
    assert health.failures[("critic", "openai:m", "parse_failed")] == 30
    health = RoleHealth(lambda role: ModelSpec("openai", "m"), window=20, threshold=12)
    for _ in range(11):
        health.record("critic", False, "Score: 7/10")
    with pytest.raises(RoleFailing, match=r"critic \(openai:m\): 12 of its last 12 replies did not parse"):
        health.record("critic", False, "Score: 7/10")
    turns = RoleHealth(lambda role: ModelSpec("sim", "sim"))
    for _ in range(14):  # rejected turns are regenerated: more of them are tolerated
        turns.record_turn("user", False, "How can I help you?")
    with pytest.raises(
        RoleFailing, match=r"user_simulator \(sim:sim\): 15 of its last 15 replies failed validation"
    ):
        turns.record_turn("user", False, "How can I help you?")
    turns.inconsistent("verifier")
    assert ("verifier", "sim:sim", "position_inconsistent") in turns.failures


def test_a_server_refusing_response_format_is_named_in_the_summary(
    cli: Callable[..., Any], fake: FakeAPI, tmp_path: Path
) -> None:
    fake.configure(responder="dramaturg.backends._sim:respond_text", refuse_response_format=True)
    args = ["support-refund", "-n", "1", "--model", "openai:m", "--base-url", fake.openai_base_url]
    result = cli("run", *args, "--db", tmp_path / "z.duckdb")
    assert result.exit_code == 0, result.output
    assert "openai:m refused response_format; prompt-only JSON" in result.output
