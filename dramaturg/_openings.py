"""The recipes at run time: how an episode begins (a seed, an expanded topic, an evolved
request, an imported conversation), and SPIN's replay of a real conversation.

Every preparatory model call goes through the gateway like any other, so it is cached and a
resumed run replays it exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

from dramaturg import _markers as mk
from dramaturg._episode import EpisodeOutcome, RoleModels
from dramaturg._errors import RunError
from dramaturg._gateway import Gateway
from dramaturg._health import RoleHealth
from dramaturg._model import GenerationParams, ResponseFormat
from dramaturg._review import EpisodeReviewer, ReviewSettings, ask_structured, structured_params
from dramaturg._validation import InvalidTurn, TurnGate
from dramaturg.agents import Reply, RoleAgent
from dramaturg.agents._recipe_prompts import (
    evolution_prompt,
    evolution_request,
    evolution_verdict_prompt,
    evolution_verdict_request,
    topic_prompt,
)
from dramaturg.evaluators import (
    CheckSuite,
    EvolutionVerdict,
    TurnContext,
    TurnProblem,
    clean_turn,
    parse_evolution_verdict,
    reply_schema,
    validate_turn,
)
from dramaturg.memory import OpeningKind, OpeningRow, ReviewRows, TurnOrigin, TurnRecord
from dramaturg.scenarios import (
    EpisodeSpec,
    EvolOperator,
    EvolvedRequests,
    ImportedDialogue,
    Opening,
    SeedRequests,
    SpinDialogues,
    TopicRequests,
)

__all__ = ["Beginning", "begin_episode", "replay_for_spin"]

_VERDICT_FORMAT = ResponseFormat.from_schema("evolution_verdict", reply_schema(EvolutionVerdict))
# WizardLM's elimination: an evolution that leaks the rewriting prompt's own words is dropped.
_PROMPT_WORDS = (
    "#given prompt#",
    "#rewritten prompt#",
    "given prompt",
    "rewritten prompt",
    "#created prompt#",
)
# An evolution this similar to its seed changed nothing worth a new episode.
_UNCHANGED_RATIO = 0.95
_ATTEMPTS = 3
History = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Beginning:
    """What an episode starts from before the user simulator's first message.

    Attributes:
        spec: the episode's spec (an imported conversation's system message becomes the
            assistant's prompt).
        prefix: turns already said: the opening request, or the imported conversation.
        opening_request: the prefix is the first stage's user message (a seed, a topic's
            request, an evolved request), so the user simulator starts at the second stage.
        row: the ``openings`` record.
    """

    spec: EpisodeSpec
    prefix: tuple[TurnRecord, ...] = ()
    opening_request: bool = False
    row: OpeningRow | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    """Where an opening came from, before its calls are known."""

    kind: OpeningKind
    source_id: str | None
    source_text: str
    operator: str | None = None
    drop_reason: str | None = None

    def row(self, episode_id: str, opening: str, call_ids: list[str]) -> OpeningRow:
        return OpeningRow(
            episode_id=episode_id,
            kind=self.kind,
            source_id=self.source_id,
            source_text=self.source_text,
            operator=self.operator,
            opening=opening,
            kept=self.drop_reason is None,
            drop_reason=self.drop_reason,
            call_ids_json=json.dumps(call_ids),
        )


@dataclass(slots=True)
class _Preparation:
    """The preparatory calls of one episode's opening."""

    spec: EpisodeSpec
    gateway: Gateway
    models: RoleModels
    params: GenerationParams
    episode_id: str
    health: RoleHealth | None
    call_ids: list[str]

    def opened_with(self, text: str, origin: TurnOrigin, record: _Record) -> Beginning:
        """The episode opens with ``text`` as the first stage's user message."""
        stage = self.spec.stage_path[0].name if self.spec.stage_path else None
        turn = TurnRecord(0, "user", text, stage=stage, origin=origin)
        row = record.row(self.episode_id, text, self.call_ids)
        return Beginning(self.spec, (turn,), opening_request=True, row=row)

    async def message(self, prompt: str, request: str, what: str) -> str:
        """A model-written user message, asked again (other seeds) while it is empty or not a message."""
        agent = RoleAgent(
            "user_simulator",
            prompt,
            self.gateway,
            spec=self.models.user_simulator,
            episode_id=self.episode_id,
            seed=self.spec.seed,
            params=self.params,
        )
        problems: list[str] = []
        for attempt in range(_ATTEMPTS):
            reply = await agent.respond(("director", request), attempt=attempt)
            if reply.call_id:
                self.call_ids.append(reply.call_id)
            text = clean_turn(mk.split_end_marker(reply.text)[0], self.spec.persona)
            found = [p.reason for p in validate_turn(text, TurnContext("user", persona=self.spec.persona))]
            if self.health is not None:
                self.health.record_turn("user", not found, reply.text)
            if not found:
                return text
            problems += found
            await agent.retract()
        raise RunError(f"{what}: no usable message in {_ATTEMPTS} tries ({', '.join(problems)})")

    async def verdict(self, operator: EvolOperator, seed: str, evolved: str) -> EvolutionVerdict | None:
        agent = RoleAgent(
            "verifier",
            evolution_verdict_prompt(operator),
            self.gateway,
            spec=self.models.verifier,
            episode_id=self.episode_id,
            seed=self.spec.seed,
            params=structured_params(self.params),
            response_format=_VERDICT_FORMAT,
        )
        request = evolution_verdict_request(seed, evolved)
        result = await ask_structured(
            agent, request, parse_evolution_verdict, attempts=_ATTEMPTS, health=self.health
        )
        if result.call_id:
            self.call_ids.append(result.call_id)
        return result.value


async def begin_episode(
    opening: Opening,
    spec: EpisodeSpec,
    *,
    index: int,
    gateway: Gateway,
    models: RoleModels,
    params: GenerationParams,
    episode_id: str,
    health: RoleHealth | None = None,
) -> Beginning:
    """How episode ``index`` of a scenario with ``opening`` begins.

    Raises:
        RunError: a topic or evolution produced no usable message (the episode fails).
    """
    prep = _Preparation(spec, gateway, models, params, episode_id, health, [])
    if isinstance(opening, SeedRequests):
        seed = opening.requests[index % len(opening.requests)]
        return prep.opened_with(seed, "seed", _Record("seed", str(index), seed))
    if isinstance(opening, TopicRequests):
        topic = opening.topics[index % len(opening.topics)]
        text = await prep.message(topic_prompt(topic), "Write the message now.", f"topic {topic!r}")
        return prep.opened_with(text, "generated", _Record("topic", str(index), topic))
    if isinstance(opening, EvolvedRequests):
        return await _evolve(opening, index, prep)
    dialogue = opening.dialogues[index % len(opening.dialogues)]
    spec = replace(spec, assistant_prompt=dialogue.system or spec.assistant_prompt)
    first = dialogue.turns[0][1] if dialogue.turns else ""
    kind: OpeningKind = "spin" if isinstance(opening, SpinDialogues) else "imported"
    record = _Record(kind, dialogue.id, first).row(episode_id, first, prep.call_ids)
    return Beginning(spec, imported_turns(dialogue), opening_request=False, row=record)


async def _evolve(opening: EvolvedRequests, index: int, prep: _Preparation) -> Beginning:
    seed = opening.requests[index % len(opening.requests)]
    operator = random.Random(f"evol:{prep.spec.seed}").choice(opening.operators)
    evolved = await prep.message(evolution_prompt(operator), evolution_request(seed), f"evolving {seed!r}")
    reason = _eliminated(seed, evolved)
    if reason is None:
        verdict = await prep.verdict(operator, seed, evolved)
        if verdict is None:
            reason = "verdict_failed"
        elif verdict.verdict == "no":
            reason = "not_new" if operator == "breadth" else "not_harder"
    record = _Record("evolved", str(index), seed, operator=operator, drop_reason=reason)
    if reason is None:
        return prep.opened_with(evolved, "generated", record)
    return prep.opened_with(seed, "seed", record)  # eliminated: the seed itself opens


def _eliminated(seed: str, evolved: str) -> str | None:
    """WizardLM's rule-based eliminations: the prompt's own words leaked, or nothing changed."""
    lowered = evolved.lower()
    if any(words in lowered for words in _PROMPT_WORDS):
        return "copied_prompt"
    if SequenceMatcher(None, seed.lower(), lowered).ratio() >= _UNCHANGED_RATIO:
        return "unchanged"
    return None


def imported_turns(dialogue: ImportedDialogue) -> tuple[TurnRecord, ...]:
    return tuple(
        TurnRecord(i, speaker, text, origin="imported") for i, (speaker, text) in enumerate(dialogue.turns)
    )


async def replay_for_spin(
    beginning: Beginning,
    *,
    gateway: Gateway,
    models: RoleModels,
    params: GenerationParams,
    episode_id: str,
    run_id: str,
    settings: ReviewSettings,
    checks: CheckSuite,
    health: RoleHealth | None,
    turn_attempts: int,
) -> EpisodeOutcome:
    """SPIN: at every real assistant reply that answers a user, the model writes its own reply
    from the same history; the real one is chosen, the model's rejected.

    Both sides are critiqued (the margin) and judged in both orders like every pair; the pair
    is stored either way, with ``judge_agreement`` saying whether both orders preferred the
    real reply, so export leaves out those the judges did not confirm (``unverified``).
    """
    spec = beginning.spec
    rows = ReviewRows()
    if beginning.row is not None:
        rows.openings.append(beginning.row)
    gate = TurnGate(spec, episode_id, rows, attempts=turn_attempts, health=health)
    reviewer = EpisodeReviewer(
        spec=spec,
        gateway=gateway,
        models=models.for_role,
        episode_id=episode_id,
        run_id=run_id,
        settings=settings,
        params=params,
        checks=checks,
        rows=rows,
        gate=gate,
        health=health,
    )
    assistant = RoleAgent(
        "assistant",
        spec.assistant_prompt,
        gateway,
        spec=models.assistant,
        episode_id=episode_id,
        seed=spec.seed,
        params=params,
    )
    turns = beginning.prefix
    for turn in turns:
        if turn.role != "assistant" or turn.idx == 0 or turns[turn.idx - 1].role != "user":
            continue
        history = tuple((t.role, t.content) for t in turns[: turn.idx])
        await assistant.set_history(list(history[:-1]))
        said = history[-1][1]

        async def attempt(n: int, _problems: Sequence[TurnProblem], said: str = said) -> Reply:
            return await assistant.respond(("user", said), attempt=n)

        def check(reply: Reply, history: History = history) -> list[TurnProblem]:
            return validate_turn(reply.text, TurnContext("assistant", history=history))

        try:
            own = await gate.generate("assistant", turn.idx, attempt, assistant.retract, check)
        except InvalidTurn:
            continue  # no valid reply of its own at this point: turn_rejections says why
        await reviewer.spin_pair(history, turn.content, own, turn.idx)
    return EpisodeOutcome(turns=turns, termination_reason="replayed", review=rows)
