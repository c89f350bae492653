"""Judge calibration on the shipped probes: the numbers mean what they say."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dramaturg import FunctionBackend, ModelRequest, Store
from dramaturg._calibrate import CalibrationRun, load_probes, run_calibration, spread
from dramaturg._errors import ConfigError
from dramaturg._markers import CRITIC_HEADER, RESPONSE_A_OPEN, RESPONSE_B_OPEN


def _replies(request: ModelRequest) -> tuple[str, str]:
    text = request.messages[0].content
    first = text.split(RESPONSE_A_OPEN, 1)[1].split("RESPONSE A>>>", 1)[0].strip()
    second = text.split(RESPONSE_B_OPEN, 1)[1].split("RESPONSE B>>>", 1)[0].strip()
    return first, second


def judge_backend(pick: Callable[[str, str], str]) -> FunctionBackend:
    """A judge that picks with ``pick(first, second)``; a critic that scores by length."""
    good = {p.good for p in load_probes()}

    def answer(request: ModelRequest) -> str:
        if request.system.startswith(CRITIC_HEADER):
            reply = request.messages[0].content.split("<<<REPLY", 1)[1]
            score = 9 if any(g in reply for g in good) else 3
            rubric = json.loads(request.response_format.schema)["properties"]["scores"]["required"]  # type: ignore[union-attr]
            return json.dumps({"feedback": "ok", "scores": dict.fromkeys(rubric, score), "overall": score})
        first, second = _replies(request)
        return json.dumps({"reason": "because", "winner": pick(first, second)})

    return FunctionBackend(answer)


def calibrate(tmp_path: Path, backend: FunctionBackend, **settings: Any) -> Any:
    config = CalibrationRun(judge="sim:judge", **settings)
    return asyncio.run(run_calibration(config, tmp_path / "c.duckdb", backends={"sim": backend}))


def test_the_shipped_probes_cover_six_flaw_kinds() -> None:
    probes = load_probes()
    kinds = {p.kind for p in probes}
    assert len(probes) >= 60 and len(kinds) >= 6
    assert {p.kind for p in spread(probes, 6)} == kinds  # a small calibration still sees every kind


def test_a_perfect_judge_scores_one_everywhere(tmp_path: Path) -> None:
    good = {p.good for p in load_probes()}
    _, report, calls = calibrate(tmp_path, judge_backend(lambda a, b: "A" if a in good else "B"))
    assert report.accuracy() == report.position_consistency == 1.0
    assert report.tie_rate == 0.0 and report.length_bias() == (1.0, 1.0)
    assert report.survivor_accuracy == report.coverage == 1.0
    assert calls.calls == 4 * len(report.results)  # two judgments and two critiques per probe


def test_a_judge_that_always_says_a_is_exposed_and_abstaining_rescues_nothing(tmp_path: Path) -> None:
    _, report, _ = calibrate(tmp_path, judge_backend(lambda a, b: "A"))
    assert report.accuracy() == 0.5  # right in one order only
    assert report.position_consistency == 0.0  # every verdict flips with the order
    assert report.coverage == 0.0 and report.survivor_accuracy is None


def test_a_judge_that_prefers_the_longer_reply_shows_length_bias(tmp_path: Path) -> None:
    _, report, _ = calibrate(
        tmp_path, judge_backend(lambda a, b: "A" if len(a) >= len(b) else "B"), margin=False
    )
    flawed_longer, flawed_shorter = report.length_bias()
    assert flawed_longer == 0.0 and flawed_shorter == 1.0
    assert report.critic is None


def test_results_are_stored_and_a_rerun_is_free(tmp_path: Path) -> None:
    backend = judge_backend(lambda a, b: "tie")
    first_id, report, calls = calibrate(tmp_path, backend, limit=12)
    assert report.tie_rate == 1.0 and calls.calls == 48
    second_id, _, again = calibrate(tmp_path, backend, limit=12)
    assert again.calls == 0 and again.cache_hits == 48
    with Store.open(tmp_path / "c.duckdb", read_only=True) as store:
        rows = store.sql(
            "SELECT run_id, value, detail FROM metrics WHERE name = 'calibration_tie_rate' ORDER BY run_id"
        )
        kinds = store.sql(
            "SELECT count(*) FROM metrics WHERE run_id = ? AND scenario IS NOT NULL", [first_id]
        )
    assert {row[0] for row in rows} == {first_id, second_id}
    assert json.loads(rows[0][2])["judge"] == "sim:judge" and rows[0][1] == 1.0
    assert kinds == [(6,)]


def test_own_probes_are_validated_with_file_line_and_field(tmp_path: Path) -> None:
    probes = tmp_path / "mine.jsonl"
    good = {"id": "x", "kind": "k", "system": "s", "conversation": [{"role": "user", "content": "q"}]}
    probes.write_text(json.dumps({**good, "good": "a", "flawed": "b"}) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ConfigError, match=r"mine.jsonl:2: field 'good': Field required"):
        load_probes(probes)


def test_calibrate_cli_prints_the_report_and_run_notes_an_uncalibrated_judge(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No key and no base URL: the run refuses to start (no network), after the note.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    db = tmp_path / "c.duckdb"
    result = cli("calibrate", "--judge-model", "sim", "--db", db, "--limit", "6")
    assert result.exit_code == 0, result.output
    for label in ("accuracy", "position", "length", "ties", "kept"):
        assert any(line.startswith(label) for line in result.output.splitlines()), label
    # A real judge that was never calibrated here is named before a run starts.
    note = cli("run", "support-refund", "-n", "1", "--judge-model", "openai:gpt-x", "--db", db)
    assert "judge openai:gpt-x was never calibrated in this store" in note.output
    assert note.exit_code == 2 and "OPENAI_API_KEY is not set" in note.output
