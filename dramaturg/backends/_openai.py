"""The ``openai`` backend: any OpenAI-compatible Chat Completions endpoint.

OpenAI itself, or vLLM, Ollama, llama.cpp server and the like through a base URL (which, unlike
Anthropic's, includes ``/v1``). The SDK is imported when the backend is built; its retries are
off because the gateway retries.

A request with a ``response_format`` goes out as OpenAI's ``json_schema`` shape, which OpenAI,
vLLM, Ollama and llama.cpp's own ``llama-server`` decode under. llama-cpp-python's server (0.3.x)
only knows ``{"type": "json_object", "schema": ...}`` and answers ``json_schema`` with an HTTP
500 validation error naming ``'json_object'``; from that refusal on, the backend sends that
model the ``json_object`` shape, so the gateway's retry of the refused call is constrained too.

Tools (``request.tools``) go out as Chat Completions function tools with ``tool_choice``
``"auto"`` or ``"none"``; an assistant message that called tools carries them as
``tool_calls`` (its content null when it said nothing), and each result is a ``tool``
message naming its ``tool_call_id``. A reply's ``message.tool_calls`` become
``ModelResponse.tool_calls``; such a reply may have no text. A request without tools
sends exactly what it sent before tools existed: no ``tools`` or ``tool_choice`` keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from dramaturg._errors import BackendError, ConfigError
from dramaturg._model import Message, ModelRequest, ModelResponse, ResponseFormat, ToolCall, ToolSpec
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
    import openai
    from openai import Omit
    from openai.types.chat import (
        ChatCompletion,
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageParam,
        ChatCompletionMessageToolCallUnion,
        ChatCompletionToolChoiceOptionParam,
    )
    from openai.types.chat.completion_create_params import ResponseFormat as WireFormat

__all__ = ["OpenAIBackend", "openai_messages", "openai_tools"]

_KEY_VAR = "OPENAI_API_KEY"
# Local servers ignore the key, but the SDK refuses to start without one.
_NO_KEY = "no-key-needed"

SchemaShape = Literal["json_schema", "json_object"]


class OpenAIBackend:
    """A Chat Completions endpoint via ``AsyncOpenAI``; the key comes from ``OPENAI_API_KEY``.

    Args:
        base_url: the endpoint, e.g. ``http://localhost:8000/v1`` for vLLM; defaults to
            ``OPENAI_BASE_URL``, then to OpenAI's API.
        timeout_s: per-request timeout handed to the SDK; None keeps the SDK's default.

    Raises:
        ConfigError: OpenAI's own API is the target and ``OPENAI_API_KEY`` is not set.
    """

    name = "openai"

    def __init__(self, *, base_url: str | None = None, timeout_s: float | None = None):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._official = base_url is None or urllib.parse.urlsplit(base_url).hostname == "api.openai.com"
        has_key = bool(os.environ.get(_KEY_VAR))
        if not has_key and self._official:
            raise ConfigError(
                "backend 'openai': OPENAI_API_KEY is not set (keys are read from the environment "
                "only; for a local server without keys pass --base-url)"
            )
        import openai

        self._sdk = openai
        self._catch = call_errors(openai.OpenAIError)
        timeout: Any = timeout_s if timeout_s is not None else openai.NOT_GIVEN
        self._client: openai.AsyncOpenAI = openai.AsyncOpenAI(
            api_key=None if has_key else _NO_KEY,  # None: the SDK reads OPENAI_API_KEY itself
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
        )
        # Models whose server refused the json_schema shape but named json_object as one it
        # takes; learned from the refusal, so one run pays for that lesson once.
        self._json_object_models: set[str] = set()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send ``request`` once; raise :class:`BackendError` with the right kind on failure."""
        messages = openai_messages(request.system, request.messages)
        tools: list[ChatCompletionFunctionToolParam] | Omit = self._sdk.omit
        tool_choice: ChatCompletionToolChoiceOptionParam | Omit = self._sdk.omit
        if request.tools:
            tools, tool_choice = openai_tools(request.tools), request.tool_choice
        # OpenAI's newer models only accept max_completion_tokens; many compatible servers
        # only know max_tokens.
        limit, omit = request.params.max_tokens, self._sdk.omit
        fmt = request.response_format
        shape: SchemaShape | None = None
        wire_format: WireFormat | Omit = omit
        extra_body: dict[str, object] | None = None
        if fmt is not None:
            if request.model in self._json_object_models:
                shape = "json_object"
                # llama-cpp-python's extension of json_object; the SDK's types do not know it.
                extra_body = {"response_format": {"type": "json_object", "schema": fmt.schema_dict()}}
            else:
                shape = "json_schema"
                wire_format = json_schema_format(fmt)
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=request.model,
                messages=messages,
                temperature=request.params.temperature,
                seed=request.seed,
                max_completion_tokens=limit if self._official else omit,
                max_tokens=omit if self._official else limit,
                response_format=wire_format,
                tools=tools,
                tool_choice=tool_choice,
                extra_body=extra_body,
            )
            completion = raw.parse()
        except self._catch as exc:
            raise self._translate(exc, request.model, shape) from exc
        response = replace(_response(completion), rate_limits=parse_rate_limits(raw.headers))
        if request.tools and not response.tool_calls:
            return calls_written_as_text(response, {tool.name for tool in request.tools})
        return response

    async def aclose(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()

    def _translate(self, exc: BaseException, model: str, shape: SchemaShape | None) -> BackendError:
        sdk = self._sdk
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            kind = kind_for_status(status)
            detail = body_message(exc.body) or exc.message
            if shape is not None and refuses_response_format(status, detail):
                return self._refusal(status, detail, model, shape)
            hint = " (check OPENAI_API_KEY)" if kind == "auth" else ""
            if status == 429 and exc.code == "insufficient_quota":
                # Not a rate limit: the account has no credit left, and waiting will not help.
                kind, hint = "auth", " (the account has no quota left; check billing)"
            return BackendError(
                scrub(f"openai: HTTP {status} {detail}{hint}", _KEY_VAR),
                kind=kind,
                retry_after=parse_retry_after(exc.response.headers),
                rate_limits=parse_rate_limits(exc.response.headers),
                status=status,
            )
        if isinstance(exc, sdk.APITimeoutError):
            return BackendError("openai: request timed out", kind="timeout")
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            return BackendError(scrub(f"openai: connection failed ({detail})", _KEY_VAR), kind="connection")
        if isinstance(exc, sdk.APIResponseValidationError):
            return BackendError(f"openai: unexpected response shape ({exc})", kind="malformed")
        mapped = transport_error(exc, "openai")
        if mapped is not None:
            return mapped
        return BackendError(scrub(f"openai: {type(exc).__name__}: {exc}", _KEY_VAR), kind="other")

    def _refusal(self, status: int, detail: str, model: str, shape: SchemaShape) -> BackendError:
        message = scrub(f"openai: HTTP {status} {detail}", _KEY_VAR)
        if shape == "json_schema" and "json_object" in detail:
            self._json_object_models.add(model)
            if status >= 500:
                # A 500 is retried by the gateway as it stands, and that attempt now goes
                # out in the json_object shape: constrained decoding survives the refusal.
                return BackendError(
                    f"{message} (sending response_format json_object with the schema from now on)",
                    kind="server",
                    status=status,
                )
        return BackendError(
            f"{message} (the server refuses response_format)", kind="unsupported", status=status
        )


def openai_messages(system: str, messages: tuple[Message, ...]) -> list[ChatCompletionMessageParam]:
    """The Chat Completions form of a conversation: the system prompt first, tool traffic kept.

    An assistant message that called tools has ``content`` ``""`` when it said nothing:
    OpenAI and vLLM also take null there, but llama-cpp-python's server rejects it (HTTP 500,
    "Input should be a valid string"), and an empty string means the same to every one of
    them. A ``tool`` message answers the call its ``tool_call_id`` names.
    """
    params: list[ChatCompletionMessageParam] = []
    if system:
        params.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "tool":
            params.append(
                {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
            )
        elif message.role == "user":
            params.append({"role": "user", "content": message.content})
        elif message.tool_calls:
            params.append(
                {
                    "role": "assistant",
                    "content": message.content,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        else:
            params.append({"role": "assistant", "content": message.content})
    return params


def openai_tools(specs: tuple[ToolSpec, ...]) -> list[ChatCompletionFunctionToolParam]:
    """Function tools as Chat Completions declares them."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": json.loads(spec.parameters),
            },
        }
        for spec in specs
    ]


def json_schema_format(fmt: ResponseFormat) -> WireFormat:
    """OpenAI's ``response_format`` for a schema, strict so conforming servers enforce it."""
    return {
        "type": "json_schema",
        "json_schema": {"name": fmt.name, "schema": fmt.schema_dict(), "strict": True},
    }


def refuses_response_format(status: int, detail: str) -> bool:
    """Whether an error answer to a request carrying ``response_format`` refuses that field.

    Servers that cannot decode under a schema answer 400 or 422 naming it;
    llama-cpp-python answers its request validation errors with 500, naming the field.
    """
    text = detail.lower()
    if status in (400, 422):
        return "response_format" in text or "schema" in text
    return status >= 500 and "response_format" in text


def _response(completion: ChatCompletion) -> ModelResponse:
    try:
        choice = completion.choices[0]
        text = choice.message.content or ""
        calls = _tool_calls(choice.message.tool_calls or ())
        usage = completion.usage
        prompt = int(usage.prompt_tokens) if usage else 0
        details = usage.prompt_tokens_details if usage else None
        cached = int(details.cached_tokens or 0) if details else 0
        response = ModelResponse(
            text=text,
            # Cached prompt tokens are billed at their own rate; count them once, there.
            input_tokens=prompt - cached,
            output_tokens=int(usage.completion_tokens) if usage else 0,
            finish_reason=str(choice.finish_reason or "stop"),
            cache_read_tokens=cached,
            tool_calls=calls,
        )
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise BackendError(f"openai: malformed reply ({exc})", kind="malformed") from exc
    # An empty reply is an answer the server was paid for, not a transport failure: it is
    # recorded (so a replay never asks again) and the role's validation rejects it (an empty
    # turn is regenerated with another seed, an empty critique asked again).
    return response


_TAGGED_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def calls_written_as_text(response: ModelResponse, tools: set[str]) -> ModelResponse:
    """Tool calls a server left in the text, as native calls.

    OpenAI-compatible servers without a tool-call parser for the model (llama.cpp's server
    with a GGUF's own chat template, vLLM without ``--tool-call-parser``) return what the
    model wrote: Qwen and Hermes style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
    blocks, or the bare JSON object. Only a call that names one of the request's tools
    counts; anything else stays text. The call's annotations say it was read from text.

    A reply that starts as a call to one of the tools but is not one clean call is still that
    call, never dialogue: followed by more text (the live 0.5B wrote a call, then a result it
    made up), the first call counts and the rest is dropped; malformed (quotes left unescaped
    in its arguments), it is a call whose arguments are what was written, which the episode's
    toolbox records as invalid and answers with the error.
    """
    read = _calls_in_text(response, tools)
    written = _written_call(response.text, tools) if read is response else None
    if written is not None:
        return replace(
            response,
            text="",
            tool_calls=(written,),
            finish_reason="tool_calls",
            annotations=(*response.annotations, ("tool_calls_from_text", "yes")),
        )
    return read


# A reply that begins as a JSON call: {"name": "<tool>", ...}, maybe in <tool_call> tags or a fence.
_CALL_START = re.compile(r'^\s*(?:<tool_call>\s*)?(?:```(?:json)?\s*)?(\{\s*"name"\s*:\s*"([^"]+)")')


def _written_call(text: str, tools: set[str]) -> ToolCall | None:
    """The call a reply starts with, however it goes on (see :func:`calls_written_as_text`)."""
    start = _CALL_START.match(text)
    if start is None or start.group(2) not in tools:
        return None
    body = text[start.start(1) :]
    call_id = f"call_{hashlib.sha256(text.encode()).hexdigest()[:10]}_0"
    try:
        first, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return ToolCall(call_id, start.group(2), body.strip())
    arguments = first.get("arguments", first.get("parameters", {})) if isinstance(first, dict) else {}
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
    return ToolCall(call_id, start.group(2), arguments)


def _calls_in_text(response: ModelResponse, tools: set[str]) -> ModelResponse:
    """Every call of a reply that is nothing but calls (tagged, fenced or bare); else ``response``."""
    text = response.text.strip()
    tagged = _TAGGED_CALL.findall(text)
    fenced = _FENCE.match(text)
    candidates = tagged or [fenced.group(1) if fenced else text]
    calls: list[ToolCall] = []
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            return response
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict) or item.get("name") not in tools:
                return response
            arguments = item.get("arguments", item.get("parameters", {}))
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
            # Unique within a conversation, and the same on every replay of this reply.
            call_id = f"call_{hashlib.sha256(text.encode()).hexdigest()[:10]}_{len(calls)}"
            calls.append(ToolCall(call_id, str(item["name"]), arguments))
    if not calls:
        return response
    rest = _TAGGED_CALL.sub("", text).strip() if tagged else ""
    return replace(
        response,
        text=rest,
        tool_calls=tuple(calls),
        finish_reason="tool_calls",
        annotations=(*response.annotations, ("tool_calls_from_text", "yes")),
    )


def _tool_calls(raw: Iterable[ChatCompletionMessageToolCallUnion]) -> tuple[ToolCall, ...]:
    """The reply's function tool calls; ``arguments`` stays the text the model wrote."""
    calls = []
    for call in raw:
        if call.type != "function":
            raise BackendError(f"openai: the reply calls a {call.type} tool, never offered", kind="malformed")
        # The SDK does not validate replies: check what the types promise.
        arguments: object = call.function.arguments
        if not isinstance(arguments, str):
            # Some compatible servers send the arguments as an object, not as JSON text.
            arguments = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
        call_id: object = call.id
        name: object = call.function.name
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
            raise BackendError("openai: a tool call in the reply has no id or no name", kind="malformed")
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)
