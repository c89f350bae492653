"""Turn validation in the episode loop: a generated turn enters the dialogue only if it passes.

A rejected turn is regenerated with another sample seed (a new request, cached like any
call), a bounded number of times; every rejected attempt is recorded with its reasons.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from dramaturg._errors import ReplyParseError, RunError
from dramaturg._health import RoleHealth
from dramaturg.agents import Reply
from dramaturg.evaluators import TurnContext, TurnProblem
from dramaturg.memory import ReviewRows, TurnRecord, TurnRejectionRow
from dramaturg.scenarios import EpisodeSpec, PlannedStage

__all__ = ["InvalidTurn", "TurnGate", "TurnKind"]

TurnKind = Literal["user", "assistant", "revision"]


class InvalidTurn(RunError):
    """A turn kept failing validation after every regeneration; the episode ends here."""

    def __init__(self, kind: str, turn_idx: int, problems: Sequence[TurnProblem]):
        reasons = ", ".join(sorted({p.reason for p in problems}))
        super().__init__(f"{kind} turn {turn_idx} failed validation on every attempt ({reasons})")


@dataclass(slots=True)
class TurnGate:
    """Validates generated turns before they enter the dialogue; regenerates rejected ones.

    Every rejected attempt is recorded (``turn_rejections``) with its reasons; a regenerated
    turn is a new request with another sample seed, so it is cached like any call.
    """

    spec: EpisodeSpec
    episode_id: str
    rows: ReviewRows
    attempts: int = 3
    health: RoleHealth | None = None

    def context(
        self,
        speaker: Literal["user", "assistant"],
        turns: Sequence[TurnRecord],
        stage: PlannedStage,
        finish: str,
        *,
        called_tools: bool = False,
    ) -> TurnContext:
        return TurnContext(
            speaker=speaker,
            history=tuple((t.role, t.content) for t in turns),
            persona=self.spec.persona,
            facts=self.spec.hidden_facts,
            given=" ".join([self.spec.goal, *(str(v) for _, v in self.spec.variables)]),
            instruction=stage.instruction if speaker == "user" else "",
            finish_reason=finish,
            called_tools=called_tools,
        )

    async def generate(
        self,
        kind: TurnKind,
        turn_idx: int,
        attempt_reply: Callable[[int, Sequence[TurnProblem]], Awaitable[Reply]],
        retract: Callable[[], Awaitable[None]],
        check: Callable[[Reply], list[TurnProblem]],
        clean: Callable[[str], str] = str.strip,
    ) -> Reply:
        """The first reply that passes ``check`` (after ``clean``); :class:`InvalidTurn` if none does.

        ``attempt_reply`` gets the attempt number (0 first) and the previous attempt's problems,
        so a regeneration can say what went wrong: a peaked model resampled with only a new
        seed often writes the same rejected line again.
        """
        problems: list[TurnProblem] = []
        for attempt in range(self.attempts):
            if attempt:
                await retract()
            try:
                reply = await attempt_reply(attempt, problems)
            except ReplyParseError as exc:  # an empty reply
                problems = [TurnProblem("empty", str(exc))]
                self._reject(kind, turn_idx, attempt, problems, exc.raw or "", None)
                continue
            reply = replace(reply, text=clean(reply.text))
            problems = check(reply)
            if self.health is not None:
                self.health.record_turn(kind, not problems, reply.text)
            if not problems:
                return reply
            self._reject(kind, turn_idx, attempt, problems, reply.text, reply.call_id)
        await retract()
        raise InvalidTurn(kind, turn_idx, problems)

    def _reject(
        self,
        kind: TurnKind,
        turn_idx: int,
        attempt: int,
        problems: Sequence[TurnProblem],
        text: str,
        call_id: str | None,
    ) -> None:
        self.rows.rejections.append(
            TurnRejectionRow(
                episode_id=self.episode_id,
                turn_idx=turn_idx,
                kind=kind,
                attempt=attempt,
                # The first problem names the row; the detail keeps them all.
                reason=problems[0].reason,
                detail="; ".join(f"{p.reason}: {p.detail}" for p in problems),
                content=text,
                call_id=call_id,
            )
        )
