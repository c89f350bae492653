"""Exports of scenarios with tools: TRL's tool-calling format (sft, dpo) and OpenAI's chat fine-tuning JSONL.

A store filled by hand pins the exact rows (parallel calls, a call whose arguments are not JSON,
prompts that carry tool messages, a pair whose replies differ only in their tool calls); a sim
run of support-refund checks the real thing, loaded with `datasets` and rendered by TRL's own
chat-template utilities and trainers (the `train` extra, part of the README's install).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from datasets import Dataset, Json, List, Value, load_dataset

from dramaturg import ConfigError, RunConfig, Store, StoreError, run
from dramaturg._export import ExportFormat, export

T0 = datetime(2026, 1, 1)
SHOP_SYSTEM = "You are the support agent of a shop. Look orders up before refunding."
MATH_SYSTEM = "You are a patient math tutor."

LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order by its id.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
}
REFUND = {
    "name": "issue_refund",
    "description": "Refund money for an order.",
    "parameters": {
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number"},
            "reason": {"type": "string"},
        },
        "required": ["order_id", "amount"],
    },
}
SHOP_TOOLS = [{"type": "function", "function": tool} for tool in (LOOKUP, REFUND)]

ORDER = '{"order_id": "A-1", "price": 20.0, "days": 3}'


def call(call_id: str, name: str, arguments: str) -> dict[str, str]:
    return {"id": call_id, "name": name, "arguments": arguments}


def result(call_id: str, content: str, status: str = "ok") -> dict[str, Any]:
    return {"call_id": call_id, "content": content, "is_error": status != "ok", "status": status}


# Round 1 looks the order up; round 2 calls two tools at once, one with arguments that are not
# JSON (an invalid call: the assistant read the error back).
SHOP_STEPS = [
    {"calls": [call("c1", "lookup_order", '{"order_id": "A-1"}')], "results": [result("c1", ORDER)]},
    {
        "calls": [
            call("c2", "issue_refund", '{"order_id": "A-1", "amount": 20.0}'),
            call("c3", "lookup_order", "{order_id: A-1"),
        ],
        "results": [
            result("c2", '{"refunded": 20.0}'),
            result("c3", "error: arguments are not valid JSON", "invalid"),
        ],
    },
]
REFUND_ONLY = [
    {
        "calls": [call("c9", "issue_refund", '{"order_id": "A-1", "amount": 25}')],
        "results": [result("c9", "ok")],
    }
]

# episode_id -> (run_id, scenario, system prompt, [(role, content, tool steps)])
EPISODES: dict[str, tuple[str, str, str, list[tuple[str, str, list[dict[str, Any]] | None]]]] = {
    "r1/shop/0": (
        "r1",
        "shop",
        SHOP_SYSTEM,
        [
            ("user", "I want a refund for order A-1.", None),
            ("assistant", "Done: 20.00 refunded for order A-1.", SHOP_STEPS),
            ("user", "Thanks!", None),
            ("assistant", "You're welcome.", None),
        ],
    ),
    "r1/math/0": (
        "r1",
        "math",
        MATH_SYSTEM,
        [("user", "Solve 2x = 4.", None), ("assistant", "x = 2.", None)],
    ),
    "r2/math/0": (
        "r2",
        "math",
        MATH_SYSTEM,
        [("user", "Solve 3x = 9.", None), ("assistant", "x = 3.", None)],
    ),
}

SHOP_PROMPT = [
    {"role": "system", "content": SHOP_SYSTEM},
    {"role": "user", "content": "I want a refund for order A-1."},
]
# A later prompt that carries the earlier turn's tool messages, in OpenAI's nested shape...
NESTED_PROMPT = [
    *SHOP_PROMPT,
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "name": "lookup_order", "content": ORDER},
    {"role": "assistant", "content": "Done: 20.00 refunded for order A-1."},
    {"role": "user", "content": "Thanks!"},
]
# ...and in the flat shape of the stored steps, arguments as an object, no content.
FLAT_PROMPT = [
    *SHOP_PROMPT,
    {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "name": "lookup_order", "arguments": {"order_id": "A-1"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": ORDER},
    {"role": "assistant", "content": "Done: 20.00 refunded for order A-1."},
    {"role": "user", "content": "Thanks!"},
]

# (pair_id, episode_id, turn_idx, prompt, chosen, chosen steps, rejected, rejected steps)
PAIRS: list[tuple[Any, ...]] = [
    (
        "p-tools",
        "r1/shop/0",
        1,
        SHOP_PROMPT,
        "Done: 20.00 refunded.",
        SHOP_STEPS[:1],
        "Refunded 25.",
        REFUND_ONLY,
    ),
    # The revision only redid the tool calls: the texts are the same, the replies are not.
    ("p-steps", "r1/shop/0", 1, SHOP_PROMPT, "Refund issued.", SHOP_STEPS[:1], "Refund issued.", REFUND_ONLY),
    ("p-nested", "r1/shop/0", 3, NESTED_PROMPT, "You're welcome.", None, "k.", None),
    ("p-flat", "r1/shop/0", 3, FLAT_PROMPT, "Glad to help.", None, "bye", None),
    (
        "p-math",
        "r1/math/0",
        1,
        [{"role": "user", "content": "Solve 2x = 4."}],
        "x = 2.",
        None,
        "x = 5.",
        None,
    ),
    ("p-r2", "r2/math/0", 1, [{"role": "user", "content": "Solve 3x = 9."}], "x = 3.", None, "x = 1.", None),
]


def _fill(store: Store) -> None:
    for run_id in ("r1", "r2"):
        store.sql("INSERT INTO runs VALUES (?, ?, 0, '{}', 'test')", [run_id, T0])
    scenarios = [("r1", "shop", [LOOKUP, REFUND]), ("r1", "math", []), ("r2", "math", [])]
    for run_id, name, tools in scenarios:
        store.sql(
            "INSERT INTO scenarios VALUES (?, ?, 'test', ?)",
            [
                run_id,
                name,
                json.dumps(
                    {"name": name, "personas": [{"name": "Ana"}], "stages": [{"name": "ask"}], "tools": tools}
                ),
            ],
        )
    for episode_id, (run_id, scenario, system, turns) in EPISODES.items():
        store.sql(
            "INSERT INTO episodes (episode_id, run_id, scenario, idx, seed, status, started_at) "
            "VALUES (?, ?, ?, 0, 0, 'done', ?)",
            [episode_id, run_id, scenario, T0],
        )
        for idx, (role, content, steps) in enumerate(turns):
            call_id = f"{episode_id}#{idx}"
            request = {"system": system if role == "assistant" else "You play the user.", "messages": []}
            store.sql(
                "INSERT INTO llm_calls (call_id, request_hash, backend, model, role, status, request, "
                "latency_ms, created_at) VALUES (?, 'h', 'sim', 'sim', ?, 'ok', ?, 1, ?)",
                [call_id, "assistant" if role == "assistant" else "user_simulator", json.dumps(request), T0],
            )
            store.sql(
                "INSERT INTO turns (episode_id, idx, role, content, call_id, tool_steps) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [episode_id, idx, role, content, call_id, json.dumps(steps) if steps else None],
            )
    for pair_id, episode_id, turn_idx, prompt, chosen, chosen_steps, rejected, rejected_steps in PAIRS:
        run_id, scenario, _, _ = EPISODES[episode_id]
        store.sql(
            "INSERT INTO preference_pairs (pair_id, run_id, episode_id, scenario, turn_idx, prompt, chosen, "
            "rejected, source, margin, judge_agreement, checks_passed, judgment_ids, critique_ids, "
            "created_at, chosen_tool_steps, rejected_tool_steps) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'revision', 3.0, true, true, '[]', '[]', ?, ?, ?)",
            [
                pair_id,
                run_id,
                episode_id,
                scenario,
                turn_idx,
                json.dumps(prompt),
                chosen,
                rejected,
                T0,
                json.dumps(chosen_steps) if chosen_steps else None,
                json.dumps(rejected_steps) if rejected_steps else None,
            ],
        )


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tools") / "corpus.duckdb"
    with Store.open(path) as store:
        _fill(store)
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(template_db, tmp_path / "corpus.duckdb"))


def load(path: Path, tmp_path: Path) -> Dataset:
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def message(role: str, content: str, **tool_fields: Any) -> dict[str, Any]:
    """A message as TRL's tool-calling format has it: every key, null where it does not apply."""
    return {
        "role": role,
        "content": content,
        "tool_calls": None,
        "name": None,
        "tool_call_id": None,
    } | tool_fields


def calls_message(*calls: tuple[str, str, Any]) -> dict[str, Any]:
    tool_calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        for call_id, name, arguments in calls
    ]
    return message("assistant", "", tool_calls=tool_calls)


def tool_message(call_id: str, name: str, content: str) -> dict[str, Any]:
    return message("tool", content, name=name, tool_call_id=call_id)


# The shop dialogue's assistant turn 1, as TRL messages: arguments are objects; the call whose
# arguments were not JSON keeps the model's text, as a string.
SHOP_TURN_1 = [
    calls_message(("c1", "lookup_order", {"order_id": "A-1"})),
    tool_message("c1", "lookup_order", ORDER),
    calls_message(
        ("c2", "issue_refund", {"order_id": "A-1", "amount": 20.0}), ("c3", "lookup_order", "{order_id: A-1")
    ),
    tool_message("c2", "issue_refund", '{"refunded": 20.0}'),
    tool_message("c3", "lookup_order", "error: arguments are not valid JSON"),
    message("assistant", "Done: 20.00 refunded for order A-1."),
]


# -- TRL: sft and dpo -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sft_rows_carry_tools_and_expand_each_tool_round(db: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"sft{suffix}"
    summary = export(db, format="sft", out=out, run_id="r1", include=["all"])
    rows = {row["episode_id"]: row for row in load(out, tmp_path)}
    assert summary.rows == len(rows) == 2
    shop, math = rows["r1/shop/0"], rows["r1/math/0"]
    assert shop["tools"] == SHOP_TOOLS
    assert math["tools"] is None, "a scenario without tools has none, in a file where another has some"
    assert shop["messages"] == [
        message("system", SHOP_SYSTEM),
        message("user", "I want a refund for order A-1."),
        *SHOP_TURN_1,
        message("user", "Thanks!"),
        message("assistant", "You're welcome."),
    ]
    assert math["messages"] == [
        message("system", MATH_SYSTEM),
        message("user", "Solve 2x = 4."),
        message("assistant", "x = 2."),
    ]


def test_tool_columns_have_the_types_trl_documents(db: Path, tmp_path: Path) -> None:
    # TRL's docs: messages with `tool_calls`, and `tools` as a list of Json (arbitrary schemas).
    out = tmp_path / "sft.parquet"
    export(db, format="sft", out=out, run_id="r1", include=["all"])
    features = load(out, tmp_path).features
    assert features["tools"] == List(Json())
    assert features["messages"] == List(
        {
            "role": Value("string"),
            "content": Value("string"),
            "tool_calls": List(
                {
                    "id": Value("string"),
                    "type": Value("string"),
                    "function": {"name": Value("string"), "arguments": Json()},
                }
            ),
            "name": Value("string"),
            "tool_call_id": Value("string"),
        }
    )
    con = duckdb.connect()
    types = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{out}')").fetchall()
    )
    con.close()
    assert types["tools"] == "JSON[]"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_dpo_replies_hold_their_tool_calls_and_prompts_their_tool_messages(
    db: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"dpo{suffix}"
    summary = export(db, format="dpo", out=out, run_id="r1", include=["all"])
    dataset = load(out, tmp_path)
    assert dataset.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "tools",
        "pair_id",
        "episode_id",
        "turn_idx",
        "source",
        "margin",
    ]
    rows = {row["pair_id"]: row for row in dataset}
    assert summary.rows == len(rows) == 5
    prompt = [message("system", SHOP_SYSTEM), message("user", "I want a refund for order A-1.")]
    lookup = [
        calls_message(("c1", "lookup_order", {"order_id": "A-1"})),
        tool_message("c1", "lookup_order", ORDER),
    ]
    refund = [
        calls_message(("c9", "issue_refund", {"order_id": "A-1", "amount": 25})),
        tool_message("c9", "issue_refund", "ok"),
    ]
    assert rows["p-tools"]["prompt"] == prompt
    assert rows["p-tools"]["chosen"] == [*lookup, message("assistant", "Done: 20.00 refunded.")]
    assert rows["p-tools"]["rejected"] == [*refund, message("assistant", "Refunded 25.")]
    assert rows["p-steps"]["chosen"] == [*lookup, message("assistant", "Refund issued.")]
    assert rows["p-steps"]["rejected"] == [*refund, message("assistant", "Refund issued.")]
    # Tool messages already in a prompt (either shape) come out in the one shape.
    later = [
        *prompt,
        calls_message(("c1", "lookup_order", {"order_id": "A-1"})),
        message("tool", ORDER, tool_call_id="c1"),
        message("assistant", "Done: 20.00 refunded for order A-1."),
        message("user", "Thanks!"),
    ]
    assert rows["p-flat"]["prompt"] == later
    later[3] = tool_message("c1", "lookup_order", ORDER)
    assert rows["p-nested"]["prompt"] == later
    assert rows["p-nested"]["chosen"] == [message("assistant", "You're welcome.")]
    for pair_id in ("p-tools", "p-steps", "p-nested", "p-flat"):
        assert rows[pair_id]["tools"] == SHOP_TOOLS
    assert rows["p-math"]["tools"] is None
    assert rows["p-math"]["chosen"] == [message("assistant", "x = 2.")]


@pytest.mark.parametrize("export_format", ["dpo", "dpo-text", "sft"])
def test_runs_without_tools_keep_the_plain_shape(
    db: Path, tmp_path: Path, export_format: ExportFormat
) -> None:
    out = tmp_path / "plain.jsonl"
    export(db, format=export_format, out=out, run_id="r2", include=["all"])
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "tools" not in row
    if export_format == "sft":
        assert row["messages"] == [
            {"role": "system", "content": MATH_SYSTEM},
            {"role": "user", "content": "Solve 3x = 9."},
            {"role": "assistant", "content": "x = 3."},
        ]
    elif export_format == "dpo":
        assert row["chosen"] == [{"role": "assistant", "content": "x = 3."}]
    else:
        assert row["chosen"] == "x = 3."


def test_dpo_text_leaves_out_the_pairs_with_tool_calls(
    db: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "pairs.jsonl"
    summary = export(db, format="dpo-text", out=out, include=["all"])
    assert [json.loads(line)["pair_id"] for line in out.read_text().splitlines()] == ["p-math", "p-r2"]
    assert summary.left_out[-1] == ("tool_calls", 4)
    assert summary.rows + summary.left_out_total == len(PAIRS)
    result = cli("export", "--db", db, "--format", "dpo-text", "--out", out, "--include", "all")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("(left out: tool_calls 4)")
    refused = cli("export", "--db", db, "--format", "dpo-text", "--out", out, "--include", "tool_calls")
    assert refused.exit_code == 2
    assert "--include tool_calls: unknown reason" in refused.output


def test_tool_rounds_that_break_the_format_stop_the_export(db: Path, tmp_path: Path) -> None:
    broken = [{"calls": [call("c1", "lookup_order", "{}")], "results": [result("c7", ORDER)]}]
    with Store.open(db) as store:
        store.sql(
            "UPDATE turns SET tool_steps = ? WHERE episode_id = 'r1/shop/0' AND idx = 1", [json.dumps(broken)]
        )
        store.sql(
            "UPDATE preference_pairs SET rejected_tool_steps = '[{\"calls\": []}]' WHERE pair_id = 'p-math'"
        )
    with pytest.raises(
        StoreError, match="r1/shop/0: turn 1 tool round 1: its results do not answer its calls"
    ):
        export(db, format="sft", out=tmp_path / "sft.jsonl", include=["all"])
    with pytest.raises(StoreError, match="p-math: rejected tool round 1 has no calls"):
        export(db, format="dpo", out=tmp_path / "dpo.jsonl", include=["all"])
    assert not list(tmp_path.glob("*.jsonl"))


# -- OpenAI chat fine-tuning JSONL ----------------------------------------------------------------


def assert_openai_training_line(line: dict[str, Any]) -> None:
    """OpenAI's documented training line for chat models (FineTuneChatRequestInput): only its
    keys; messages as its chat API takes them; a tool call's arguments are JSON text; a tool
    message answers a call made before it."""
    from openai.types.chat import (
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
    )
    from pydantic import TypeAdapter

    assert set(line) <= {"messages", "tools", "parallel_tool_calls"}
    messages = line["messages"]
    TypeAdapter(list[ChatCompletionMessageParam]).validate_python(messages)
    TypeAdapter(list[ChatCompletionFunctionToolParam]).validate_python(line.get("tools", []))
    called: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            assert set(m) == {"role", "tool_call_id", "content"}
            assert m["tool_call_id"] in called
        elif "tool_calls" in m:
            # OpenAI's `weight` (0 or 1) may sit on any assistant message: not to learn from it.
            assert set(m) - {"weight"} == {"role", "tool_calls"}
            assert m["role"] == "assistant" and m.get("weight", 1) in (0, 1)
            TypeAdapter(list[ChatCompletionMessageFunctionToolCallParam]).validate_python(m["tool_calls"])
            for tool_call in m["tool_calls"]:
                assert set(tool_call) == {"id", "type", "function"}
                assert isinstance(tool_call["function"]["arguments"], str)
                called.add(tool_call["id"])
        else:
            assert set(m) - {"weight"} == {"role", "content"}
            assert m["role"] in {"system", "user", "assistant"}
            assert "weight" not in m or (m["role"] == "assistant" and m["weight"] in (0, 1))
    assert messages[-1]["role"] == "assistant"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_openai_lines_follow_the_documented_training_format(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    summary = export(db, format="openai", out=out, include=["all"])
    lines = read_jsonl(out)
    assert summary.rows == len(lines) == 3
    for line in lines:
        assert_openai_training_line(line)
    # Lines follow the sft rows' order (by episode id): r1/math/0, r1/shop/0, r2/math/0.
    math, shop, _ = lines
    assert math == {
        "messages": [
            {"role": "system", "content": MATH_SYSTEM},
            {"role": "user", "content": "Solve 2x = 4."},
            {"role": "assistant", "content": "x = 2."},
        ],
        "tools": [],
    }
    assert shop["tools"] == SHOP_TOOLS
    assert shop["messages"][2:7] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id": "A-1"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": ORDER},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "issue_refund", "arguments": '{"order_id": "A-1", "amount": 20.0}'},
                },
                {
                    "id": "c3",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": "{order_id: A-1"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c2", "content": '{"refunded": 20.0}'},
        {"role": "tool", "tool_call_id": "c3", "content": "error: arguments are not valid JSON"},
    ]


def test_openai_lines_without_tools_are_messages_only(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    export(db, format="openai", out=out, run_id="r2")
    assert read_jsonl(out) == [
        {
            "messages": [
                {"role": "system", "content": MATH_SYSTEM},
                {"role": "user", "content": "Solve 3x = 9."},
                {"role": "assistant", "content": "x = 3."},
            ]
        }
    ]


def test_openai_writes_jsonl_and_dialogues_only(db: Path, tmp_path: Path, cli: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match=r"use a file ending in \.jsonl"):
        export(db, format="openai", out=tmp_path / "train.parquet")
    with pytest.raises(ConfigError, match="--min-margin filters preference pairs"):
        export(db, format="openai", out=tmp_path / "train.jsonl", min_margin=1.0)
    result = cli("export", "--db", db, "--format", "openai", "--out", tmp_path / "t.jsonl", "--run-id", "r1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"exported 2 openai rows to {tmp_path / 't.jsonl'}")


# -- a sim run of support-refund ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("sim-tools") / "refunds.duckdb"
    summary = asyncio.run(run(RunConfig(scenarios=["support-refund"], episodes=10, run_id="refunds"), db))
    assert summary.done == 10
    return db


@pytest.fixture(scope="module")
def sim_exports(sim_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every export of the sim run, rows left out by curation included."""
    folder = tmp_path_factory.mktemp("sim-exports")
    files = {
        f"{fmt}{suffix}": folder / f"{fmt}{suffix}"
        for fmt in ("sft", "dpo")
        for suffix in (".jsonl", ".parquet")
    }
    for name, path in files.items():
        export(sim_db, format=name.split(".")[0], out=path, include=["all"])  # type: ignore[arg-type]
    files["openai.jsonl"] = folder / "openai.jsonl"
    export(sim_db, format="openai", out=files["openai.jsonl"], include=["all"])
    return files


def stored(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tool_rounds(
    messages: list[dict[str, Any]],
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(calls, tool messages) for each assistant message that calls tools."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m["tool_calls"]:
            answers = []
            for later in messages[i + 1 :]:
                if later["role"] != "tool":
                    break
                answers.append(later)
            yield m["tool_calls"], answers


def arguments(text: str) -> Any:
    """Stored arguments as the TRL rows hold them: the object, or the text that is not one."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    return parsed if isinstance(parsed, dict) else text


def exported_round(calls: list[dict[str, Any]], answers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls": [
            {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in calls
        ],
        "results": [{"call_id": a["tool_call_id"], "content": a["content"]} for a in answers],
    }


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_sim_sft_rows_hold_the_stored_tool_rounds(
    sim_db: Path, sim_exports: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    rows = load(sim_exports[f"sft{suffix}"], tmp_path).to_list()
    assert len(rows) == 10
    (definition,) = stored(sim_db, "SELECT definition ->> '$.tools' FROM scenarios")
    tools = [{"type": "function", "function": tool} for tool in json.loads(definition[0])]
    steps: dict[str, list[dict[str, Any]]] = {}
    for episode_id, tool_steps in stored(
        sim_db,
        "SELECT episode_id, tool_steps FROM turns WHERE tool_steps IS NOT NULL ORDER BY episode_id, idx",
    ):
        for step in json.loads(tool_steps):
            steps.setdefault(episode_id, []).append(
                {
                    "calls": [c | {"arguments": arguments(c["arguments"])} for c in step["calls"]],
                    "results": [{"call_id": r["call_id"], "content": r["content"]} for r in step["results"]],
                }
            )
    assert sum(1 for episode_id in steps if steps[episode_id]) >= 9, "support-refund's assistant calls tools"
    for row in rows:
        assert row["tools"] == tools
        exported = []
        for calls, answers in tool_rounds(row["messages"]):
            assert [a["tool_call_id"] for a in answers] == [c["id"] for c in calls]
            assert [a["name"] for a in answers] == [c["function"]["name"] for c in calls]
            exported.append(exported_round(calls, answers))
        assert exported == steps.get(row["episode_id"], [])


def test_sim_dpo_rows_hold_the_replies_tool_rounds(
    sim_db: Path, sim_exports: dict[str, Path], tmp_path: Path
) -> None:
    rows = {row["pair_id"]: row for row in load(sim_exports["dpo.parquet"], tmp_path)}
    pairs = stored(
        sim_db,
        "SELECT pair_id, chosen, chosen_tool_steps, rejected, rejected_tool_steps FROM preference_pairs",
    )
    assert len(rows) == len(pairs) > 0
    assert any(chosen_steps or rejected_steps for _, _, chosen_steps, _, rejected_steps in pairs)
    for pair_id, chosen, chosen_steps, rejected, rejected_steps in pairs:
        row = rows[pair_id]
        assert row["prompt"][-1]["role"] == "user"
        for messages, text, steps in (
            (row["chosen"], chosen, chosen_steps),
            (row["rejected"], rejected, rejected_steps),
        ):
            assert messages[-1] == message("assistant", text)
            assert len(list(tool_rounds(messages))) == len(json.loads(steps or "[]"))
            assert [m["role"] for m in messages[:-1]] == [
                role
                for step in json.loads(steps or "[]")
                for role in ["assistant"] + ["tool"] * len(step["calls"])
            ]


def test_sim_openai_lines_follow_the_documented_training_format(sim_exports: dict[str, Path]) -> None:
    lines = read_jsonl(sim_exports["openai.jsonl"])
    assert len(lines) == 10
    for line in lines:
        assert_openai_training_line(line)
    assert sum(1 for line in lines if any("tool_calls" in m for m in line["messages"])) >= 9


# -- TRL's own chat-template utilities and trainers ---------------------------------------------


@pytest.fixture(scope="module")
def qwen_tokenizer() -> Any:
    """A tokenizer built offline around the Qwen2.5 chat template that TRL ships (tool calling
    with `tool_call.arguments | tojson`): no hub download. Its vocabulary is a few special
    tokens; the text is what these tests read."""
    # No skip: the README's install brings TRL, and a skipped test would hide the acceptance.
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template = (importlib.resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=template,
    )


def rendered_call(name: str, arguments: dict[str, Any]) -> str:
    # Qwen2.5's template writes each call as JSON inside <tool_call> tags, the arguments with tojson.
    return '<tool_call>\n{"name": "' + name + '", "arguments": ' + json.dumps(arguments) + "}\n</tool_call>"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_trl_renders_sft_rows_with_their_tools(
    qwen_tokenizer: Any, sim_exports: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    from trl import apply_chat_template
    from trl.chat_template_utils import supports_tool_calling

    assert supports_tool_calling(qwen_tokenizer)
    called = 0
    for row in load(sim_exports[f"sft{suffix}"], tmp_path):
        text = apply_chat_template({"messages": row["messages"]}, qwen_tokenizer, tools=row["tools"])["text"]
        assert "# Tools" in text
        for tool in row["tools"]:
            assert json.dumps(tool) in text
        for calls, answers in tool_rounds(row["messages"]):
            called += 1
            for c in calls:
                assert rendered_call(c["function"]["name"], c["function"]["arguments"]) in text
            for answer in answers:
                assert f"<tool_response>\n{answer['content']}\n</tool_response>" in text
    assert called > 0


def test_trl_renders_dpo_rows_with_their_tools(
    qwen_tokenizer: Any, sim_exports: dict[str, Path], tmp_path: Path
) -> None:
    from trl import apply_chat_template

    with_calls = 0
    for row in load(sim_exports["dpo.jsonl"], tmp_path):
        example = {key: row[key] for key in ("prompt", "chosen", "rejected")}
        text = apply_chat_template(example, qwen_tokenizer, tools=row["tools"])
        assert text["prompt"].endswith("<|im_start|>assistant\n")
        for side in ("chosen", "rejected"):
            assert text[side].endswith(row[side][-1]["content"] + "<|im_end|>\n")
            for calls, _ in tool_rounds(row[side]):
                with_calls += 1
                for c in calls:
                    assert rendered_call(c["function"]["name"], c["function"]["arguments"]) in text[side]
    assert with_calls > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
def test_trl_trainers_take_the_rows_and_their_tools_column(
    qwen_tokenizer: Any, sim_exports: dict[str, Path], tmp_path: Path
) -> None:
    # One step of SFT and of DPO on a tiny random model: the trainers tokenize the rows through
    # the chat template with each row's `tools` (TRL reads that column itself).
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    config = Qwen2Config(
        vocab_size=8,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    common = {
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "use_cpu": True,
    }
    sft = SFTTrainer(
        model=Qwen2ForCausalLM(config),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), **common),
        train_dataset=load(sim_exports["sft.parquet"], tmp_path),
        processing_class=qwen_tokenizer,
    )
    assert "input_ids" in sft.train_dataset.column_names
    sft.train()
    dpo = DPOTrainer(
        model=Qwen2ForCausalLM(config),
        ref_model=Qwen2ForCausalLM(config),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
        train_dataset=load(sim_exports["dpo.jsonl"], tmp_path),
        processing_class=qwen_tokenizer,
    )
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dpo.train_dataset.column_names)
    dpo.train()
