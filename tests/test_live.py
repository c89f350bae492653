"""The live tier: the whole pipeline on a real model's text, which nobody here wrote.

Runs against any OpenAI-compatible server named by DRAMATURG_LIVE_BASE_URL and
DRAMATURG_LIVE_MODEL (CI: the local Qwen2.5-Coder 0.5B, one request at a time, a few seconds a
reply), and is skipped without one. A small model writes weak data; these tests assert that
the pipeline works on it — replies parse, invalid turns never reach the dialogue, every
rejection is counted, a replay costs nothing — not that the data is good.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from dramaturg.evaluators import TurnContext, clean_turn, validate_turn

from dramaturg import RunConfig, RunSummary, Scenario, Store, load_scenario, run
from dramaturg._calibrate import CalibrationRun, run_calibration

pytestmark = [pytest.mark.live, pytest.mark.slow]


def _short(name: str, turns: int = 1) -> Scenario:
    """A built-in cut to its first ``turns`` user turns: a whole reviewed episode on one
    llama.cpp thread takes minutes per turn."""
    scenario = load_scenario(name).scenario
    return Scenario.model_validate(
        {**{f: getattr(scenario, f) for f in Scenario.model_fields}, "max_turns": turns}
    )


def _config(model: str, base_url: str, **changes: object) -> RunConfig:
    spec = f"openai:{model}"
    settings: dict[str, object] = {
        "scenarios": [_short("support-refund"), _short("math-tutor")],
        "episodes": 2,
        "model": spec,
        "base_url": base_url,
        "run_id": "live",
        # Sized for a 2-core machine: short turns (critics and judges get at least 512 tokens),
        # one extra best-of-n candidate.
        "max_tokens": 200,
        "best_of_n": 2,
        "concurrency": 2,
        "timeout_s": 300,
    }
    return RunConfig.model_validate({**settings, **changes})


@pytest.fixture(scope="module")
def live_run(
    live_model: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunSummary]:
    base_url, model = live_model
    db = tmp_path_factory.mktemp("live") / "live.duckdb"
    # The sim plays the customer and the student: the 0.5B as the user mostly fails validation
    # at its first message (it copies the prompt's end markers), which would leave the
    # assistant, critic and judge nothing to work on. The real model as the user is measured
    # on its own (live_user_run).
    # One episode of each: with the sim as the user they run their whole stage path, every
    # assistant turn critiqued and judged, on one llama.cpp thread.
    summary = asyncio.run(run(_config(model, base_url, user_model="sim", episodes=1), db))
    return db, summary


@pytest.fixture(scope="module")
def live_user_run(
    live_model: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunSummary]:
    """Every role on the real model, the user simulator included: one short episode."""
    base_url, model = live_model
    db = tmp_path_factory.mktemp("live-user") / "live.duckdb"
    config = _config(
        model, base_url, scenarios=["support-refund"], episodes=1, critique=False, best_of_n=0, run_id="live"
    )
    return db, asyncio.run(run(config, db))


def test_both_builtins_run_with_every_role_on_the_real_model(live_run: tuple[Path, RunSummary]) -> None:
    db, summary = live_run
    assert summary.stopped is None, summary.stopped
    with Store.open(db, read_only=True) as store:
        statuses = dict(store.sql("SELECT status, count(*) FROM episodes GROUP BY ALL"))
        roles = dict(store.sql("SELECT role, count(*) FROM llm_calls WHERE status = 'ok' GROUP BY ALL"))
        judged = store.sql(
            "SELECT count(*) FROM episodes WHERE termination_reason <> 'invalid_turn' "
            "UNION ALL SELECT count(*) FROM critiques WHERE status = 'ok' AND target = 'candidate'"
        )
        real = {r for (r,) in store.sql("SELECT DISTINCT role FROM llm_calls WHERE backend = 'openai'")}
    assert statuses == {"done": 2}
    assert set(roles) <= {"user_simulator", "assistant", "critic", "verifier"}
    assert real >= {"assistant", "critic"}
    # The verifier has work only in an episode that reached its end (the goal) or at a
    # best-of-n turn whose candidates were critiqued.
    if any(n for (n,) in judged):
        assert "verifier" in real


def test_critiques_and_judgments_from_the_api_schema_parse(live_run: tuple[Path, RunSummary]) -> None:
    db, _ = live_run
    with Store.open(db, read_only=True) as store:
        critiques = Counter(s for (s,) in store.sql("SELECT status FROM critiques"))
        judgments = Counter(s for (s,) in store.sql("SELECT status FROM judgments"))
        requests = [
            json.loads(r) for (r,) in store.sql("SELECT request FROM llm_calls WHERE role = 'critic'")
        ]
    assert critiques["ok"] >= 0.95 * sum(critiques.values()) > 0
    if judgments:
        assert judgments["ok"] >= 0.95 * sum(judgments.values())
    # The schema went to the API with every critic request.
    assert all(r["response_format"] and r["response_format"]["name"] == "critique" for r in requests)


@pytest.mark.parametrize("which", ["live_run", "live_user_run"])
def test_no_stored_turn_fails_validation_and_every_rejection_is_counted(
    which: str, request: pytest.FixtureRequest
) -> None:
    db, summary = request.getfixturevalue(which)
    with Store.open(db, read_only=True) as store:
        rows = store.sql(
            "SELECT t.episode_id, t.idx, t.role, t.content, e.spec "
            "FROM turns t JOIN episodes e USING (episode_id) ORDER BY t.episode_id, t.idx"
        )
        rejected = Counter(r for (r,) in store.sql("SELECT reason FROM turn_rejections"))
        metric = store.sql(
            "SELECT sum(value) FROM metrics WHERE run_id = 'live' AND name = 'rejected_turn_share'"
        )
    history: dict[str, list[tuple[str, str]]] = {}
    for episode_id, _idx, role, content, spec_json in rows:
        spec = json.loads(spec_json)
        before = tuple(history.setdefault(episode_id, []))
        if role == "user":
            facts = tuple(spec["hidden_facts"].items())
            given = " ".join([spec["goal"], *(str(v) for v in spec["variables"].values())])
            context = TurnContext("user", before, spec["persona"], facts, given)
            assert clean_turn(content, spec["persona"]) == content
        else:
            context = TurnContext("assistant", before)
        # The stage instruction is not stored per turn: everything else is checked again.
        assert validate_turn(content, context) == [], (role, content)
        history[episode_id].append((role, content))
    assert sum(summary.rejected_turns.values()) == sum(rejected.values())
    assert metric[0][0] is not None


def test_the_real_model_calls_support_refunds_tools(
    live_model: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """support-refund gives the assistant its shop's tools: what does a real model do with them?

    The assistant is the real model; the customer is the sim, which reliably gives its order
    id when asked (the 0.5B model as a user mostly fails validation before it gets there), and
    critique is off to keep it short. Asserted: the model tried tools, every try is recorded
    with a status, and the dialogue's tool rounds answer their calls in order. How many calls
    were valid is reported, not asserted.
    """
    base_url, model = live_model
    db = tmp_path / "tools.duckdb"
    config = _config(
        model, base_url, scenarios=["support-refund"], user_model="sim", critique=False, best_of_n=0,
        run_id="live-tools",
    )  # fmt: skip
    summary = asyncio.run(run(config, db))
    assert summary.stopped is None, summary.stopped
    with Store.open(db, read_only=True) as store:
        by_status = dict(store.sql("SELECT status, count(*) FROM tool_calls GROUP BY 1"))
        tools = dict(store.sql("SELECT tool, count(*) FROM tool_calls WHERE status = 'ok' GROUP BY 1"))
        stored = store.sql("SELECT tool_steps FROM turns WHERE tool_steps IS NOT NULL")
        from_text = store.sql(
            "SELECT count(*) FROM llm_calls WHERE annotations->>'tool_calls_from_text' = 'yes'"
        )[0][0]
    with capsys.disabled():
        print(f"\nlive tool calls by status {by_status}; valid by tool {tools}; read from text {from_text}")
    assert sum(by_status.values()) > 0, "the model never tried a tool"
    assert set(by_status) <= {"ok", "invalid", "error"}
    for (steps,) in stored:
        for step in json.loads(steps):
            assert [r["call_id"] for r in step["results"]] == [c["id"] for c in step["calls"]]


def test_a_replay_of_the_run_costs_no_model_call(
    live_model: tuple[str, str], live_run: tuple[Path, RunSummary]
) -> None:
    base_url, model = live_model
    db, first = live_run
    replay = asyncio.run(
        run(_config(model, base_url, user_model="sim", episodes=1, run_id="live-replay"), db)
    )
    assert replay.calls.calls == 0
    assert replay.calls.cache_hits > 0
    assert replay.done == first.done
    with Store.open(db, read_only=True) as store:
        key = "split_part(episode_id, '/', 2) || split_part(episode_id, '/', 3), idx, content"
        turns = store.sql(
            f"SELECT {key} FROM turns WHERE episode_id LIKE 'live/%' EXCEPT "
            f"SELECT {key} FROM turns WHERE episode_id LIKE 'live-replay/%'"
        )
    assert turns == []  # identical dialogues


def test_a_small_calibration_reports_on_the_real_judge(live_model: tuple[str, str], tmp_path: Path) -> None:
    base_url, model = live_model
    settings = CalibrationRun(
        judge=f"openai:{model}", margin=False, limit=6, base_url=base_url, concurrency=2
    )
    _, report, calls = asyncio.run(run_calibration(settings, tmp_path / "cal.duckdb"))
    assert len(report.results) == 6
    assert len(report.by_kind()) == 6  # one probe of each flaw kind
    assert report.parse_failures <= 1
    assert report.accuracy() is not None and report.position_consistency is not None
    assert calls.calls >= 12
    with Store.open(tmp_path / "cal.duckdb", read_only=True) as store:
        names = {n for (n,) in store.sql("SELECT name FROM metrics WHERE scenario IS NULL")}
    assert {"calibration_accuracy", "calibration_position_consistency", "calibration_tie_rate"} <= names
