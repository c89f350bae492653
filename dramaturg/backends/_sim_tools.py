"""How the sim assistant uses tools: look up before acting, with planted, recorded mistakes.

The policy reads only what a real model would: the tool schemas of the request and the
conversation (the user's words, earlier tool calls and their results). Per assistant turn:

1. a *lookup* tool (``lookup_``, ``get_``, ``find_``, ``search_``, ``check_``, ``list_``) is
   called with arguments found in what the user said;
2. once its result is in, an *action* tool whose name the user's request mentions (``refund``
   in ``issue_refund``) is called with arguments taken from that result, unless the result
   says the action is not allowed (a false ``refundable``/``eligible`` flag); ``escalate``
   style tools are used instead where they exist;
3. then the assistant answers in text.

At ``mistake_rate`` a step of tool calls carries one planted mistake that fits it, recorded
in the call's annotations: ``act_before_lookup`` (the action first, unlooked-up) or
``unneeded_call`` (the same lookup twice) where a lookup is due, ``wrong_arguments`` (an
amount doubled, or an id altered) where an action is.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dramaturg._model import Message, ToolCall, ToolSpec

__all__ = ["ToolPlan", "plan_tools", "tool_findings"]

_LOOKUP = re.compile(r"^(?:lookup|look_up|get|find|search|check|list|query|fetch|read)_")
_ESCALATE = re.compile(r"escalat|transfer|handoff|hand_off")
_ID_VALUE = re.compile(r"\b(?:[A-Z]{1,4}-?\d{3,}|#\d{3,}|\d{5,})\b")
_AMOUNT_VALUE = re.compile(r"\$\s?(\d+(?:\.\d{1,2})?)")
_WORD = re.compile(r"[a-z]+")
_MONEY_KEYS = ("amount", "price", "total", "cost")
MISTAKES = ("act_before_lookup", "wrong_arguments", "unneeded_call")


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The sim's next step: tool calls to make (empty: answer in text) and what it planted."""

    calls: tuple[ToolCall, ...]
    mistake: str | None = None


def plan_tools(tools: Sequence[ToolSpec], messages: Sequence[Message], mistake_rate: float) -> ToolPlan:
    """The tool calls of the sim assistant's next step in this turn."""
    turn = _current_turn(messages)
    said = " ".join(m.content for m in messages if m.role == "user" and not m.tool_call_id)
    # What earlier turns looked up or did still holds: no second lookup, no second refund.
    done = [
        (call, _result_of(call, messages)) for m in messages if m.role == "assistant" for call in m.tool_calls
    ]
    lookups = [t for t in tools if _LOOKUP.match(t.name)]
    actions = [t for t in tools if not _LOOKUP.match(t.name) and not _ESCALATE.search(t.name)]
    escalations = [t for t in tools if _ESCALATE.search(t.name)]
    step = sum(1 for m in turn if m.role == "assistant" and m.tool_calls)
    planted = _plants(messages, step, mistake_rate)
    turn_tag = sum(1 for m in messages if m.role == "user" and not m.tool_call_id)

    looked_up = [(call, result) for call, result in done if _LOOKUP.match(call.name) and result is not None]
    acted = [call for call, result in done if not _LOOKUP.match(call.name) and result is not None]
    tried_this_turn = [call for m in turn if m.role == "assistant" for call in m.tool_calls]
    if acted or step >= 3 or any(not _LOOKUP.match(call.name) for call in tried_this_turn):
        return ToolPlan(())
    wanted = _wanted_action(actions, said)
    if not looked_up:
        if tried_this_turn:
            return ToolPlan(())  # the lookup failed: ask the customer rather than guess again
        if planted and wanted is not None and planted.random() < 0.5:
            return ToolPlan(
                (_call(wanted, _arguments(wanted, said, {}), turn_tag, step),), "act_before_lookup"
            )
        # A lookup the user has given the arguments for (none yet: ask the user in text).
        ready = [t for t in lookups if not _missing_required(t, _arguments(t, said, {}))]
        lookup = _best(ready, said)
        if lookup is None:
            return ToolPlan(())
        arguments = _arguments(lookup, said, {})
        calls = [_call(lookup, arguments, turn_tag, step)]
        if planted:
            calls.append(_call(lookup, arguments, turn_tag, step, index=1))
        return ToolPlan(tuple(calls), "unneeded_call" if planted else None)
    found = _merged_results([result for _, result in looked_up])
    if found is None:
        return ToolPlan(())
    if wanted is not None and not _forbidden(wanted, found):
        arguments = _arguments(wanted, said, found)
        if planted:
            arguments = _corrupt(arguments)
        return ToolPlan((_call(wanted, arguments, turn_tag, step),), "wrong_arguments" if planted else None)
    if wanted is not None and escalations:
        escalate = escalations[0]
        return ToolPlan((_call(escalate, _arguments(escalate, said, found), turn_tag, step),))
    return ToolPlan(())


def tool_findings(messages: Sequence[Message]) -> str:
    """One or two sentences on what this turn's tool calls found or did, for the text reply."""
    turn = _current_turn(messages)
    parts = []
    for message in turn:
        if message.role != "assistant":
            continue
        for call in message.tool_calls:
            result = _result_of(call, turn)
            if result is None:
                continue
            if isinstance(result, dict) and result:
                shown = ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in list(result.items())[:4])
            else:
                shown = _plain(result)
            parts.append(f"I ran {call.name.replace('_', ' ')} ({shown}).")
    return " ".join(parts[-2:])


def _plain(value: object) -> str:
    return re.sub(r"[()]", "", str(value))[:40]


# -- reading the conversation --------------------------------------------------------------------


def _current_turn(messages: Sequence[Message]) -> list[Message]:
    """The messages after the last message the user typed (tool results are not the user)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "user" and not message.tool_call_id:
            return list(messages[index + 1 :])
    return list(messages)


def _result_of(call: ToolCall, messages: Sequence[Message]) -> Any:
    for message in messages:
        if message.tool_call_id == call.id:
            if message.content.startswith("Error"):
                return None
            try:
                return json.loads(message.content)
            except json.JSONDecodeError:
                return message.content
    return None


def _plants(messages: Sequence[Message], step: int, rate: float) -> random.Random | None:
    """A seeded draw when this step plants a mistake, else None.

    Seeded by what the user and the assistant said (not by tool traffic) and the step, so a
    step's replay is identical.
    """
    spoken = [(m.role, m.content) for m in messages if not m.tool_call_id and not m.tool_calls]
    draw = random.Random(repr((spoken, step)))
    return draw if draw.random() < rate else None


def _merged_results(results: Sequence[Any]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for result in results:
        if isinstance(result, dict):
            merged.update(result)
    return merged or None


def _wanted_action(actions: Sequence[ToolSpec], said: str) -> ToolSpec | None:
    words = set(_WORD.findall(said.lower()))
    for action in actions:
        if any(part in words or part + "s" in words for part in action.name.split("_") if len(part) > 3):
            return action
    return None


def _best(tools: Sequence[ToolSpec], said: str) -> ToolSpec | None:
    words = set(_WORD.findall(said.lower()))
    scored = sorted(tools, key=lambda t: -sum(part in words for part in t.name.split("_")))
    return scored[0] if scored else None


def _forbidden(action: ToolSpec, found: dict[str, Any]) -> bool:
    """Whether the looked-up record says no: a false flag named after the action."""
    stems = [part[:5] for part in action.name.split("_") if len(part) > 3]
    for key, value in found.items():
        if value is False and (any(stem in key for stem in stems) or key in {"eligible", "allowed"}):
            return True
    return False


def _parameters(tool: ToolSpec) -> dict[str, Any]:
    schema = json.loads(tool.parameters)
    properties: dict[str, Any] = schema.get("properties", {})
    return properties


def _missing_required(tool: ToolSpec, arguments: dict[str, Any]) -> bool:
    required = json.loads(tool.parameters).get("required", [])
    return any(name not in arguments for name in required)


def _arguments(tool: ToolSpec, said: str, found: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name, schema in _parameters(tool).items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if name in found:
            arguments[name] = found[name]
        elif kind in {"number", "integer"} and any(key in found for key in _MONEY_KEYS):
            value = next(found[key] for key in _MONEY_KEYS if key in found)
            arguments[name] = int(value) if kind == "integer" else value
        elif name.endswith("id") or name.endswith("number"):
            match = _ID_VALUE.search(said)
            if match:
                arguments[name] = match.group(0).lstrip("#")
        elif kind in {"number", "integer"}:
            amount = _AMOUNT_VALUE.search(said)
            if amount:
                value = float(amount.group(1))
                arguments[name] = int(value) if kind == "integer" else value
        elif kind == "string" and name in {"reason", "note", "summary"}:
            arguments[name] = "as the customer asked"
    return arguments


def _corrupt(arguments: dict[str, Any]) -> dict[str, Any]:
    changed = dict(arguments)
    for name, value in changed.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            changed[name] = value * 2
            return changed
    for name, value in changed.items():
        if isinstance(value, str) and value:
            changed[name] = value[:-1] + ("0" if value[-1] != "0" else "1")
            return changed
    return changed


def _call(tool: ToolSpec, arguments: dict[str, Any], turn: int, step: int, *, index: int = 0) -> ToolCall:
    return ToolCall(
        id=f"call_{turn}_{step}_{index}",
        name=tool.name,
        arguments=json.dumps(arguments, sort_keys=True),
    )
