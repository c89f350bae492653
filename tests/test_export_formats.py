"""Exports for trainers beyond TRL's DPO and SFT (issue 11), each checked against its consumer's spec.

One sim run of math-tutor and support-refund (tools), with a strict critic so that some kept
replies fall below the bar (the run of docs/exports.md) is exported in every format, loaded
with `datasets`, and each row is checked against the documented format, quoted here:

- OpenAI fine-tuning: the chat format with `weight` on assistant messages, and the DPO format
  (`input` / `preferred_output` / `non_preferred_output`);
- LLaMA-Factory: ShareGPT SFT and ranking rows, as its converter reads them, and their
  `dataset_info.json` entries;
- Axolotl: `chat_template` SFT (per-message `train` flags) and `chat_template.default` DPO,
  as their prompt strategies read them;
- TRL: KTO's unpaired preference rows, which are TRL's own unpairing of the `dpo` rows, and
  which KTOTrainer trains on.

Every format goes through the gates of the TRL format of the same items; docs/exports.md's
example rows and summary lines are checked against this run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset, load_dataset
from dramaturg.evaluators import ensure_curated

from dramaturg import ConfigError, RunConfig, Store, run
from dramaturg._export import EXPORT_FORMATS, FORMAT_HELP, ExportFormat, ExportSummary, export
from dramaturg.outputs import FORMATS
from tests.conftest import REPO, query

# The run of docs/exports.md: `dramaturg run math-tutor support-refund --episodes 4
# --revise-below 9 --run-id docs`. A critic this strict leaves some kept replies below its bar.
RUN = RunConfig(scenarios=["math-tutor", "support-refund"], episodes=4, run_id="docs", revise_below=9)
REVISE_BELOW = 9.0
DOCS = REPO / "docs" / "exports.md"

NEW_FORMATS: tuple[ExportFormat, ...] = (
    "openai",
    "openai-dpo",
    "llamafactory",
    "llamafactory-ranking",
    "axolotl",
    "axolotl-dpo",
    "trl-kto",
)
JSONL_ONLY = ("openai", "openai-dpo")
# The TRL format of the same items: its gates are every format's.
BASE: dict[ExportFormat, ExportFormat] = {
    f: "sft" if FORMATS[f].items == "dialogue" else "dpo" for f in FORMATS
}

Row = dict[str, Any]


# -- the run and its exports ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("corpus") / "corpus.duckdb"
    summary = asyncio.run(run(RUN, db))
    assert summary.done == 8
    return db


@pytest.fixture(scope="module")
def exports(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ExportSummary]]:
    """Every format with the default gates, as `FORMAT.jsonl`, and the new ones and `dpo` (which
    `trl-kto` is compared with) as `FORMAT.parquet` too, where the format allows it."""
    folder = tmp_path_factory.mktemp("exports")
    files = {}
    for export_format in EXPORT_FORMATS:
        parquet = export_format in (*NEW_FORMATS, "dpo") and not FORMATS[export_format].jsonl_only
        suffixes = (".jsonl", ".parquet") if parquet else (".jsonl",)
        for suffix in suffixes:
            out = folder / f"{export_format}{suffix}"
            files[out.name] = (out, export(corpus, format=export_format, out=out))
    return files


@functools.cache
def load(path: Path) -> Dataset:
    """The file as `datasets` loads it (once: loading is the slow part of these tests)."""
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(builder, data_files=str(path), split="train", cache_dir=str(path.parent / "hf-cache"))


def read_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows(exports: dict[str, tuple[Path, ExportSummary]], export_format: str) -> list[Row]:
    return read_jsonl(exports[f"{export_format}.jsonl"][0])


@pytest.mark.parametrize(
    "name",
    [
        f"{f}{s}"
        for f in NEW_FORMATS
        for s in (".jsonl", ".parquet")
        if not (f in JSONL_ONLY and s != ".jsonl")
    ],
)
def test_every_format_loads_with_datasets(exports: dict[str, tuple[Path, ExportSummary]], name: str) -> None:
    path, summary = exports[name]
    dataset = load(path)
    assert len(dataset) == summary.rows > 0
    assert summary.path == path
    # Parquet and JSONL hold the same rows.
    assert dataset.to_list() == load(exports[f"{summary.format}.jsonl"][0]).to_list()


def test_format_help_lists_every_format() -> None:
    for export_format in EXPORT_FORMATS:
        assert re.search(rf"(^|[ :]){re.escape(export_format)} \(", FORMAT_HELP), export_format
    assert len(FORMAT_HELP) < 400, "the --format help stays short"


def test_openai_formats_write_jsonl_only(corpus: Path, tmp_path: Path) -> None:
    for export_format in JSONL_ONLY:
        with pytest.raises(ConfigError, match=r"writes JSONL, the only file type its trainer reads"):
            export(corpus, format=export_format, out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match=r"--min-margin filters preference pairs.*openai-dpo"):
        export(corpus, format="axolotl", out=tmp_path / "x.jsonl", min_margin=1.0)


# -- the gates ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gated(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run with rows curation leaves out: a planted copy of a pair and of a dialogue, and a pair
    whose judges disagreed."""
    db = Path(shutil.copy(corpus, tmp_path_factory.mktemp("gated") / "gated.duckdb"))
    with Store.open(db) as store:
        store.sql(
            "INSERT INTO preference_pairs SELECT 'planted-copy', * EXCLUDE (pair_id) FROM preference_pairs "
            "ORDER BY episode_id, turn_idx LIMIT 1"
        )
        store.sql(
            "UPDATE preference_pairs SET judge_agreement = false WHERE pair_id = "
            "(SELECT pair_id FROM preference_pairs WHERE pair_id <> 'planted-copy' "
            " ORDER BY episode_id DESC, turn_idx LIMIT 1)"
        )
        episode = "docs/math-tutor/00000"
        store.sql(
            "INSERT INTO episodes SELECT 'docs/math-tutor/copy', * EXCLUDE (episode_id) FROM episodes "
            "WHERE episode_id = ?",
            [episode],
        )
        store.sql(
            "INSERT INTO turns SELECT 'docs/math-tutor/copy', * EXCLUDE (episode_id) FROM turns "
            "WHERE episode_id = ?",
            [episode],
        )
        ensure_curated(store, "docs", refresh=True)
    return db


@pytest.fixture(scope="module")
def gated_base(
    gated: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, ExportSummary]]:
    """The TRL formats of dialogues and pairs, exported from the gated store."""
    folder = tmp_path_factory.mktemp("gated-base")
    outs = {export_format: folder / f"{export_format}.jsonl" for export_format in ("sft", "dpo")}
    return {f: (out, export(gated, format=f, out=out)) for f, out in outs.items()}


def nonzero(summary: ExportSummary) -> dict[str, int]:
    return {reason: n for reason, n in summary.left_out if n}


@pytest.mark.parametrize("export_format", NEW_FORMATS)
def test_every_format_leaves_out_what_its_trl_format_does(
    gated: Path,
    gated_base: dict[str, tuple[Path, ExportSummary]],
    tmp_path: Path,
    export_format: ExportFormat,
) -> None:
    spec = FORMATS[export_format]
    suffix = ".jsonl"
    base_file, base = gated_base[BASE[export_format]]
    summary = export(gated, format=export_format, out=tmp_path / f"out{suffix}")
    every = export(gated, format=export_format, out=tmp_path / f"all{suffix}", include=["all"])
    k = spec.rows_per_item
    base_left_out = {reason: n * k for reason, n in nonzero(base).items()}
    # The gates of the TRL format, and only a format that cannot hold a pair's tool calls leaves
    # out more: under its own reason, which `--include all` does not bring back.
    tool_calls = dict(summary.left_out).pop("tool_calls", 0)
    assert ("tool_calls" in dict(summary.left_out)) == (spec.tool_calls != "anywhere")
    assert nonzero(summary) == base_left_out | ({"tool_calls": tool_calls} if tool_calls else {})
    if spec.items == "pair":
        assert base_left_out == {"duplicates": k, "unverified": k}
    else:
        assert base_left_out == {"duplicates": 1}
    assert summary.rows == base.rows * k - tool_calls
    assert summary.rows + summary.left_out_total == every.rows + every.left_out_total
    assert nonzero(every) == ({"tool_calls": tool_calls} if tool_calls else {})
    assert len(read_jsonl(tmp_path / f"out{suffix}")) == summary.rows
    assert len(read_jsonl(tmp_path / f"all{suffix}")) == every.rows
    # The rows kept are the TRL format's, in its order (OpenAI's lines carry no ids).
    ids = "episode_id" if spec.items == "dialogue" else "pair_id"
    kept = [row[ids] for row in read_jsonl(base_file)]
    if export_format in JSONL_ONLY:
        return
    written = [row[ids] for row in read_jsonl(tmp_path / f"out{suffix}")]
    assert [i for n, i in enumerate(written) if n % k == 0] == [
        i for i in kept if not tool_calls or i not in pairs_with_calls(gated)
    ]


def calls_tools(pair: Row, sides: tuple[str, ...]) -> bool:
    """Whether a `dpo` row holds a tool call or a tool message in ``sides``."""
    return any(m["role"] == "tool" or m["tool_calls"] for side in sides for m in pair[side])


def pairs_with_calls(db: Path) -> set[str]:
    return {
        pair_id
        for (pair_id,) in query(
            db,
            "SELECT pair_id FROM preference_pairs "
            "WHERE chosen_tool_steps IS NOT NULL OR rejected_tool_steps IS NOT NULL",
        )
    }


# -- OpenAI ------------------------------------------------------------------------------------------


def turn_of_each_message(messages: list[Row]) -> Iterator[int | None]:
    """The stored turn index of each exported message (None for the system prompt): a user
    message starts a turn, and so does an assistant message right after one; tool messages, and
    the assistant messages after them, belong to the turn that called the tools."""
    turn = -1
    previous = None
    for m in messages:
        if m["role"] == "system":
            yield None
            continue
        if m["role"] == "user" or (m["role"] == "assistant" and previous in (None, "user")):
            turn += 1
        previous = m["role"]
        yield turn


def untrained_turns(db: Path) -> set[tuple[str, int]]:
    """The turns the docs say a trainer must not learn, computed here from the stored rows: the
    kept reply failed a check (a revision's checks where it was checked, else the original's), or
    the critic scored the kept reply (a revision where one replaced the original) below the run's
    --revise-below."""
    failed: dict[tuple[str, int], dict[str, bool]] = {}
    for episode_id, turn_idx, target, passed in query(
        db, "SELECT episode_id, turn_idx, target, passed FROM checks WHERE turn_idx IS NOT NULL"
    ):
        verdict = failed.setdefault((episode_id, turn_idx), {})
        verdict[target] = verdict.get(target, True) and passed
    untrained = {
        key
        for key, verdict in failed.items()
        if not verdict.get("revision", True)
        or ("revision" not in verdict and not verdict.get("original", True))
    }
    revised: dict[tuple[str, int], list[float]] = {}
    for episode_id, turn_idx, overall in query(
        db,
        "SELECT r.episode_id, r.turn_idx, k.overall FROM revisions r "
        "JOIN turns t ON t.episode_id = r.episode_id AND t.idx = r.turn_idx AND t.content = r.revised "
        "JOIN critiques k ON k.critique_id = r.revision_critique_id",
    ):
        revised.setdefault((episode_id, turn_idx), []).append(overall)
    originals = dict(
        ((e, t), overall)
        for e, t, overall in query(
            db, "SELECT episode_id, turn_idx, overall FROM critiques WHERE target = 'original'"
        )
    )
    for key, overall in originals.items():
        scores = revised.get(key, [overall])
        if None not in scores and min(scores) < REVISE_BELOW:
            untrained.add(key)
    return untrained


def test_openai_chat_lines_follow_the_documented_format(
    corpus: Path, exports: dict[str, tuple[Path, ExportSummary]]
) -> None:
    # OpenAI's FineTuneChatRequestInput: `messages` (system, user, assistant, tool messages as the
    # chat API takes them), `tools`, `parallel_tool_calls`. Its assistant message adds `weight`:
    # "Controls whether the assistant message is trained against (0 or 1)"; "the default behavior
    # during fine-tuning is to train on all assistant messages within a single example".
    from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam
    from pydantic import TypeAdapter

    untrained = untrained_turns(corpus)
    sft = rows(exports, "sft")
    lines = rows(exports, "openai")
    assert len(lines) == len(sft) == 8
    weighted = set()
    for line, dialogue in zip(lines, sft, strict=True):
        assert set(line) == {"messages", "tools"}
        TypeAdapter(list[ChatCompletionMessageParam]).validate_python(line["messages"])
        TypeAdapter(list[ChatCompletionFunctionToolParam]).validate_python(line["tools"])
        for m, turn in zip(line["messages"], turn_of_each_message(line["messages"]), strict=True):
            allowed = {"role", "content", "tool_calls", "tool_call_id"}
            assert set(m) <= allowed | ({"weight"} if m["role"] == "assistant" else set()), m
            # Weight 0 where a turn must not be learnt; no key (OpenAI's default: trained) elsewhere.
            expected = turn is not None and (dialogue["episode_id"], turn) in untrained
            assert ("weight" in m) == (expected and m["role"] == "assistant"), (
                dialogue["episode_id"],
                turn,
                m,
            )
            if "weight" in m:
                assert m["weight"] == 0
                weighted.add((dialogue["episode_id"], turn))
        assert line["messages"][-1]["role"] == "assistant"
    assert weighted == {key for key in untrained if key[0] in {row["episode_id"] for row in sft}}
    assert weighted, "the strict critic of this run leaves some kept replies below its bar"
    assert any("tool_calls" in m for line in lines for m in line["messages"] if "weight" in m), (
        "a turn's tool-call messages share its weight"
    )


def test_imported_turns_are_context_not_learnt(corpus: Path, tmp_path: Path) -> None:
    # A turn imported from a real conversation (turns.origin, written by the recipes that continue
    # real dialogues) was neither written nor checked by the run's roles.
    db = Path(shutil.copy(corpus, tmp_path / "imported.duckdb"))
    episode = "docs/math-tutor/00001"
    # The first assistant turn the run would learn, imported with the turns before it.
    assistant_turns = query(
        db, "SELECT idx FROM turns WHERE episode_id = ? AND role = 'assistant' ORDER BY idx", [episode]
    )
    turn = next(idx for (idx,) in assistant_turns if (episode, idx) not in untrained_turns(db))
    with Store.open(db) as store:
        store.sql("UPDATE turns SET origin = 'imported' WHERE episode_id = ? AND idx <= ?", [episode, turn])
    export(db, format="openai", out=tmp_path / "openai.jsonl")
    export(db, format="axolotl", out=tmp_path / "axolotl.jsonl")
    line = read_jsonl(tmp_path / "openai.jsonl")[1]
    (row,) = [r for r in read_jsonl(tmp_path / "axolotl.jsonl") if r["episode_id"] == episode]
    turns = turn_of_each_message(line["messages"])
    imported = [(m, a) for m, a, n in zip(line["messages"], row["messages"], turns, strict=True) if n == turn]
    assert imported
    for m, axolotl_m in imported:
        assert m == {"role": "assistant", "content": m["content"], "weight": 0}
        assert axolotl_m["train"] is False


def test_openai_dpo_lines_follow_the_documented_format(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    # OpenAI's DPO guide: "input": {"messages", "tools", "parallel_tool_calls"}, "preferred_output"
    # and "non_preferred_output": [an assistant message]; "the preferred and non-preferred messages
    # need to be the last assistant message".
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageParam,
    )
    from pydantic import TypeAdapter

    lines = rows(exports, "openai-dpo")
    dpo = [row for row in rows(exports, "dpo") if not calls_tools(row, ("chosen", "rejected"))]
    assert len(lines) == len(dpo) == exports["openai-dpo.jsonl"][1].rows
    for line, pair in zip(lines, dpo, strict=True):
        assert set(line) == {"input", "preferred_output", "non_preferred_output"}
        assert set(line["input"]) == {"messages", "tools"}
        TypeAdapter(list[ChatCompletionMessageParam]).validate_python(line["input"]["messages"])
        TypeAdapter(list[ChatCompletionFunctionToolParam]).validate_python(line["input"]["tools"])
        assert line["input"]["messages"][-1]["role"] == "user"
        assert [m["content"] for m in line["input"]["messages"]] == [m["content"] for m in pair["prompt"]]
        for side, output in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
            (message,) = line[output]
            TypeAdapter(ChatCompletionAssistantMessageParam).validate_python(message)
            assert message == {"role": "assistant", "content": pair[side][-1]["content"]}
        assert line["preferred_output"] != line["non_preferred_output"]


# -- LLaMA-Factory -----------------------------------------------------------------------------------

# data/README.md: "the human and observation should appear in odd positions, while gpt and
# function should appear in even positions"; its converter (SharegptDatasetConverter) drops an
# example whose tags break that, or whose length is odd (SFT) or even (ranking: the prompt ends
# with the human turn), and takes chosen and rejected from the even tags.
ODD_TAGS, EVEN_TAGS = ("human", "observation"), ("gpt", "function_call")


def assert_sharegpt(conversations: list[Row], *, ranking: bool) -> None:
    assert conversations
    for i, message in enumerate(conversations):
        assert set(message) == {"from", "value"}
        assert isinstance(message["value"], str)
        assert message["from"] in (ODD_TAGS, EVEN_TAGS)[i % 2], (i, message)
        if message["from"] == "function_call":
            # FunctionFormatter: `json.loads(content)`, a list for parallel calls, each
            # {"name", "arguments"}; it dumps `arguments` back to JSON.
            calls = json.loads(message["value"])
            for call in calls if isinstance(calls, list) else [calls]:
                assert set(call) == {"name", "arguments"}
                # An object; the model's text (a JSON string) for a call whose arguments were not one.
                assert isinstance(call["arguments"], dict | str)
            assert conversations[i + 1]["from"] == "observation"
    assert len(conversations) % 2 == (1 if ranking else 0)


def assert_tools_text(tools: str, scenario_tools: list[Row] | None) -> None:
    # The README's example dataset: "tools": "[{\"name\": ..., \"description\": ..., \"parameters\": ...}]".
    if scenario_tools is None:
        assert tools == ""
    else:
        assert json.loads(tools) == [t["function"] for t in scenario_tools]


def test_llamafactory_sft_rows_follow_the_documented_format(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    sft = {row["episode_id"]: row for row in rows(exports, "sft")}
    observations = 0
    for row in rows(exports, "llamafactory"):
        assert set(row) == {"conversations", "system", "tools", "episode_id", "scenario"}
        assert_sharegpt(row["conversations"], ranking=False)
        messages = sft[row["episode_id"]]["messages"]
        assert row["system"] == messages[0]["content"] and messages[0]["role"] == "system"
        assert_tools_text(row["tools"], sft[row["episode_id"]].get("tools"))
        # The dialogue's own turns, in order; each round of tool results is one observation.
        spoken = [m["content"] for m in messages[1:] if m["role"] != "tool" and not m["tool_calls"]]
        assert [m["value"] for m in row["conversations"] if m["from"] in ("human", "gpt")] == spoken
        rounds = [m for m in messages if m["tool_calls"]]
        assert sum(m["from"] == "observation" for m in row["conversations"]) == len(rounds)
        for call_message, conversation in zip(
            rounds, [m for m in row["conversations"] if m["from"] == "function_call"], strict=True
        ):
            calls = json.loads(conversation["value"])
            calls = calls if isinstance(calls, list) else [calls]
            assert [(c["name"], c["arguments"]) for c in calls] == [
                (c["function"]["name"], c["function"]["arguments"]) for c in call_message["tool_calls"]
            ]
        observations += len(rounds)
    assert observations > 0, "support-refund's assistant calls tools"


def test_llamafactory_ranking_rows_follow_the_documented_format(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    dpo = {row["pair_id"]: row for row in rows(exports, "dpo")}
    ranking = rows(exports, "llamafactory-ranking")
    # One message per reply: the pairs whose replies call tools are left out.
    assert len(ranking) == sum(1 for pair in dpo.values() if not calls_tools(pair, ("chosen", "rejected")))
    assert len(ranking) < len(dpo)
    for row in ranking:
        assert set(row) == {
            "conversations", "system", "tools", "chosen", "rejected",
            "pair_id", "episode_id", "turn_idx", "source", "margin",
        }  # fmt: skip
        assert_sharegpt(row["conversations"], ranking=True)
        pair = dpo[row["pair_id"]]
        assert row["conversations"][-1] == {"from": "human", "value": pair["prompt"][-1]["content"]}
        for side in ("chosen", "rejected"):
            assert row[side] == {"from": "gpt", "value": pair[side][-1]["content"]}
            assert row[side]["from"] in EVEN_TAGS
        assert row["chosen"] != row["rejected"]


def test_llamafactory_exports_register_in_dataset_info(corpus: Path, tmp_path: Path) -> None:
    # data/README.md: "dataset_name": {"file_name", "formatting": "sharegpt", "ranking": true (for
    # preference data), "columns": {...}, "tags": {...}}, in the dataset_info.json of `dataset_dir`.
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    sft = export(corpus, format="llamafactory", out=tmp_path / "dramaturg_sft.jsonl")
    pairs = export(corpus, format="llamafactory-ranking", out=tmp_path / "dramaturg_pairs.parquet")
    assert sft.side_files == pairs.side_files == (info,)
    tags = {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    }
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    assert json.loads(info.read_text()) == {
        "mine": {"file_name": "mine.json"},
        "dramaturg_sft": {
            "file_name": "dramaturg_sft.jsonl",
            "formatting": "sharegpt",
            "columns": columns,
            "tags": tags,
        },
        "dramaturg_pairs": {
            "file_name": "dramaturg_pairs.parquet",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": columns | {"chosen": "chosen", "rejected": "rejected"},
            "tags": tags,
        },
    }
    # A dataset list that cannot be read stops the export before anything is written.
    info.write_text("{not json")
    with pytest.raises(ConfigError, match=r"dataset_info.json: cannot read LLaMA-Factory's dataset list"):
        export(corpus, format="llamafactory", out=tmp_path / "other.jsonl")
    info.write_text("[]")
    with pytest.raises(ConfigError, match="not a JSON object of dataset entries"):
        export(corpus, format="llamafactory", out=tmp_path / "other.jsonl")
    assert not (tmp_path / "other.jsonl").exists()
    assert info.read_text() == "[]"


# -- Axolotl -----------------------------------------------------------------------------------------


def test_axolotl_sft_rows_follow_the_documented_format(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    # docs/dataset-formats/conversation.qmd, chat_template: {"messages": [{"role", "content"}]};
    # "Using tool use": "tools" [{"type", "function": {...}}], an assistant message with
    # "tool_calls" [{"id", "type", "function": {"name", "arguments"}}], a {"role": "tool",
    # "tool_call_id", "name", "content"} message; arguments and tools may be JSON strings "to
    # prevent `datasets` from having casting issues" (the prompt strategy json.loads them);
    # "fine-grained control": a per-message training flag read with `message_field_training`.
    openai = rows(exports, "openai")
    sft = rows(exports, "sft")
    axolotl = rows(exports, "axolotl")
    assert len(axolotl) == len(sft) == len(openai)
    for row, trl, line in zip(axolotl, sft, openai, strict=True):
        assert set(row) == {"messages", "tools", "episode_id", "scenario"}
        assert row["episode_id"] == trl["episode_id"]
        tools = json.loads(row["tools"]) if row["tools"] is not None else None
        assert tools == trl["tools"]
        for m, trl_m, openai_m in zip(row["messages"], trl["messages"], line["messages"], strict=True):
            assert set(m) == {"role", "content", "tool_calls", "tool_call_id", "name", "train"}
            assert (m["role"], m["content"]) == (trl_m["role"], trl_m["content"])
            # Learnt: the assistant's messages but those OpenAI's line weights 0.
            assert m["train"] == (m["role"] == "assistant" and "weight" not in openai_m)
            if m["tool_calls"]:
                assert [json.loads(c["function"]["arguments"]) for c in m["tool_calls"]] == [
                    c["function"]["arguments"] for c in trl_m["tool_calls"]
                ]
                assert all(c["type"] == "function" and c["id"] for c in m["tool_calls"])
            if m["role"] == "tool":
                assert (m["tool_call_id"], m["name"]) == (trl_m["tool_call_id"], trl_m["name"])


def test_axolotl_dpo_rows_are_read_by_chat_template_default(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    # docs/rlhf.qmd, chat_template.default: {"messages": [{"role", "content"}, ...], "chosen":
    # {"role": "assistant", "content"}, "rejected": {...}}, read with the documented
    # `roles: {user: [user], assistant: [assistant], system: [system]}`: every role must map.
    roles = {"user": "user", "assistant": "assistant", "system": "system"}
    dpo = {row["pair_id"]: row for row in rows(exports, "dpo")}
    axolotl = rows(exports, "axolotl-dpo")
    # Roles and contents only: the pairs that carry tool calls anywhere are left out.
    assert len(axolotl) == sum(
        1 for pair in dpo.values() if not calls_tools(pair, ("prompt", "chosen", "rejected"))
    )
    assert len(axolotl) < len(dpo)
    for row in axolotl:
        pair = dpo[row["pair_id"]]
        assert [{"role": roles[m["role"]], "content": m["content"]} for m in row["messages"]] == [
            {"role": m["role"], "content": m["content"]} for m in pair["prompt"]
        ]
        assert row["messages"][-1]["role"] == "user"
        for side in ("chosen", "rejected"):
            assert row[side] == {"role": "assistant", "content": pair[side][-1]["content"]}
            assert roles[row[side]["role"]] == "assistant"


# -- TRL KTO -----------------------------------------------------------------------------------------


def test_trl_kto_rows_are_trls_own_unpairing_of_the_dpo_rows(
    exports: dict[str, tuple[Path, ExportSummary]],
) -> None:
    # TRL's dataset formats, unpaired preference (conversational): {"prompt": [messages],
    # "completion": [assistant message], "label": bool}. `unpair_preference_dataset` makes one row
    # per chosen (label True) and rejected (label False) reply, extra columns repeated.
    from trl import is_conversational, unpair_preference_dataset

    kto = load(exports["trl-kto.parquet"][0])
    dpo = load(exports["dpo.parquet"][0])
    assert kto.column_names[:3] == ["prompt", "completion", "label"]
    assert len(kto) == 2 * len(dpo)

    def canonical(dataset: Dataset) -> Counter[str]:
        return Counter(json.dumps(row, sort_keys=True) for row in dataset.to_list())

    assert canonical(kto) == canonical(unpair_preference_dataset(dpo))
    for n, row in enumerate(kto):
        assert is_conversational(row)
        assert row["label"] is (n % 2 == 0), "each pair's chosen reply, then its rejected one"
        assert row["completion"][-1]["role"] == "assistant"
        assert row["prompt"][-1]["role"] == "user"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_trl_kto_trainer_takes_the_rows(
    exports: dict[str, tuple[Path, ExportSummary]], tmp_path: Path
) -> None:
    # One KTO step on a tiny random model: KTOTrainer tokenizes the conversational rows through the
    # chat template, with each row's `tools`.
    import importlib.resources

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from trl import KTOConfig, KTOTrainer

    template = (importlib.resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=template,
    )
    config = Qwen2Config(
        vocab_size=8,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    trainer = KTOTrainer(
        model=Qwen2ForCausalLM(config),
        ref_model=Qwen2ForCausalLM(config),
        args=KTOConfig(
            output_dir=str(tmp_path / "kto"),
            max_steps=1,
            per_device_train_batch_size=2,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
        ),
        train_dataset=load(exports["trl-kto.jsonl"][0]),
        processing_class=tokenizer,
    )
    trainer.train()


# -- docs/exports.md ---------------------------------------------------------------------------------

# `<!-- example: FORMAT ROW -->` then a ```json block: row ROW of FORMAT's export of the docs run.
EXAMPLE = re.compile(r"<!-- example: (\S+) (\d+) -->\n```json\n(.*?)\n```", re.DOTALL)
# `$ dramaturg export ... --format FORMAT --out FILE` then its summary line.
COMMAND = re.compile(
    r"^\$ dramaturg export --db corpus\.duckdb --format (\S+) --out (\S+)\n(exported .*)$", re.M
)


def test_docs_example_rows_are_real(exports: dict[str, tuple[Path, ExportSummary]]) -> None:
    examples = EXAMPLE.findall(DOCS.read_text())
    assert {export_format for export_format, _, _ in examples} == set(EXPORT_FORMATS)
    for export_format, n, text in examples:
        actual = rows(exports, export_format)[int(n)]
        documented = json.loads(text)
        # Pair ids are random (uuid4); everything else is the run's.
        if "pair_id" in documented:
            documented["pair_id"] = actual["pair_id"]
        assert documented == actual, f"docs/exports.md, {export_format} row {n} is now:\n" + json.dumps(
            actual, indent=2, ensure_ascii=False
        )


def test_docs_commands_print_what_they_say(
    corpus: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(corpus, tmp_path / "corpus.duckdb")
    commands = COMMAND.findall(DOCS.read_text())
    assert {export_format for export_format, _, _ in commands} == set(EXPORT_FORMATS)
    for export_format, out, printed in commands:
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        result = cli("export", "--db", "corpus.duckdb", "--format", export_format, "--out", out)
        assert result.exit_code == 0, result.output
        assert result.output.strip() == printed
    # The dataset_info.json entries the docs show are the ones written.
    documented = re.search(r"<!-- dataset_info -->\n```json\n(.*?)\n```", DOCS.read_text(), re.DOTALL)
    assert documented is not None
    assert json.loads(documented.group(1)) == json.loads(
        (tmp_path / "data" / "dataset_info.json").read_text()
    )
