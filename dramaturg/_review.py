"""Online critique, revision, verification and pair building for one episode.

After each assistant turn the critic scores it; below the threshold the assistant revises,
and the dialogue continues from the revision. A (original, revision) becomes a preference
pair only when the judge prefers the revision in both orders. At selected turns, best-of-n
sampling adds a second pair source: the best and worst of n candidates, judged both ways.
"""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

from dramaturg._errors import ReplyParseError
from dramaturg._gateway import Gateway
from dramaturg._health import RoleHealth
from dramaturg._model import (
    GenerationParams,
    Message,
    ModelRequest,
    ModelSpec,
    ResponseFormat,
    RoleName,
    ToolStep,
    tool_steps_json,
)
from dramaturg._toolbox import ToolBox, tool_uses, with_tool_steps
from dramaturg._validation import InvalidTurn, TurnGate
from dramaturg.agents import (
    Reply,
    RoleAgent,
    critic_prompt,
    critique_request,
    goal_request,
    judge_prompt,
    judge_request,
    revision_request,
    verifier_prompt,
)
from dramaturg.evaluators import (
    CheckSuite,
    CritiqueReply,
    GoalReply,
    JudgeReply,
    TurnContext,
    TurnProblem,
    critique_schema,
    parse_critique,
    parse_goal,
    parse_judgment,
    reply_schema,
    validate_turn,
)
from dramaturg.memory import (
    CheckRow,
    CritiqueRow,
    JudgmentRow,
    PairOutcomeRow,
    PairRow,
    ReviewRows,
    RevisionRow,
    Store,
    utcnow,
)
from dramaturg.scenarios import CheckContext, EpisodeSpec, ToolUse

__all__ = [
    "EpisodeReviewer",
    "PairReport",
    "ReviewSettings",
    "Structured",
    "ask_structured",
    "critique_format",
    "pair_report",
    "structured_params",
]

T = TypeVar("T")
History = tuple[tuple[str, str], ...]
# The fewest output tokens a critic, judge or verifier reply is given, whatever --max-tokens says.
STRUCTURED_MIN_TOKENS = 512
_JUDGMENT_FORMAT = ResponseFormat.from_schema("judgment", reply_schema(JudgeReply))


@functools.cache
def critique_format(rubric: tuple[str, ...]) -> ResponseFormat:
    """The critique schema for a rubric, built once per rubric rather than per critique."""
    return ResponseFormat.from_schema("critique", critique_schema(rubric))


PairSource = Literal["revision", "best_of_n", "spin"]
_GOAL_FORMAT = ResponseFormat.from_schema("goal", reply_schema(GoalReply))


@dataclass(frozen=True, slots=True)
class ReviewSettings:
    """How much reviewing a run does.

    Attributes:
        critique: critique every assistant turn online (revise below ``revise_below``).
        revise_below: critic overall score (1..10) under which a reply is revised.
        min_margin: smallest critic-score margin a pair needs.
        best_of_n: candidates sampled at best-of-n turns (0 or 1 turns it off).
        best_of_n_turns: how many of an episode's first assistant turns get best-of-n.
        parse_attempts: how often a critic/judge/verifier is asked before its reply is
            recorded as a failure.
        refine_rounds: critique -> revise rounds at most, while the latest version scores
            below ``revise_below`` or fails a check (Self-Refine); the pair is first vs final.
        principles_per_critique: principles sampled for each critique from the scenario's
            (Constitutional AI); 0 shows them all.
        candidate_models: best-of-n's candidates come one from each of these models, beside
            the assistant's own reply (UltraFeedback); empty: samples of the assistant's model.
    """

    critique: bool = True
    revise_below: float = 7.0
    min_margin: float = 1.0
    best_of_n: int = 3
    best_of_n_turns: int = 1
    parse_attempts: int = 3
    refine_rounds: int = 1
    principles_per_critique: int = 0
    candidate_models: tuple[ModelSpec, ...] = ()

    @property
    def best_of_n_on(self) -> bool:
        return self.best_of_n > 1 or bool(self.candidate_models)


@dataclass(frozen=True, slots=True)
class Structured(Generic[T]):
    """A structured reply: its parsed value (None when no attempt parsed), the last raw text."""

    value: T | None
    raw: str
    attempts: int
    call_id: str | None


def structured_params(params: GenerationParams) -> GenerationParams:
    """``params`` for a structured reply: JSON cut off at the length limit never parses, so
    critics, judges and verifiers get at least ``STRUCTURED_MIN_TOKENS``."""
    return replace(params, max_tokens=max(params.max_tokens, STRUCTURED_MIN_TOKENS))


async def ask_structured(
    agent: RoleAgent,
    request: str,
    parse: Callable[[str], T],
    *,
    attempts: int,
    health: RoleHealth | None = None,
) -> Structured[T]:
    """Ask ``agent`` for a reply ``parse`` accepts, telling it what was wrong while it does not.

    Every reply counts in ``health`` for the agent's role; after ``attempts`` replies that do
    not parse, the value is None and ``raw`` holds the last reply.
    """
    message = request
    raw, call_id = "", None
    for attempt in range(1, attempts + 1):
        finish = ""
        try:
            reply = await agent.respond(("dramaturg", message))
            raw, call_id, finish = reply.text, reply.call_id, reply.finish_reason
            value = parse(reply.text)
        except ReplyParseError as exc:
            raw = exc.raw or raw
            if health is not None:
                health.record(agent.role, False, raw)
            message = (
                "Your reply was cut off at the length limit. Reply again with shorter JSON: "
                "feedback in at most three short lines."
                if finish == "length"
                else f"Your reply could not be used ({exc}). Reply again with JSON only, "
                "exactly in the format asked for."
            )
            continue
        if health is not None:
            health.record(agent.role, True)
        return Structured(value, raw, attempt, call_id)
    return Structured(None, raw, attempts, call_id)


@dataclass(frozen=True, slots=True)
class _Candidate:
    text: str
    call_id: str | None
    critique: CritiqueRow


@dataclass(slots=True)
class TurnResult:
    text: str
    call_id: str | None
    tool_steps: tuple[ToolStep, ...] = ()


@dataclass(slots=True)
class EpisodeReviewer:
    """Reviews the assistant turns of one episode. Build one per episode."""

    spec: EpisodeSpec
    gateway: Gateway
    models: Callable[[RoleName], ModelSpec]
    episode_id: str
    run_id: str
    settings: ReviewSettings
    params: GenerationParams
    checks: CheckSuite = field(default_factory=CheckSuite)
    rows: ReviewRows = field(default_factory=ReviewRows)
    gate: TurnGate | None = None
    health: RoleHealth | None = None
    tools: ToolBox | None = None
    _assistant_turns: int = 0
    _critiques: int = 0
    _earlier_tool_uses: list[ToolUse] = field(default_factory=list)

    # -- structured calls --------------------------------------------------------------------

    def _agent(self, role: RoleName, prompt: str, response_format: ResponseFormat | None = None) -> RoleAgent:
        params = structured_params(self.params) if response_format is not None else self.params
        return RoleAgent(
            role,
            prompt,
            self.gateway,
            spec=self.models(role),
            episode_id=self.episode_id,
            seed=self.spec.seed,
            params=params,
            response_format=response_format,
        )

    async def _ask(
        self,
        role: RoleName,
        prompt: str,
        request: str,
        parse: Callable[[str], T],
        response_format: ResponseFormat,
    ) -> Structured[T]:
        """Ask for a structured reply (the schema goes to the API), re-asking while it does not parse."""
        agent = self._agent(role, prompt, response_format)
        return await ask_structured(
            agent, request, parse, attempts=self.settings.parse_attempts, health=self.health
        )

    async def _critique(
        self,
        history: History,
        reply: str,
        turn_idx: int,
        target: Literal["original", "revision", "candidate"],
        steps: tuple[ToolStep, ...] = (),
    ) -> CritiqueRow:
        rubric = self.spec.rubric
        result = await self._ask(
            "critic",
            critic_prompt(self._standards(turn_idx, target)),
            critique_request(history, with_tool_steps(reply, steps)),
            lambda text: parse_critique(text, rubric),
            critique_format(rubric),
        )
        self._critiques += 1
        parsed: CritiqueReply | None = result.value
        row = CritiqueRow(
            critique_id=uuid.uuid4().hex,
            episode_id=self.episode_id,
            turn_idx=turn_idx,
            target=target,
            status="ok" if parsed else "failed",
            overall=parsed.overall if parsed else None,
            scores_json=json.dumps(parsed.scores, sort_keys=True) if parsed else None,
            feedback=parsed.feedback if parsed else None,
            raw=result.raw,
            attempts=result.attempts,
            call_id=result.call_id,
        )
        self.rows.critiques.append(row)
        return row

    def _standards(self, turn_idx: int, target: str) -> EpisodeSpec:
        """The spec a critique judges by: with ``principles_per_critique``, a seeded sample of
        the scenario's principles (Constitutional AI draws one per critique), so one long
        constitution steers many critiques without crowding each prompt."""
        k = self.settings.principles_per_critique
        principles = self.spec.principles
        if not k or k >= len(principles):
            return self.spec
        rng = random.Random(f"{self.spec.seed}:{turn_idx}:{target}:{self._critiques}")
        return replace(self.spec, principles=tuple(rng.sample(principles, k)))

    async def _judge_both_orders(
        self,
        history: History,
        better: str,
        worse: str,
        turn_idx: int,
        source: PairSource,
        steps: tuple[tuple[ToolStep, ...], tuple[ToolStep, ...]] = ((), ()),
    ) -> tuple[str, list[str]]:
        """Judge (better, worse) in both orders. Returns an outcome and the judgment ids.

        The outcome is 'paired' only when both orders prefer ``better``.
        """
        verdicts: list[Literal["better", "worse", "tie"] | None] = []
        ids = []
        # The judge sees each reply with the tool calls it made (two replies may share a text
        # and differ only in their calls); the rows keep the texts.
        better_shown = with_tool_steps(better, steps[0])
        worse_shown = with_tool_steps(worse, steps[1])
        orders: tuple[tuple[Literal["ab", "ba"], str, str, str, str], ...] = (
            ("ab", better, worse, better_shown, worse_shown),
            ("ba", worse, better, worse_shown, better_shown),
        )
        for orientation, first, second, first_shown, second_shown in orders:
            result = await self._ask(
                "verifier",
                judge_prompt(self.spec),
                judge_request(history, first_shown, second_shown),
                parse_judgment,
                _JUDGMENT_FORMAT,
            )
            parsed: JudgeReply | None = result.value
            row = JudgmentRow(
                judgment_id=uuid.uuid4().hex,
                episode_id=self.episode_id,
                turn_idx=turn_idx,
                source=source,
                first_text=first,
                second_text=second,
                orientation=orientation,
                status="ok" if parsed else "failed",
                winner=parsed.winner if parsed else None,
                reason=parsed.reason if parsed else None,
                raw=result.raw,
                attempts=result.attempts,
                call_id=result.call_id,
            )
            self.rows.judgments.append(row)
            ids.append(row.judgment_id)
            if parsed is None:
                verdicts.append(None)
            elif parsed.winner == "tie":
                verdicts.append("tie")
            else:
                better_letter = "A" if orientation == "ab" else "B"
                verdicts.append("better" if parsed.winner == better_letter else "worse")
        if None in verdicts:
            return "judge_failed", ids
        if verdicts == ["better", "better"]:
            return "paired", ids
        if verdicts == ["worse", "worse"]:
            return "judge_rejected", ids
        if verdicts == ["tie", "tie"]:
            return "tie", ids
        if self.health is not None and "tie" not in verdicts:
            self.health.inconsistent("verifier")  # the same position won in both orders
        return "inconsistent", ids

    async def _checks(
        self, history: History, reply: str, turn_idx: int, target: str, steps: tuple[ToolStep, ...] = ()
    ) -> bool:
        context = CheckContext(
            self.spec,
            history,
            reply,
            tool_calls=tool_uses(steps),
            earlier_tool_calls=tuple(self._earlier_tool_uses),
            environment=self.tools.environment if self.tools is not None else None,
        )
        results = await self.checks.run(context)
        for result in results:
            self.rows.checks.append(
                CheckRow(self.episode_id, turn_idx, target, result.name, result.passed, result.detail)
            )
        return all(result.passed for result in results)

    def _pair(
        self,
        history: History,
        turn_idx: int,
        source: PairSource,
        chosen: tuple[str, str | None],
        rejected: tuple[str, str | None],
        margin: float,
        checks_passed: bool,
        judgment_ids: list[str],
        critique_ids: list[str],
        steps: tuple[tuple[ToolStep, ...], tuple[ToolStep, ...]] = ((), ()),
        judge_agreement: bool = True,
    ) -> str:
        prompt = [{"role": "system", "content": self.spec.assistant_prompt}]
        prompt += [{"role": role, "content": content} for role, content in history]
        pair_id = uuid.uuid4().hex
        self.rows.pairs.append(
            PairRow(
                pair_id=pair_id,
                run_id=self.run_id,
                episode_id=self.episode_id,
                scenario=self.spec.scenario,
                turn_idx=turn_idx,
                prompt_json=json.dumps(prompt),
                chosen=chosen[0],
                rejected=rejected[0],
                source=source,
                margin=margin,
                judge_agreement=judge_agreement,
                checks_passed=checks_passed,
                chosen_call_id=chosen[1],
                rejected_call_id=rejected[1],
                judgment_ids_json=json.dumps(judgment_ids),
                critique_ids_json=json.dumps(critique_ids),
                created_at=utcnow(),
                chosen_tool_steps_json=tool_steps_json(steps[0]),
                rejected_tool_steps_json=tool_steps_json(steps[1]),
            )
        )
        return pair_id

    def _outcome(self, turn_idx: int, source: str, outcome: str, pair_id: str | None = None) -> None:
        self.rows.outcomes.append(PairOutcomeRow(self.episode_id, turn_idx, source, outcome, pair_id))

    # -- the turn ------------------------------------------------------------------------------

    async def review_turn(
        self, history: History, answer: Reply, turn_idx: int, assistant: RoleAgent
    ) -> TurnResult:
        """Critique (and maybe revise) the assistant's ``answer`` to the last user turn in ``history``.

        Returns the version the dialogue continues with. The assistant's own context is
        updated to hold the revision, so it never sees its original again; with tools, the
        environment is left as the kept version's calls made it.
        """
        result = await self._review_turn(history, answer, turn_idx, assistant)
        self._earlier_tool_uses += tool_uses(result.tool_steps)
        return result

    async def _review_turn(
        self, history: History, answer: Reply, turn_idx: int, assistant: RoleAgent
    ) -> TurnResult:
        original = TurnResult(answer.text, answer.call_id, answer.tool_steps)
        self._assistant_turns += 1
        # Best-of-n samples candidates as plain completions: a turn that used tools would be
        # compared with candidates that could not, so tool scenarios skip it.
        uses_tools = self.tools is not None and bool(self.tools.specs)
        if (
            self._assistant_turns <= self.settings.best_of_n_turns
            and self.settings.best_of_n_on
            and not uses_tools
        ):
            await self._best_of_n(history, answer.text, answer.call_id, turn_idx)
        if not self.settings.critique:
            return original
        steps = answer.tool_steps
        critique = await self._critique(history, answer.text, turn_idx, "original", steps)
        if critique.overall is None:
            self._outcome(turn_idx, "revision", "critique_failed")
            return original
        original_ok = await self._checks(history, answer.text, turn_idx, "original", steps)
        threshold = self.settings.revise_below
        if critique.overall >= threshold and original_ok:
            return original
        # Self-Refine: critique -> revise until the latest version clears the threshold and
        # its checks, or the rounds run out; the pair is the first version against the last.
        latest, latest_critique, latest_target = original, critique, "original"
        rounds = 0
        while rounds < self.settings.refine_rounds:
            failed_checks = [
                f"- check {row.name} failed: {row.detail}"
                for row in self.rows.checks
                if row.turn_idx == turn_idx and row.target == latest_target and not row.passed
            ]
            feedback = "\n".join([latest_critique.feedback or "", *failed_checks]).strip()
            revision = await self._revise(assistant, revision_request(feedback), history, turn_idx)
            if revision is None:
                break  # every attempt failed validation: the latest valid version stands
            if (
                rounds
                and revision.text.strip() == latest.text.strip()
                and revision.tool_steps == latest.tool_steps
            ):
                break  # no progress: another round would ask the same again
            rounds += 1
            revised_critique = await self._critique(
                history, revision.text, turn_idx, "revision", revision.tool_steps
            )
            self.rows.revisions.append(
                RevisionRow(
                    revision_id=uuid.uuid4().hex,
                    episode_id=self.episode_id,
                    turn_idx=turn_idx,
                    original=latest.text,
                    revised=revision.text,
                    critique_id=latest_critique.critique_id,
                    revision_critique_id=revised_critique.critique_id,
                    original_call_id=latest.call_id,
                    revised_call_id=revision.call_id,
                    round=rounds,
                )
            )
            latest, latest_critique, latest_target = (
                TurnResult(revision.text, revision.call_id, revision.tool_steps),
                revised_critique,
                "revision",
            )
            if revised_critique.overall is None:
                break
            # Only the kept version's check rows stand for the turn's revision (export reads them).
            self.rows.checks[:] = [
                row for row in self.rows.checks if not (row.turn_idx == turn_idx and row.target == "revision")
            ]
            revised_ok = await self._checks(history, revision.text, turn_idx, "revision", revision.tool_steps)
            if revised_critique.overall >= threshold and revised_ok:
                break
        if rounds == 0:
            self._outcome(turn_idx, "revision", "revision_invalid")
            return original
        if latest.text.strip() == answer.text.strip() and latest.tool_steps == steps:
            self._outcome(turn_idx, "revision", "identical")
            return latest
        if latest_critique.overall is None:
            self._outcome(turn_idx, "revision", "critique_failed")
            return latest
        latest_ok = all(
            row.passed for row in self.rows.checks if row.turn_idx == turn_idx and row.target == "revision"
        )
        margin = latest_critique.overall - critique.overall
        outcome, judgment_ids = await self._judge_both_orders(
            history, latest.text, answer.text, turn_idx, "revision", (latest.tool_steps, steps)
        )
        if outcome == "paired" and margin < self.settings.min_margin:
            outcome = "low_margin"
        elif outcome == "paired" and latest_critique.overall < self.settings.revise_below:
            outcome = "chosen_below_threshold"
        pair_id = None
        if outcome == "paired":
            pair_id = self._pair(
                history,
                turn_idx,
                "revision",
                (latest.text, latest.call_id),
                (answer.text, answer.call_id),
                margin,
                latest_ok,
                judgment_ids,
                [critique.critique_id, latest_critique.critique_id],
                (latest.tool_steps, steps),
            )
        self._outcome(turn_idx, "revision", outcome, pair_id)
        return latest

    async def spin_pair(self, history: History, real: str, own: Reply, turn_idx: int) -> None:
        """SPIN: the real reply at ``turn_idx`` chosen over the model's own from the same history.

        The pair is stored whatever the judges say (SPIN's premise is that the real reply is
        the better one); ``judge_agreement`` records whether both orders confirmed it.
        """
        if own.text.strip() == real.strip():
            self._outcome(turn_idx, "spin", "identical")
            return
        real_critique = await self._critique(history, real, turn_idx, "candidate")
        own_critique = await self._critique(history, own.text, turn_idx, "candidate")
        if real_critique.overall is None or own_critique.overall is None:
            self._outcome(turn_idx, "spin", "critique_failed")
            return
        real_ok = await self._checks(history, real, turn_idx, "candidate")
        outcome, judgment_ids = await self._judge_both_orders(history, real, own.text, turn_idx, "spin")
        pair_id = self._pair(
            history,
            turn_idx,
            "spin",
            (real, None),
            (own.text, own.call_id),
            real_critique.overall - own_critique.overall,
            real_ok,
            judgment_ids,
            [real_critique.critique_id, own_critique.critique_id],
            judge_agreement=outcome == "paired",
        )
        self._outcome(turn_idx, "spin", outcome, pair_id)

    async def _revise(
        self, assistant: RoleAgent, request: str, history: History, turn_idx: int
    ) -> Reply | None:
        """A validated revision, or None when every attempt failed (the context is then as before).

        With tools, each attempt starts from the world as it was before the turn (the
        original's calls undone); when no revision survives, the original's world returns.
        """
        tools = self.tools
        after_original = tools.snapshot() if tools is not None else None

        async def attempt(n: int) -> Reply:
            if tools is not None:
                tools.attempt("revision", n)
            return await assistant.revise(request, attempt=n)

        if self.gate is None:
            return await attempt(0)

        def check(reply: Reply) -> list[TurnProblem]:
            context = TurnContext(
                "assistant",
                history=history,
                finish_reason=reply.finish_reason,
                called_tools=bool(reply.tool_steps),
                feedback=request,
            )
            return validate_turn(reply.text, context)

        try:
            return await self.gate.generate(
                "revision", turn_idx, lambda n, _problems: attempt(n), assistant.retract, check
            )
        except InvalidTurn:
            if tools is not None:
                tools.restore(after_original)
            return None

    async def _best_of_n(
        self, history: History, answer: str, answer_call_id: str | None, turn_idx: int
    ) -> None:
        own = self.models("assistant")
        # UltraFeedback: one candidate from each listed model; else more samples of the assistant's.
        others = self.settings.candidate_models or (own,) * (self.settings.best_of_n - 1)
        candidates = [(answer, answer_call_id)]
        messages = tuple(Message("user" if role == "user" else "assistant", text) for role, text in history)
        for k, spec in enumerate(others, start=1):
            request = ModelRequest(
                backend=spec.backend,
                model=spec.model,
                role="assistant",
                system=self.spec.assistant_prompt,
                messages=messages,
                params=self.params,
                seed=self.spec.seed + k,
            )
            sampled = await self.gateway.complete(request, episode_id=self.episode_id)
            candidates.append((sampled.response.text.strip(), sampled.call_id))
        scored = [
            _Candidate(text, call_id, await self._critique(history, text, turn_idx, "candidate"))
            for text, call_id in candidates
        ]
        usable = [c for c in scored if c.critique.overall is not None]
        if len(usable) < 2:
            self._outcome(turn_idx, "best_of_n", "critique_failed")
            return
        usable.sort(key=lambda c: -(c.critique.overall or 0.0))
        best, worst = usable[0], usable[-1]
        margin = (best.critique.overall or 0.0) - (worst.critique.overall or 0.0)
        if best.text == worst.text:
            self._outcome(turn_idx, "best_of_n", "identical")
            return
        if margin < self.settings.min_margin:
            self._outcome(turn_idx, "best_of_n", "low_margin")
            return
        if (best.critique.overall or 0.0) < self.settings.revise_below:
            # Both sides flawed: a pair would teach "less bad", not "good".
            self._outcome(turn_idx, "best_of_n", "chosen_below_threshold")
            return
        outcome, judgment_ids = await self._judge_both_orders(
            history, best.text, worst.text, turn_idx, "best_of_n"
        )
        pair_id = None
        if outcome == "paired":
            best_ok = await self._checks(history, best.text, turn_idx, "candidate")
            pair_id = self._pair(
                history,
                turn_idx,
                "best_of_n",
                (best.text, best.call_id),
                (worst.text, worst.call_id),
                margin,
                best_ok,
                judgment_ids,
                [best.critique.critique_id, worst.critique.critique_id],
            )
        self._outcome(turn_idx, "best_of_n", outcome, pair_id)

    # -- the episode ---------------------------------------------------------------------------

    async def goal_met(self, dialogue: History) -> bool | None:
        """The verifier's verdict on the episode's goal; None if it never answered usably."""
        result = await self._ask(
            "verifier", verifier_prompt(), goal_request(self.spec.goal, dialogue), parse_goal, _GOAL_FORMAT
        )
        self.rows.checks.append(
            CheckRow(
                self.episode_id,
                None,
                "episode",
                "goal_met",
                bool(result.value and result.value.goal_met),
                (
                    result.value.reason
                    if result.value
                    else f"verifier reply did not parse: {result.raw[:200]}"
                ),
            )
        )
        return result.value.goal_met if result.value else None


@dataclass(frozen=True, slots=True)
class PairReport:
    """Pair statistics of a run, read back from the store.

    Attributes:
        outcomes: candidate pairs by outcome ('paired', 'tie', 'inconsistent', ...).
        judged_both_orders: candidate pairs whose two judgments both parsed.
        agreeing: of those, how many had both orders prefer the same side.
        with_ground_truth: pairs whose two sides carry the sim's planted-mistake notes.
        correct: of those, pairs whose chosen side has no planted mistake and whose
            rejected side has one.
        unconfirmed: pairs kept although the judges did not confirm them (SPIN keeps every
            real reply's pair; export leaves these out as ``unverified``).
    """

    pairs: dict[str, int]
    outcomes: dict[str, int]
    judged_both_orders: int
    agreeing: int
    with_ground_truth: int
    correct: int
    unconfirmed: int = 0

    @property
    def correctness(self) -> float | None:
        return self.correct / self.with_ground_truth if self.with_ground_truth else None


def pair_report(store: Store, run_id: str) -> PairReport:
    """Summarise a run's pairs and judgments; records sim pair correctness in ``metrics``."""
    pairs = dict(
        store.sql("SELECT source, count(*) FROM preference_pairs WHERE run_id = ? GROUP BY 1", [run_id])
    )
    outcomes = dict(
        store.sql(
            "SELECT o.outcome, count(*) FROM pair_outcomes o JOIN episodes e USING (episode_id) "
            "WHERE e.run_id = ? AND (o.pair_id IS NULL OR o.outcome = 'paired') GROUP BY 1",
            [run_id],
        )
    )
    (unconfirmed,) = store.sql(
        "SELECT count(*) FROM pair_outcomes o JOIN episodes e USING (episode_id) "
        "WHERE e.run_id = ? AND o.pair_id IS NOT NULL AND o.outcome <> 'paired'",
        [run_id],
    )[0]
    judged, agreeing = store.sql(
        """
        WITH j AS (
            SELECT j.episode_id, j.turn_idx, j.source,
                   max(CASE WHEN j.orientation = 'ab' THEN j.winner END) AS ab,
                   max(CASE WHEN j.orientation = 'ba' THEN j.winner END) AS ba
            FROM judgments j JOIN episodes e USING (episode_id)
            WHERE e.run_id = ? AND j.status = 'ok'
            GROUP BY ALL
        )
        SELECT count(*) FILTER (WHERE ab IS NOT NULL AND ba IS NOT NULL),
               count(*) FILTER (WHERE (ab = 'A' AND ba = 'B') OR (ab = 'B' AND ba = 'A')
                                   OR (ab = 'tie' AND ba = 'tie'))
        FROM j
        """,
        [run_id],
    )[0]
    # A side's mistake is in its text (the final call's 'planted' note) or, with tools, in a
    # tool call it made (a 'tool_mistake' note on a call of that version of the turn).
    known, correct = store.sql(
        """
        WITH slips AS (
            SELECT DISTINCT t.episode_id, t.turn_idx, t.target
            FROM tool_calls t JOIN llm_calls l ON l.call_id = t.model_call_id
            WHERE l.annotations->>'tool_mistake' IS NOT NULL
        ),
        sides AS (
            SELECT c.annotations->>'planted' AS chosen_text, r.annotations->>'planted' AS rejected_text,
                   EXISTS (SELECT 1 FROM slips s WHERE s.episode_id = p.episode_id
                           AND s.turn_idx = p.turn_idx AND s.target = 'revision'
                           AND p.source = 'revision') AS chosen_slip,
                   EXISTS (SELECT 1 FROM slips s WHERE s.episode_id = p.episode_id
                           AND s.turn_idx = p.turn_idx AND s.target = 'original'
                           AND p.source = 'revision') AS rejected_slip
            FROM preference_pairs p
            LEFT JOIN llm_calls c ON c.call_id = p.chosen_call_id
            LEFT JOIN llm_calls r ON r.call_id = p.rejected_call_id
            WHERE p.run_id = ?
        )
        SELECT count(*) FILTER (WHERE chosen_text IS NOT NULL AND rejected_text IS NOT NULL),
               count(*) FILTER (WHERE chosen_text = 'none' AND NOT chosen_slip
                                  AND (rejected_text <> 'none' OR rejected_slip))
        FROM sides
        """,
        [run_id],
    )[0]
    report = PairReport(pairs, outcomes, judged, agreeing, known, correct, unconfirmed)
    if report.correctness is not None:
        with store.transaction() as con:
            con.execute("DELETE FROM metrics WHERE run_id = ? AND name = 'sim_pair_correctness'", [run_id])
            con.execute(
                "INSERT INTO metrics VALUES (?, NULL, 'sim_pair_correctness', ?, ?, ?)",
                [run_id, report.correctness, json.dumps({"pairs": known, "correct": correct}), utcnow()],
            )
    return report
