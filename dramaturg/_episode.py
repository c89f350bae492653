"""Perform one episode: the user simulator and the assistant alternate, stage by stage."""

from __future__ import annotations

from dataclasses import dataclass

from dramaturg import _markers as mk
from dramaturg._gateway import Gateway
from dramaturg._model import GenerationParams, ModelSpec, RoleName
from dramaturg.agents import RoleAgent, director_note, user_simulator_prompt
from dramaturg.evaluators import is_role_flip
from dramaturg.memory import TurnRecord
from dramaturg.scenarios import EpisodeSpec

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
) -> EpisodeOutcome:
    """Stage ``spec`` once and return its turns (user first, strictly alternating).

    The episode ends after the assistant answers a terminal stage, when the user simulator
    writes the end marker, or when the stage path (at most ``max_turns`` user turns) runs out.
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
        turns.append(
            TurnRecord(
                idx=len(turns),
                role="assistant",
                content=answer.text,
                stage=stage.name,
                call_id=answer.call_id,
            )
        )
        last_answer = answer.text
        if ended:
            reason = "user_ended"
            break
        if stage.terminal:
            reason = "terminal_stage"
            break
    return EpisodeOutcome(turns=tuple(turns), termination_reason=reason)
