"""Structured replies of the critic, judge and verifier, and their strict parsing.

A reply that does not parse raises :class:`ReplyParseError` carrying the raw text; callers
ask again (bounded) and then record a failure. A parse never yields a row of ``None``s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dramaturg._errors import ReplyParseError

__all__ = [
    "CritiqueReply",
    "EvolutionVerdict",
    "GoalReply",
    "JudgeReply",
    "critique_schema",
    "parse_critique",
    "parse_evolution_verdict",
    "parse_goal",
    "parse_judgment",
    "reply_schema",
]

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
M = TypeVar("M", bound=BaseModel)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Field order is the order a schema-constrained model writes them in: the reasoning first,
# so the verdict follows from it instead of being rationalised after the fact.
class CritiqueReply(_Reply):
    feedback: str = Field(min_length=1)
    scores: dict[str, int]
    overall: float = Field(ge=1, le=10)


class JudgeReply(_Reply):
    reason: str = ""
    winner: Literal["A", "B", "tie"]


class EvolutionVerdict(_Reply):
    """Evol-Instruct's elimination: does the evolved request add to the seed (harder or new)?"""

    reason: str = ""
    verdict: Literal["yes", "no"]


class GoalReply(_Reply):
    reason: str = ""
    goal_met: bool


def reply_schema(model: type[BaseModel]) -> dict[str, object]:
    """The JSON schema an API is asked to follow for ``model``'s replies.

    Every property is required and no other is allowed (OpenAI's strict mode wants both;
    constrained decoders then never stop early), titles and defaults are dropped.
    """
    schema = model.model_json_schema()
    properties = {
        name: {k: v for k, v in spec.items() if k not in ("title", "default")}
        for name, spec in schema["properties"].items()
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


# A score is one of the integers 1..10, spelled as an enum: llama-cpp-python's grammar ignores
# minimum/maximum (the local 0.5B model wrote 0s under them), an enum it enforces.
_SCORE: dict[str, object] = {"type": "integer", "enum": list(range(1, 11))}


def critique_schema(rubric: Sequence[str]) -> dict[str, object]:
    """The critique schema for one rubric: each criterion a required integer from 1 to 10."""
    schema = reply_schema(CritiqueReply)
    properties = dict(schema["properties"])  # type: ignore[call-overload]
    properties["scores"] = {
        "type": "object",
        "properties": {criterion: _SCORE for criterion in rubric},
        "required": list(rubric),
        "additionalProperties": False,
    }
    properties["overall"] = _SCORE
    return {**schema, "properties": properties}


def _json_object(text: str) -> object:
    """The JSON object in a reply: bare, fenced, or the outermost {...} in prose."""
    candidates = [text.strip()]
    candidates += [match.strip() for match in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            # strict=False: raw newlines inside strings, which grammar-constrained llama.cpp
            # output contains, are a syntax slip, not a different answer.
            return json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
    raise ReplyParseError("the reply holds no JSON object", raw=text)


def _parse(model: type[M], text: str) -> M:
    data = _json_object(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "reply"
        raise ReplyParseError(f"field '{where}': {first['msg']}", raw=text) from exc


def parse_critique(text: str, rubric: Sequence[str]) -> CritiqueReply:
    """Parse a critic reply; every rubric criterion must be scored 1..10."""
    reply = _parse(CritiqueReply, text)
    missing = [criterion for criterion in rubric if criterion not in reply.scores]
    if missing:
        raise ReplyParseError(f"field 'scores': no score for {missing}", raw=text)
    out_of_range = {k: v for k, v in reply.scores.items() if not 1 <= v <= 10}
    if out_of_range:
        raise ReplyParseError(f"field 'scores': scores must be 1..10, got {out_of_range}", raw=text)
    return reply


def parse_evolution_verdict(text: str) -> EvolutionVerdict:
    return _parse(EvolutionVerdict, text)


def parse_judgment(text: str) -> JudgeReply:
    return _parse(JudgeReply, text)


def parse_goal(text: str) -> GoalReply:
    return _parse(GoalReply, text)
