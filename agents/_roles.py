"""Role agents: fresh autogen ``AssistantAgent``s driven turn by turn with ``on_messages``.

A group chat is not used on purpose (see DESIGN.md): it costs ~15x the overhead, cannot run
twice at once, turns exceptions into strings and cannot replace a message in an agent's
context, which critique-and-revise needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage
from dramaturg.agents._client import GatewayChatClient

from dramaturg._errors import ReplyParseError
from dramaturg._gateway import Gateway
from dramaturg._model import GenerationParams, ModelSpec, RoleName

__all__ = ["Reply", "RoleAgent"]


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    call_id: str
    cached: bool


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
    ):
        self.role: RoleName = role
        self._client = GatewayChatClient(
            gateway, spec=spec, role=role, episode_id=episode_id, seed=seed, params=params
        )
        self._context = UnboundedChatCompletionContext()
        self._agent = AssistantAgent(
            role,
            model_client=self._client,
            system_message=system_prompt,
            model_context=self._context,
        )

    async def respond(self, *incoming: tuple[str, str]) -> Reply:
        """Hear ``(source, text)`` messages and answer them.

        Raises:
            BackendError: the model call failed after the gateway's retries.
            ReplyParseError: the model answered with no text.
        """
        messages = [TextMessage(content=text, source=source) for source, text in incoming]
        response = await self._agent.on_messages(messages, CancellationToken())
        content = response.chat_message.to_text() if response.chat_message else ""
        outcome = self._client.last_outcome
        if outcome is None:
            raise RuntimeError("the agent answered without calling its model")
        if not content.strip():
            raise ReplyParseError(f"{self.role} replied with empty text", raw=content)
        return Reply(text=content.strip(), call_id=outcome.call_id, cached=outcome.cached)

    async def revise(self, request: str) -> Reply:
        """Ask for a revision of the latest reply; afterwards the context holds only the revision.

        The exchange (original, revision request, revision) collapses to the revision, so the
        conversation continues as if the assistant had answered well the first time.
        """
        # A copy: the context may hand out its live list, which the next exchange extends.
        before = list(await self._context.get_messages())
        revision = await self.respond(("critic", request))
        await self._context.clear()
        for message in before[:-1]:
            await self._context.add_message(message)
        await self._context.add_message(AssistantMessage(content=revision.text, source=self.role))
        return revision
