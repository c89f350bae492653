"""Shared fixtures. Everything runs offline on the sim backend unless a test starts the fake API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from dramaturg._cli import app
from dramaturg.testing import FakeAPI, FakeAPIConfig

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


def query(db: Path, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
    """Rows of one query on a store, opened read-only and closed again."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@contextmanager
def fake_api_with_responders(
    config: FakeAPIConfig, folder: Path, module: str, source: str
) -> Iterator[FakeAPI]:
    """The fake API, able to import the responders in ``source`` as ``module``."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    with pytest.MonkeyPatch.context() as patch:
        existing = os.environ.get("PYTHONPATH")
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), existing])))
        fake = FakeAPI.start(config)
    with fake:
        yield fake


def point_sdks_at(fake: FakeAPI, config: FakeAPIConfig, monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    """Reset the fake to ``config`` and point both SDKs at it, with test keys."""
    fake.configure(**config.model_dump())
    fake.reset()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return fake


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
