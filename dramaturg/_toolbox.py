"""The tools of one episode, the environment they act on, and the record of every call.

One :class:`ToolBox` per episode. The episode runner rewinds the environment to where the
turn started before each attempt at an assistant turn (a regenerated turn, a revision), so a
refund issued by a rejected attempt is not also in the world the dialogue continues in; the
version that ends up in the dialogue is the one whose effects remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dramaturg._model import ToolCall, ToolResult, ToolSpec, ToolStep
from dramaturg.memory import ToolCallRow
from dramaturg.scenarios import FunctionTool, SimulatedTool, ToolOutcome, ToolUse
from dramaturg.scenarios._tools import check_arguments

# Answers a simulated tool's call (the tool simulator role): arguments as JSON text.
Simulator = Callable[[SimulatedTool, str], Awaitable[ToolOutcome]]

__all__ = ["ToolBox", "tool_uses", "with_tool_steps"]


@dataclass(slots=True)
class ToolBox:
    """Runs one episode's tool calls against its environment and records each one.

    Attributes:
        tools: the scenario's tools, by name.
        environment: the episode's state; tools mutate it.
        episode_id: for the records.
        max_steps: the most tool steps (rounds of calls) one assistant turn may take.
        timeout_s: how long one call of a real tool may take.
        simulator: answers the calls of simulated tools (the tool simulator role).
        specs: the tools as the model is told about them.
        rows: every call made, valid or not, in order (written with the episode).
    """

    tools: dict[str, FunctionTool | SimulatedTool]
    environment: object
    episode_id: str
    max_steps: int = 4
    simulator: Simulator | None = None
    specs: tuple[ToolSpec, ...] = ()  # as the model is told about the tools; made once
    timeout_s: float = 10.0
    rows: list[ToolCallRow] = field(default_factory=list)
    _turn_idx: int = 0
    _target: str = "original"
    _attempt: int = 0
    _turn_start: object = None

    @classmethod
    def build(
        cls,
        tools: Sequence[FunctionTool | SimulatedTool],
        environment: object,
        *,
        episode_id: str,
        max_steps: int,
        simulator: Simulator | None = None,
        timeout_s: float = 10.0,
    ) -> ToolBox:
        specs = tuple(ToolSpec.from_schema(tool.name, tool.description, tool.parameters) for tool in tools)
        return cls(
            {tool.name: tool for tool in tools},
            environment,
            episode_id,
            max_steps,
            simulator,
            specs,
            timeout_s,
        )

    # -- the environment across attempts ---------------------------------------------------------

    def begin_turn(self, turn_idx: int) -> None:
        """Remember the world as it is before the assistant's turn ``turn_idx``."""
        self._turn_idx = turn_idx
        self._turn_start = copy.deepcopy(self.environment)

    def attempt(self, target: str, attempt: int) -> None:
        """Start an attempt at the turn (``original`` or ``revision``) from the turn's start."""
        self._target, self._attempt = target, attempt
        self.environment = copy.deepcopy(self._turn_start)

    def snapshot(self) -> object:
        return copy.deepcopy(self.environment)

    def restore(self, snapshot: object) -> None:
        self.environment = copy.deepcopy(snapshot)

    # -- calls -----------------------------------------------------------------------------------

    async def call(self, call: ToolCall, *, model_call_id: str | None = None) -> ToolResult:
        """Run one call the model asked for and record it. Never raises for the model's mistakes."""
        started = time.perf_counter()
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            outcome = ToolOutcome(
                "invalid", f"Error: there is no tool named {call.name!r} (tools: {known})", "unknown tool"
            )
        elif isinstance(tool, SimulatedTool):
            outcome = await self._simulate(tool, call.arguments)
        else:
            outcome = await self._run(tool, call.arguments)
        source: Literal["real", "simulated"] = "simulated" if isinstance(tool, SimulatedTool) else "real"
        self._record(call, outcome, model_call_id, (time.perf_counter() - started) * 1000, source)
        return ToolResult(call.id, outcome.result, is_error=outcome.status != "ok", status=outcome.status)

    async def _run(self, tool: FunctionTool, arguments: str) -> ToolOutcome:
        """Run a real tool off the event loop, within ``timeout_s``.

        A tool is user code: one that hangs must cost its call, not the run. A thread cannot
        be killed, so a daemon thread (never joined at exit) runs it; on a timeout the stuck
        call keeps the world it was given and the episode goes on in a copy taken before it.
        """
        before = copy.deepcopy(self.environment)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[ToolOutcome] = loop.create_future()

        def deliver(outcome: ToolOutcome) -> None:
            if not answered.done():
                answered.set_result(outcome)

        def work(environment: object) -> None:
            try:
                outcome = tool(environment, arguments)
            except BaseException as exc:  # noqa: BLE001 - SystemExit and the like from user code
                outcome = ToolOutcome("error", f"Error: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(RuntimeError):  # the loop closed while the tool hung
                loop.call_soon_threadsafe(deliver, outcome)

        threading.Thread(target=work, args=(self.environment,), name=f"tool {tool.name}", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(answered), self.timeout_s)
        except TimeoutError:
            self.environment = before
            limit = f"{self.timeout_s:g} s"
            return ToolOutcome(
                "error", f"Error: {tool.name} did not answer within {limit}", f"timed out after {limit}"
            )

    async def _simulate(self, tool: SimulatedTool, arguments: str) -> ToolOutcome:
        _, invalid = check_arguments(tool.parameters, arguments, tool.name)
        if invalid is not None:
            return invalid
        if self.simulator is None:
            return ToolOutcome("error", f"Error: {tool.name} has no simulator", "no tool simulator")
        return await self.simulator(tool, arguments)

    def _record(
        self,
        call: ToolCall,
        outcome: ToolOutcome,
        model_call_id: str | None,
        latency_ms: float,
        source: Literal["real", "simulated"] = "real",
    ) -> None:
        self.rows.append(
            ToolCallRow(
                episode_id=self.episode_id,
                turn_idx=self._turn_idx,
                target=self._target,
                attempt=self._attempt,
                seq=len(self.rows),
                tool_call_id=call.id,
                tool=call.name,
                arguments=call.arguments,
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                source=source,
                latency_ms=latency_ms,
                model_call_id=model_call_id,
            )
        )


def tool_uses(steps: Sequence[ToolStep]) -> tuple[ToolUse, ...]:
    """A reply's tool calls as a check sees them."""
    uses = []
    for step in steps:
        for call, result in zip(step.calls, step.results, strict=True):
            try:
                arguments = json.loads(call.arguments)
            except json.JSONDecodeError:
                arguments = {}
            uses.append(
                ToolUse(
                    call.name, arguments if isinstance(arguments, dict) else {}, result.status, result.content
                )
            )
    return tuple(uses)


# How much of a tool result the critic and the judge read: enough to see what it said.
_SHOWN_RESULT_CHARS = 300


def with_tool_steps(text: str, steps: Sequence[ToolStep]) -> str:
    """A reply as the critic and the judge read it: the tool calls it made, then its text."""
    if not steps:
        return text
    lines = ["(Tool calls made before this reply:)"]
    for step in steps:
        for call, result in zip(step.calls, step.results, strict=True):
            outcome = result.content[:_SHOWN_RESULT_CHARS]
            lines.append(f"- {call.name}({call.arguments}) -> {outcome}")
    return "\n".join([*lines, "(Reply:)", text])
