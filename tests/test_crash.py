"""SIGKILL in the middle of a run leaves a store that opens, with only complete 'done' episodes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import duckdb

from tests.conftest import dialogues, dramaturg_subprocess


def test_sigkill_mid_run_leaves_complete_done_episodes_and_rerun_resumes(tmp_path: Path, cli) -> None:
    db = tmp_path / "crash.duckdb"
    args = (
        "run",
        "support-refund",
        "math-tutor",
        "-n",
        "60",  # enough that 3 s of a fast machine cannot finish the run before the kill
        "--run-id",
        "crash",
        "--best-of-n",
        "0",
        "--concurrency",
        "4",
    )
    process = dramaturg_subprocess(*args, "--db", str(db))
    # Wait until the store exists and has had time to commit some episodes, then kill hard.
    deadline = time.monotonic() + 60
    while not db.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    con = duckdb.connect(str(db))  # opens (replaying the WAL) without error
    counts = dict(con.execute("SELECT status, count(*) FROM episodes GROUP BY 1").fetchall())
    n_turns = dict(con.execute("SELECT episode_id, n_turns FROM episodes WHERE status = 'done'").fetchall())
    con.close()
    assert counts.get("done", 0) > 0, counts
    assert sum(counts.values()) < 120, "killed mid-run"
    done = dialogues(db)
    assert done.keys() == n_turns.keys()
    for episode_id, turns in done.items():
        assert len(turns) == n_turns[episode_id]
        assert [role for role, _ in turns] == ["user", "assistant"] * (len(turns) // 2)

    resumed = cli(*args, "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert f"({counts['done']} already done)" in resumed.output
    con = duckdb.connect(str(db), read_only=True)
    final = con.execute("SELECT status, count(*) FROM episodes GROUP BY 1").fetchall()
    con.close()
    assert final == [("done", 120)]
