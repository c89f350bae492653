"""Role agents: fresh autogen ``AssistantAgent``s driven turn by turn with ``on_messages``.

A group chat is not used on purpose (see DESIGN.md): it costs ~15x the overhead, cannot run
twice at once, turns exceptions into strings and cannot replace a message in an agent's
context, which critique-and-revise and turn regeneration need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import ToolSchema
from dramaturg.agents._client import GatewayChatClient

from dramaturg._errors import ReplyParseError
from dramaturg._gateway import Gateway
from dramaturg._model import (
    GenerationParams,
    ModelSpec,
    ResponseFormat,
    RoleName,
    ToolCall,
    ToolResult,
    ToolSpec,
    ToolStep,
)

__all__ = ["Reply", "RoleAgent", "ToolRunner", "attempt_seed"]

# Far enough apart that a regenerated turn never reuses a best-of-n candidate's seed (seed + k).
_ATTEMPT_STRIDE = 7919


def attempt_seed(seed: int, attempt: int) -> int:
    """The sampling seed of the ``attempt``-th try (0 = first) at one reply."""
    return seed + _ATTEMPT_STRIDE * attempt


@dataclass(frozen=True, slots=True)
class Reply:
    """A role's answer. ``tool_steps``: the rounds of tool calls the answer took, in order."""

    text: str
    call_id: str
    cached: bool
    finish_reason: str = "stop"
    tool_steps: tuple[ToolStep, ...] = ()


class ToolRunner(Protocol):
    """Runs the tool calls an assistant asks for (the episode's toolbox)."""

    @property
    def specs(self) -> tuple[ToolSpec, ...]: ...

    @property
    def max_steps(self) -> int: ...

    async def call(self, call: ToolCall, *, model_call_id: str | None = None) -> ToolResult: ...


class RoleAgent:
    """One role in one episode. Build a new one per episode; never share between episodes."""

    def __init__(
        self,
        role: RoleName,
        system_prompt: str,
        gateway: Gateway,
        *,
        spec: ModelSpec,
        episode_id: str,
        seed: int,
        params: GenerationParams | None = None,
        response_format: ResponseFormat | None = None,
        tools: ToolRunner | None = None,
    ):
        self.role: RoleName = role
        self._tools = tools
        self._system = SystemMessage(content=system_prompt)
        self._seed = seed
        self._client = GatewayChatClient(
            gateway,
            spec=spec,
            role=role,
            episode_id=episode_id,
            seed=seed,
            params=params,
            response_format=response_format,
        )
        self._context = UnboundedChatCompletionContext()
        self._before: list[LLMMessage] = []
        self._agent = AssistantAgent(
            role,
            model_client=self._client,
            system_message=system_prompt,
            model_context=self._context,
        )

    async def respond(self, *incoming: tuple[str, str], attempt: int = 0) -> Reply:
        """Hear ``(source, text)`` messages and answer them.

        Args:
            attempt: 0 for a first try; a regenerated reply (after :meth:`retract`) passes
                1, 2, … and is sampled with another seed.

        Raises:
            BackendError: the model call failed after the gateway's retries.
            ReplyParseError: the model answered with no text.
        """
        # A copy: the context may hand out its live list, which this exchange extends.
        self._before = list(await self._context.get_messages())
        self._client.seed = attempt_seed(self._seed, attempt)
        if self._tools is not None and self._tools.specs:
            return await self._respond_with_tools(incoming, self._tools)
        messages = [TextMessage(content=text, source=source) for source, text in incoming]
        response = await self._agent.on_messages(messages, CancellationToken())
        content = response.chat_message.to_text() if response.chat_message else ""
        outcome = self._client.last_outcome
        if outcome is None:
            raise RuntimeError("the agent answered without calling its model")
        if not content.strip():
            raise ReplyParseError(f"{self.role} replied with empty text", raw=content)
        return Reply(
            text=content.strip(),
            call_id=outcome.call_id,
            cached=outcome.cached,
            finish_reason=outcome.response.finish_reason,
        )

    async def _respond_with_tools(self, incoming: Sequence[tuple[str, str]], tools: ToolRunner) -> Reply:
        """Answer, calling tools for up to ``max_steps`` rounds; then the model must answer in text.

        The loop is the runner's own rather than AssistantAgent's: every call the model asks
        for, including one to an unknown tool or with arguments that are not JSON, reaches
        the toolbox, which records it and hands the model the error as the result.
        """
        for source, text in incoming:
            await self._context.add_message(UserMessage(content=text, source=source))
        schemas: list[ToolSchema] = [
            {"name": spec.name, "description": spec.description, "parameters": json.loads(spec.parameters)}
            for spec in tools.specs
        ]
        steps: list[ToolStep] = []
        while True:
            last_step = len(steps) >= tools.max_steps
            result = await self._client.create(
                [self._system, *await self._context.get_messages()],
                tools=schemas,
                tool_choice="none" if last_step else "auto",
            )
            outcome = self._client.last_outcome
            if outcome is None:
                raise RuntimeError("the agent answered without calling its model")
            if isinstance(result.content, str) or last_step:
                text = result.content if isinstance(result.content, str) else ""
                if not text.strip():
                    raise ReplyParseError(f"{self.role} replied with empty text", raw=text)
                await self._context.add_message(AssistantMessage(content=text, source=self.role))
                return Reply(
                    text=text.strip(),
                    call_id=outcome.call_id,
                    cached=outcome.cached,
                    finish_reason=outcome.response.finish_reason,
                    tool_steps=tuple(steps),
                )
            calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in result.content)
            # One at a time, in the model's order: real tools may change the world in turn.
            results = tuple([await tools.call(call, model_call_id=outcome.call_id) for call in calls])
            await self._context.add_message(
                AssistantMessage(content=list(result.content), thought=result.thought, source=self.role)
            )
            await self._context.add_message(
                FunctionExecutionResultMessage(
                    content=[
                        FunctionExecutionResult(
                            content=r.content, name=c.name, call_id=c.id, is_error=r.is_error
                        )
                        for c, r in zip(calls, results, strict=True)
                    ]
                )
            )
            steps.append(ToolStep(calls, results))

    async def retract(self) -> None:
        """Forget the last exchange, as if :meth:`respond` had never been called."""
        await self._restore(self._before)

    async def set_history(self, history: Sequence[tuple[str, str]]) -> None:
        """Replace the context with ``(role, text)`` messages, role 'user' or 'assistant'."""
        messages: list[LLMMessage] = [
            AssistantMessage(content=text, source=self.role)
            if role == "assistant"
            else UserMessage(content=text, source=role)
            for role, text in history
        ]
        await self._restore(messages)

    async def revise(self, request: str, *, attempt: int = 0) -> Reply:
        """Ask for a revision of the latest reply; afterwards the context holds only the revision.

        The exchange (original, revision request, revision) collapses to the revision, so the
        conversation continues as if the assistant had answered well the first time.
        """
        before = list(await self._context.get_messages())
        # The original answer is everything after the last thing the user said (with tools:
        # its calls and their results too); the revision replaces all of it. The reviser sees
        # its original text but not the original's tool calls: the episode rewinds the world
        # to the turn's start, so a revision redoes the calls it needs.
        heard = max(i for i, m in enumerate(before) if isinstance(m, UserMessage) and m.source != "critic")
        draft = before[-1]
        await self._restore([*before[: heard + 1], draft])
        revision = await self.respond(("critic", request), attempt=attempt)
        revised = list(await self._context.get_messages())[heard + 3 :]  # after the draft and the request
        await self._restore([*before[: heard + 1], *revised])
        self._before = before
        return revision

    async def _restore(self, messages: Sequence[LLMMessage]) -> None:
        await self._context.clear()
        for message in messages:
            await self._context.add_message(message)
