"""autogen's ``ChatCompletionClient``, implemented once, over the dramaturg gateway."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from dramaturg._gateway import CallOutcome, Gateway
from dramaturg._model import (
    GenerationParams,
    Message,
    ModelRequest,
    ModelSpec,
    ResponseFormat,
    RoleName,
    ToolCall,
    ToolSpec,
)
from dramaturg._tokens import count_tokens

__all__ = ["GatewayChatClient", "to_request_messages", "tool_specs"]


def to_request_messages(messages: Sequence[LLMMessage]) -> tuple[str, tuple[Message, ...]]:
    """Split autogen messages into a system prompt and an alternating user/assistant list.

    Consecutive text messages of one role are merged (Anthropic requires alternation); tool
    calls and tool results stay messages of their own. The conversation always starts with a
    user message.
    """
    system_parts: list[str] = []
    merged: list[Message] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system_parts.append(message.content)
            continue
        if isinstance(message, FunctionExecutionResultMessage):
            merged += [
                Message("tool", result.content, tool_call_id=result.call_id, is_error=bool(result.is_error))
                for result in message.content
            ]
            continue
        if isinstance(message, AssistantMessage) and isinstance(message.content, list):
            calls = tuple(ToolCall(call.id, call.name, call.arguments) for call in message.content)
            merged.append(Message("assistant", message.thought or "", tool_calls=calls))
            continue
        if isinstance(message, UserMessage):
            role: Literal["user", "assistant"] = "user"
        elif isinstance(message, AssistantMessage):
            role = "assistant"
        else:
            raise TypeError(f"unexpected message type {type(message).__name__}")
        if not isinstance(message.content, str):
            raise TypeError("dramaturg agents exchange text only")
        last = merged[-1] if merged else None
        if last is not None and last.role == role and not last.tool_calls:
            merged[-1] = Message(role, last.content + "\n\n" + message.content)
        else:
            merged.append(Message(role, message.content))
    if merged and merged[0].role != "user":
        merged.insert(0, Message("user", "(The conversation begins.)"))
    return "\n\n".join(system_parts), tuple(merged)


def tool_specs(tools: Sequence[Tool | ToolSchema]) -> tuple[ToolSpec, ...]:
    """autogen's tool descriptions as the model layer's :class:`ToolSpec`."""
    specs = []
    for tool in tools:
        schema: ToolSchema = tool if isinstance(tool, dict) else tool.schema
        parameters = dict(schema.get("parameters") or {"type": "object", "properties": {}})
        specs.append(ToolSpec.from_schema(schema["name"], schema.get("description", ""), parameters))
    return tuple(specs)


class GatewayChatClient(ChatCompletionClient):
    """A model client bound to one (episode, role): AgentChat cannot pass those per call.

    Never share an instance between episodes. ``last_outcome`` tells the episode runner
    which stored call produced the latest reply. ``seed`` may be changed between calls: a
    regenerated turn is a new request (its own cache entry), not a replay of the rejected one.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        spec: ModelSpec,
        role: RoleName,
        episode_id: str,
        seed: int,
        params: GenerationParams | None = None,
        response_format: ResponseFormat | None = None,
    ):
        self._gateway = gateway
        self._spec = spec
        self._role: RoleName = role
        self._episode_id = episode_id
        self.seed = seed
        self._response_format = response_format
        self._params = params or GenerationParams()
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.last_outcome: CallOutcome | None = None

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        system, conversation = to_request_messages(messages)
        request = ModelRequest(
            backend=self._spec.backend,
            model=self._spec.model,
            role=self._role,
            system=system,
            messages=conversation,
            params=self._params,
            seed=self.seed,
            response_format=self._response_format,
            tools=tool_specs(tools),
            tool_choice="none" if tools and tool_choice == "none" else "auto",
        )
        outcome = await self._gateway.complete(request, episode_id=self._episode_id)
        self.last_outcome = outcome
        usage = RequestUsage(
            prompt_tokens=outcome.response.input_tokens,
            completion_tokens=outcome.response.output_tokens,
        )
        self._usage = RequestUsage(
            prompt_tokens=self._usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._usage.completion_tokens + usage.completion_tokens,
        )
        response = outcome.response
        if response.tool_calls:
            calls = [FunctionCall(id=c.id, name=c.name, arguments=c.arguments) for c in response.tool_calls]
            return CreateResult(
                finish_reason="function_calls",
                content=calls,
                usage=usage,
                cached=outcome.cached,
                thought=response.text or None,
            )
        return CreateResult(
            finish_reason="length" if response.finish_reason == "length" else "stop",
            content=response.text,
            usage=usage,
            cached=outcome.cached,
        )

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        # The gateway caches whole replies, so a "stream" is the one final result.
        result = await self.create(messages, tools=tools, cancellation_token=cancellation_token)
        yield result

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        system, conversation = to_request_messages(messages)
        calls = sum(count_tokens(c.arguments) for m in conversation for c in m.tool_calls)
        return count_tokens(system) + sum(count_tokens(m.content) for m in conversation) + calls

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return max(0, 200_000 - self.count_tokens(messages))

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        return ModelCapabilities(vision=False, function_calling=True, json_output=False)

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            vision=False,
            function_calling=True,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
            multiple_system_messages=False,
        )
