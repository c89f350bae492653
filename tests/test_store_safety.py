"""The store protects itself and the run scales lazily: regressions from issue 9.

A database another program made is refused untouched; a damaged store is one line from every
command; a run of a hundred million episodes starts at once in bounded memory; a second run
that repeats an earlier one's seed says so before it starts.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import dramaturg_subprocess

Cli = Callable[..., Any]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_foreign_duckdb_file_is_refused_byte_for_byte_untouched(tmp_path: Path, cli: Cli) -> None:
    db = tmp_path / "sales.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE sales (region VARCHAR, amount DOUBLE)")
    con.execute("INSERT INTO sales VALUES ('north', 12.5)")
    con.close()
    before = digest(db)

    for command in (
        ("run", "support-refund", "-n", "1"),
        ("stats",),
        ("view",),
        ("export", "--format", "sft", "--out", tmp_path / "out.jsonl"),
    ):
        result = cli(*command, "--db", db)
        assert result.exit_code == 1, (command, result.output)
        error = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert error == [
            f"error: {db}: not a dramaturg store (a DuckDB database with tables sales and no "
            "schema_migrations); it was left untouched. Pass another --db"
        ], result.output
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sales.duckdb"]


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    db = folder / "store.duckdb"
    process = dramaturg_subprocess("run", "support-refund", "-n", "4", "--db", str(db))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    with db.open("r+b") as file:
        file.truncate(db.stat().st_size // 2)
    return db


@pytest.mark.parametrize(
    "command",
    [
        ("run", "support-refund", "-n", "1"),
        ("resume", "any-run"),
        ("stats",),
        ("view",),
        ("export", "--format", "dpo", "--out", "pairs.jsonl"),
    ],
    ids=lambda command: command[0],
)
def test_a_truncated_store_is_one_line_and_a_nonzero_exit(
    truncated: Path, cli: Cli, command: tuple[str, ...]
) -> None:
    result = cli(*command, "--db", truncated)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {truncated}: cannot read the store, the file is damaged, truncated")
    assert lines[0].endswith("restore it from a copy or pass another --db")


def test_a_run_repeating_an_earlier_seed_says_so_before_it_starts(tmp_path: Path, cli: Cli) -> None:
    db = tmp_path / "twice.duckdb"
    first = cli("run", "support-refund", "-n", "2", "--best-of-n", "0", "--run-id", "first", "--db", db)
    assert first.exit_code == 0, first.output
    assert "repeats the episodes" not in first.output

    second = cli(
        "run", "support-refund", "math-tutor", "-n", "2", "--best-of-n", "0", "--run-id", "second", "--db", db
    )
    assert second.exit_code == 0, second.output
    notice = (
        "note: seed 0 repeats the episodes of earlier runs in this store: first (support-refund); "
        "export leaves out repeated dialogues as duplicates. Pass --seed N to stage new ones."
    )
    assert notice in second.output
    assert second.output.index(notice) < second.output.index("episodes")

    other_seed = cli("run", "support-refund", "-n", "1", "--seed", "7", "--run-id", "third", "--db", db)
    assert "repeats the episodes" not in other_seed.output
    resumed = cli("resume", "second", "--db", db)
    assert "repeats the episodes" not in resumed.output


def test_a_huge_run_starts_at_once_in_bounded_memory_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "huge.duckdb"
    process = dramaturg_subprocess(
        "run", "support-refund", "-n", "100000000", "--run-id", "huge", "--best-of-n", "0", "--db", str(db)
    )
    peak_mib = 0.0
    started = time.monotonic()
    while time.monotonic() - started < 10:
        peak_mib = max(peak_mib, _rss_mib(process.pid))
        time.sleep(0.25)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Resume with: dramaturg resume huge" in stderr
    assert peak_mib < 400, f"peak RSS {peak_mib:.0f} MiB"
    con = duckdb.connect(str(db), read_only=True)
    done = con.execute("SELECT count(*) FROM episodes WHERE status = 'done'").fetchone()
    con.close()
    assert done is not None and done[0] > 0, "no episode finished in the first 10 s"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
