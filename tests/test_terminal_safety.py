"""Model and scenario text is data on the terminal: no control sequences, no Rich markup (issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

from dramaturg._terminal import plain, safe
from tests.conftest import dramaturg_subprocess, query

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(1)> \x1b[2J [/bold] [red]"

SCENARIO = """
from dramaturg import Persona, Scenario, Stage

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(1)> \\x1b[2J [/bold] [red]"
scenario = Scenario(
    name="hostile",
    description="A visitor with a strange name asks a question.",
    assistant_prompt="You are a museum guide. Be brief.",
    personas=[Persona(name="Eve " + HOSTILE, goal="find out the opening hours " + HOSTILE)],
    stages=[
        Stage(name="ask", instruction="Ask when the museum opens."),
        Stage(name="close", instruction="Thank the guide.", terminal=True),
    ],
)
"""


def test_control_sequences_go_and_markup_is_escaped() -> None:
    assert plain("a\x1b[2Jb\x1b]0;title\x07c\x07d\x9be\tf\ng") == "abcde\tf\ng"
    assert safe("[/bold] x") == "\\[/bold] x"


def test_the_summary_and_view_print_hostile_text_literally(cli: Any, tmp_path: Path) -> None:
    scenario = tmp_path / "hostile.py"
    scenario.write_text(SCENARIO)
    db = tmp_path / "x.duckdb"
    run_id = "r[/bold]\x1b[2J<script>"
    result = cli("run", str(scenario), "-n", "2", "--run-id", run_id, "--db", db)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "run       r[/bold]<script> -> " in result.output  # literal, markup and all

    viewed = cli("view", f"{run_id}/hostile/00000", "--db", db)
    assert viewed.exit_code == 0, viewed.output
    assert "\x1b" not in viewed.output
    assert (
        "persona Eve <script>alert(1)</script> <img src=x onerror=alert(1)>  [/bold] [red]" in viewed.output
    )
    assert "r[/bold]<script>/hostile/00000" in viewed.output

    missing = cli("view", "nope[/bold]\x1b[2J", "--db", db)
    assert missing.exit_code == 2
    assert "no episode 'nope[/bold]'" in missing.output and "\x1b" not in missing.output


def test_view_shows_why_a_turn_was_revised(cli: Any, tmp_path: Path) -> None:
    # A reply revised because a check failed must not read as "critic 8.0, fine as it is".
    db = tmp_path / "x.duckdb"
    assert cli("run", "math-tutor", "-n", "6", "--sim-mistake-rate", "1", "--db", db).exit_code == 0
    failed = query(
        db,
        "SELECT episode_id, name, target FROM checks WHERE NOT passed AND turn_idx IS NOT NULL LIMIT 1",
    )
    assert failed, "the planted mistakes should fail a check"
    episode, name, target = failed[0]
    viewed = cli("view", episode, "--db", db)
    assert f"check: failed {name} ({target})" in viewed.output


def test_a_run_without_a_terminal_reports_progress_on_a_line_of_its_own(tmp_path: Path) -> None:
    env = {**os.environ, "DRAMATURG_PROGRESS_EVERY": "0.5"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dramaturg",
            "run",
            "support-refund",
            "-n",
            "30",
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress  ")]
    assert lines, result.stderr
    finished = [int(line.split()[1].split("/")[0]) for line in lines]
    assert all(line.split()[1].endswith("/30") for line in lines)
    assert finished == sorted(finished)
    assert all("calls ·" in line and "tokens ·" in line and "episodes/min" in line for line in lines)


def test_a_store_held_by_a_run_is_one_line_naming_it(cli: Any, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    running = dramaturg_subprocess("run", "math-tutor", "-n", "2000", "--db", str(db))
    try:
        for _ in range(300):
            if query_fails(db):
                break
            time.sleep(0.1)
        for command in (
            ["stats"],
            ["view"],
            ["export", "--format", "sft", "--out", str(tmp_path / "o.jsonl")],
        ):
            result = cli(*command, "--db", db)
            assert result.exit_code == 1, result.output
            (line,) = result.output.strip().splitlines()
            assert f"is held by a running process (PID {running.pid}: " in line
            assert "run math-tutor -n 2000" in line and "--serve" in line
    finally:
        running.send_signal(signal.SIGINT)
        running.communicate(timeout=60)


def query_fails(db: Path) -> bool:
    """Whether the store exists and another process holds it."""
    if not db.exists():
        return False
    try:
        duckdb.connect(str(db), read_only=True).close()
    except duckdb.Error:
        return True
    return False
