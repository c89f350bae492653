"""Seed files and imported dialogues: every format, auto-detection, errors that point at the line."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dramaturg.scenarios import (
    SAMPLE_DIALOGUES,
    SAMPLE_DIALOGUES_SHAREGPT,
    ImportedDialogue,
    read_dialogues,
    read_seeds,
)

from dramaturg import ScenarioError

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, *rows: object) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Seeds


def test_txt_seeds_skip_blank_lines_strip_and_drop_exact_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "seeds.txt"
    path.write_text(
        "\ufeffHow do I fix a flat tyre?\n\n  What is a Roth IRA?  \r\nHow do I fix a flat tyre?\n"
        "how do I fix a flat tyre?\n# not a comment\n",
        encoding="utf-8",
    )
    assert read_seeds(path) == [
        "How do I fix a flat tyre?",
        "What is a Roth IRA?",
        "how do I fix a flat tyre?",  # only exact duplicates are dropped
        "# not a comment",
    ]


def test_jsonl_seeds_take_the_only_text_field_or_a_known_name(tmp_path: Path) -> None:
    only = _jsonl(tmp_path / "only.jsonl", {"q": "first?", "n": 1}, {"q": "second?", "n": 2})
    assert read_seeds(only) == ["first?", "second?"]
    named = _jsonl(
        tmp_path / "named.jsonl",
        {"instruction": "Give three tips.", "input": "", "output": "1. ..."},
        {"instruction": "Name a river.", "input": "", "output": "Nile"},
    )
    assert read_seeds(named) == ["Give three tips.", "Name a river."]
    # prompt comes before text when both exist
    both = _jsonl(tmp_path / "both.jsonl", {"text": "t", "prompt": "p", "answer": "a"})
    assert read_seeds(both) == ["p"]


def test_jsonl_seeds_accept_bare_strings_and_skip_nulls_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '"a bare string"\n\n{"prompt": null}\n{"prompt": "  "}\n{"prompt": "b"}\n', encoding="utf-8"
    )
    assert read_seeds(path) == ["a bare string", "b"]


def test_column_picks_the_field(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "s.jsonl", {"prompt": "p1", "topic": "t1"}, {"prompt": "p2", "topic": "t2"})
    assert read_seeds(path, column="topic") == ["t1", "t2"]


def test_json_list_seeds(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.json"
    rows = [
        {"instruction": "Write a haiku.", "output": "..."},
        {"instruction": "Sum 2 and 2.", "output": "4"},
    ]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    assert read_seeds(path) == ["Write a haiku.", "Sum 2 and 2."]
    strings = tmp_path / "strings.json"
    strings.write_text('["one", null, "two", "one"]', encoding="utf-8")
    assert read_seeds(strings) == ["one", "two"]


def test_csv_seeds_single_column_quoted_newlines_and_named_column(tmp_path: Path) -> None:
    single = tmp_path / "single.csv"
    single.write_text('request\n"Plan a trip, please"\n"Two\nlines"\n\nshort\n', encoding="utf-8")
    assert read_seeds(single) == ["Plan a trip, please", "Two\nlines", "short"]
    several = tmp_path / "several.csv"
    several.write_text(
        "id,question,category\n1,What is DNS?,tech\n2,Why is the sky blue?,science\n", encoding="utf-8"
    )
    assert read_seeds(several) == ["What is DNS?", "Why is the sky blue?"]
    assert read_seeds(several, column="category") == ["tech", "science"]


def test_parquet_seeds(tmp_path: Path) -> None:
    path = tmp_path / "seeds.parquet"
    table = pa.table(
        {"id": [1, 2, 3, 4], "prompt": ["a?", None, "b?", "a?"], "lang": ["en", "en", "fr", "en"]}
    )
    pq.write_table(table, path)
    assert read_seeds(path) == ["a?", "b?"]
    assert read_seeds(path, column="lang") == ["en", "fr"]
    with pytest.raises(
        ScenarioError, match=r"seeds\.parquet: field 'id': expected a text column, got BIGINT"
    ):
        read_seeds(path, column="id")
    with pytest.raises(ScenarioError, match=r"field 'nope': no such column \(columns: id, prompt, lang\)"):
        read_seeds(path, column="nope")
    only_text = tmp_path / "only.parquet"
    pq.write_table(pa.table({"n": [1], "ask": ["the only text column"]}), only_text)
    assert read_seeds(only_text) == ["the only text column"]


def test_five_thousand_seeds_load(tmp_path: Path) -> None:
    lines = [f"Question number {i}: how do I do task {i}?" for i in range(5000)]
    txt = tmp_path / "many.txt"
    txt.write_text("\n".join(lines), encoding="utf-8")
    assert read_seeds(txt) == lines
    csv_path = tmp_path / "many.csv"
    csv_path.write_text(
        "id,prompt\n" + "".join(f'{i},"{line}"\n' for i, line in enumerate(lines)), encoding="utf-8"
    )
    assert read_seeds(csv_path) == lines
    parquet = tmp_path / "many.parquet"
    pq.write_table(pa.table({"prompt": lines}), parquet)
    assert read_seeds(parquet) == lines


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "s.jsonl",
            '{"prompt": "ok"}\n{"prompt": 3}\n',
            r"s\.jsonl:2: field 'prompt': expected text, got a number",
        ),
        (
            "s.jsonl",
            '{"prompt": "ok"}\n{"question": "where did prompt go"}\n',
            r"s\.jsonl:2: field 'prompt': missing \(fields here: question\)",
        ),
        ("s.jsonl", '{"prompt": "ok"}\n{"prompt": "ok",\n', r"s\.jsonl:2: not valid JSON"),
        ("s.jsonl", "[1, 2]\n", r"s\.jsonl:1 \(item 1\): expected a string or an object, got a number"),
        (
            "s.jsonl",
            '{"question_a": "x", "question_b": "y"}\n',
            r"s\.jsonl:1: cannot tell which field holds the seed \(text fields: question_a, question_b; "
            r".*pass column=",
        ),
        ("s.csv", "a,b\nx,y\n", r"s\.csv:1: cannot tell which field holds the seed \(text fields: a, b"),
        ("s.csv", "prompt,b\nx,y\nonly-one-field\n", r"s\.csv:3: expected 2 fields like the header, got 1"),
        (
            "s.csv",
            'prompt\nfine\n"unbalanced\nquote\nswallows the rest\n',
            r"s\.csv:3: not valid CSV: unexpected end",
        ),
        ("s.csv", 'prompt\n"stray" quote\n', r"s\.csv:2: not valid CSV"),
        ("s.csv", 'prompt\n"x\ny" \n', r"s\.csv:2: not valid CSV"),
        ("s.json", '["a", "b" "c"]', r"s\.json:1: not valid JSON: expected ',' or '\]'"),
        ("s.parquet", "not parquet at all", r"s\.parquet: cannot read as Parquet"),
        ("s.csv", "prompt\nx\n", None),  # control: fine
        ("s.tsv", "x\n", r"unknown seed file type '\.tsv'"),
    ],
)
def test_seed_errors_name_file_line_and_field(
    tmp_path: Path, name: str, content: str, message: str | None
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    if message is None:
        assert read_seeds(path) == ["x"]
        return
    with pytest.raises(ScenarioError, match=message):
        read_seeds(path)


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("prompt\nx\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"s\.csv: field 'question': no such column \(header: prompt\)"):
        read_seeds(path, column="question")
    for missing in ("nope.txt", "nope.parquet"):
        with pytest.raises(ScenarioError, match=rf"{missing}: no such file"):
            read_seeds(tmp_path / missing)
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(ScenarioError, match=r"folder\.txt: cannot read"):
        read_seeds(tmp_path / "folder.txt")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert read_seeds(empty) == []


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\nalso fine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match=r"latin1\.txt:3: not UTF-8 text"):
        read_seeds(path)


# --------------------------------------------------------------------------------------------
# Dialogues

OPENAI_ROW = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What's 2+2?"},
    ]
}
SHAREGPT_ROW = {
    "system": "Be brief.",
    "conversations": [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello! How can I help?"},
        {"from": "human", "value": "What's 2+2?"},
    ],
}
EXPECTED_TURNS = (("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "What's 2+2?"))


def test_openai_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(
        json.dumps(OPENAI_ROW) + "\n\n" + json.dumps({"id": 7, **OPENAI_ROW}) + "\n", encoding="utf-8"
    )
    first, second = read_dialogues(path)
    assert first == ImportedDialogue(id="chats:1", system="Be brief.", turns=EXPECTED_TURNS, source=str(path))
    assert second.id == "7"  # the file's own id; blank line 2 is skipped, so this row is line 3
    assert first.messages() == OPENAI_ROW["messages"]


def test_sharegpt_json_list_and_jsonl_read_the_same(tmp_path: Path) -> None:
    as_list = tmp_path / "sg.json"
    as_list.write_text(json.dumps([SHAREGPT_ROW, SHAREGPT_ROW], indent=2), encoding="utf-8")
    as_lines = _jsonl(tmp_path / "sg2.jsonl", SHAREGPT_ROW, SHAREGPT_ROW)
    from_list, from_lines = read_dialogues(as_list), read_dialogues(as_lines)
    assert [d.id for d in from_list] == ["sg:1", "sg:2"]  # item numbers, not lines
    assert [d.id for d in from_lines] == ["sg2:1", "sg2:2"]
    assert all(d.system == "Be brief." and d.turns == EXPECTED_TURNS for d in from_list + from_lines)


def test_forms_are_detected_per_row_and_by_content_not_suffix(tmp_path: Path) -> None:
    mixed = _jsonl(tmp_path / "mixed.json", OPENAI_ROW, SHAREGPT_ROW)  # JSON lines despite .json
    assert [d.turns for d in read_dialogues(mixed)] == [EXPECTED_TURNS, EXPECTED_TURNS]
    listed = tmp_path / "listed.jsonl"  # a JSON list despite .jsonl
    listed.write_text(json.dumps([OPENAI_ROW, SHAREGPT_ROW]), encoding="utf-8")
    assert [d.id for d in read_dialogues(listed)] == ["listed:1", "listed:2"]


def test_sharegpt_variants_system_turn_and_user_assistant_names(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "user", "value": "Hi"},
            {"from": "assistant", "value": "Hello!"},
        ]
    }
    (dialogue,) = read_dialogues(_jsonl(tmp_path / "v.jsonl", row))
    assert dialogue.system == "Be kind."
    assert dialogue.turns == (("user", "Hi"), ("assistant", "Hello!"))


def test_openai_developer_role_and_text_parts(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "Bonjour !", "weight": 1},
        ]
    }
    (dialogue,) = read_dialogues(_jsonl(tmp_path / "d.jsonl", row))
    assert dialogue.system == "Answer in French."
    assert dialogue.turns == (("user", "Hello there"), ("assistant", "Bonjour !"))


def test_same_side_neighbours_merge_and_a_dialogue_may_start_with_the_assistant(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "assistant", "content": "Welcome! How can I help?"},
            {"role": "user", "content": "My order is late."},
            {"role": "user", "content": "Order 1234."},
            {"role": "assistant", "content": "Sorry about that."},
            {"role": "assistant", "content": "It ships tomorrow."},
        ]
    }
    (dialogue,) = read_dialogues(_jsonl(tmp_path / "m.jsonl", row))
    assert dialogue.system is None
    assert dialogue.turns == (
        ("assistant", "Welcome! How can I help?"),
        ("user", "My order is late.\n\nOrder 1234."),
        ("assistant", "Sorry about that.\n\nIt ships tomorrow."),
    )


def test_texts_are_kept_byte_for_byte(tmp_path: Path) -> None:
    reply = "  Indented code:\n\n    x = 1\n\nand a trailing space \u2028 and a line separator. "
    row = {"messages": [{"role": "user", "content": "Show me"}, {"role": "assistant", "content": reply}]}
    path = tmp_path / "exact.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_dialogues(path)[0].turns[1][1] == reply


def _message(role: str, content: object = "text") -> dict[str, object]:
    return {"role": role, "content": content}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"turns": []},
            r"expected 'messages' \(OpenAI chat\) or 'conversations' \(ShareGPT\); fields here: turns",
        ),
        ({**OPENAI_ROW, **SHAREGPT_ROW}, "has both 'messages'"),
        ({"messages": "hi"}, r"field 'messages': expected a list of messages, got a string"),
        ({"messages": []}, r"field 'messages': no user or assistant messages"),
        ({"messages": [_message("system")]}, r"field 'messages': no user or assistant messages"),
        (
            {"messages": [_message("user"), _message("bot")]},
            r"field 'messages\[1\]\.role': unknown role 'bot'",
        ),
        ({"messages": [{"content": "hi"}]}, r"field 'messages\[0\]\.role': missing"),
        ({"messages": [_message("user", "  \n")]}, r"field 'messages\[0\]\.content': empty message"),
        ({"messages": [_message("user", None)]}, r"field 'messages\[0\]\.content': missing"),
        (
            {"messages": [_message("user", 42)]},
            r"field 'messages\[0\]\.content': expected a string, got a number",
        ),
        (
            {"messages": [_message("user", [{"type": "image_url", "image_url": {"url": "x"}}])]},
            r"field 'messages\[0\]\.content\[0\]': only text parts",
        ),
        (
            {"messages": [_message("user"), _message("assistant"), _message("system")]},
            r"field 'messages\[2\]\.role': a system message after the first turn",
        ),
        (
            {
                "system": "A",
                "conversations": [{"from": "system", "value": "B"}, {"from": "human", "value": "hi"}],
            },
            r"field 'conversations\[0\]\.from': a second system prompt",
        ),
        (
            {"messages": [_message("user"), _message("tool")]},
            r"field 'messages\[1\]\.role': tool calls cannot be",
        ),
        (
            {"messages": [_message("user"), {"role": "assistant", "content": None, "tool_calls": []}]},
            r"field 'messages\[1\]\.tool_calls': tool calls cannot be imported",
        ),
        (
            {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{}"}]},
            r"field 'conversations\[1\]\.from': tool calls cannot be imported",
        ),
        (
            {"conversations": [{"from": "human", "value": "x"}, {"from": "observation", "value": "{}"}]},
            r"field 'conversations\[1\]\.from': tool calls cannot be imported",
        ),
        ({"system": 3, "conversations": SHAREGPT_ROW["conversations"]}, r"field 'system': expected a string"),
        ({"id": ["x"], **OPENAI_ROW}, r"field 'id': expected a non-empty string or an integer"),
        ({"messages": [["user", "hi"]]}, r"field 'messages\[0\]': expected an object, got a list"),
    ],
)
def test_dialogue_errors_name_file_line_and_field(
    tmp_path: Path, row: dict[str, object], message: str
) -> None:
    # The bad row is on line 2, after a good one.
    path = _jsonl(tmp_path / "bad.jsonl", OPENAI_ROW, row)
    with pytest.raises(ScenarioError, match=r"bad\.jsonl:2: " + message):
        read_dialogues(path)


def test_not_json_duplicate_ids_and_non_object_rows(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(OPENAI_ROW) + "\n" + '{"messages": [\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken\.jsonl:2: not valid JSON"):
        read_dialogues(broken)
    duplicated = _jsonl(tmp_path / "dup.jsonl", {"id": "a", **OPENAI_ROW}, {"id": "a", **SHAREGPT_ROW})
    with pytest.raises(
        ScenarioError, match=r"dup\.jsonl:2: field 'id': duplicate id 'a' \(first at .*dup\.jsonl:1\)"
    ):
        read_dialogues(duplicated)
    scalar = _jsonl(tmp_path / "scalar.jsonl", "just a string")
    with pytest.raises(ScenarioError, match=r"scalar\.jsonl:1: expected an object, got a string"):
        read_dialogues(scalar)
    with pytest.raises(ScenarioError, match=r"nope\.jsonl: no such file"):
        read_dialogues(tmp_path / "nope.jsonl")


def test_json_list_errors_name_the_line_where_the_item_starts(tmp_path: Path) -> None:
    bad = {"conversations": [{"from": "human", "value": "x"}, {"from": "robot", "value": "y"}]}
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps([SHAREGPT_ROW, bad], indent=2), encoding="utf-8")
    lines = json.dumps([SHAREGPT_ROW, bad], indent=2).split("\n")
    start = [number for number, line in enumerate(lines, start=1) if line == "  {"][1]
    with pytest.raises(
        ScenarioError, match=rf"pretty\.json:{start} \(item 2\): field 'conversations\[1\]\.from'"
    ):
        read_dialogues(path)
    truncated = tmp_path / "truncated.json"
    truncated.write_text("[\n" + json.dumps(OPENAI_ROW) + ',\n  {"messages": [\n', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"truncated\.json:4: not valid JSON"):
        read_dialogues(truncated)
    not_a_list = tmp_path / "object.json"
    not_a_list.write_text('  {"a": 1}', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"object\.json:1: expected 'messages'"):
        read_dialogues(not_a_list)  # by content: an object, not a list, is read as JSON lines
    trailing = tmp_path / "trailing.json"
    trailing.write_text(json.dumps([SHAREGPT_ROW]) + "\n]", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"trailing\.json:\d+: not valid JSON: extra data"):
        read_dialogues(trailing)


# --------------------------------------------------------------------------------------------
# The shipped sample


def test_the_two_sample_files_hold_the_same_dialogues() -> None:
    openai = read_dialogues(SAMPLE_DIALOGUES)
    sharegpt = read_dialogues(SAMPLE_DIALOGUES_SHAREGPT)
    assert [(d.id, d.system, d.turns) for d in openai] == [(d.id, d.system, d.turns) for d in sharegpt]
    assert [d.id for d in openai] == [f"real-{n:03d}" for n in range(1, len(openai) + 1)]


def test_the_sample_covers_what_the_recipes_need() -> None:
    dialogues = read_dialogues(SAMPLE_DIALOGUES)
    assert 30 <= len(dialogues) <= 40
    user_turns = [sum(speaker == "user" for speaker, _ in d.turns) for d in dialogues]
    assert min(user_turns) >= 2 and max(user_turns) <= 5
    assert sum(d.system is not None for d in dialogues) >= 5
    assert sum(d.turns[-1][0] == "user" for d in dialogues) >= 4  # prefixes for continuation
    assert sum(d.turns[0][0] == "assistant" for d in dialogues) >= 1
    for dialogue in dialogues:
        for _, text in dialogue.turns:
            assert text == text.strip() and "\n\n\n" not in text
            assert not _hard_wrapped(text), (dialogue.id, text)


def _hard_wrapped(text: str) -> bool:
    """Prose broken at ~80 columns, as an editor wraps it: chat messages do not look like that."""
    in_code = False
    lines = text.split("\n")
    for line, following in itertools.pairwise(lines):
        in_code ^= line.lstrip().startswith("```")
        if not in_code and len(line) >= 60 and following[:1].islower():
            return True
    return False


def test_sample_json_lines_are_one_compact_object_each() -> None:
    lines = SAMPLE_DIALOGUES.read_text(encoding="utf-8").splitlines()
    assert all(re.match(r'^\{"id": "real-\d{3}", "messages": \[', line) for line in lines)


@pytest.mark.slow
def test_a_built_wheel_ships_the_sample(tmp_path: Path) -> None:
    # A copy of the sources, so the build never touches the working tree's build/ folder.
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("dramaturg", "agents", "scenarios", "memory", "evaluators"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dramaturg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dramaturg/data/real_dialogues.jsonl", "dramaturg/data/real_dialogues_sharegpt.json"} <= names
