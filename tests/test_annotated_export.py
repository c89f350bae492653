"""Export honours the annotators' verdicts from the viewer (issue 12): a rejected pair is left
out (``--include rejected`` brings it back), a flipped pair is exported the other way round,
and ``--only-accepted`` keeps only what an annotator accepted or flipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dramaturg.memory import annotate

from dramaturg import RunConfig, Store, run_sync
from tests.conftest import query


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    db = tmp_path_factory.mktemp("annotated") / "x.duckdb"
    run_sync(RunConfig(scenarios=["math-tutor", "support-refund"], episodes=6, run_id="r"), db)
    pairs = {p: (c, r) for p, c, r in query(db, "SELECT pair_id, chosen, rejected FROM preference_pairs")}
    assert len(pairs) >= 4
    return db, pairs


def exported(cli: Any, db: Path, out: Path, *options: str) -> tuple[str, dict[str, dict[str, Any]]]:
    result = cli("export", "--db", db, "--format", "dpo", "--out", out, *options)
    assert result.exit_code == 0, result.output
    rows = {row["pair_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    return result.output.strip(), rows


def test_verdicts_decide_what_the_dpo_export_holds(
    reviewed: tuple[Path, dict[str, tuple[str, str]]], tmp_path: Path, cli: Any
) -> None:
    db, pairs = reviewed
    _, before = exported(cli, db, tmp_path / "before.jsonl")
    rejected, flipped, accepted = list(before)[:3]
    with Store.open(db) as store:
        annotate(store, "pair", rejected, "reject", note="teaches the wrong thing")
        annotate(store, "pair", flipped, "flip")
        annotate(store, "pair", accepted, "accept")

    line, after = exported(cli, db, tmp_path / "after.jsonl")
    assert rejected not in after and "rejected 1" in line
    assert set(after) == set(before) - {rejected}
    chosen, rejected_text = pairs[flipped]
    assert after[flipped]["chosen"][0]["content"] == rejected_text  # the other way round
    assert after[flipped]["rejected"][0]["content"] == chosen
    assert after[accepted] == before[accepted]

    _, back = exported(cli, db, tmp_path / "back.jsonl", "--include", "rejected")
    assert set(back) == set(before)

    line, only = exported(cli, db, tmp_path / "only.jsonl", "--only-accepted")
    assert set(only) == {flipped, accepted}
    assert f"not_accepted {len(before) - 3}" in line

    # A later 'clear' withdraws a verdict: the pair is exported as the judges built it again.
    with Store.open(db) as store:
        annotate(store, "pair", rejected, "clear")
    _, cleared = exported(cli, db, tmp_path / "cleared.jsonl")
    assert rejected in cleared
