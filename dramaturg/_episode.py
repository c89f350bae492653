"""Perform one episode: the user simulator and the assistant alternate, stage by stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dramaturg import _markers as mk
from dramaturg._gateway import Gateway
from dramaturg._model import GenerationParams, ModelSpec, RoleName
from dramaturg._review import EpisodeReviewer, ReviewSettings
from dramaturg.agents import RoleAgent, director_note, user_simulator_prompt
from dramaturg.evaluators import is_role_flip, user_consistency
from dramaturg.memory import CheckRow, ReviewRows, TurnRecord
from dramaturg.scenarios import Check, EpisodeSpec

__all__ = ["EpisodeOutcome", "RoleModels", "perform_episode"]


@dataclass(frozen=True, slots=True)
class RoleModels:
    """Which model plays which role; each defaults to the run's ``--model``."""

    user_simulator: ModelSpec
    assistant: ModelSpec
    critic: ModelSpec
    verifier: ModelSpec

    @classmethod
    def uniform(cls, spec: ModelSpec) -> RoleModels:
        return cls(spec, spec, spec, spec)

    def for_role(self, role: RoleName) -> ModelSpec:
        spec: ModelSpec = getattr(self, role)
        return spec


@dataclass(frozen=True, slots=True)
class EpisodeOutcome:
    turns: tuple[TurnRecord, ...]
    termination_reason: str  # terminal_stage | user_ended | max_turns
    goal_met: bool | None = None
    user_consistent: bool | None = None
    consistency_detail: str | None = None
    review: ReviewRows | None = None


def strip_end_marker(text: str) -> tuple[str, bool]:
    if mk.END_MARKER not in text:
        return text.strip(), False
    return text.replace(mk.END_MARKER, "").strip(), True


async def perform_episode(
    spec: EpisodeSpec,
    *,
    gateway: Gateway,
    models: RoleModels,
    episode_id: str,
    params: GenerationParams | None = None,
    review: ReviewSettings | None = None,
    run_id: str = "",
    checks: Sequence[Check] = (),
) -> EpisodeOutcome:
    """Stage ``spec`` once and return its turns (user first, strictly alternating).

    The episode ends after the assistant answers a terminal stage, when the user simulator
    writes the end marker, or when the stage path (at most ``max_turns`` user turns) runs out.
    With ``review`` settings, every assistant turn is critiqued (and maybe revised) online,
    pairs are built, and the verifier judges the goal and the simulator's consistency.
    """

    def agent(role: RoleName, prompt: str) -> RoleAgent:
        return RoleAgent(
            role,
            prompt,
            gateway,
            spec=models.for_role(role),
            episode_id=episode_id,
            seed=spec.seed,
            params=params,
        )

    reviewer = (
        EpisodeReviewer(
            spec=spec,
            gateway=gateway,
            models=models.for_role,
            episode_id=episode_id,
            run_id=run_id,
            settings=review,
            params=params or GenerationParams(),
            checks=tuple(checks),
        )
        if review is not None
        else None
    )
    user = agent("user_simulator", user_simulator_prompt(spec))
    assistant = agent("assistant", spec.assistant_prompt)
    turns: list[TurnRecord] = []
    last_answer: str | None = None
    reason = "max_turns"
    for stage in spec.stage_path:
        heard = [("assistant", last_answer)] if last_answer is not None else []
        said = await user.respond(*heard, ("director", director_note(stage)))
        text, ended = strip_end_marker(said.text)
        if not text:
            reason = "user_ended"
            break
        turns.append(
            TurnRecord(
                idx=len(turns),
                role="user",
                content=text,
                stage=stage.name,
                call_id=said.call_id,
                role_flip=is_role_flip(text),
            )
        )
        answer = await assistant.respond(("user", text))
        final_text: str = answer.text
        final_call: str | None = answer.call_id
        if reviewer is not None:
            history = tuple((turn.role, turn.content) for turn in turns)
            result = await reviewer.review_turn(history, answer.text, answer.call_id, len(turns), assistant)
            final_text, final_call = result.text, result.call_id
        turns.append(
            TurnRecord(
                idx=len(turns), role="assistant", content=final_text, stage=stage.name, call_id=final_call
            )
        )
        last_answer = final_text
        if ended:
            reason = "user_ended"
            break
        if stage.terminal:
            reason = "terminal_stage"
            break
    if reviewer is None:
        return EpisodeOutcome(turns=tuple(turns), termination_reason=reason)
    dialogue = tuple((turn.role, turn.content) for turn in turns)
    goal_met = await reviewer.goal_met(dialogue)
    consistency = user_consistency(spec, [(t.role, t.content, t.role_flip) for t in turns])
    reviewer.rows.checks.append(
        CheckRow(episode_id, None, "episode", "user_consistent", consistency.passed, consistency.detail)
    )
    return EpisodeOutcome(
        turns=tuple(turns),
        termination_reason=reason,
        goal_met=goal_met,
        user_consistent=consistency.passed,
        consistency_detail=consistency.detail or None,
        review=reviewer.rows,
    )
