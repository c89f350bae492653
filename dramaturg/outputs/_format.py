"""What an export format is: the rows it reads, the SQL that renders them, what it cannot hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["Companion", "ExportFormat", "Format", "Items", "ToolCalls"]

# Every format's `--format` name. typer turns this Literal into the CLI's choices, so a new
# format adds its name here and its `Format` to `dramaturg.outputs.FORMATS` (checked at import).
ExportFormat = Literal[
    "dpo",
    "dpo-text",
    "sft",
    "trl-kto",
    "openai",
    "openai-dpo",
    "llamafactory",
    "llamafactory-ranking",
    "axolotl",
    "axolotl-dpo",
]

# What one file row is made from: a finished episode's dialogue, or a preference pair.
Items = Literal["dialogue", "pair"]

# Where a pair format can hold tool calls. Pairs it cannot hold are left out under the reason
# `tool_calls` (which cannot be included back): `prompt` formats take one message per reply,
# `nowhere` formats have no place for a call at all.
ToolCalls = Literal["anywhere", "prompt", "nowhere"]


class Companion(Protocol):
    """A file written next to the export, e.g. LLaMA-Factory's ``dataset_info.json``."""

    def check(self, out: Path) -> None:
        """Raise ConfigError when the companion cannot be written; runs before any export work."""

    def write(self, out: Path) -> Path:
        """Write the companion of ``out`` (already in place); return its path."""


@dataclass(frozen=True, slots=True)
class Format:
    """One export format.

    ``select`` returns a SELECT statement over the ``items`` CTE that
    :func:`dramaturg.outputs.items_sql` builds for ``items`` (its columns are documented
    there): one file row per item (``rows_per_item`` for formats that split a pair), ordered.
    It is called with ``tools``: whether a scenario of the exported runs has tools.

    Example:
        A format that writes each pair's prompt and chosen text::

            Format(
                name="my-format", consumer="Me", summary="prompt and chosen text", items="pair",
                select=lambda tools: "SELECT prompt, chosen[-1].content AS chosen FROM items "
                "ORDER BY episode_id, turn_idx, pair_id",
                tool_calls="nowhere",
            )
    """

    name: ExportFormat
    consumer: str  # the trainer it is for: groups `--format`'s help
    summary: str  # a few words for `--format`'s help
    items: Items
    select: Callable[[bool], str]
    tool_calls: ToolCalls = "anywhere"
    jsonl_only: bool = False  # the consumer reads JSONL files only
    rows_per_item: int = 1
    companion: Companion | None = None
