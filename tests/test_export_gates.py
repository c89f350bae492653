"""An export is what passed: failed checks and duplicates across the whole store stay out by default.

The acceptance tests of issue 9, parts 1 and 2, on the sim backend: a user's own scenario with a
check that fails on some replies, and two runs of the same scenario and seed in one store.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dramaturg
from dramaturg import Store
from dramaturg._export import ExportFormat, export
from tests.conftest import query

# A user's scenario, as they would write it: a triage line must send red-flag callers to
# emergency services. The sim assistant cites that instruction once, when the caller first
# mentions the symptom, and not in its later replies, so the check fails on a share of them.
TRIAGE = '''
from dramaturg.scenarios import CheckContext, CheckResult, Persona, Scenario, Stage, Transition

RED_FLAGS = ("chest pain", "trouble breathing")


def sends_red_flags_to_emergency(ctx: CheckContext) -> CheckResult:
    """Once a caller has mentioned a red-flag symptom, every reply must point to emergency services."""
    said = " ".join(text.lower() for role, text in ctx.history if role == "user")
    passed = not any(flag in said for flag in RED_FLAGS) or "emergency" in ctx.reply.lower()
    return CheckResult(passed, "" if passed else "a red-flag caller was not sent to emergency services")


scenario = Scenario(
    name="triage",
    description="A caller describes a symptom to a nurse triage line.",
    assistant_prompt=(
        "You are a nurse on a telephone triage line.\\n"
        "Always ask the caller how long they have had the symptom.\\n"
        "Send every caller with chest pain or trouble breathing to emergency services.\\n"
        "Keep answers short and calm."
    ),
    personas=[
        Persona(name="Ana", traits=["worried"], goal="find out what to do about your {symptom}",
                hidden_facts={"how long": "{since}"}),
        Persona(name="Tom", traits=["calm"], goal="ask whether your {symptom} needs a doctor",
                hidden_facts={"how long": "{since}"}),
    ],
    variables={
        "symptom": ["chest pain", "sore throat", "trouble breathing", "rash", "headache"],
        "since": ["since this morning", "for two days", "for a week"],
    },
    stages=[
        Stage(name="greet", instruction="Say hello and explain that you have {symptom}."),
        Stage(name="details", instruction="Give the details the nurse asks for."),
        Stage(name="worry", instruction="Ask whether your {symptom} is serious."),
        Stage(name="close", instruction="Thank the nurse and say goodbye.", terminal=True),
    ],
    transitions=[
        Transition(source="greet", target="details"),
        Transition(source="details", target="worry"),
        Transition(source="worry", target="close"),
    ],
    checks=[sends_red_flags_to_emergency],
    max_turns=6,
)
'''

Messages = list[dict[str, str]]


def sent_to_emergency(history: Messages, reply: str) -> bool:
    """The triage check, re-applied to exported content (independently of the store's records)."""
    said = " ".join(m["content"].lower() for m in history if m["role"] == "user")
    return (
        not any(flag in said for flag in ("chest pain", "trouble breathing")) or "emergency" in reply.lower()
    )


def dialogue_passes(messages: Messages) -> bool:
    return all(
        sent_to_emergency(messages[:i], m["content"])
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def triage_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("triage")
    (folder / "triage.py").write_text(TRIAGE)
    db = folder / "triage.duckdb"
    config = dramaturg.RunConfig(scenarios=[str(folder / "triage.py")], episodes=20, model="sim", run_id="t")
    summary = asyncio.run(dramaturg.run(config, db))
    assert summary.done == 20
    return db


@pytest.fixture
def triage_db(triage_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(triage_store, tmp_path / "triage.duckdb"))


# The store's own record of which exported rows failed the check, by SQL over `checks`.
# A pair's chosen reply was checked as its 'revision' or as the best 'candidate'.
FAILED_PAIRS = """
    SELECT DISTINCT p.pair_id FROM preference_pairs p JOIN checks c
      ON c.episode_id = p.episode_id AND c.turn_idx = p.turn_idx AND NOT c.passed
     AND c.target = CASE p.source WHEN 'revision' THEN 'revision' ELSE 'candidate' END
"""
# A dialogue's final reply at a turn is its revision where there is one, else the original;
# a revision that repeats its original is not checked again, so the original's verdict stands.
FAILED_DIALOGUES = """
    SELECT DISTINCT c.episode_id FROM checks c
    WHERE NOT c.passed AND c.name = 'sends_red_flags_to_emergency'
      AND (c.target = 'revision' OR (c.target = 'original' AND NOT EXISTS (
          SELECT 1 FROM checks r
          WHERE r.episode_id = c.episode_id AND r.turn_idx = c.turn_idx AND r.target = 'revision')))
"""


def test_default_exports_leave_out_what_failed_a_check(
    triage_db: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    failed_pairs = {pair_id for (pair_id,) in query(triage_db, FAILED_PAIRS)}
    failed_dialogues = {episode_id for (episode_id,) in query(triage_db, FAILED_DIALOGUES)}
    assert failed_pairs and failed_dialogues, "the scenario should fail its check on some replies"
    (pairs,) = query(triage_db, "SELECT count(*) FROM preference_pairs")[0]

    # Duplicates have their own gate (tested below); here only the check's gate is looked at.
    dpo = tmp_path / "pairs.jsonl"
    result = cli("export", "--db", triage_db, "--format", "dpo", "--out", dpo, "--include", "duplicates")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"exported {pairs - len(failed_pairs)} dpo rows to {dpo} (left out: failed_check {len(failed_pairs)})"
    )
    rows = read_jsonl(dpo)
    assert not {row["pair_id"] for row in rows} & failed_pairs
    assert all(sent_to_emergency(row["prompt"], row["chosen"][0]["content"]) for row in rows)

    sft = tmp_path / "sft.jsonl"
    result = cli("export", "--db", triage_db, "--format", "sft", "--out", sft, "--include", "duplicates")
    assert result.exit_code == 0, result.output
    left_out = len(failed_dialogues)
    assert (
        result.output.strip()
        == f"exported {20 - left_out} sft rows to {sft} (left out: failed_check {left_out})"
    )
    rows = read_jsonl(sft)
    assert not {row["episode_id"] for row in rows} & failed_dialogues
    assert all(dialogue_passes(row["messages"]) for row in rows)


@pytest.mark.parametrize("export_format", ["dpo", "dpo-text", "sft"])
def test_include_failed_check_brings_them_back(
    triage_db: Path, tmp_path: Path, export_format: ExportFormat
) -> None:
    failed = FAILED_DIALOGUES if export_format == "sft" else FAILED_PAIRS
    failed_ids = {item for (item,) in query(triage_db, failed)}
    key = "episode_id" if export_format == "sft" else "pair_id"
    default = export(triage_db, format=export_format, out=tmp_path / "default.jsonl", include=["duplicates"])
    everything = export(
        triage_db, format=export_format, out=tmp_path / "all.jsonl", include=["duplicates", "failed_check"]
    )
    assert dict(default.left_out)["failed_check"] == len(failed_ids)
    assert everything.rows == default.rows + len(failed_ids)
    assert everything.left_out_total == 0
    back = {row[key] for row in read_jsonl(tmp_path / "all.jsonl")} - {
        row[key] for row in read_jsonl(tmp_path / "default.jsonl")
    }
    assert back == failed_ids
    if export_format == "dpo":
        rows = [row for row in read_jsonl(tmp_path / "all.jsonl") if row["pair_id"] in failed_ids]
        assert not any(sent_to_emergency(row["prompt"], row["chosen"][0]["content"]) for row in rows)


# -- the whole store ---------------------------------------------------------------------------


def _content(path: Path, export_format: ExportFormat) -> list[str]:
    """Each row's training content, without its ids: what a trainer would see twice."""
    fields = ("messages",) if export_format == "sft" else ("prompt", "chosen", "rejected")
    return [json.dumps([row[f] for f in fields]) for row in read_jsonl(path)]


@pytest.fixture(scope="module")
def repeated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs of the same scenarios and seed under different run ids: byte-identical dialogues."""
    db = tmp_path_factory.mktemp("repeated") / "corpus.duckdb"
    for run_id in ("first", "again"):
        config = dramaturg.RunConfig(scenarios=["support-refund", "math-tutor"], episodes=4, run_id=run_id)
        asyncio.run(dramaturg.run(config, db))
    first, again = (
        [
            text
            for (text,) in query(
                db, "SELECT content FROM turns WHERE episode_id LIKE ? ORDER BY episode_id, idx", [f"{r}/%"]
            )
        ]
        for r in ("first", "again")
    )
    assert first == again, "the same seed stages the same dialogues"
    return db


@pytest.fixture
def repeated_db(repeated_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(repeated_store, tmp_path / "corpus.duckdb"))


@pytest.mark.parametrize("export_format", ["dpo", "dpo-text", "sft"])
def test_an_export_over_several_runs_holds_each_dialogue_and_pair_once(
    repeated_db: Path, tmp_path: Path, export_format: ExportFormat
) -> None:
    everything = tmp_path / "all.jsonl"
    summary = export(repeated_db, format=export_format, out=everything)
    content = _content(everything, export_format)
    assert content and len(content) == len(set(content))
    first = export(repeated_db, format=export_format, out=tmp_path / "first.jsonl", run_id="first")
    assert sorted(content) == sorted(_content(tmp_path / "first.jsonl", export_format))

    # The repeat is left out whole, also from an export of its run alone.
    again = export(repeated_db, format=export_format, out=tmp_path / "again.jsonl", run_id="again")
    assert again.rows == 0
    assert dict(again.left_out)["duplicates"] == again.left_out_total > 0
    assert summary.rows == first.rows
    assert dict(summary.left_out)["duplicates"] == dict(first.left_out)["duplicates"] + again.left_out_total

    copies = tmp_path / "copies.jsonl"
    with_copies = export(repeated_db, format=export_format, out=copies, include=["duplicates"])
    counts = Counter(_content(copies, export_format))
    assert with_copies.rows + with_copies.left_out_total == summary.rows + summary.left_out_total
    assert "duplicates" not in dict(with_copies.left_out)
    # Every row is back with its copy from the repeat (and near-duplicates within a run, too).
    assert all(counts[row] >= 2 for row in content)


def test_duplicates_point_at_the_earlier_run_whatever_order_runs_are_curated(repeated_db: Path) -> None:
    from dramaturg.evaluators import curate

    with Store.open(repeated_db) as store:
        curate(store, "again")
        curate(store, "first")
        reverse = store.sql("SELECT * FROM duplicates ORDER BY ALL")
        curate(store, "first")
        curate(store, "again")
        assert store.sql("SELECT * FROM duplicates ORDER BY ALL") == reverse
        (episodes,) = store.sql("SELECT count(*) FROM episodes WHERE run_id = 'again'")[0]
        dialogue_marks = store.sql(
            "SELECT d.duplicate_of, e.run_id FROM duplicates d JOIN episodes e "
            "ON e.episode_id = d.duplicate_of WHERE d.kind = 'dialogue' AND d.run_id = 'again'"
        )
        assert len(dialogue_marks) == episodes
        assert {run for _, run in dialogue_marks} == {"first"}
        pair_marks = store.sql(
            "SELECT p.run_id, count(*) FROM duplicates d JOIN preference_pairs p "
            "ON p.pair_id = d.duplicate_of WHERE d.kind = 'pair' AND d.run_id = 'again' GROUP BY ALL"
        )
        assert [run for run, _ in pair_marks] == ["first"]
        assert not store.sql(
            "SELECT * FROM duplicates WHERE run_id = 'first' AND duplicate_of LIKE 'again/%'"
        )


def test_stats_counts_the_copies_of_earlier_runs(repeated_db: Path, cli: Callable[..., Any]) -> None:
    result = cli("stats", "--db", repeated_db, "--run-id", "again")
    assert result.exit_code == 0, result.output
    (episodes,) = query(repeated_db, "SELECT count(*) FROM episodes WHERE run_id = 'again'")[0]
    (pairs,) = query(repeated_db, "SELECT count(*) FROM preference_pairs WHERE run_id = 'again'")[0]
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert f"of earlier runs {episodes} 4 4" in lines
    assert any(line.startswith(f"of earlier runs {pairs} ") for line in lines)
    first = cli("stats", "--db", repeated_db, "--run-id", "first")
    assert not [line for line in first.output.splitlines() if line.strip().startswith("of earlier runs")]


def test_a_change_to_an_earlier_run_recurates_the_later_ones(tmp_path: Path) -> None:
    db = tmp_path / "corpus.duckdb"
    for run_id, seed in (("one", 1), ("two", 2)):
        config = dramaturg.RunConfig(scenarios=["math-tutor"], episodes=3, seed=seed, run_id=run_id)
        asyncio.run(dramaturg.run(config, db))
    before = export(db, format="sft", out=tmp_path / "before.jsonl")
    assert dict(before.left_out)["duplicates"] == 0
    # Run 'one' gains a dialogue that run 'two' also has: 'two' is now the copy.
    with Store.open(db) as store:
        (source,) = store.sql("SELECT episode_id FROM episodes WHERE run_id = 'two' ORDER BY 1 LIMIT 1")[0]
        store.sql(
            "INSERT INTO episodes SELECT * REPLACE ('one/late' AS episode_id, 'one' AS run_id, 99 AS idx) "
            "FROM episodes WHERE episode_id = ?",
            [source],
        )
        store.sql(
            "INSERT INTO turns SELECT * REPLACE ('one/late' AS episode_id) FROM turns WHERE episode_id = ?",
            [source],
        )
    after = export(db, format="sft", out=tmp_path / "after.jsonl")
    assert after.rows == before.rows
    assert dict(after.left_out)["duplicates"] == 1
    ids = {row["episode_id"] for row in read_jsonl(tmp_path / "after.jsonl")}
    assert "one/late" in ids and source not in ids


# -- the file ----------------------------------------------------------------------------------


# Ctrl-C during a DuckDB query: DuckDB stops the query and raises RuntimeError('Query
# interrupted') in place of the KeyboardInterrupt (measured with SIGINT on duckdb 2.0); between
# queries it is the KeyboardInterrupt itself.
INTERRUPTIONS = [KeyboardInterrupt(), RuntimeError("Query interrupted")]


@pytest.mark.parametrize("interruption", INTERRUPTIONS, ids=["KeyboardInterrupt", "during-query"])
def test_an_interrupted_export_leaves_no_file_behind(
    triage_db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., Any],
    interruption: BaseException,
) -> None:
    out = tmp_path / "pairs.parquet"
    out.write_bytes(b"previous export")
    sql = Store.sql

    def interrupted(self: Store, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        result = sql(self, query, params)
        if query.startswith("COPY"):
            assert list(tmp_path.glob(".*.partial")), "the rows were written to the temporary file"
            raise interruption  # Ctrl-C while the file is being written
        return result

    monkeypatch.setattr(Store, "sql", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(triage_db, format="dpo", out=out)
    assert out.read_bytes() == b"previous export"
    fresh = tmp_path / "fresh.jsonl"
    result = cli("export", "--db", triage_db, "--format", "sft", "--out", fresh)
    assert result.exit_code == 130
    assert result.output.strip() == f"error: interrupted; nothing was written to {fresh}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.parquet", "triage.duckdb"]
