"""The tool simulator: the fifth role, answering the calls of tools declared by schema only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import jsonschema
from dramaturg.agents._prompts import tool_call_request, tool_simulator_prompt
from dramaturg.agents._roles import RoleAgent
from dramaturg.scenarios import EpisodeSpec, SimulatedTool, ToolOutcome

from dramaturg._errors import ReplyParseError
from dramaturg._gateway import Gateway
from dramaturg._health import RoleHealth
from dramaturg._model import GenerationParams, ModelSpec, ResponseFormat

__all__ = ["ToolSimulator"]


@dataclass(frozen=True, slots=True)
class ToolSimulator:
    """Writes a simulated tool's result with a model, as JSON checked against its schema.

    The result schema goes to the API as ``response_format`` (decoders that support it cannot
    write anything else); a reply that still fails the schema is asked again with another
    seed, and after ``attempts`` tries the call's result is an error. Every call goes
    through the gateway, so it is cached and replays exactly. Every reply is counted in
    ``health``: a tool model that keeps writing unusable results stops the run loudly, like a
    critic that does not parse.
    """

    gateway: Gateway
    model: ModelSpec
    episode: EpisodeSpec
    episode_id: str
    params: GenerationParams
    attempts: int = 2
    health: RoleHealth | None = None

    _agents: dict[str, RoleAgent] = field(default_factory=dict)

    async def __call__(self, tool: SimulatedTool, arguments: str) -> ToolOutcome:
        agent = self._agent(tool)
        await agent.set_history([])  # every call is answered on its own
        problem = ""
        for attempt in range(self.attempts):
            try:
                reply = await agent.respond(("assistant", tool_call_request(arguments)), attempt=attempt)
            except ReplyParseError as exc:
                problem = str(exc)
                self._count(False, exc.raw)
                continue
            result, problem = _result(reply.text, tool.result_schema)
            self._count(result is not None, reply.text)
            if result is not None:
                return ToolOutcome("ok", json.dumps(result, sort_keys=True, ensure_ascii=False))
            await agent.retract()
        return ToolOutcome("error", f"Error: {tool.name} is not available right now", problem)

    def _count(self, ok: bool, raw: str) -> None:
        if self.health is not None:
            self.health.record("tool_simulator", ok, raw)

    def _agent(self, tool: SimulatedTool) -> RoleAgent:
        """One agent per tool and episode: its prompt and result schema are the tool's."""
        if tool.name not in self._agents:
            schema = json.dumps(tool.result_schema, sort_keys=True)
            self._agents[tool.name] = RoleAgent(
                "tool_simulator",
                tool_simulator_prompt(self.episode, tool.name, tool.description, schema),
                self.gateway,
                spec=self.model,
                episode_id=self.episode_id,
                seed=self.episode.seed,
                params=self.params,
                response_format=ResponseFormat.from_schema(f"{tool.name}_result", tool.result_schema),
            )
        return self._agents[tool.name]


def _result(text: str, schema: dict[str, object]) -> tuple[dict[str, object] | None, str]:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(body, strict=False)
    except json.JSONDecodeError as exc:
        return None, f"the simulated result is not JSON ({exc.msg})"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if errors or not isinstance(value, dict):
        reason = errors[0].message if errors else "not an object"
        return None, f"the simulated result does not match its schema: {reason}"
    return value, ""
