"""Shared fixtures. Everything runs offline on the sim backend unless a test starts the fake API."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from dramaturg._cli import app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke the dramaturg CLI in-process; returns typer's Result."""
    runner = CliRunner()

    def invoke(*args: str) -> object:
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def dramaturg_subprocess(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    """Run the CLI as a real process (for signals)."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", "from dramaturg._cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def dialogues(db: Path, run_id: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """episode_id -> [(role, content), ...] for every 'done' episode."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT t.episode_id, t.role, t.content FROM turns t JOIN episodes e USING (episode_id) "
            "WHERE e.status = 'done' AND (? IS NULL OR e.run_id = ?) ORDER BY t.episode_id, t.idx",
            [run_id, run_id],
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[str, str]]] = {}
    for episode_id, role, content in rows:
        out.setdefault(episode_id, []).append((role, content))
    return out


LIVE_ENV = ("DRAMATURG_LIVE_BASE_URL", "DRAMATURG_LIVE_MODEL")


@pytest.fixture(scope="session")
def live_model() -> tuple[str, str]:
    """(base URL, model id) of a real OpenAI-compatible server, or skip the test.

    `.ci/run` starts the local Qwen2.5-Coder 0.5B server (../shared/local-llm) and sets both.
    """
    import os

    base_url, model = (os.environ.get(name) for name in LIVE_ENV)
    if not (base_url and model):
        pytest.skip(f"no live model: set {' and '.join(LIVE_ENV)} (see .ci/run)")
    return base_url, model
