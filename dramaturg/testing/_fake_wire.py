"""Tool traffic in the fake API: checked like the real APIs check it, read into a ModelRequest.

Each surface's body is validated for tools, tool choices, tool calls and tool results, with
the real APIs' rules and (where they are known) their words:

- OpenAI Chat Completions: a ``tool`` message must answer a call of the assistant message
  right before it (only other ``tool`` messages between), and an assistant message with
  ``tool_calls`` must be followed by a ``tool`` message for each call; ``tool_choice`` needs
  ``tools``.
- Anthropic Messages: ``tool_use`` and ``tool_result`` blocks need ``tools`` defined; each
  ``tool_use`` needs its ``tool_result`` in the next message, results come first in that
  message, and a result must answer a ``tool_use`` of the previous message.

A valid body becomes a :class:`Conversation`, which a request responder receives as a
``ModelRequest`` (backend ``sim``); the responder's text and tool calls are then written back
in the provider's reply shape. Only what a responder needs is read: images, documents and
cache-control markers are accepted and ignored, as before tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dramaturg._model import (
    GenerationParams,
    Message,
    ModelRequest,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "BadRequest",
    "Conversation",
    "anthropic_conversation",
    "anthropic_reply_content",
    "openai_conversation",
    "openai_reply_message",
]

# Both APIs' rule for tool (function) names.
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


class BadRequest(Exception):
    """The request body breaks a rule the real API enforces; answered with 400."""


@dataclass(slots=True)
class Conversation:
    """A request body as a responder reads it: our model layer's shapes."""

    system: str
    messages: list[Message]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    # Anthropic's forced tool (our backend's structured replies): its name and schema.
    forced_tool: str | None = None
    response_format: ResponseFormat | None = None
    params: GenerationParams = field(default_factory=GenerationParams)

    def request(self, model: str, seed: int) -> ModelRequest:
        """The ``sim`` request a request responder receives."""
        return ModelRequest(
            backend="sim",
            model=model,
            role="assistant",
            system=self.system,
            messages=tuple(self.messages),
            params=self.params,
            seed=seed,
            response_format=self.response_format,
            tools=self.tools,
            tool_choice=self.tool_choice,
        )

    def input_text(self) -> str:
        """Everything the model reads, for the fake's rough token count."""
        parts = [self.system]
        for message in self.messages:
            parts.append(message.content)
            parts += [call.arguments for call in message.tool_calls]
        return "".join(parts)

    def may_call_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


# --------------------------------------------------------------------------- shared


def _text(content: Any) -> str:
    """Text of a (validated) string or list of content blocks; other blocks carry none."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        block["text"] for block in content if isinstance(block, dict) and block.get("type") == "text"
    )


def _params(body: dict[str, Any], *limit_keys: str) -> GenerationParams:
    defaults = GenerationParams()
    temperature = body.get("temperature")
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        temperature = defaults.temperature
    limit = next((body[key] for key in limit_keys if isinstance(body.get(key), int)), defaults.max_tokens)
    return GenerationParams(temperature=float(temperature), max_tokens=limit)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- OpenAI


def _openai_tools(body: dict[str, Any]) -> tuple[ToolSpec, ...]:
    if "tools" not in body:
        return ()
    tools = body["tools"]
    if not isinstance(tools, list):
        raise BadRequest("Invalid type for 'tools': expected an array of objects.")
    if not tools:
        raise BadRequest("Invalid 'tools': empty array. Expected an array with minimum length 1.")
    specs = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise BadRequest(f"Invalid type for '{where}': expected an object.")
        if tool.get("type") != "function":
            raise BadRequest(f"Invalid value for '{where}.type': this fake supports only 'function' tools.")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise BadRequest(f"Missing required parameter: '{where}.function'.")
        name = function.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"Missing required parameter: '{where}.function.name'.")
        if not _TOOL_NAME.match(name):
            raise BadRequest(
                f"Invalid '{where}.function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'."
            )
        description = function.get("description", "")
        if not isinstance(description, str):
            raise BadRequest(f"Invalid type for '{where}.function.description': expected a string.")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise BadRequest(f"Invalid type for '{where}.function.parameters': expected an object.")
        specs.append(ToolSpec(name, description, _canonical(parameters)))
    return tuple(specs)


def _openai_tool_choice(body: dict[str, Any], specs: tuple[ToolSpec, ...]) -> ToolChoice:
    """``none`` or ``auto``; ``required`` and a named function count as ``auto`` for a responder."""
    if "tool_choice" not in body:
        return "auto"
    if not specs:
        raise BadRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
        )
    choice = body["tool_choice"]
    if choice in ("none", "auto", "required"):
        return "none" if choice == "none" else "auto"
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in {spec.name for spec in specs}:
            raise BadRequest(f"Invalid value for 'tool_choice': no function named {name!r} was specified.")
        return "auto"
    raise BadRequest("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a function.")


def _openai_calls(message: dict[str, Any], index: int) -> tuple[ToolCall, ...]:
    if "tool_calls" not in message or message["tool_calls"] is None:
        return ()
    raw = message["tool_calls"]
    if not isinstance(raw, list):
        raise BadRequest(f"Invalid type for 'messages[{index}].tool_calls': expected an array.")
    calls = []
    for position, call in enumerate(raw):
        where = f"messages[{index}].tool_calls[{position}]"
        if not isinstance(call, dict):
            raise BadRequest(f"Invalid type for '{where}': expected an object.")
        if not isinstance(call.get("id"), str):
            raise BadRequest(f"Missing required parameter: '{where}.id'.")
        if call.get("type") != "function":
            raise BadRequest(f"Missing required parameter: '{where}.type'.")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"Missing required parameter: '{where}.function.name'.")
        if not isinstance(function.get("arguments"), str):
            raise BadRequest(f"Invalid type for '{where}.function.arguments': expected a string.")
        calls.append(ToolCall(call["id"], function["name"], function["arguments"]))
    return tuple(calls)


def openai_conversation(body: dict[str, Any]) -> Conversation:
    """Check a Chat Completions body's tool traffic; return it as a :class:`Conversation`.

    The caller has already checked the model and the messages' roles and contents.
    """
    specs = _openai_tools(body)
    choice = _openai_tool_choice(body, specs)
    system: list[str] = []
    messages: list[Message] = []
    open_calls: list[str] = []  # ids the latest assistant message asked for, not yet answered
    answering = False  # only tool messages since that assistant message

    def close() -> None:
        if open_calls:
            raise BadRequest(
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(open_calls)
            )

    for index, message in enumerate(body["messages"]):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise BadRequest(f"Missing required parameter: 'messages[{index}].tool_call_id'.")
            if not answering:
                raise BadRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'."
                )
            if call_id not in open_calls:
                raise BadRequest(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                    "previous message."
                )
            open_calls.remove(call_id)
            messages.append(Message("tool", _text(message.get("content")), tool_call_id=call_id))
            continue
        close()
        answering = False
        text = _text(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            messages.append(Message("user", text))
        elif role == "assistant":
            calls = _openai_calls(message, index)
            messages.append(Message("assistant", text, tool_calls=calls))
            if calls:
                open_calls, answering = [call.id for call in calls], True
    close()
    response_format = None
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt["json_schema"]
        if isinstance(spec.get("schema"), dict):
            response_format = ResponseFormat(spec["name"], _canonical(spec["schema"]))
    return Conversation(
        system="\n".join(system),
        messages=messages,
        tools=specs,
        tool_choice=choice,
        response_format=response_format,
        params=_params(body, "max_completion_tokens", "max_tokens"),
    )


def openai_reply_message(text: str, calls: Sequence[ToolCall]) -> tuple[dict[str, Any], str]:
    """The reply's ``choices[0].message`` and its ``finish_reason``."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if not calls:
        return message, "stop"
    message["content"] = text or None
    message["tool_calls"] = [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in calls
    ]
    return message, "tool_calls"


# --------------------------------------------------------------------------- Anthropic


def _anthropic_tools(body: dict[str, Any]) -> tuple[tuple[ToolSpec, ...], str | None, ToolChoice]:
    """Declared tools, the forced tool's name (if one is forced) and the choice for a responder."""
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise BadRequest("tools: Input should be a valid list")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest(f"tools.{index}.name: Field required")
        if not _TOOL_NAME.match(tool["name"]):
            pattern = _TOOL_NAME.pattern
            raise BadRequest(f"tools.{index}.custom.name: String should match pattern '{pattern}'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise BadRequest(f"tools.{index}.custom.input_schema.type: Input should be 'object'")
        description = tool.get("description", "")
        if not isinstance(description, str):
            raise BadRequest(f"tools.{index}.custom.description: Input should be a valid string")
        specs.append(ToolSpec(tool["name"], description, _canonical(schema)))
    choice = body.get("tool_choice")
    if choice is None:
        return tuple(specs), None, "auto"
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise BadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool":
        name = choice.get("name")
        if name not in {spec.name for spec in specs}:
            raise BadRequest(f"tool_choice: Tool '{name}' not found in the provided tools")
        return tuple(specs), str(name), "auto"
    return tuple(specs), None, "none" if choice["type"] == "none" else "auto"


def _tool_use(block: dict[str, Any], where: str) -> ToolCall:
    if not isinstance(block.get("id"), str) or not _TOOL_USE_ID.match(block["id"]):
        raise BadRequest(f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    if not isinstance(block.get("name"), str):
        raise BadRequest(f"{where}.tool_use.name: Field required")
    if not isinstance(block.get("input"), dict):
        raise BadRequest(f"{where}.tool_use.input: Input should be a valid dictionary")
    arguments = json.dumps(block["input"], sort_keys=True, ensure_ascii=False)
    return ToolCall(block["id"], block["name"], arguments)


def _tool_result(block: dict[str, Any], where: str) -> Message:
    if not isinstance(block.get("tool_use_id"), str):
        raise BadRequest(f"{where}.tool_result.tool_use_id: Field required")
    content = block.get("content", "")
    if not isinstance(content, str | list):
        raise BadRequest(f"{where}.tool_result.content: Input should be a valid string or list")
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise BadRequest(f"{where}.tool_result.is_error: Input should be a valid boolean")
    return Message(
        "tool", _text(content), tool_call_id=block["tool_use_id"], is_error=block.get("is_error", False)
    )


@dataclass(slots=True)
class _Turn:
    """One Messages API message, read: what it says, the calls it makes, the results it gives."""

    messages: list[Message]
    uses: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    results_first: bool = True  # no tool_result block comes after other content


def _anthropic_turn(index: int, message: dict[str, Any]) -> _Turn:
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return _Turn([Message("user", content) if role == "user" else Message("assistant", content)])
    calls: list[ToolCall] = []
    results: list[Message] = []
    texts: list[str] = []
    results_first = True
    for position, block in enumerate(content):
        where = f"messages.{index}.content.{position}"
        kind = block["type"]
        if kind == "tool_use":
            if role != "assistant":
                raise BadRequest(f"{where}: tool_use blocks can only appear in assistant messages")
            calls.append(_tool_use(block, where))
        elif kind == "tool_result":
            if role != "user":
                raise BadRequest(f"{where}: tool_result blocks can only appear in user messages")
            results.append(_tool_result(block, where))
            results_first = results_first and len(results) == position + 1
        elif kind == "text":
            texts.append(block["text"])
    text = "\n".join(texts)
    if role == "assistant":
        return _Turn([Message("assistant", text, tool_calls=tuple(calls))], uses=[c.id for c in calls])
    said = [Message("user", text)] if texts or not results else []
    ids = [str(result.tool_call_id) for result in results]
    return _Turn([*results, *said], results=ids, results_first=results_first)


def anthropic_conversation(body: dict[str, Any]) -> Conversation:
    """Check a Messages API body's tools and tool blocks; return it as a :class:`Conversation`.

    The caller has already checked the model, roles, alternation and content blocks' types.
    """
    specs, forced, choice = _anthropic_tools(body)
    messages: list[Message] = []
    previous_uses: list[str] = []
    any_tool_blocks = False
    for index, raw in enumerate(body["messages"]):
        turn = _anthropic_turn(index, raw)
        any_tool_blocks = any_tool_blocks or bool(turn.uses or turn.results)
        for position, call_id in enumerate(turn.results):
            if call_id not in previous_uses:
                raise BadRequest(
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {call_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        if previous_uses and not turn.results_first:
            raise BadRequest(
                f"messages.{index}: Did not find {len(previous_uses)} `tool_result` block(s) at the "
                "beginning of this message. Messages following `tool_use` blocks must begin with a "
                "matching number of `tool_result` blocks."
            )
        missing = [call_id for call_id in previous_uses if call_id not in turn.results]
        if missing:
            raise BadRequest(
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        previous_uses = turn.uses
        messages += turn.messages
    if any_tool_blocks and not specs:
        raise BadRequest("Requests which include `tool_use` or `tool_result` blocks must define tools.")
    response_format = None
    tools = specs
    if forced is not None:
        # The forced tool is how our backend asks for a structured reply: a responder sees
        # a response_format, not a tool it may call.
        schema = next(spec.parameters for spec in specs if spec.name == forced)
        response_format, tools = ResponseFormat(forced, schema), ()
    return Conversation(
        system=_text(body.get("system")),
        messages=messages,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        response_format=response_format,
        params=_params(body, "max_tokens"),
    )


def anthropic_reply_content(text: str, calls: Sequence[ToolCall]) -> tuple[list[dict[str, Any]], str]:
    """The reply's content blocks and its ``stop_reason``.

    Raises:
        ValueError: a call's arguments are not a JSON object (a real reply's input always is).
    """
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text or not calls else []
    for call in calls:
        value = json.loads(call.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError(f"tool call {call.id} has arguments that are not a JSON object")
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": value})
    return content, "tool_use" if calls else "end_turn"
