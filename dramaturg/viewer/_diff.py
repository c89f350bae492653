"""A word-level diff of a reply and its revision, as segments a template renders."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["DiffSegment", "word_diff"]

# Words and the whitespace between them are both tokens, so joining the segments gives back
# each text exactly, line breaks included.
_TOKENS = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True, slots=True)
class DiffSegment:
    op: Literal["same", "removed", "added"]
    text: str


def word_diff(original: str, revised: str) -> list[DiffSegment]:
    """Segments that read as ``original`` without the added ones, ``revised`` without the removed.

    Example:
        >>> [(s.op, s.text) for s in word_diff("a b c", "a x c")]
        [('same', 'a '), ('removed', 'b'), ('added', 'x'), ('same', ' c')]
    """
    old, new = _TOKENS.findall(original), _TOKENS.findall(revised)
    # autojunk off: with it, frequent tokens (spaces) in texts over 200 tokens count as junk
    # and the diff falls apart into one removal and one addition.
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    segments: list[DiffSegment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(segments, "same", "".join(old[i1:i2]))
            continue
        if tag in ("delete", "replace"):
            _append(segments, "removed", "".join(old[i1:i2]))
        if tag in ("insert", "replace"):
            _append(segments, "added", "".join(new[j1:j2]))
    return segments


def _append(segments: list[DiffSegment], op: Literal["same", "removed", "added"], text: str) -> None:
    if not text:
        return
    if segments and segments[-1].op == op:
        segments[-1] = DiffSegment(op, segments[-1].text + text)
    else:
        segments.append(DiffSegment(op, text))
