"""Typed rows the store writes. Frozen, slotted; the store maps them to columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["CallRecord", "EpisodeResult", "EpisodeStart", "RunRecord", "TurnRecord"]

EpisodeStatus = Literal["running", "done", "failed"]


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


@dataclass(frozen=True, slots=True)
class TurnRecord:
    idx: int
    role: Literal["system", "user", "assistant"]
    content: str
    stage: str | None = None
    call_id: str | None = None
    role_flip: bool = False


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    episode_id: str
    status: Literal["done", "failed"]
    termination_reason: str
    turns: tuple[TurnRecord, ...]
    finished_at: datetime
    error: str | None = None

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
