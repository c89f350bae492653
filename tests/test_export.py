"""Export: TRL preference rows (conversational and plain text) and SFT dialogues, JSONL and Parquet."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from datasets import Dataset, List, Value, load_dataset
from dramaturg.evaluators import ensure_curated

from dramaturg import ConfigError, RunConfig, Store, StoreError, run
from dramaturg._export import ExportFormat, ExportSummary, export
from tests.conftest import dialogues

MESSAGE = {"role": Value("string"), "content": Value("string")}
T0 = datetime(2026, 1, 1)
SYSTEM = "You are a patient math tutor."
CALL_ROLES = {"user": "user_simulator", "assistant": "assistant"}

# (pair_id, run_id, episode_id, turn_idx, prompt, chosen, rejected, source, margin, agreed, checks)
# p-a failed a check and p-c is unverified: the default export leaves them out.
PAIRS: list[tuple[Any, ...]] = [
    (
        "p-b",
        "r1",
        "r1/math-tutor/0",
        1,
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Solve 2x + 3 = 7."}],
        "Subtract 3: 2x = 4, so x = 2.",
        "x = 5.",
        "revision",
        4.0,
        True,
        True,
    ),
    (
        "p-a",  # same turn as p-b: pair_id breaks the tie
        "r1",
        "r1/math-tutor/0",
        1,
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Solve 2x + 3 = 7."}],
        "x = 2, because 2 * 2 + 3 = 7.",
        "It is 5, trust me.",
        "best_of_n",
        2.5,
        True,
        False,
    ),
    (
        "p-c",
        "r1",
        "r1/math-tutor/0",
        3,
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Solve 2x + 3 = 7."},
            {"role": "assistant", "content": "Subtract 3: 2x = 4, so x = 2."},
            {"role": "user", "content": "Why subtract first?"},
        ],
        "To isolate the term with x.",
        "Because.",
        "revision",
        1.0,
        False,
        True,
    ),
    (
        "p-d",  # no system message: it is optional
        "r2",
        "r2/support-refund/0",
        1,
        [{"role": "user", "content": "I want a refund for order 1234."}],
        "I can help: order 1234 was bought 10 days ago, so it qualifies.",
        "No refunds.",
        "revision",
        3.0,
        True,
        True,
    ),
]

# episode_id -> (run_id, scenario, status, system prompt, [(role, content)])
EPISODES: dict[str, tuple[str, str, str, str, list[tuple[str, str]]]] = {
    "r1/math-tutor/0": (
        "r1",
        "math-tutor",
        "done",
        SYSTEM,
        [
            ("user", "Solve 2x + 3 = 7."),
            ("assistant", "Subtract 3: 2x = 4, so x = 2."),
            ("user", "Why subtract first?"),
            ("assistant", "To isolate the term with x."),
        ],
    ),
    "r1/math-tutor/1": ("r1", "math-tutor", "failed", SYSTEM, [("user", "Solve 3x = 9.")]),
    "r2/support-refund/0": (
        "r2",
        "support-refund",
        "done",
        "You are the support assistant of a shop.",
        [("user", "I want a refund for order 1234."), ("assistant", "It qualifies; refund issued.")],
    ),
}


def _insert_pair(store: Store, pair: tuple[Any, ...]) -> None:
    """Store a pair with the two judgments that made it: chosen won in both orders."""
    pair_id, run_id, episode_id, turn_idx, prompt, chosen, rejected, source, margin, agreed, checks = pair
    judgment_ids = [f"{pair_id}-ab", f"{pair_id}-ba"]
    for judgment_id, first, second, winner in zip(
        judgment_ids, (chosen, rejected), (rejected, chosen), ("A", "B"), strict=True
    ):
        store.sql(
            "INSERT INTO judgments (judgment_id, episode_id, turn_idx, source, first_text, second_text, "
            "orientation, status, winner, raw, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?, '{}', 1)",
            [judgment_id, episode_id, turn_idx, source, first, second, judgment_id[-2:], winner],
        )
    store.sql(
        "INSERT INTO preference_pairs (pair_id, run_id, episode_id, scenario, turn_idx, prompt, chosen, "
        "rejected, source, margin, judge_agreement, checks_passed, judgment_ids, critique_ids, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)",
        [
            pair_id,
            run_id,
            episode_id,
            episode_id.split("/")[1],
            turn_idx,
            json.dumps(prompt),
            chosen,
            rejected,
            source,
            margin,
            agreed,
            checks,
            json.dumps(judgment_ids),
            T0,
        ],
    )


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding two runs, three episodes and four pairs, written by hand."""
    path = tmp_path_factory.mktemp("template") / "corpus.duckdb"
    with Store.open(path) as store:
        for run_id in ("r1", "r2"):
            store.sql("INSERT INTO runs VALUES (?, ?, 0, '{}', 'test')", [run_id, T0])
        for episode_id, (run_id, scenario, status, system, turns) in EPISODES.items():
            store.sql(
                "INSERT INTO episodes (episode_id, run_id, scenario, idx, seed, status, started_at) "
                "VALUES (?, ?, ?, 0, 0, ?, ?)",
                [episode_id, run_id, scenario, status, T0],
            )
            for idx, (role, content) in enumerate(turns):
                call_id = f"{episode_id}#{idx}"
                request = {"system": system if role == "assistant" else "You play the user.", "messages": []}
                store.sql(
                    "INSERT INTO llm_calls (call_id, request_hash, backend, model, role, status, request, "
                    "latency_ms, created_at) VALUES (?, 'h', 'sim', 'sim', ?, 'ok', ?, 1, ?)",
                    [call_id, CALL_ROLES[role], json.dumps(request), T0],
                )
                store.sql(
                    "INSERT INTO turns (episode_id, idx, role, content, call_id) VALUES (?, ?, ?, ?, ?)",
                    [episode_id, idx, role, content, call_id],
                )
        for pair in PAIRS:
            _insert_pair(store, pair)
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template store for each test."""
    return Path(shutil.copy(template_db, tmp_path / "corpus.duckdb"))


def _load(path: Path, tmp_path: Path) -> Dataset:
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def _assert_trl_conversational_preference(row: dict[str, Any]) -> None:
    """TRL's conversational preference format with an explicit prompt (see dramaturg._export)."""
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    for messages in (prompt, chosen, rejected):
        assert isinstance(messages, list)
        assert messages
        assert all(isinstance(m, dict) and set(m) == {"role", "content"} for m in messages)
        assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    roles = [m["role"] for m in prompt]
    turns = roles[1:] if roles[0] == "system" else roles
    assert turns == ["user", "assistant"] * (len(turns) // 2) + ["user"], roles
    assert [m["role"] for m in chosen] == [m["role"] for m in rejected] == ["assistant"]
    assert chosen != rejected


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("export_format", ["dpo", "dpo-text", "sft"])
def test_every_format_and_file_type_loads_with_datasets(
    db: Path, tmp_path: Path, export_format: ExportFormat, suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    summary = export(db, format=export_format, out=out, include=["all"])
    dataset = _load(out, tmp_path)
    expected_rows = 2 if export_format == "sft" else len(PAIRS)
    assert summary.rows == len(dataset) == expected_rows
    assert summary.path == out
    assert not list(tmp_path.glob(".*.partial")), "the temporary file is renamed away"
    ids = {"pair_id": Value("string"), "episode_id": Value("string")}
    if export_format == "dpo":
        assert dataset.features["prompt"] == List(MESSAGE)
        assert dataset.features["chosen"] == dataset.features["rejected"] == List(MESSAGE)
        assert dataset.features["margin"] == Value("float64")
        assert {name: dataset.features[name] for name in ids} == ids
        for row in dataset:
            _assert_trl_conversational_preference(row)
    elif export_format == "dpo-text":
        for name in ("prompt", "chosen", "rejected", *ids):
            assert dataset.features[name] == Value("string"), name
    else:
        assert dataset.column_names == ["messages", "episode_id", "scenario"]
        assert dataset.features["messages"] == List(MESSAGE)


def test_dpo_rows_are_the_stored_pairs_in_episode_turn_pair_order(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.parquet"
    export(db, format="dpo", out=out, include=["all"])
    rows = _load(out, tmp_path).to_list()
    assert [row["pair_id"] for row in rows] == ["p-a", "p-b", "p-c", "p-d"]
    by_id = {pair[0]: pair for pair in PAIRS}
    for row in rows:
        pair_id, _, episode_id, turn_idx, prompt, chosen, rejected, source, margin, *_ = by_id[row["pair_id"]]
        assert row == {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "pair_id": pair_id,
            "episode_id": episode_id,
            "turn_idx": turn_idx,
            "source": source,
            "margin": margin,
        }


def test_dpo_text_renders_the_prompt_as_a_labelled_transcript(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    export(db, format="dpo-text", out=out, include=["unverified"])
    rows = {row["pair_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["p-c"]["prompt"] == (
        f"System: {SYSTEM}\n\n"
        "User: Solve 2x + 3 = 7.\n\n"
        "Assistant: Subtract 3: 2x = 4, so x = 2.\n\n"
        "User: Why subtract first?"
    )
    assert rows["p-c"]["chosen"] == "To isolate the term with x."
    assert rows["p-c"]["rejected"] == "Because."
    assert rows["p-d"]["prompt"] == "User: I want a refund for order 1234."


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_string_and_message_formats_are_never_mixed(db: Path, tmp_path: Path, suffix: str) -> None:
    # TRL looks at the first row to decide the format, then treats every row alike.
    con = duckdb.connect()
    reader = "read_parquet" if suffix == ".parquet" else "read_json_auto"
    for export_format, expected in (("dpo", "STRUCT"), ("dpo-text", "VARCHAR")):
        out = tmp_path / f"{export_format}{suffix}"
        export(db, format=export_format, out=out, include=["all"])
        described = f"DESCRIBE SELECT prompt, chosen, rejected FROM {reader}('{out}')"
        types = dict(con.execute(f"SELECT column_name, column_type FROM ({described})").fetchall())
        if expected == "STRUCT":
            assert all(t == 'STRUCT("role" VARCHAR, "content" VARCHAR)[]' for t in types.values()), types
        else:
            assert set(types.values()) == {"VARCHAR"}, types
    con.close()


def test_sft_has_one_message_list_per_done_episode_with_the_system_prompt(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"
    summary = export(db, format="sft", out=out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["episode_id"] for row in rows] == ["r1/math-tutor/0", "r2/support-refund/0"]
    for row in rows:
        _, scenario, _, system, turns = EPISODES[row["episode_id"]]
        assert row["scenario"] == scenario
        assert row["messages"] == [{"role": "system", "content": system}] + [
            {"role": role, "content": content} for role, content in turns
        ]
    assert _nonzero(summary) == {"unfinished": 1}
    assert summary.rows + summary.left_out_total == len(EPISODES)


def _nonzero(summary: ExportSummary) -> dict[str, int]:
    return {reason: rows for reason, rows in summary.left_out if rows}


def test_left_out_rows_are_counted_by_reason(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"

    def pair_ids() -> list[str]:
        return [json.loads(line)["pair_id"] for line in out.read_text().splitlines()]

    default = export(db, format="dpo", out=out)
    assert pair_ids() == ["p-b", "p-d"]
    assert _nonzero(default) == {"failed_check": 1, "unverified": 1}
    # Every reason is applied and listed in its documented order, zeros included.
    assert [reason for reason, _ in default.left_out] == [
        "unfinished",
        "invalid_turn",
        "rejected",
        "duplicates",
        "too_short",
        "too_long",
        "refusal",
        "role_flip",
        "failed_check",
        "unverified",
        "judge_disagreement",
        "low_margin",
    ]
    assert default.rows + default.left_out_total == len(PAIRS)

    by_run = export(db, format="dpo", out=out, run_id="r1")
    assert pair_ids() == ["p-b"]
    assert _nonzero(by_run) == {"failed_check": 1, "unverified": 1}
    assert by_run.rows + by_run.left_out_total == 3, "another run's rows are not 'left out'"

    by_margin = export(db, format="dpo-text", out=out, min_margin=2.5, include=["all"])
    assert pair_ids() == ["p-a", "p-b", "p-d"]
    assert by_margin.left_out[-1] == ("min_margin", 1)
    assert _nonzero(by_margin) == {"min_margin": 1}

    failed_check_back = export(db, format="dpo", out=out, include=["failed_check"])
    assert pair_ids() == ["p-a", "p-b", "p-d"]
    assert _nonzero(failed_check_back) == {"unverified": 1}
    assert "failed_check" not in dict(failed_check_back.left_out)

    # A row left out for several reasons is counted once, under the first.
    with Store.open(db) as store:
        store.sql("UPDATE preference_pairs SET judge_agreement = false WHERE pair_id = 'p-a'")
        ensure_curated(store, "r1", refresh=True)  # stored rows changed in place, not new ones
    both = export(db, format="dpo", out=out)
    assert _nonzero(both) == {"failed_check": 1, "unverified": 1}
    assert _nonzero(export(db, format="dpo", out=out, include=["failed_check"])) == {"unverified": 2}

    sft = export(db, format="sft", out=tmp_path / "sft.parquet", run_id="r2")
    assert sft.rows == 1
    assert _nonzero(sft) == {}


def test_include_names_a_reason(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    with pytest.raises(
        ConfigError, match=r"--include failed_checks: unknown reason \(expected all or one of: "
    ):
        export(db, format="dpo", out=out, include=["failed_checks"])
    with pytest.raises(ConfigError, match="no finished dialogue to export; `dramaturg resume RUN_ID`"):
        export(db, format="sft", out=out, include=["unfinished"])
    assert export(db, format="dpo", out=out, include="unverified").rows == 3, "one name is one reason"
    assert not out.with_name(".x.jsonl.partial").exists()


def test_export_is_deterministic(db: Path, tmp_path: Path) -> None:
    for export_format in ("dpo", "dpo-text", "sft"):
        first, second = tmp_path / f"{export_format}-1.jsonl", tmp_path / f"{export_format}-2.jsonl"
        export(db, format=export_format, out=first)
        export(db, format=export_format, out=second)
        assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("name", ["pairs.json", "pairs.csv", "pairs", "pairs.parquet.gz"])
def test_an_unknown_extension_is_a_config_error(db: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"expected a file ending in \.jsonl or \.parquet"):
        export(db, format="dpo", out=tmp_path / name)
    assert not (tmp_path / name).exists()


def test_bad_options_are_config_errors(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown run id 'nope' \(runs in this store: r1, r2\)"):
        export(db, format="dpo", out=tmp_path / "x.jsonl", run_id="nope")
    with pytest.raises(ConfigError, match="unknown export format 'kto'"):
        export(db, format="kto", out=tmp_path / "x.jsonl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use it with dpo or dpo-text"):
        export(db, format="sft", out=tmp_path / "x.jsonl", min_margin=1.0)
    with pytest.raises(ConfigError, match="no such store"):
        export(tmp_path / "missing.duckdb", format="dpo", out=tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        export(db, format="dpo", out=tmp_path / "no-such-dir" / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


USER = {"role": "user", "content": "a"}
BAD_PAIRS = [
    ([USER, {"role": "assistant", "content": "b"}], "x", "y", "prompt does not end with a user message"),
    ([USER, USER], "x", "y", "prompt message 2 is 'user', expected 'assistant'"),
    ([USER, {"role": "system", "content": "s"}, USER], "x", "y", "prompt message 2 is 'system'"),
    (
        [{"role": "assistant", "content": "b"}, USER],
        "x",
        "y",
        "prompt message 1 is 'assistant', expected 'user'",
    ),
    ([USER], "same", "same", "chosen and rejected are identical"),
    ([USER], " ", "y", "chosen or rejected is empty"),
    ([], "x", "y", "prompt has no messages"),
    (USER, "x", "y", "prompt is missing or not a list"),
    ([{"role": "user"}], "x", "y", "prompt message 1 has no role or no content"),
]


@pytest.mark.parametrize(("prompt", "chosen", "rejected", "problem"), BAD_PAIRS)
def test_a_bad_row_in_the_store_fails_the_export_and_writes_nothing(
    db: Path, tmp_path: Path, prompt: object, chosen: str, rejected: str, problem: str
) -> None:
    out = tmp_path / "pairs.parquet"
    out.write_bytes(b"previous export")
    with Store.open(db) as store:
        bad = ("p-bad", "r1", "r1/math-tutor/0", 5, prompt, chosen, rejected, "revision", 1.0, True, True)
        _insert_pair(store, bad)
    for export_format in ("dpo", "dpo-text"):
        with pytest.raises(StoreError, match=f"1 row breaks the format: p-bad: .*{re.escape(problem)}"):
            export(db, format=export_format, out=out, include=["all"])
    assert out.read_bytes() == b"previous export"
    # A filter that leaves the bad row out exports the rest.
    assert export(db, format="dpo", out=out, min_margin=2.0, include=["all"]).rows == 3


def test_cli_export_prints_one_summary_line(cli, db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.parquet"
    result = cli("export", "--db", db, "--format", "dpo", "--out", out, "--run-id", "r1")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"exported 1 dpo rows to {out} (left out: failed_check 1, unverified 1)"
    assert len(_load(out, tmp_path)) == 1
    result = cli("export", "--db", db, "--format", "dpo", "--out", out, "--include", "failed_check")
    assert result.output.strip() == f"exported 3 dpo rows to {out} (left out: unverified 1)"
    result = cli("export", "--db", db, "--format", "dpo", "--out", out, "--include", "all")
    assert result.output.strip() == f"exported 4 dpo rows to {out}", "nothing left out, nothing said"
    result = cli("export", "--db", db, "--format", "sft", "--out", tmp_path / "sft.jsonl")
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip() == f"exported 2 sft rows to {tmp_path / 'sft.jsonl'} (left out: unfinished 1)"
    )


def test_cli_export_bad_input_is_one_line_and_exit_2(cli, db: Path, tmp_path: Path) -> None:
    bad_extension = cli("export", "--db", db, "--format", "dpo", "--out", tmp_path / "pairs.csv")
    assert bad_extension.exit_code == 2
    assert "expected a file ending in .jsonl or .parquet" in bad_extension.output
    assert len(bad_extension.output.strip().splitlines()) == 1
    unknown_run = cli("export", "--db", db, "--format", "dpo", "--out", tmp_path / "p.jsonl", "--run-id", "z")
    assert unknown_run.exit_code == 2
    assert "unknown run id 'z'" in unknown_run.output
    assert len(unknown_run.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("p*"))
    unknown_reason = cli(
        "export", "--db", db, "--format", "dpo", "--out", tmp_path / "p.jsonl", "--include", "x"
    )
    assert unknown_reason.exit_code == 2
    assert unknown_reason.output.strip() == (
        "error: --include x: unknown reason (expected all or one of: invalid_turn, rejected, duplicates, "
        "too_short, too_long, refusal, role_flip, failed_check, goal_not_met, unverified, "
        "judge_disagreement, low_margin)"
    )


def test_export_of_a_sim_run(tmp_path: Path) -> None:
    db = tmp_path / "run.duckdb"
    config = RunConfig(scenarios=["math-tutor", "support-refund"], episodes=5, run_id="e2e")
    summary = asyncio.run(run(config, db))
    assert summary.done == 10
    sft = export(db, format="sft", out=tmp_path / "sft.parquet", run_id="e2e")
    assert sft.rows == 10
    expected = dialogues(db, "e2e")
    for row in _load(tmp_path / "sft.parquet", tmp_path):
        system, *turns = row["messages"]
        assert system["role"] == "system"
        assert system["content"].strip()
        # support-refund's assistant calls tools: its turns carry their tool rounds (see
        # tests/test_export_tools.py); the spoken dialogue is the rest.
        assert [(m["role"], m["content"]) for m in _spoken(turns)] == expected[row["episode_id"]]
    with Store.open(db, read_only=True) as store:
        stored_pairs = store.sql("SELECT count(*) FROM preference_pairs")[0][0]
    out = tmp_path / "pairs.parquet"
    pairs = export(db, format="dpo", out=out, include=["all"])
    assert pairs.rows == stored_pairs > 0, "the sim run should produce preference pairs"
    for row in _load(out, tmp_path):
        _assert_trl_conversational_preference(
            {key: _spoken(row[key]) for key in ("prompt", "chosen", "rejected")}
        )
        # The ids trace a row back: the prompt is the episode's dialogue up to the pair's turn.
        history = [(m["role"], m["content"]) for m in _spoken(row["prompt"]) if m["role"] != "system"]
        assert history == expected[row["episode_id"]][: row["turn_idx"]]


def _spoken(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's own messages as {role, content}: no tool messages, no assistant message
    that only calls tools."""
    return [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m["role"] != "tool" and not m.get("tool_calls")
    ]


def test_export_skips_marked_duplicates_unless_asked(tmp_path: Path) -> None:
    from dramaturg import RunConfig, run

    db = tmp_path / "d.duckdb"
    asyncio.run(run(RunConfig(scenarios=["support-refund"], episodes=6, run_id="d"), db))
    with Store.open(db) as store:
        # Plant an exact duplicate of the first pair under a new id.
        store.sql(
            "INSERT INTO preference_pairs SELECT 'planted-copy', * EXCLUDE (pair_id) FROM preference_pairs "
            "ORDER BY pair_id LIMIT 1"
        )
    default = export(db, format="dpo", out=tmp_path / "a.jsonl")
    everything = export(db, format="dpo", out=tmp_path / "b.jsonl", include=["duplicates"])
    with Store.open(db) as store:
        marked = {row[0] for row in store.sql("SELECT item_id FROM duplicates WHERE kind = 'pair'")}
    assert marked, "the planted copy is marked"
    assert ("duplicates", len(marked)) in default.left_out
    assert everything.rows == default.rows + len(marked)
