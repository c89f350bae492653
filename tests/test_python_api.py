"""The Python API for scripts and notebooks: Scenario objects, run_sync, per-episode records."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from dramaturg import EpisodeRecord, Persona, RunConfig, Scenario, Stage, run, run_sync
from tests.conftest import query

GREETER = Scenario(
    name="greeter",
    description="A visitor asks a museum guide for the opening hours.",
    assistant_prompt="You are a museum guide. Be brief and friendly.",
    personas=[Persona(name="Dana", goal="find out when the museum opens on Sunday")],
    stages=[
        Stage(name="ask", instruction="Ask when the museum opens on Sunday."),
        Stage(name="close", instruction="Thank the guide.", terminal=True),
    ],
)


def test_run_sync_runs_a_scenario_built_in_code_from_a_plain_script(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from dramaturg import Persona, RunConfig, Scenario, Stage, run_sync

            scenario = Scenario(
                name="greeter",
                description="A visitor asks a museum guide for the opening hours.",
                assistant_prompt="You are a museum guide. Be brief and friendly.",
                personas=[Persona(name="Dana", goal="find out when the museum opens on Sunday")],
                stages=[
                    Stage(name="ask", instruction="Ask when the museum opens on Sunday."),
                    Stage(name="close", instruction="Thank the guide.", terminal=True),
                ],
            )
            summary = run_sync(RunConfig(scenarios=[scenario], episodes=3), "x.duckdb")
            print(summary.done, summary.failed)
            """
        )
    )
    printed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=True
    )
    assert printed.stdout.split() == ["3", "0"]
    assert query(tmp_path / "x.duckdb", "SELECT DISTINCT scenario FROM episodes") == [("greeter",)]
    assert query(tmp_path / "x.duckdb", "SELECT config->'scenarios' FROM runs") == [('["object:greeter"]',)]


def test_each_episode_hands_over_its_record(tmp_path: Path) -> None:
    records: list[EpisodeRecord] = []
    config = RunConfig(scenarios=[GREETER, "math-tutor"], episodes=2, run_id="r")
    summary = run_sync(config, tmp_path / "x.duckdb", on_episode=records.append)
    assert summary.done == 4 and len(records) == 4
    stored = dict(query(tmp_path / "x.duckdb", "SELECT episode_id, n_turns FROM episodes"))
    pairs = dict(query(tmp_path / "x.duckdb", "SELECT episode_id, count(*) FROM preference_pairs GROUP BY 1"))
    for record in records:
        assert record.status == "done" and record.scenario in {"greeter", "math-tutor"}
        assert len(record.turns) == stored[record.episode_id]
        assert [t.role for t in record.turns][:2] == ["user", "assistant"]
        assert len(record.pairs) == pairs.get(record.episode_id, 0)


def test_a_run_of_scenario_objects_resumes_from_python_not_from_the_cli(tmp_path: Path, cli: Any) -> None:
    db = tmp_path / "x.duckdb"
    run_sync(RunConfig(scenarios=[GREETER], episodes=2, run_id="obj"), db)
    again = run_sync(RunConfig(scenarios=[GREETER], episodes=3, run_id="obj").with_changes(episodes=2), db)
    assert again.skipped == 2 and again.done == 0
    result = cli("resume", "obj", "--db", db)
    assert result.exit_code == 2
    assert "scenario 'greeter' was a Scenario object built in Python" in result.output


def test_run_sync_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    # A notebook cell runs inside an event loop: run_sync gives the run a loop of its own.
    async def cell() -> int:
        return run_sync(RunConfig(scenarios=[GREETER], episodes=1), tmp_path / "x.duckdb").done

    assert asyncio.run(cell()) == 1
    assert asyncio.run(run(RunConfig(scenarios=[GREETER], episodes=1), tmp_path / "y.duckdb")).done == 1
