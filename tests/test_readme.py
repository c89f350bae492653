"""The README's scenario example is real: it is extracted and run here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.conftest import REPO, dialogues


def readme_example(heading: str = "## Write a scenario") -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"README has no python block under '{heading}'"
    return match.group(1)


def test_readme_scenario_runs_from_a_file(cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_scenario.py").write_text(readme_example())
    monkeypatch.chdir(tmp_path)
    result = cli("run", "./my_scenario.py", "--episodes", "3", "--db", "x.duckdb")
    assert result.exit_code == 0, result.output
    assert "3 done, 0 failed" in result.output
    episodes = dialogues(tmp_path / "x.duckdb")
    assert len(episodes) == 3
    assert all(len(turns) >= 4 for turns in episodes.values())


def test_readme_tool_scenario_calls_its_tools(cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "library.py").write_text(readme_example("## Scenarios with tools"))
    monkeypatch.chdir(tmp_path)
    result = cli("run", "library.py", "-n", "3", "--db", "lib.duckdb")
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(tmp_path / "lib.duckdb"), read_only=True)
    try:
        calls = dict(
            con.execute("SELECT tool, count(*) FROM tool_calls WHERE status = 'ok' GROUP BY 1").fetchall()
        )
        checked = con.execute("SELECT count(*) FROM checks WHERE name = 'renews_only_what_may_be_renewed'")
        (checks,) = checked.fetchone() or (0,)
    finally:
        con.close()
    assert calls.get("lookup_loan", 0) > 0 and calls.get("renew_loan", 0) > 0
    assert checks > 0
    # The summary counts every call, valid or not, as the table does.
    con = duckdb.connect(str(tmp_path / "lib.duckdb"), read_only=True)
    (total,) = con.execute("SELECT count(*) FROM tool_calls").fetchone() or (0,)
    con.close()
    (line,) = [line for line in result.output.splitlines() if line.startswith("tools")]
    assert line.split()[1:3] == [str(total), "calls:"]


def test_readme_python_example_prints_what_the_readme_shows(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "run_api.py").write_text(readme_example("### From Python"))
    monkeypatch.chdir(tmp_path)
    printed = subprocess.run(
        [sys.executable, "run_api.py"], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    section = (REPO / "README.md").read_text().split("### From Python", 1)[1]
    shown = re.search(r"```\n(.*?)```", section.split("```python", 1)[1].split("```", 1)[1], re.S)
    assert shown and printed == shown.group(1)


def test_readme_python_api_example_runs_a_scenario_built_in_code(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "museum.py").write_text(readme_example("## See it work: the viewer, review, live runs"))
    monkeypatch.chdir(tmp_path)
    printed = subprocess.run(
        [sys.executable, "museum.py"], capture_output=True, text=True, timeout=300, check=True
    ).stdout.splitlines()
    assert len(printed) == 3 and all(line.split()[1] == "done" for line in printed)


def test_readme_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = re.search(r"## Install\s+```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    test = re.search(r"## Test\s+```(?:bash|sh)?\n(.+?)\n```", readme, re.S)
    assert install and test
    assert install.group(1).strip() in ci
    assert test.group(1).strip() in ci
