"""Persona pools from a file, Persona Hub style: one persona a row, thousands of rows."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
from dramaturg.scenarios._dsl import Persona
from pydantic import ValidationError

from dramaturg._errors import ScenarioError

__all__ = ["FACT_COLUMN_PREFIX", "read_personas"]

# A hidden fact is a column of its own, named by this prefix and the fact's key
# (``fact:order id``): one convention for CSV, JSONL and Parquet alike.
FACT_COLUMN_PREFIX = "fact:"
_COLUMNS = ("name", "description", "traits", "mood", "goal")
_TRAIT_SEPARATORS = re.compile(r"[,;]")


@dataclass(frozen=True, slots=True)
class _Row:
    number: int  # 1 for the first persona
    source: str  # where it is, for errors: FILE:LINE (row N), or FILE (row N)
    cells: Mapping[str, object]


def read_personas(path: str | Path, *, goal: str | None = None, mood: str = "neutral") -> list[Persona]:
    """Read a pool of personas from a CSV, JSONL or Parquet file, one persona a row.

    Columns (a CSV's header, a JSONL object's keys, a Parquet file's columns):

    * ``name`` (required): unique in the file, as it identifies the persona in the store.
    * ``description``: who they are, in a sentence or two (the user simulator reads it).
    * ``traits``: a list, or one text separated by commas or semicolons.
    * ``mood``: the row's mood; ``mood`` for rows without one.
    * ``goal``: what they want, in the second person; ``goal`` for rows without one. May hold
      the scenario's ``{variables}``.
    * ``fact:KEY``: a hidden fact called KEY (e.g. ``fact:order id``), given only when the
      assistant asks for it; may hold ``{variables}``. An empty cell: no such fact.

    Example:
        >>> personas = read_personas("personas.csv", goal="get a refund for {item}")  # doctest: +SKIP
        >>> scenario = Scenario(..., personas=personas)  # doctest: +SKIP

    Raises:
        ScenarioError: no such file, an unknown format or column, or a malformed row; the
            message names the file, the row and the field.
    """
    path = Path(path)
    rows = _READERS.get(path.suffix.lower())
    if rows is None:
        raise ScenarioError(
            f"unknown persona file format {path.suffix or '(no extension)'!r} "
            f"(expected one of {', '.join(sorted(_READERS))})",
            source=str(path),
        )
    if not path.is_file():
        raise ScenarioError("no such persona file", source=str(path))
    personas: list[Persona] = []
    first_row: dict[str, int] = {}  # name -> the row that has it
    try:
        for row in rows(path):
            persona = _persona(row, goal=goal, mood=mood)
            if persona.name in first_row:
                raise ScenarioError(
                    f"{persona.name!r} is row {first_row[persona.name]}'s name already "
                    "(a name identifies its persona in the store)",
                    source=row.source,
                    field="name",
                )
            first_row[persona.name] = row.number
            personas.append(persona)
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ScenarioError(reason, source=str(path)) from exc
    except csv.Error as exc:
        raise ScenarioError(f"is not CSV: {exc}", source=str(path)) from exc
    if not personas:
        raise ScenarioError("holds no personas (expected one a row)", source=str(path))
    return personas


def _check_columns(columns: Iterable[object], source: str) -> None:
    for column in columns:
        text = str(column)
        if text.startswith(FACT_COLUMN_PREFIX):
            if not text[len(FACT_COLUMN_PREFIX) :].strip():
                raise ScenarioError(
                    f"column {text!r} names no fact (expected {FACT_COLUMN_PREFIX}KEY)", source=source
                )
        elif text not in _COLUMNS:
            raise ScenarioError(
                f"unknown column {text!r} (expected {', '.join(_COLUMNS)}, and hidden facts as "
                f"{FACT_COLUMN_PREFIX}KEY columns, e.g. '{FACT_COLUMN_PREFIX}order id')",
                source=source,
            )


def _persona(row: _Row, *, goal: str | None, mood: str) -> Persona:
    name = _text(row, "name")
    if not name:
        raise ScenarioError("is empty (every persona needs a name)", source=row.source, field="name")
    row_goal = _text(row, "goal") or goal
    if not row_goal:
        raise ScenarioError(
            "is empty, and no read_personas(goal=...) was given for such rows",
            source=row.source,
            field="goal",
        )
    facts: dict[str, str] = {}
    for column in row.cells:
        if column.startswith(FACT_COLUMN_PREFIX) and (value := _text(row, column)):
            facts[column[len(FACT_COLUMN_PREFIX) :].strip()] = value
    try:
        return Persona(
            name=name,
            description=_text(row, "description"),
            traits=_traits(row),
            mood=_text(row, "mood") or mood,
            goal=row_goal,
            hidden_facts=facts,
        )
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ScenarioError(str(error["msg"]), source=row.source, field=field) from exc


def _text(row: _Row, column: str) -> str:
    value = row.cells.get(column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ScenarioError(
            f"expected text, got {type(value).__name__} {value!r}", source=row.source, field=column
        )
    return value.strip()


def _traits(row: _Row) -> list[str]:
    value = row.cells.get("traits")
    if value is None:
        return []
    items: list[object]
    if isinstance(value, str):
        items = list(_TRAIT_SEPARATORS.split(value))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ScenarioError(
            f"expected a list, or a text of traits separated by commas or semicolons, "
            f"got {type(value).__name__}",
            source=row.source,
            field="traits",
        )
    for item in items:
        if not isinstance(item, str):
            raise ScenarioError(
                f"expected text, got {type(item).__name__} {item!r}", source=row.source, field="traits"
            )
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _csv_rows(path: Path) -> Iterator[_Row]:
    # utf-8-sig: spreadsheets write a byte-order mark that would otherwise rename the first column.
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [column.strip() for column in next(reader, [])]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise ScenarioError(f"column {repeated[0]!r} appears twice in the header", source=f"{path}:1")
        _check_columns(header, f"{path}:1")
        number = 0
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            number += 1
            source = f"{path}:{reader.line_num} (row {number})"
            if len(cells) > len(header):
                raise ScenarioError(
                    f"has {len(cells)} cells but the header names {len(header)} columns", source=source
                )
            yield _Row(number, source, dict(zip(header, cells, strict=False)))


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8") as file:
        number = 0
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            number += 1
            source = f"{path}:{line_number} (row {number})"
            try:
                cells = json.loads(line.rstrip())
            except json.JSONDecodeError as exc:
                raise ScenarioError(f"is not JSON: {exc.msg} at column {exc.colno}", source=source) from exc
            if not isinstance(cells, dict):
                raise ScenarioError(f"expected a JSON object, got {type(cells).__name__}", source=source)
            _check_columns(cells, source)
            yield _Row(number, source, cells)


def _parquet_rows(path: Path) -> Iterator[_Row]:
    try:
        with duckdb.connect() as con:
            result = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
            columns = [str(column[0]) for column in result.description or ()]
            table = result.fetchall()
    except duckdb.Error as exc:
        # DuckDB's message goes on to quote its own SQL: the first line is the reason.
        reason = str(exc).splitlines()[0]
        raise ScenarioError(f"cannot be read as Parquet: {reason}", source=str(path)) from exc
    _check_columns(columns, str(path))
    for number, values in enumerate(table, start=1):
        yield _Row(number, f"{path} (row {number})", dict(zip(columns, values, strict=True)))


_READERS: dict[str, Callable[[Path], Iterator[_Row]]] = {
    ".csv": _csv_rows,
    ".jsonl": _jsonl_rows,
    ".ndjson": _jsonl_rows,
    ".parquet": _parquet_rows,
}
