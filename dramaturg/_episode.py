"""Perform one episode: the user simulator and the assistant alternate, stage by stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dramaturg import _markers as mk
from dramaturg._gateway import Gateway
from dramaturg._health import RoleHealth
from dramaturg._model import GenerationParams, ModelSpec, RoleName, tool_steps_json
from dramaturg._review import EpisodeReviewer, ReviewSettings, TurnResult
from dramaturg._toolbox import ToolBox
from dramaturg._validation import InvalidTurn, TurnGate
from dramaturg.agents import Reply, RoleAgent, user_simulator_prompt, user_turn_request
from dramaturg.evaluators import CheckSuite, TurnProblem, clean_turn, user_consistency, validate_turn
from dramaturg.memory import CheckRow, OpeningRow, ReviewRows, TurnRecord
from dramaturg.scenarios import EpisodeSpec, PlannedStage

__all__ = ["EpisodeOutcome", "RoleModels", "perform_episode", "user_view"]


@dataclass(frozen=True, slots=True)
class RoleModels:
    """Which model plays which role; each defaults to the run's ``--model``."""

    user_simulator: ModelSpec
    assistant: ModelSpec
    critic: ModelSpec
    verifier: ModelSpec
    tool_simulator: ModelSpec
    candidates: tuple[ModelSpec, ...] = ()  # best-of-n's other assistants (UltraFeedback)

    @classmethod
    def uniform(cls, spec: ModelSpec) -> RoleModels:
        return cls(spec, spec, spec, spec, spec)

    def for_role(self, role: RoleName) -> ModelSpec:
        spec: ModelSpec = getattr(self, role)
        return spec

    def every_model(self) -> tuple[ModelSpec, ...]:
        """Every model the run may call: each role's and each candidate's."""
        roles = (self.user_simulator, self.assistant, self.critic, self.verifier, self.tool_simulator)
        return tuple(dict.fromkeys((*roles, *self.candidates)))


@dataclass(frozen=True, slots=True)
class EpisodeOutcome:
    turns: tuple[TurnRecord, ...]
    # terminal_stage | user_ended | user_transferred | user_out_of_scope | max_turns | invalid_turn
    termination_reason: str
    goal_met: bool | None = None
    user_consistent: bool | None = None
    consistency_detail: str | None = None
    review: ReviewRows | None = None


def user_view(turns: Sequence[TurnRecord]) -> list[tuple[str, str]]:
    """The dialogue as the user simulator's own context: its lines are its replies, the
    assistant's arrive labelled, so a model never mistakes them for its own voice."""
    view = [("user", mk.CONVERSATION_START)] if turns else []
    for turn in turns:
        if turn.role == "user":
            view.append(("assistant", turn.content))
        else:
            view.append(("user", f"{mk.ASSISTANT_SAID} {turn.content}"))
    return view


async def perform_episode(
    spec: EpisodeSpec,
    *,
    gateway: Gateway,
    models: RoleModels,
    episode_id: str,
    params: GenerationParams | None = None,
    review: ReviewSettings | None = None,
    run_id: str = "",
    checks: CheckSuite | None = None,
    turn_attempts: int = 3,
    health: RoleHealth | None = None,
    tools: ToolBox | None = None,
    prefix: Sequence[TurnRecord] = (),
    prefix_opens: bool = False,
    opening: OpeningRow | None = None,
) -> EpisodeOutcome:
    """Stage ``spec`` once and return its turns (user first, strictly alternating).

    The episode ends after the assistant answers a terminal stage, when the user simulator
    writes the end marker, when the stage path (at most ``max_turns`` user turns) runs out, or
    when a turn fails validation on all ``turn_attempts`` tries (``invalid_turn``).
    With ``review`` settings, every assistant turn is critiqued (and maybe revised) online,
    pairs are built, the scenario's ``checks`` run on each reply, and the verifier judges the
    goal and the simulator's consistency. With ``tools``, the assistant may call them (up to
    ``tools.max_steps`` rounds per turn) on the episode's environment; every call is recorded.

    A recipe's opening arrives as ``prefix``: turns already said (an imported conversation,
    or with ``prefix_opens`` the first stage's request). The episode continues from it: the
    assistant answers first when it ends on the user's turn.
    """

    def agent(role: RoleName, prompt: str, toolbox: ToolBox | None = None) -> RoleAgent:
        return RoleAgent(
            role,
            prompt,
            gateway,
            spec=models.for_role(role),
            episode_id=episode_id,
            seed=spec.seed,
            params=params,
            tools=toolbox,
        )

    rows = ReviewRows()
    if opening is not None:
        rows.openings.append(opening)
    gate = TurnGate(spec, episode_id, rows, attempts=turn_attempts, health=health)
    reviewer = (
        EpisodeReviewer(
            spec=spec,
            gateway=gateway,
            models=models.for_role,
            episode_id=episode_id,
            run_id=run_id,
            settings=review,
            params=params or GenerationParams(),
            checks=checks or CheckSuite(),
            rows=rows,
            gate=gate,
            health=health,
            tools=tools,
        )
        if review is not None
        else None
    )
    user = agent("user_simulator", user_simulator_prompt(spec))
    assistant = agent("assistant", spec.assistant_prompt, tools)
    turns: list[TurnRecord] = list(prefix)
    spoken = [(turn.role, turn.content) for turn in turns]
    last_answer: str | None = None
    if turns and turns[-1].role == "assistant":
        last_answer = turns[-1].content
        await assistant.set_history(spoken)
    elif turns:
        await assistant.set_history(spoken[:-1])
    reason = "max_turns"

    async def user_turn(stage: PlannedStage) -> Reply:
        await user.set_history(user_view(turns[:-1] if turns else []))

        async def attempt(n: int, problems: Sequence[TurnProblem]) -> Reply:
            request = user_turn_request(spec, stage, last_answer, [p.reason for p in problems])
            return await user.respond(("director", request), attempt=n)

        def check(reply: Reply) -> list[TurnProblem]:
            text, ending = mk.split_end_marker(reply.text)
            if ending and not turns:
                return [TurnProblem("meta", "ends the chat before it began")]
            if not text and ending:
                return []  # a bare end marker: the user has nothing more to say
            return validate_turn(text, gate.context("user", turns, stage, reply.finish_reason))

        def clean(text: str) -> str:
            return clean_turn(text, spec.persona)

        return await gate.generate("user", len(turns), attempt, user.retract, check, clean)

    async def assistant_turn(stage: PlannedStage, said: str) -> Reply:
        if tools is not None:
            tools.begin_turn(len(turns))

        async def attempt(n: int, _problems: Sequence[TurnProblem]) -> Reply:
            if tools is not None:
                tools.attempt("original", n)  # a regenerated turn starts from the same world
            return await assistant.respond(("user", said), attempt=n)

        def check(reply: Reply) -> list[TurnProblem]:
            context = gate.context(
                "assistant", turns, stage, reply.finish_reason, called_tools=bool(reply.tool_steps)
            )
            return validate_turn(reply.text, context)

        return await gate.generate("assistant", len(turns), attempt, assistant.retract, check)

    async def answer(stage: PlannedStage) -> None:
        """The assistant's reply to the user's last turn, reviewed, into the dialogue."""
        nonlocal last_answer
        said = turns[-1].content
        reply = await assistant_turn(stage, said)
        kept = TurnResult(reply.text, reply.call_id, reply.tool_steps)
        if reviewer is not None:
            history = tuple((turn.role, turn.content) for turn in turns)
            kept = await reviewer.review_turn(history, reply, len(turns), assistant)
        turns.append(
            TurnRecord(
                idx=len(turns),
                role="assistant",
                content=kept.text,
                stage=stage.name,
                call_id=kept.call_id,
                tool_steps_json=tool_steps_json(kept.tool_steps),
            )
        )
        last_answer = kept.text

    stages = list(spec.stage_path)
    try:
        if turns and turns[-1].role == "user":
            # The prefix ends on the user's turn: the assistant answers it first. An opening
            # request was the first stage's message; an imported one belongs to no stage.
            stage = stages.pop(0) if prefix_opens else stages[0]
            await answer(stage)
            if prefix_opens and stage.terminal:
                reason, stages = "terminal_stage", []
        for stage in stages:
            said = await user_turn(stage)
            text, ending = mk.split_end_marker(said.text)
            if not text:
                reason = ending or "user_ended"
                break
            turns.append(
                TurnRecord(idx=len(turns), role="user", content=text, stage=stage.name, call_id=said.call_id)
            )
            await answer(stage)
            if ending:
                reason = ending
                break
            if stage.terminal:
                reason = "terminal_stage"
                break
    except InvalidTurn:
        # The dialogue so far is kept for inspection; the episode is left out of exports.
        return EpisodeOutcome(turns=tuple(turns), termination_reason="invalid_turn", review=rows)
    finally:
        if tools is not None:
            rows.tool_calls[:] = tools.rows
    if reviewer is None:
        return EpisodeOutcome(turns=tuple(turns), termination_reason=reason, review=rows)
    dialogue = tuple((turn.role, turn.content) for turn in turns)
    goal_met = await reviewer.goal_met(dialogue)
    # The simulator answers only for what it wrote, not for an imported or seed turn.
    written = [
        (t.role, t.content, t.role_flip) for t in turns if t.role == "assistant" or t.origin == "generated"
    ]
    consistency = user_consistency(spec, written)
    rows.checks.append(
        CheckRow(episode_id, None, "episode", "user_consistent", consistency.passed, consistency.detail)
    )
    return EpisodeOutcome(
        turns=tuple(turns),
        termination_reason=reason,
        goal_met=goal_met,
        user_consistent=consistency.passed,
        consistency_detail=consistency.detail or None,
        review=rows,
    )
