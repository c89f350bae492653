"""Typed rows the store writes. Frozen, slotted; the store maps them to columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "CallRecord",
    "CheckRow",
    "CritiqueRow",
    "EpisodeResult",
    "EpisodeStart",
    "JudgmentRow",
    "OpeningKind",
    "OpeningRow",
    "PairOutcomeRow",
    "PairRow",
    "ReviewRows",
    "RevisionRow",
    "RunRecord",
    "ToolCallRow",
    "TurnOrigin",
    "TurnRecord",
]

EpisodeStatus = Literal["running", "done", "failed"]
# Where a turn's text came from: a role wrote it, an existing conversation held it, or a seed
# file gave it verbatim.
TurnOrigin = Literal["generated", "imported", "seed"]
OpeningKind = Literal["seed", "topic", "evolved", "imported", "spin"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    created_at: datetime
    seed: int
    config_json: str
    dramaturg_version: str


@dataclass(frozen=True, slots=True)
class EpisodeStart:
    episode_id: str
    run_id: str
    scenario: str
    idx: int
    seed: int
    persona: str
    spec_json: str
    started_at: datetime
    # Whether an earlier attempt may have left rows behind (the episode had a row when the
    # run started). Only then are its rows deleted first: a DELETE scans each table, which
    # would make every episode of a fresh run pay for the whole store.
    attempted_before: bool = True


@dataclass(frozen=True, slots=True)
class TurnRecord:
    idx: int
    role: Literal["system", "user", "assistant"]
    content: str
    stage: str | None = None
    call_id: str | None = None
    role_flip: bool = False
    tool_steps_json: str | None = None  # the tool rounds before this assistant text
    origin: TurnOrigin = "generated"


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    episode_id: str
    status: Literal["done", "failed"]
    termination_reason: str
    turns: tuple[TurnRecord, ...]
    finished_at: datetime
    error: str | None = None
    goal_met: bool | None = None
    user_consistent: bool | None = None
    consistency_detail: str | None = None
    review: ReviewRows | None = None

    @property
    def role_flips(self) -> int:
        return sum(1 for turn in self.turns if turn.role_flip)


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    request_hash: str
    run_id: str | None
    episode_id: str | None
    backend: str
    model: str
    role: str
    status: Literal["ok", "error"]
    request_json: str
    latency_ms: float
    created_at: datetime
    response_text: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    attempt: int = 1
    error_kind: str | None = None
    error: str | None = None
    annotations: dict[str, str] | None = None
    tool_calls_json: str | None = None


@dataclass(frozen=True, slots=True)
class CritiqueRow:
    critique_id: str
    episode_id: str
    turn_idx: int
    target: Literal["original", "revision", "candidate"]
    status: Literal["ok", "failed"]
    overall: float | None
    scores_json: str | None
    feedback: str | None
    raw: str
    attempts: int
    call_id: str | None


@dataclass(frozen=True, slots=True)
class RevisionRow:
    revision_id: str
    episode_id: str
    turn_idx: int
    original: str
    revised: str
    critique_id: str
    revision_critique_id: str | None
    original_call_id: str | None
    revised_call_id: str | None
    round: int = 1  # Self-Refine: the n-th revision of the turn


@dataclass(frozen=True, slots=True)
class OpeningRow:
    """How a recipe opened an episode (the ``openings`` table)."""

    episode_id: str
    kind: OpeningKind
    source_id: str | None
    source_text: str
    operator: str | None
    opening: str
    kept: bool
    drop_reason: str | None
    call_ids_json: str


@dataclass(frozen=True, slots=True)
class JudgmentRow:
    judgment_id: str
    episode_id: str
    turn_idx: int
    source: Literal["revision", "best_of_n", "spin"]
    first_text: str
    second_text: str
    orientation: Literal["ab", "ba"]
    status: Literal["ok", "failed"]
    winner: Literal["A", "B", "tie"] | None
    reason: str | None
    raw: str
    attempts: int
    call_id: str | None


@dataclass(frozen=True, slots=True)
class CheckRow:
    episode_id: str
    turn_idx: int | None
    target: str
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class PairRow:
    pair_id: str
    run_id: str
    episode_id: str
    scenario: str
    turn_idx: int
    prompt_json: str
    chosen: str
    rejected: str
    source: Literal["revision", "best_of_n", "spin"]
    margin: float
    judge_agreement: bool
    checks_passed: bool
    chosen_call_id: str | None
    rejected_call_id: str | None
    judgment_ids_json: str
    critique_ids_json: str
    created_at: datetime
    chosen_tool_steps_json: str | None = None
    rejected_tool_steps_json: str | None = None


@dataclass(frozen=True, slots=True)
class PairOutcomeRow:
    episode_id: str
    turn_idx: int
    source: str
    outcome: str
    pair_id: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRejectionRow:
    """A generated turn that failed validation and never entered the dialogue."""

    episode_id: str
    turn_idx: int
    kind: Literal["user", "assistant", "revision"]
    attempt: int
    reason: str
    detail: str
    content: str
    call_id: str | None


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    """One tool call an assistant made (see the ``tool_calls`` table)."""

    episode_id: str
    turn_idx: int
    target: str
    attempt: int
    seq: int
    tool_call_id: str
    tool: str
    arguments: str
    status: str
    result: str
    error: str | None
    source: Literal["real", "simulated"]
    latency_ms: float
    model_call_id: str | None


@dataclass(slots=True)
class ReviewRows:
    """Everything the critic and verifier produced for one episode, written with it."""

    critiques: list[CritiqueRow] = field(default_factory=list)
    revisions: list[RevisionRow] = field(default_factory=list)
    openings: list[OpeningRow] = field(default_factory=list)
    judgments: list[JudgmentRow] = field(default_factory=list)
    checks: list[CheckRow] = field(default_factory=list)
    pairs: list[PairRow] = field(default_factory=list)
    outcomes: list[PairOutcomeRow] = field(default_factory=list)
    rejections: list[TurnRejectionRow] = field(default_factory=list)
    tool_calls: list[ToolCallRow] = field(default_factory=list)
