"""The foundation's acceptance: staged episodes land complete and reproducible in DuckDB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import pytest
from dramaturg.evaluators import is_role_flip

from dramaturg import BackendError, FunctionBackend, ModelRequest, RunConfig, Store, run
from tests.conftest import dialogues


def _assert_well_formed(turns: list[tuple[str, str]]) -> None:
    roles = [role for role, _ in turns]
    assert roles[0] == "user"
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles
    assert len(roles) >= 4, "at least two exchanges"
    assert all(content.strip() for _, content in turns)


def test_run_twenty_support_episodes(cli, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    result = cli("run", "support-refund", "--episodes", "20", "--db", db)
    assert result.exit_code == 0, result.output
    assert "20 done, 0 failed" in result.output
    con = duckdb.connect(str(db), read_only=True)
    statuses = con.execute("SELECT status, count(*) FROM episodes GROUP BY 1").fetchall()
    reasons = {r for (r,) in con.execute("SELECT DISTINCT termination_reason FROM episodes").fetchall()}
    backends = {b for (b,) in con.execute("SELECT DISTINCT backend FROM llm_calls").fetchall()}
    linked = con.execute("SELECT count(*) FROM turns WHERE call_id NOT IN (SELECT call_id FROM llm_calls)")
    unlinked = linked.fetchone()
    con.close()
    assert statuses == [("done", 20)]
    assert reasons <= {"terminal_stage", "user_ended", "user_transferred", "max_turns"}
    assert backends == {"sim"}
    assert unlinked == (0,)
    episodes = dialogues(db)
    assert len(episodes) == 20
    for turns in episodes.values():
        _assert_well_formed(turns)
    openers = {turns[0][1] for turns in episodes.values()}
    assert len(openers) >= 15, f"only {len(openers)} distinct opening messages"


def test_same_seed_and_run_id_reproduce_turns_exactly(cli, tmp_path: Path) -> None:
    args = ("run", "math-tutor", "support-refund", "-n", "6", "--seed", "11", "--run-id", "r1")
    assert cli(*args, "--db", tmp_path / "a.duckdb").exit_code == 0
    assert cli(*args, "--db", tmp_path / "b.duckdb").exit_code == 0
    assert (
        cli(
            "run",
            "math-tutor",
            "support-refund",
            "-n",
            "6",
            "--seed",
            "12",
            "--run-id",
            "r1",
            "--db",
            tmp_path / "c.duckdb",
        ).exit_code
        == 0
    )
    a, b, c = (dialogues(tmp_path / f"{name}.duckdb") for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    differing = sum(a[key] != c[key] for key in a)
    assert differing == len(a), "another seed must give different dialogues"


def test_rerun_of_a_done_run_pays_nothing(cli, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert cli("run", "math-tutor", "-n", "3", "--run-id", "again", "--db", db).exit_code == 0
    result = cli("run", "math-tutor", "-n", "3", "--run-id", "again", "--db", db)
    assert result.exit_code == 0
    assert "0 done, 0 failed (3 already done)" in result.output
    assert "0 model calls" in result.output


def test_bad_inputs_exit_2_and_write_nothing(cli, tmp_path: Path) -> None:
    db = tmp_path / "never.duckdb"
    unknown = cli("run", "no-such-scenario", "--db", db)
    assert unknown.exit_code == 2
    assert "unknown scenario 'no-such-scenario'" in unknown.output
    missing = cli("run", str(tmp_path / "missing.py"), "--db", db)
    assert missing.exit_code == 2
    assert "no such scenario file" in missing.output
    bad_model = cli("run", "support-refund", "--model", "gpt5", "--db", db)
    assert bad_model.exit_code == 2
    assert "unknown backend 'gpt5'" in bad_model.output
    assert not db.exists()


def test_scenarios_command_lists_builtins(cli) -> None:
    result = cli("scenarios")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["support-refund", "math-tutor", "airline-rebooking"]


def test_role_flipped_user_turns_are_rejected_regenerated_and_counted(tmp_path: Path) -> None:
    config = RunConfig(scenarios=["support-refund"], episodes=8, sim_role_flip_rate=0.5)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    with Store.open(tmp_path / "x.duckdb") as store:
        stored_user_turns = [text for (text,) in store.sql("SELECT content FROM turns WHERE role = 'user'")]
        rejected = store.sql("SELECT reason, kind, attempt, content FROM turn_rejections WHERE kind = 'user'")
        endings = dict(store.sql("SELECT termination_reason, count(*) FROM episodes GROUP BY ALL"))
        flagged = store.sql("SELECT count(*) FROM turns WHERE role_flip")[0][0]
    # Half the sim's user turns are in the assistant's voice; none reaches the dialogue.
    assert rejected and {reason for reason, *_ in rejected} == {"role_flip"}
    assert summary.rejected_turns["role_flip"] == len(rejected)
    assert not any(is_role_flip(text) for text in stored_user_turns)
    assert flagged == 0
    # Regenerations succeed mostly; a turn that flips on every attempt ends its episode.
    assert {attempt for _, _, attempt, _ in rejected} >= {0, 1}
    assert sum(endings.values()) == 8
    assert endings.get("invalid_turn", 0) == summary.invalid_turn_episodes < 8


def test_backend_failure_marks_episodes_failed_and_keeps_the_reason(tmp_path: Path) -> None:
    def broken(request: ModelRequest) -> str:
        raise BackendError("model exploded", kind="server")

    config = RunConfig(scenarios=["math-tutor"], episodes=2, concurrency=2)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(broken)}))
    assert summary.failed == 2
    with Store.open(tmp_path / "x.duckdb") as store:
        rows = store.sql("SELECT status, termination_reason, error FROM episodes")
        errors = store.sql("SELECT count(*), min(error_kind) FROM llm_calls WHERE status = 'error'")[0]
        oks = store.sql("SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
    assert {(status, reason) for status, reason, _ in rows} == {("failed", "error")}
    assert all("model exploded" in error for _, _, error in rows)
    assert errors[1] == "server" and errors[0] >= 2
    assert oks == 0


def test_fatal_backend_error_stops_the_run_and_leaves_it_resumable(tmp_path: Path) -> None:
    def unauthorized(request: ModelRequest) -> str:
        raise BackendError("invalid x-api-key", kind="auth", status=401)

    config = RunConfig(scenarios=["math-tutor"], episodes=5, concurrency=1, run_id="r")
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(unauthorized)}))
    assert summary.stopped is not None and "auth" in summary.stopped
    assert summary.done == summary.failed == 0
    resumed = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert resumed.done == 5


@pytest.fixture(autouse=True)
def _instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry delays are policy, tested on their own; here they would only slow the suite."""
    from dramaturg import _gateway

    monkeypatch.setattr(_gateway.RetryPolicy, "delay", lambda self, attempt, retry_after, rng: 0.0)


def test_view_shows_an_episode_with_its_revisions(cli, tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert (
        cli(
            "run", "math-tutor", "-n", "2", "--run-id", "v", "--sim-mistake-rate", "0.6", "--db", db
        ).exit_code
        == 0
    )
    shown = cli("view", "v/math-tutor/00000", "--db", db)
    assert shown.exit_code == 0, shown.output
    with Store.open(db) as store:
        first_user = store.sql(
            "SELECT content FROM turns WHERE episode_id = 'v/math-tutor/00000' AND idx = 0"
        )[0][0]
        originals = store.sql("SELECT original FROM revisions WHERE episode_id = 'v/math-tutor/00000'")
    assert first_user[:40] in shown.output
    assert "persona" in shown.output
    assert all(f"original: {original[:30]}" in shown.output for (original,) in originals)
    missing = cli("view", "v/math-tutor/99999", "--db", db)
    assert missing.exit_code == 2
    assert "no episode 'v/math-tutor/99999'" in missing.output
