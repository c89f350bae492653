"""Inputs for the recipes: seed requests and existing conversations, read from files.

Two readers, one error style: anything malformed raises :class:`ScenarioError` whose message
names the file, the line (or row / item) and the field, e.g.
``data.jsonl:7: field 'messages[2].role': unknown role 'bot' ...``.

- :func:`read_seeds` reads seed questions or requests (Baize-style recipes open one episode
  per seed) from txt, JSONL, JSON, CSV or Parquet.
- :func:`read_dialogues` reads conversations in OpenAI ``messages`` form or ShareGPT
  ``conversations`` form, to be continued or used as the chosen side of SPIN pairs.

:data:`SAMPLE_DIALOGUES` is a small set of real conversations written for the project (the
same ones in ShareGPT form at :data:`SAMPLE_DIALOGUES_SHAREGPT`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from dramaturg._errors import ScenarioError

__all__ = [
    "SAMPLE_DIALOGUES",
    "SAMPLE_DIALOGUES_SHAREGPT",
    "ImportedDialogue",
    "Speaker",
    "read_dialogues",
    "read_seeds",
]

Speaker = Literal["user", "assistant"]

SAMPLE_DIALOGUES: Path = Path(str(files("dramaturg") / "data" / "real_dialogues.jsonl"))
"""36 conversations written for dramaturg, OpenAI ``messages`` JSONL (ids ``real-001`` ...)."""

SAMPLE_DIALOGUES_SHAREGPT: Path = Path(str(files("dramaturg") / "data" / "real_dialogues_sharegpt.json"))
"""The same conversations as :data:`SAMPLE_DIALOGUES`, as one ShareGPT JSON list."""

# Field names tried, in this order, when a seed file has several text columns.
SEED_COLUMNS = ("prompt", "question", "instruction", "text")

_SEED_SUFFIXES = {
    ".txt": "txt",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# Both forms' role names, mapped onto ours. OpenAI's newer "developer" role is its system role.
_OPENAI_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_SHAREGPT_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
# Tool traffic in either form (OpenAI's current and legacy names, LLaMA-Factory's names).
_TOOL_ROLES = frozenset({"tool", "function", "function_call", "observation", "ipython"})
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


# --------------------------------------------------------------------------------------------
# Seeds


def read_seeds(path: str | Path, *, column: str | None = None) -> list[str]:
    """Seed questions or requests from a file, one seed per episode.

    The format follows the suffix:

    - ``.txt``: one seed per non-empty line (no comment syntax: every line is a seed).
    - ``.jsonl`` or ``.json``: JSON lines (one string or object per line), or one JSON list
      of strings or objects (recognised by its leading ``[``, whatever the suffix).
    - ``.csv`` (with a header row) and ``.parquet``: one seed per row.

    For objects and tables the text comes from ``column`` when given; otherwise from the only
    text field, or else the first of ``prompt``, ``question``, ``instruction``, ``text`` that
    exists. The field is chosen once per file (from the header, or the first object), and
    every row must have it.

    Each seed is stripped of surrounding whitespace; empty and null values are skipped like
    blank lines. Exact duplicates are dropped, keeping the first occurrence and the file's
    order: a repeated seed would only stage a near-copy of an episode that curation's dedup
    removes later, after paying for its model calls.

    Args:
        path: the seed file.
        column: the field holding the seed text (objects, CSV and Parquet only).

    Returns:
        The seeds, in file order, without duplicates.

    Raises:
        ScenarioError: a missing or unreadable file, an unknown suffix, no usable column, or
            a row whose seed is not text; the message names the file, the line and the field.

    Example::

        seeds = read_seeds("questions.csv", column="question")
    """
    source = Path(path)
    kind = _SEED_SUFFIXES.get(source.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(_SEED_SUFFIXES))
        raise ScenarioError(
            f"unknown seed file type '{source.suffix}' (expected one of: {known})", source=str(source)
        )
    if kind == "parquet":
        values = _parquet_seeds(source, column)
    else:
        text = _read_text(source)
        if kind == "txt":
            values = iter(text.split("\n"))
        elif kind == "csv":
            values = _csv_seeds(source, text, column)
        else:
            values = _object_seeds(_json_rows(source, text), column)
    seeds: dict[str, None] = {}  # an ordered set
    for value in values:
        seed = value.strip()
        if seed:
            seeds.setdefault(seed)
    return list(seeds)


def _object_seeds(rows: Iterator[tuple[int, str, object]], column: str | None) -> Iterator[str]:
    chosen = column
    for _, where, row in rows:
        if isinstance(row, str):
            yield row
            continue
        if row is None:
            continue
        if not isinstance(row, dict):
            raise ScenarioError(f"expected a string or an object, got {_kind(row)}", source=where)
        if chosen is None:
            # null counts as text here: the first row may simply have no seed
            chosen = _pick_seed_column(
                where, [key for key, value in row.items() if value is None or isinstance(value, str)]
            )
        if chosen not in row:
            have = ", ".join(row) or "none"
            raise ScenarioError(f"missing (fields here: {have})", source=where, field=chosen)
        value = row[chosen]
        if value is None:
            continue
        if not isinstance(value, str):
            raise ScenarioError(f"expected text, got {_kind(value)}", source=where, field=chosen)
        yield value


def _csv_seeds(source: Path, text: str, column: str | None) -> Iterator[str]:
    # newline="": only real line ends split records (the csv module's documented requirement).
    # strict: an unbalanced quote is an error, not every following line swallowed into one seed.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ScenarioError(f"not valid CSV: {exc}", source=f"{source}:1") from exc
    if column is not None and column not in header:
        raise ScenarioError(f"no such column (header: {', '.join(header)})", source=str(source), field=column)
    chosen = column or _pick_seed_column(f"{source}:1", header)
    index = header.index(chosen)
    line = reader.line_num
    while True:
        start = line + 1  # a quoted field may span lines: report where the record starts
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ScenarioError(f"not valid CSV: {exc}", source=f"{source}:{start}") from exc
        line = reader.line_num
        if not record:
            continue
        if len(record) != len(header):
            raise ScenarioError(
                f"expected {len(header)} fields like the header, got {len(record)}",
                source=f"{source}:{start}",
            )
        yield record[index]


def _parquet_seeds(source: Path, column: str | None) -> Iterator[str]:
    if not source.is_file():
        raise ScenarioError("no such file", source=str(source))
    # duckdb, a core dependency, reads Parquet; pyarrow is only a dev extra. Imported here so
    # reading a text file never pays for it.
    import duckdb

    try:
        with duckdb.connect() as connection:
            relation = connection.read_parquet(str(source))
            types = dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))
            if column is not None and column not in types:
                have = ", ".join(types)
                raise ScenarioError(f"no such column (columns: {have})", source=str(source), field=column)
            chosen = column or _pick_seed_column(
                str(source), [name for name, t in types.items() if t == "VARCHAR"]
            )
            if types[chosen] != "VARCHAR":
                raise ScenarioError(
                    f"expected a text column, got {types[chosen]}", source=str(source), field=chosen
                )
            rows = relation.select(duckdb.ColumnExpression(chosen)).fetchall()
    except duckdb.Error as exc:
        raise ScenarioError(f"cannot read as Parquet: {exc}", source=str(source)) from exc
    return (value for (value,) in rows if value is not None)


def _pick_seed_column(where: str, text_fields: Sequence[str]) -> str:
    if len(text_fields) == 1:
        return text_fields[0]
    for name in SEED_COLUMNS:
        if name in text_fields:
            return name
    have = ", ".join(text_fields) or "none"
    raise ScenarioError(
        f"cannot tell which field holds the seed (text fields: {have}; "
        f"looked for {', '.join(SEED_COLUMNS)}); pass column=",
        source=where,
    )


# --------------------------------------------------------------------------------------------
# Dialogues


@dataclass(frozen=True, slots=True)
class ImportedDialogue:
    """A conversation read from a file, kept as it was written.

    Attributes:
        id: the row's ``id`` field when it has one, else ``<file stem>:<line>`` (for a JSON
            list, ``<file stem>:<item number>``, counting from 1).
        system: the system prompt, if the conversation had one.
        turns: (speaker, text) pairs. Speakers strictly alternate; the first turn may be the
            assistant's and the last may be either side's. Texts are byte-for-byte those of
            the file (SPIN uses them as the chosen replies), except that same-speaker
            neighbours in the file are joined into one turn with a blank line between them.
        source: the path of the file it came from.
    """

    id: str
    system: str | None
    turns: tuple[tuple[Speaker, str], ...]
    source: str

    def messages(self) -> list[dict[str, str]]:
        """The conversation as OpenAI chat messages, system message first when there is one."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + [{"role": speaker, "content": text} for speaker, text in self.turns]


def read_dialogues(path: str | Path) -> list[ImportedDialogue]:
    """Conversations from a JSONL file or a JSON list, in OpenAI or ShareGPT form.

    Each row's form is recognised by its key, so one file may mix them:

    - OpenAI chat: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}``
      (``developer`` counts as ``system``; ``content`` may be a list of text parts, joined).
    - ShareGPT: ``{"conversations": [{"from": "human" | "gpt" | "system", "value": ...}]}``,
      where ``from`` may also be ``user`` / ``assistant``, and a top-level ``system`` key
      (LLaMA-Factory) gives the system prompt.

    A system message is allowed only before the first turn. Consecutive messages from the
    same side are joined (blank line between), so the turns alternate. Conversations that
    use tools (``tool`` / ``function`` messages, ``tool_calls``, LLaMA-Factory's
    ``function_call`` / ``observation``) are refused rather than skipped: their calls target
    tools the scenario does not have, and dropping them silently would shrink a corpus
    without notice. Remove those rows first.

    Args:
        path: JSON lines (one object per line; blank lines ignored) or one JSON list of
            objects, recognised by content whatever the suffix.

    Returns:
        The dialogues in file order.

    Raises:
        ScenarioError: unreadable JSON, a missing or mistyped field, an unknown role, an empty
            message, tool use, or two rows with the same id; the message names the file, the
            line and the field.

    Example::

        for dialogue in read_dialogues(SAMPLE_DIALOGUES):
            print(dialogue.id, len(dialogue.turns))
    """
    source = Path(path)
    text = _read_text(source)
    rows = _json_rows(source, text)
    dialogues: list[ImportedDialogue] = []
    first_seen: dict[str, str] = {}
    for number, where, row in rows:
        dialogue = _dialogue(source, number, where, row)
        if dialogue.id in first_seen:
            raise ScenarioError(
                f"duplicate id {dialogue.id!r} (first at {first_seen[dialogue.id]})", source=where, field="id"
            )
        first_seen[dialogue.id] = where
        dialogues.append(dialogue)
    return dialogues


def _dialogue(source: Path, number: int, where: str, row: object) -> ImportedDialogue:
    if not isinstance(row, dict):
        raise ScenarioError(f"expected an object, got {_kind(row)}", source=where)
    if "messages" in row and "conversations" in row:
        raise ScenarioError(
            "has both 'messages' (OpenAI) and 'conversations' (ShareGPT); keep one", source=where
        )
    if "messages" in row:
        key, role_key, text_key, roles = "messages", "role", "content", _OPENAI_ROLES
        system = None
    elif "conversations" in row:
        key, role_key, text_key, roles = "conversations", "from", "value", _SHAREGPT_ROLES
        system = _optional_text(row, "system", where)
    else:
        have = ", ".join(row) or "none"
        raise ScenarioError(
            f"expected 'messages' (OpenAI chat) or 'conversations' (ShareGPT); fields here: {have}",
            source=where,
        )
    messages = row[key]
    if not isinstance(messages, list):
        raise ScenarioError(f"expected a list of messages, got {_kind(messages)}", source=where, field=key)
    turns: list[tuple[Speaker, str]] = []
    for index, message in enumerate(messages):
        field = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise ScenarioError(f"expected an object, got {_kind(message)}", source=where, field=field)
        if "tool_calls" in message or "function_call" in message:
            called = "tool_calls" if "tool_calls" in message else "function_call"
            raise _tool_error(where, f"{field}.{called}")
        role_name = message.get(role_key)
        if not isinstance(role_name, str):
            problem = "missing" if role_name is None else f"expected a string, got {_kind(role_name)}"
            raise ScenarioError(problem, source=where, field=f"{field}.{role_key}")
        if role_name in _TOOL_ROLES:
            raise _tool_error(where, f"{field}.{role_key}")
        role = roles.get(role_name)
        if role is None:
            raise ScenarioError(
                f"unknown role {role_name!r} (expected one of: {', '.join(roles)})",
                source=where,
                field=f"{field}.{role_key}",
            )
        content = _message_text(message.get(text_key), where, f"{field}.{text_key}")
        if role == "system":
            if turns or system is not None:
                what = (
                    "a second system prompt"
                    if system is not None
                    else "a system message after the first turn"
                )
                raise ScenarioError(
                    f"{what}; only one system prompt, before the first turn, is supported",
                    source=where,
                    field=f"{field}.{role_key}",
                )
            system = content
        elif turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n\n" + content)
        else:
            turns.append((role, content))
    if not turns:
        raise ScenarioError("no user or assistant messages", source=where, field=key)
    return ImportedDialogue(
        id=_row_id(row, source, number, where), system=system, turns=tuple(turns), source=str(source)
    )


def _message_text(content: object, where: str, field: str) -> str:
    if isinstance(content, list):  # OpenAI content parts: only text can be staged
        texts: list[str] = []
        for index, part in enumerate(content):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise ScenarioError(
                    "only text parts ({'type': 'text', 'text': ...}) are supported",
                    source=where,
                    field=f"{field}[{index}]",
                )
            texts.append(part["text"])
        content = "".join(texts)
    if content is None:
        raise ScenarioError("missing", source=where, field=field)
    if not isinstance(content, str):
        raise ScenarioError(f"expected a string, got {_kind(content)}", source=where, field=field)
    if not content.strip():
        raise ScenarioError("empty message", source=where, field=field)
    return content


def _optional_text(row: Mapping[str, object], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ScenarioError(f"expected a string, got {_kind(value)}", source=where, field=key)
    return value


def _row_id(row: Mapping[str, object], source: Path, number: int, where: str) -> str:
    value = row.get("id")
    if value is None:
        return f"{source.stem}:{number}"
    # bool is an int subclass, and True is no one's id
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ScenarioError(
            f"expected a non-empty string or an integer, got {value!r}", source=where, field="id"
        )
    return str(value)


def _tool_error(where: str, field: str) -> ScenarioError:
    return ScenarioError(
        "tool calls cannot be imported: they target tools this scenario does not have "
        "(remove tool-using conversations from the file)",
        source=where,
        field=field,
    )


# --------------------------------------------------------------------------------------------
# Shared readers


def _read_text(source: Path) -> str:
    try:
        # utf-8-sig: spreadsheet programs and Windows editors often start files with a BOM,
        # which would otherwise corrupt the first seed or break the first JSON line.
        return source.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ScenarioError("no such file", source=str(source)) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ScenarioError(f"not UTF-8 text ({exc.reason})", source=f"{source}:{line}") from exc
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror or exc}", source=str(source)) from exc


def _json_rows(source: Path, text: str) -> Iterator[tuple[int, str, object]]:
    # By content, not suffix: files named .json that hold JSON lines (and the reverse) are
    # common, and a JSON-lines row is an object or a string, never a list.
    if text.lstrip().startswith("["):
        return _json_list_items(source, text)
    return _jsonl_values(source, text)


def _jsonl_values(source: Path, text: str) -> Iterator[tuple[int, str, object]]:
    """(line number, where, value) for each non-blank line."""
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and other characters
    # that splitlines() treats as line ends.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield line, f"{source}:{line}", json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ScenarioError(
                f"not valid JSON: {exc.msg} (column {exc.colno})", source=f"{source}:{line}"
            ) from exc


def _json_list_items(source: Path, text: str) -> Iterator[tuple[int, str, object]]:
    """(item number, where, value) for each item of a JSON list, numbered from 1.

    Ids use the item's number, not its line: a ShareGPT list is often one long line, or
    pretty-printed over many lines per item, and both must give stable, distinct ids. Errors
    still name the line where the item starts, which is what an editor jumps to.
    """
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        # Counted incrementally: recounting from the start for each item is quadratic.
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def skip_space(pos: int) -> int:
        match = _JSON_SPACE.match(text, pos)
        return match.end() if match else pos

    pos = skip_space(text.index("[") + 1)  # _json_rows saw the list open
    number = 0
    while not text.startswith("]", pos):
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"not valid JSON: {exc.msg}", source=f"{source}:{exc.lineno}") from exc
        number += 1
        yield number, f"{source}:{line_at(pos)} (item {number})", value
        pos = skip_space(end)
        if text.startswith(",", pos):
            pos = skip_space(pos + 1)
        elif not text.startswith("]", pos):
            raise ScenarioError("not valid JSON: expected ',' or ']'", source=f"{source}:{line_at(pos)}")
    if skip_space(pos + 1) != len(text):
        raise ScenarioError("not valid JSON: extra data after the list", source=f"{source}:{line_at(pos)}")


_JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def _kind(value: object) -> str:
    """What a JSON value is, in the words of an error message."""
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
