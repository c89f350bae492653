"""Assistants that use tools: scenario tools, the toolbox, the sim's tool use, trajectory checks.

Issue 10's offline acceptance: `dramaturg run support-refund -n 30` on the sim puts a valid
tool call in nearly every episode, and every tool mistake the sim planted is caught by a
trajectory check and visible in the store's `tool_calls` table.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
from dramaturg.scenarios import FunctionTool, SimulatedTool

from dramaturg import (
    FunctionBackend,
    ModelRequest,
    RunConfig,
    Scenario,
    ScenarioError,
    SimBackend,
    load_scenario,
    run,
)
from dramaturg._markers import OUT_OF_SCOPE_MARKER
from dramaturg._model import Message, ToolCall, ToolResult, ToolSpec
from dramaturg._toolbox import ToolBox
from dramaturg.backends._sim_tools import MISTAKES
from tests.conftest import query

Cli = Callable[..., Any]

TRAJECTORY_CHECKS = (
    "refund_only_after_lookup",
    "refund_within_policy",
    "tool_calls_valid",
    "no_repeated_calls",
)


@pytest.fixture(scope="module")
def support_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("tools") / "support.duckdb"
    summary = asyncio.run(run(RunConfig(scenarios=["support-refund"], episodes=30, run_id="t"), db))
    assert summary.done == 30
    return db


def test_nearly_every_support_episode_makes_a_valid_tool_call(support_run: Path) -> None:
    (episodes,) = query(support_run, "SELECT count(*) FROM episodes WHERE status = 'done'")[0]
    (with_call,) = query(
        support_run, "SELECT count(DISTINCT episode_id) FROM tool_calls WHERE status = 'ok'"
    )[0]
    assert episodes == 30
    assert with_call / episodes >= 0.9
    # The dialogue carries the kept version's tool rounds, with results answering calls in order.
    steps = [
        json.loads(s)
        for (s,) in query(support_run, "SELECT tool_steps FROM turns WHERE tool_steps IS NOT NULL")
    ]
    assert steps
    for turn in steps:
        for step in turn:
            assert [r["call_id"] for r in step["results"]] == [c["id"] for c in step["calls"]]


def test_the_user_ends_with_a_transfer_marker_after_an_escalation(support_run: Path) -> None:
    # tau2-bench's habit: handed over to a human, the user stops with the transfer marker, which
    # never enters the dialogue.
    transferred = query(
        support_run,
        "SELECT DISTINCT e.episode_id FROM episodes e JOIN tool_calls c USING (episode_id) "
        "WHERE e.termination_reason = 'user_transferred' AND c.tool = 'escalate' AND c.status = 'ok'",
    )
    assert transferred
    (markers,) = query(support_run, "SELECT count(*) FROM turns WHERE content LIKE '%<<%'")[0]
    assert markers == 0


def test_a_user_who_lacks_what_is_asked_ends_out_of_scope(tmp_path: Path) -> None:
    sim = SimBackend()

    def answer(request: ModelRequest) -> Any:
        if request.role == "user_simulator" and len(request.messages) > 1:
            assert OUT_OF_SCOPE_MARKER in request.system  # the prompt names every ending
            return f"I don't have a receipt number, sorry. {OUT_OF_SCOPE_MARKER}"
        return sim.complete(request)

    config = RunConfig(scenarios=["support-refund"], episodes=2, best_of_n=0)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(answer)}))
    assert summary.done == 2
    rows = query(tmp_path / "x.duckdb", "SELECT termination_reason, count(*) FROM episodes GROUP BY 1")
    assert rows == [("user_out_of_scope", 2)]
    last = query(
        tmp_path / "x.duckdb",
        "SELECT content FROM turns WHERE role = 'user' QUALIFY idx = max(idx) OVER (PARTITION BY episode_id)",
    )
    assert {text for (text,) in last} == {"I don't have a receipt number, sorry."}


def test_every_planted_tool_mistake_is_caught_by_a_trajectory_check(support_run: Path) -> None:
    # The version of a turn a planted mistake belongs to (its last attempt: earlier ones were
    # retracted before any check ran), and whether a trajectory check failed on it.
    planted = query(
        support_run,
        f"""
        WITH planted AS (
            SELECT DISTINCT t.episode_id, t.turn_idx, t.target, t.attempt,
                   l.annotations->>'tool_mistake' AS mistake
            FROM tool_calls t JOIN llm_calls l ON l.call_id = t.model_call_id
            WHERE l.annotations->>'tool_mistake' IS NOT NULL
        ),
        last_attempt AS (
            SELECT episode_id, turn_idx, target, max(attempt) AS attempt FROM tool_calls GROUP BY ALL
        )
        SELECT p.mistake, p.episode_id, p.turn_idx, p.target,
               EXISTS (SELECT 1 FROM checks c WHERE c.episode_id = p.episode_id AND c.turn_idx = p.turn_idx
                       AND c.target = p.target AND NOT c.passed
                       AND list_contains({list(TRAJECTORY_CHECKS)}, c.name)) AS caught
        FROM planted p JOIN last_attempt a USING (episode_id, turn_idx, target, attempt)
        """,
    )
    assert len(planted) >= 5, "the sim planted too few tool mistakes to measure"
    missed = [row for row in planted if not row[-1]]
    assert not missed, missed
    kinds = {row[0] for row in planted}
    assert kinds <= set(MISTAKES)


def test_tool_calls_replay_from_the_cache_identically(support_run: Path, tmp_path: Path) -> None:
    db = tmp_path / "again.duckdb"
    first = query(support_run, "SELECT request_hash FROM llm_calls")
    # A copy of the store, the same run again under a new id: every call comes from the cache.
    con = duckdb.connect(str(db))
    con.execute(f"ATTACH '{support_run}' AS src (READ_ONLY)")
    (name,) = con.execute("SELECT current_database()").fetchone() or ("",)
    con.execute(f"COPY FROM DATABASE src TO {name}")
    con.close()
    summary = asyncio.run(run(RunConfig(scenarios=["support-refund"], episodes=30, run_id="again"), db))
    assert summary.calls.calls == 0 and summary.calls.cache_hits >= len(first)
    original = query(
        db, "SELECT idx, content, tool_steps FROM turns WHERE episode_id LIKE 't/%' ORDER BY ALL"
    )
    replayed = query(
        db, "SELECT idx, content, tool_steps FROM turns WHERE episode_id LIKE 'again/%' ORDER BY ALL"
    )
    assert original == replayed


# -- the parts --------------------------------------------------------------------------------


class Calendar:
    def __init__(self) -> None:
        self.bookings: dict[str, str] = {}


def book(env: Calendar, day: str, name: str, guests: int = 1) -> dict[str, object]:
    """Book a table on a day (YYYY-MM-DD) for a name."""
    if day in env.bookings:
        raise ValueError(f"{day} is already booked")
    env.bookings[day] = name
    return {"day": day, "name": name, "guests": guests}


def test_a_function_tool_is_described_by_its_signature_and_docstring() -> None:
    tool = FunctionTool(book)
    assert tool.name == "book" and tool.description == "Book a table on a day (YYYY-MM-DD) for a name."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "day": {"type": "string"},
            "name": {"type": "string"},
            "guests": {"type": "integer", "default": 1},
        },
        "required": ["day", "name"],
        "additionalProperties": False,
    }


def test_the_toolbox_records_every_call_and_never_lets_a_bad_one_run() -> None:
    box = ToolBox.build([FunctionTool(book)], Calendar(), episode_id="e", max_steps=3)
    box.begin_turn(1)
    box.attempt("original", 0)
    calls = [
        ToolCall("a", "book", '{"day": "2026-12-24", "name": "Ana"}'),
        ToolCall("b", "book", '{"day": "2026-12-24", "name": "Bo"}'),  # the tool raises
        ToolCall("c", "book", '{"day": "2026-12-25"}'),  # missing a required argument
        ToolCall("d", "cancel", "{}"),  # no such tool
        ToolCall("e", "book", "{day: 25}"),  # not JSON
        ToolCall("f", "book", '{"day": "2026-12-26", "name": "Cy", "guests": "many"}'),
    ]

    async def call_all() -> list[ToolResult]:
        return [await box.call(call) for call in calls]

    results = asyncio.run(call_all())
    assert [r.status for r in results] == ["ok", "error", "invalid", "invalid", "invalid", "invalid"]
    assert results[1].content == "Error: ValueError: 2026-12-24 is already booked"
    assert "name: Field required" in results[2].content
    assert results[3].content == "Error: there is no tool named 'cancel' (tools: book)"
    assert [row.status for row in box.rows] == [r.status for r in results]
    assert all(row.turn_idx == 1 and row.target == "original" for row in box.rows)
    env = box.environment
    assert isinstance(env, Calendar) and env.bookings == {"2026-12-24": "Ana"}
    # Another attempt at the turn starts from the world as it was before the turn.
    box.attempt("revision", 0)
    assert isinstance(box.environment, Calendar) and box.environment.bookings == {}


def test_a_tool_that_hangs_or_exits_costs_its_call_not_the_run() -> None:
    release = threading.Event()

    def wait_forever(env: Calendar, day: str) -> str:
        """Look at a day, and never come back."""
        env.bookings[day] = "ghost"  # the stuck call's write must not reach the episode's world
        release.wait(60)
        return "too late"

    def leave(env: Calendar) -> str:
        """Quit the interpreter."""
        raise SystemExit(3)

    tools = [FunctionTool(book), FunctionTool(wait_forever), FunctionTool(leave)]
    box = ToolBox.build(tools, Calendar(), episode_id="e", max_steps=3, timeout_s=0.3)
    box.begin_turn(1)
    box.attempt("original", 0)
    calls = [
        ToolCall("a", "book", '{"day": "2026-12-24", "name": "Ana"}'),
        ToolCall("b", "wait_forever", '{"day": "2026-12-25"}'),
        ToolCall("c", "leave", "{}"),
        ToolCall("d", "book", '{"day": "2026-12-26", "name": "Bo"}'),
    ]

    async def call_all() -> list[ToolResult]:
        return [await box.call(call) for call in calls]

    started = time.monotonic()
    try:
        results = asyncio.run(call_all())
    finally:
        release.set()
    assert time.monotonic() - started < 10
    assert [r.status for r in results] == ["ok", "error", "error", "ok"]
    assert results[1].content == "Error: wait_forever did not answer within 0.3 s"
    assert [row.error for row in box.rows][1:3] == ["timed out after 0.3 s", "SystemExit: 3"]
    env = box.environment
    assert isinstance(env, Calendar) and env.bookings == {"2026-12-24": "Ana", "2026-12-26": "Bo"}


def test_tool_scenarios_are_checked_when_defined() -> None:
    base = load_scenario("support-refund").scenario.model_dump(
        exclude={"checks", "tools", "environment", "derive"}
    )

    def undocumented(env: object, x: int) -> int:
        return x

    def untyped(env, x):  # type: ignore[no-untyped-def]
        """Does something."""
        return x

    def no_environment() -> int:
        """Takes nothing."""
        return 1

    for tool, message in [
        (undocumented, "needs a docstring"),
        (untyped, "parameter 'x' needs a type annotation"),
        (no_environment, "its first parameter receives the environment"),
    ]:
        with pytest.raises(ValueError, match=message):
            Scenario(**{**base, "variables": {}, "derive": None}, tools=[tool])


def test_a_broken_environment_is_a_scenario_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(
        "from dramaturg import Persona, Scenario, Stage\n"
        "def world(spec):\n    return {}['missing']\n"
        "def look(env: dict, key: str) -> str:\n    '''Look a key up.'''\n    return env[key]\n"
        "scenario = Scenario(name='b', description='d', assistant_prompt='p',\n"
        "    personas=[Persona(name='A', goal='g')],\n"
        "    stages=[Stage(name='s', instruction='i', terminal=True)],\n"
        "    tools=[look], environment=world)\n"
    )
    with pytest.raises(ScenarioError, match=r"field 'Scenario\.environment': KeyError"):
        load_scenario(str(path))


def test_requests_without_tools_keep_their_hashes_and_tools_change_them() -> None:
    plain = ModelRequest("sim", "sim", "assistant", "system", (Message("user", "hi"),))
    spec = ToolSpec.from_schema("book", "Book.", {"type": "object", "properties": {}})
    with_tools = ModelRequest("sim", "sim", "assistant", "system", (Message("user", "hi"),), tools=(spec,))
    assert plain.hash == "dh1-sha256:" + plain.hash.split(":")[1]
    assert plain.hash != with_tools.hash
    assert (
        with_tools.hash
        != ModelRequest(
            "sim", "sim", "assistant", "system", (Message("user", "hi"),), tools=(spec,), tool_choice="none"
        ).hash
    )


@pytest.fixture(scope="module")
def airline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("airline") / "airline.duckdb"
    summary = asyncio.run(run(RunConfig(scenarios=["airline-rebooking"], episodes=8, run_id="air"), db))
    assert summary.done == 8
    return db


def test_simulated_tools_are_answered_by_the_tool_simulator_within_their_schema(airline_run: Path) -> None:
    scenario = load_scenario("airline-rebooking").scenario
    schemas = {
        tool.name: tool.result_schema for tool in scenario.function_tools if isinstance(tool, SimulatedTool)
    }
    rows = query(airline_run, "SELECT tool, status, source, result FROM tool_calls")
    assert rows and all(source == "simulated" for _, _, source, _ in rows)
    valid = [(tool, json.loads(result)) for tool, status, _, result in rows if status == "ok"]
    assert {tool for tool, _ in valid} >= {"find_booking", "rebook_flight"}
    for tool, result in valid:
        jsonschema.validate(result, schemas[tool])
    # The simulator is told the episode's facts: a found booking is the traveller's own.
    found = query(
        airline_run,
        "SELECT t.result, e.spec FROM tool_calls t JOIN episodes e USING (episode_id) "
        "WHERE t.tool = 'find_booking' AND t.status = 'ok'",
    )
    for result, spec in found:
        assert json.loads(result)["booking_id"] == json.loads(spec)["variables"]["booking_id"]
    simulator_calls = query(airline_run, "SELECT count(*) FROM llm_calls WHERE role = 'tool_simulator'")[0][0]
    assert simulator_calls > 0


def test_a_simulated_result_that_breaks_its_schema_is_an_error_not_a_result() -> None:
    from dramaturg.agents import ToolSimulator
    from dramaturg.memory import Store, StoreWriter

    from dramaturg import FunctionBackend, ModelResponse
    from dramaturg._gateway import Gateway
    from dramaturg._model import GenerationParams, ModelSpec

    scenario = load_scenario("airline-rebooking").scenario
    tool = next(
        t for t in scenario.function_tools if isinstance(t, SimulatedTool) and t.name == "find_booking"
    )

    async def wrong(request: ModelRequest) -> ModelResponse:
        return ModelResponse(text='{"booking_id": 7}', input_tokens=1, output_tokens=1)

    async def main(db: Path) -> tuple[str, str, int]:
        store = Store.open(db)
        writer = StoreWriter(store)
        try:
            gateway = Gateway({"sim": FunctionBackend(wrong)}, writer, run_id="x", concurrency=1)
            simulator = ToolSimulator(
                gateway, ModelSpec("sim", "sim"), scenario.instantiate(1), "x/e/0", GenerationParams()
            )
            outcome = await simulator(tool, '{"booking_id": "QX-48213"}')
            return outcome.status, outcome.error or "", gateway.stats.calls
        finally:
            writer.close()
            store.close()

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        status, error, calls = asyncio.run(main(Path(folder) / "s.duckdb"))
    assert status == "error"
    assert "does not match its schema" in error
    assert calls == 2  # asked again once with another seed, then given up


def test_a_tool_model_that_keeps_failing_stops_the_run_naming_it(tmp_path: Path) -> None:
    sim = SimBackend()

    def answer(request: ModelRequest) -> Any:
        if request.role == "tool_simulator":
            return "Sure! The booking looks fine to me."  # prose, never the result's JSON
        return sim.complete(request)

    config = RunConfig(scenarios=["airline-rebooking"], episodes=6, run_id="air", concurrency=1)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(answer)}))
    assert summary.stopped is not None
    assert "tool_simulator (sim:sim): 12 of its last 12 replies did not parse" in summary.stopped
    assert summary.health is not None
    failed = {
        kinds.get("parse_failed", 0)
        for role, _, _, kinds in summary.health.by_role()
        if role == "tool_simulator"
    }
    assert failed == {12}
