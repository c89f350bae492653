"""The ``anthropic`` backend: Claude through the Messages API of the ``anthropic`` SDK.

The SDK is imported when the backend is built, not when dramaturg is imported (it adds about
a second to import time). SDK retries are off: the gateway retries, paced by its limiter.

A request with a ``response_format`` forces a call of one tool whose input schema is that
schema; the tool call's input, as canonical JSON, is the reply text.

A request with ``tools`` (never together with a ``response_format``) declares them with
``tool_choice`` ``{"type": "auto"}`` or ``{"type": "none"}``. An assistant message's tool
calls become ``tool_use`` blocks after its text; the ``tool`` messages that answer them
become ``tool_result`` blocks of one user message, ahead of anything the user says next (the
API wants the results directly after the ``tool_use`` turn, and first in their message). A
reply's ``tool_use`` blocks become ``ModelResponse.tool_calls`` whose ``arguments`` are the
input as canonical JSON (sorted keys). Requests without tools are sent as before tools existed.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dramaturg._errors import BackendError, ConfigError
from dramaturg._model import Message, ModelRequest, ModelResponse, ToolCall
from dramaturg.backends._sdk import (
    body_message,
    call_errors,
    kind_for_status,
    parse_rate_limits,
    parse_retry_after,
    scrub,
    transport_error,
)

if TYPE_CHECKING:
    import anthropic
    from anthropic import Omit
    from anthropic.types import (
        ContentBlockParam,
        MessageParam,
        ToolChoiceParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )

__all__ = ["AnthropicBackend", "anthropic_messages", "tool_use_input"]

_KEY_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
# A forced tool call ends with stop_reason "tool_use": for us the reply is complete.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "stop"}
_OPENING = "(The conversation begins.)"
_EMPTY = "(empty message)"
_TOOL_DESCRIPTION = "Reply in this structure."
# The key under which arguments that are not a JSON object travel in a tool_use input.
INVALID_ARGUMENTS_KEY = "INVALID_JSON"


class AnthropicBackend:
    """Claude via ``AsyncAnthropic``. The key comes from ``ANTHROPIC_API_KEY`` only.

    The base URL is the SDK's: ``ANTHROPIC_BASE_URL`` when set (without ``/v1``), else
    Anthropic's API.

    Args:
        timeout_s: per-request timeout handed to the SDK; None keeps the SDK's default.

    Raises:
        ConfigError: no key in the environment.
    """

    name = "anthropic"

    def __init__(self, *, timeout_s: float | None = None):
        if not any(os.environ.get(name) for name in _KEY_VARS):
            raise ConfigError(
                "backend 'anthropic': ANTHROPIC_API_KEY is not set (keys are read from the "
                "environment only, never from options or files)"
            )
        import anthropic

        self._sdk = anthropic
        self._catch = call_errors(anthropic.AnthropicError)
        timeout: Any = timeout_s if timeout_s is not None else anthropic.NOT_GIVEN
        self._client: anthropic.AsyncAnthropic = anthropic.AsyncAnthropic(max_retries=0, timeout=timeout)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send ``request`` once; raise :class:`BackendError` with the right kind on failure."""
        fmt = request.response_format
        tools: list[ToolParam] | Omit = self._sdk.omit
        tool_choice: ToolChoiceParam | Omit = self._sdk.omit
        if fmt is not None and request.tools:
            # The structured reply is itself a forced tool call: it would forbid the real tools.
            raise BackendError(
                "anthropic: a request cannot carry both tools and a response_format", kind="bad_request"
            )
        if fmt is not None:
            tools = [{"name": fmt.name, "description": _TOOL_DESCRIPTION, "input_schema": fmt.schema_dict()}]
            tool_choice = {"type": "tool", "name": fmt.name}
        elif request.tools:
            tools = [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "input_schema": json.loads(spec.parameters),
                }
                for spec in request.tools
            ]
            tool_choice = {"type": "none"} if request.tool_choice == "none" else {"type": "auto"}
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=request.model,
                max_tokens=request.params.max_tokens,
                messages=anthropic_messages(request.messages),
                # anthropic >= 2 dropped the `temperature` argument; the API still takes it.
                extra_body={"temperature": request.params.temperature},
                system=request.system or self._sdk.omit,
                tools=tools,
                tool_choice=tool_choice,
            )
            message = await raw.parse()
        except self._catch as exc:
            raise self._translate(exc, structured=fmt is not None) from exc
        response = _response(message, tool=fmt.name if fmt is not None else None)
        return replace(response, rate_limits=parse_rate_limits(raw.headers))

    async def aclose(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()

    def _translate(self, exc: BaseException, *, structured: bool) -> BackendError:
        sdk = self._sdk
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            kind = kind_for_status(status)
            detail = body_message(exc.body) or exc.message
            if structured and status in (400, 422) and _names_tools(detail):
                # A compatible server without tool use, or a schema the API will not take:
                # the gateway falls back to asking for JSON in the prompt alone.
                return BackendError(
                    scrub(
                        f"anthropic: HTTP {status} {detail} (the server refuses the forced tool call)",
                        *_KEY_VARS,
                    ),
                    kind="unsupported",
                    status=status,
                )
            hint = " (check ANTHROPIC_API_KEY)" if kind == "auth" else ""
            return BackendError(
                scrub(f"anthropic: HTTP {status} {detail}{hint}", *_KEY_VARS),
                kind=kind,
                retry_after=parse_retry_after(exc.response.headers),
                rate_limits=parse_rate_limits(exc.response.headers),
                status=status,
            )
        if isinstance(exc, sdk.APITimeoutError):
            return BackendError("anthropic: request timed out", kind="timeout")
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            return BackendError(
                scrub(f"anthropic: connection failed ({detail})", *_KEY_VARS), kind="connection"
            )
        if isinstance(exc, sdk.APIResponseValidationError):
            return BackendError(f"anthropic: unexpected response shape ({exc})", kind="malformed")
        mapped = transport_error(exc, "anthropic")
        if mapped is not None:
            return mapped
        return BackendError(scrub(f"anthropic: {type(exc).__name__}: {exc}", *_KEY_VARS), kind="other")


def anthropic_messages(messages: tuple[Message, ...]) -> list[MessageParam]:
    """The Messages API form of a conversation, made valid if it is not already.

    The API requires a user message first, strictly alternating roles and non-empty text.
    dramaturg's agents already send that shape; this guard merges same-role neighbours and
    fills the gaps, so a request built some other way is still one the API accepts. A turn
    of text alone is sent as a string, as it always was.

    Tool traffic is mapped, never repaired: tool calls become ``tool_use`` blocks of their
    assistant turn, and ``tool`` messages become ``tool_result`` blocks of the user turn that
    follows it (together with any user text after them). A result that does not directly
    follow its call is left where it is, for the API to refuse loudly.
    """
    turns: list[tuple[str, list[str | ContentBlockParam]]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        parts = _parts(message)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))
    if not turns or turns[0][0] != "user":
        turns.insert(0, ("user", [_OPENING]))
    params: list[MessageParam] = []
    for role, parts in turns:
        content = _content(parts)
        if role == "user":
            params.append({"role": "user", "content": content})
        else:
            params.append({"role": "assistant", "content": content})
    return params


def _parts(message: Message) -> list[str | ContentBlockParam]:
    """A message as text pieces (str) and tool blocks, before neighbours are merged."""
    if message.role == "tool":
        result: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        if message.content:
            # Optional in the API; an empty string is no result text at all.
            result["content"] = message.content
        if message.is_error:
            result["is_error"] = True
        return [result]
    if not message.tool_calls:
        return [message.content if message.content.strip() else _EMPTY]
    uses: list[ToolUseBlockParam] = [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_use_input(call.arguments)}
        for call in message.tool_calls
    ]
    # A turn that only called tools said nothing: no placeholder text is invented for it.
    return [message.content, *uses] if message.content.strip() else [*uses]


def _content(parts: list[str | ContentBlockParam]) -> str | list[ContentBlockParam]:
    """Neighbouring text pieces joined; text alone stays a string, as it was before tools."""
    merged: list[str | ContentBlockParam] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + "\n\n" + part
        else:
            merged.append(part)
    if len(merged) == 1 and isinstance(merged[0], str):
        return merged[0]
    return [{"type": "text", "text": part} if isinstance(part, str) else part for part in merged]


def tool_use_input(arguments: str) -> dict[str, object]:
    """A tool call's arguments as the object a ``tool_use`` block must hold.

    Arguments are JSON text the model wrote; the API only takes an object. No arguments are
    ``{}``. Text that is not a JSON object (a broken reply from some model, which the toolbox
    answered with an error result) travels as ``{"INVALID_JSON": "<the text>"}``: the model
    still sees what it wrote, and the error that follows makes sense. ``{}`` would show a
    valid call without arguments that the result then calls malformed.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {INVALID_ARGUMENTS_KEY: arguments}


def _names_tools(detail: str) -> bool:
    text = detail.lower()
    return "tool" in text or "input_schema" in text


def _response(message: anthropic.types.Message, *, tool: str | None = None) -> ModelResponse:
    # Without strict validation the SDK builds the model without checking it, so a 200
    # whose JSON has the wrong shape surfaces here as a missing attribute.
    calls: tuple[ToolCall, ...] = ()
    try:
        if tool is None:
            text = "".join(block.text for block in message.content if block.type == "text")
            calls = _tool_calls(message)
        else:
            text = _tool_input(message, tool)
        usage = message.usage
        finish = _FINISH.get(str(message.stop_reason), str(message.stop_reason))
        response = ModelResponse(
            text=text,
            input_tokens=int(usage.input_tokens),
            output_tokens=int(usage.output_tokens),
            # The same word the OpenAI-compatible backend and the sim use for "now run these".
            finish_reason="tool_calls" if calls and message.stop_reason == "tool_use" else finish,
            cache_read_tokens=int(usage.cache_read_input_tokens or 0),
            cache_write_tokens=int(usage.cache_creation_input_tokens or 0),
            tool_calls=calls,
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise BackendError(f"anthropic: malformed reply ({exc})", kind="malformed") from exc
    # An empty reply is a paid answer, recorded like any other; the role's validation rejects it.
    return response


def _tool_input(message: anthropic.types.Message, tool: str) -> str:
    """The forced tool call's input as canonical JSON text: the structured reply."""
    for block in message.content:
        if block.type == "tool_use":
            if not isinstance(block.input, dict):
                raise BackendError(
                    f"anthropic: the {tool} tool call's input is not an object", kind="malformed"
                )
            return json.dumps(block.input, sort_keys=True, ensure_ascii=False)
    kinds = ", ".join(block.type for block in message.content) or "nothing"
    raise BackendError(
        f"anthropic: the reply has no {tool} tool call (got {kinds}; stop_reason {message.stop_reason})",
        kind="malformed",
    )


def _tool_calls(message: anthropic.types.Message) -> tuple[ToolCall, ...]:
    """The reply's ``tool_use`` blocks; arguments are the input as canonical JSON text."""
    calls = []
    for block in message.content:
        if block.type != "tool_use":
            continue
        if not isinstance(block.input, dict) or not block.id or not block.name:
            raise BackendError(
                "anthropic: a tool_use block has no id, no name or no input object", kind="malformed"
            )
        arguments = json.dumps(block.input, sort_keys=True, ensure_ascii=False)
        calls.append(ToolCall(block.id, block.name, arguments))
    return tuple(calls)
