"""An episode's page: the dialogue with each turn's review, and everything else the store knows of it."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dramaturg.memory import Annotation, Store, annotation_history, annotation_tags
from dramaturg.viewer._diff import DiffSegment, word_diff
from dramaturg.viewer._pairs import PairFilters, PairList, ToolCallView, pair_list, steps_as_calls, text

__all__ = ["EpisodePage", "TurnView", "episode_page"]


# -- one episode ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CritiqueView:
    target: str
    status: str
    overall: float | None
    scores: tuple[tuple[str, object], ...]
    feedback: str | None
    attempts: int
    raw: str


@dataclass(frozen=True, slots=True)
class RevisionView:
    round: int
    segments: tuple[DiffSegment, ...]
    asked_by: CritiqueView | None  # the critique that asked for this revision
    scored: CritiqueView | None  # the critique of the revision

    @property
    def changed(self) -> bool:
        return any(segment.op != "same" for segment in self.segments)


@dataclass(frozen=True, slots=True)
class CheckView:
    target: str
    name: str
    passed: bool
    detail: str | None


@dataclass(frozen=True, slots=True)
class JudgmentView:
    source: str
    orientation: str
    status: str
    winner: str | None  # A | B | tie
    first: str  # what response A was: "original", "revision", "chosen", ... or "A"
    second: str
    verdict: str  # the winner as what it was
    reason: str | None
    first_text: str
    second_text: str


@dataclass(frozen=True, slots=True)
class RejectionView:
    kind: str
    attempt: int
    reason: str
    detail: str
    content: str


@dataclass(frozen=True, slots=True)
class TurnView:
    idx: int
    role: str
    content: str
    stage: str | None
    origin: str
    role_flip: bool
    model: str | None  # backend:model of the call that wrote it
    critiques: tuple[CritiqueView, ...] = ()
    revisions: tuple[RevisionView, ...] = ()
    checks: tuple[CheckView, ...] = ()
    judgments: tuple[JudgmentView, ...] = ()
    tool_calls: tuple[ToolCallView, ...] = ()
    rejections: tuple[RejectionView, ...] = ()
    pair_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OpeningView:
    kind: str
    source_id: str | None
    source_text: str
    operator: str | None
    opening: str
    kept: bool
    drop_reason: str | None


@dataclass(frozen=True, slots=True)
class EpisodePage:
    spec: tuple[tuple[str, str], ...]  # the episode spec's fields, as text
    turns: tuple[TurnView, ...]
    episode_checks: tuple[CheckView, ...]
    openings: tuple[OpeningView, ...]
    flags: tuple[tuple[str, str | None], ...]  # curation: reason, detail
    tags: tuple[str, ...]
    history: tuple[Annotation, ...]
    pairs: PairList
    episode_id: str
    # The rest in the order episode_page selects them.
    run_id: str
    scenario: str
    idx: int
    seed: int
    status: str
    termination_reason: str | None
    persona: str | None
    goal_met: bool | None
    user_consistent: bool | None
    consistency_detail: str | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


def episode_page(store: Store, episode_id: str) -> EpisodePage | None:
    head = store.sql(
        "SELECT run_id, scenario, idx, seed, status, termination_reason, persona, goal_met, user_consistent, "
        "consistency_detail, error, started_at, finished_at, spec FROM episodes WHERE episode_id = ?",
        [episode_id],
    )
    if not head:
        return None
    *fields, spec_json = head[0]
    by_id = [episode_id]
    models = dict(
        store.sql("SELECT call_id, backend || ':' || model FROM llm_calls WHERE episode_id = ?", by_id)
    )
    critiques: dict[str, CritiqueView] = {}
    critiques_by_turn: dict[int, list[CritiqueView]] = defaultdict(list)
    for critique_id, turn_idx, target, c_status, overall, scores, feedback, attempts, raw in store.sql(
        "SELECT critique_id, turn_idx, target, status, overall, scores, feedback, attempts, raw "
        "FROM critiques WHERE episode_id = ? ORDER BY turn_idx, target DESC",
        by_id,
    ):
        view = CritiqueView(
            target,
            c_status,
            overall,
            tuple(json.loads(scores).items()) if scores else (),
            feedback,
            attempts,
            raw,
        )
        critiques[critique_id] = view
        critiques_by_turn[turn_idx].append(view)
    revisions: dict[int, list[RevisionView]] = defaultdict(list)
    labels: dict[int, dict[str, str]] = defaultdict(dict)  # turn -> text -> what it was
    for turn_idx, rnd, original, revised, asked_by, scored in store.sql(
        "SELECT turn_idx, coalesce(round, 1), original, revised, critique_id, revision_critique_id "
        "FROM revisions WHERE episode_id = ? ORDER BY turn_idx, 2",
        by_id,
    ):
        revisions[turn_idx].append(
            RevisionView(
                rnd, tuple(word_diff(original, revised)), critiques.get(asked_by), critiques.get(scored)
            )
        )
        labels[turn_idx].setdefault(original, "original")
        labels[turn_idx][revised] = f"revision {rnd}" if rnd > 1 else "revision"
    checks: dict[int | None, list[CheckView]] = defaultdict(list)
    for turn_idx, target, name, passed, check_detail in store.sql(
        "SELECT turn_idx, target, name, passed, detail FROM checks WHERE episode_id = ? "
        "ORDER BY turn_idx, target DESC, passed, name",
        by_id,
    ):
        checks[turn_idx].append(CheckView(target, name, passed, check_detail))
    pairs = pair_list(store, PairFilters(episode=episode_id), per_page=1000)
    pair_ids: dict[int, list[str]] = defaultdict(list)
    for card in pairs.cards:
        pair_ids[card.turn_idx].append(card.pair_id)
        labels[card.turn_idx].setdefault(card.chosen, "chosen")
        labels[card.turn_idx].setdefault(card.rejected, "rejected")
    judgments: dict[int, list[JudgmentView]] = defaultdict(list)
    for turn_idx, source, orientation, j_status, winner, j_reason, first, second in store.sql(
        "SELECT turn_idx, source, orientation, status, winner, reason, first_text, second_text "
        "FROM judgments WHERE episode_id = ? ORDER BY turn_idx, source, orientation",
        by_id,
    ):
        judgments[turn_idx].append(
            _judgment(labels[turn_idx], source, orientation, j_status, winner, j_reason, first, second)
        )
    tool_calls: dict[int, list[ToolCallView]] = defaultdict(list)
    for turn_idx, *call in store.sql(
        "SELECT turn_idx, target, attempt, tool, arguments, status, result, error, source, latency_ms "
        "FROM tool_calls WHERE episode_id = ? ORDER BY seq",
        by_id,
    ):
        tool_calls[turn_idx].append(ToolCallView(*call))
    rejections: dict[int, list[RejectionView]] = defaultdict(list)
    for turn_idx, *rejection in store.sql(
        "SELECT turn_idx, kind, attempt, reason, detail, content FROM turn_rejections WHERE episode_id = ? "
        "ORDER BY turn_idx, kind, attempt",
        by_id,
    ):
        rejections[turn_idx].append(RejectionView(*rejection))
    turns = tuple(
        TurnView(
            t_idx,
            role,
            content,
            stage,
            origin or "generated",
            bool(role_flip),
            models.get(call_id) if call_id else None,
            critiques=tuple(critiques_by_turn.get(t_idx, ())),
            revisions=tuple(revisions.get(t_idx, ())),
            checks=tuple(checks.get(t_idx, ())),
            judgments=tuple(judgments.get(t_idx, ())),
            tool_calls=tuple(tool_calls.get(t_idx, ()) or steps_as_calls(tool_steps)),
            rejections=tuple(rejections.get(t_idx, ())),
            pair_ids=tuple(pair_ids.get(t_idx, ())),
        )
        for t_idx, role, content, stage, call_id, role_flip, origin, tool_steps in store.sql(
            "SELECT idx, role, content, stage, call_id, role_flip, origin, tool_steps FROM turns "
            "WHERE episode_id = ? ORDER BY idx",
            by_id,
        )
    )
    openings = tuple(
        OpeningView(*row)
        for row in store.sql(
            "SELECT kind, source_id, source_text, operator, opening, kept, drop_reason FROM openings "
            "WHERE episode_id = ?",
            by_id,
        )
    )
    flags = tuple(
        (flag, flag_detail)
        for flag, flag_detail in store.sql(
            "SELECT reason, detail FROM filtered WHERE kind = 'dialogue' AND item_id = ? "
            "UNION ALL SELECT 'duplicate', 'of ' || duplicate_of || ' (' || method || ')' FROM duplicates "
            "WHERE kind = 'dialogue' AND item_id = ? ORDER BY 1",
            [episode_id, episode_id],
        )
    )
    return EpisodePage(
        _spec_fields(spec_json),
        turns,
        tuple(checks.get(None, ())),
        openings,
        flags,
        tuple(annotation_tags(store, "episode", episode_id).get(episode_id, ())),
        tuple(annotation_history(store, "episode", episode_id)),
        pairs,
        episode_id,
        *fields,
    )


def _judgment(
    labels: dict[str, str],
    source: str,
    orientation: str,
    status: str,
    winner: str | None,
    reason: str | None,
    first: str,
    second: str,
) -> JudgmentView:
    """A judgment with A and B named by what they were (original, revision, chosen, ...)."""
    first_label, second_label = labels.get(first, "A"), labels.get(second, "B")
    if first_label == second_label:  # the same text on both sides: the letters say more
        first_label, second_label = "A", "B"
    verdict = {"A": first_label, "B": second_label, "tie": "tie"}.get(winner or "", "no verdict")
    return JudgmentView(
        source, orientation, status, winner, first_label, second_label, verdict, reason, first, second
    )


# The spec fields shown first, in this order; the rest follow alphabetically.
_SPEC_ORDER = ("persona", "goal", "description", "traits", "mood", "hidden_facts", "variables", "stage_path")


def _spec_fields(spec_json: str | None) -> tuple[tuple[str, str], ...]:
    if not spec_json:
        return ()
    spec: dict[str, Any] = json.loads(spec_json)
    keys = [k for k in _SPEC_ORDER if k in spec] + sorted(k for k in spec if k not in _SPEC_ORDER)
    fields = []
    for key in keys:
        value = spec[key]
        if value in ("", None, [], {}):
            continue
        if isinstance(value, dict):
            shown = "; ".join(f"{k}: {text(v)}" for k, v in value.items())
        elif isinstance(value, list):
            shown = (" → " if key == "stage_path" else ", ").join(text(v) for v in value)
        else:
            shown = text(value)
        fields.append((key.replace("_", " "), shown))
    return tuple(fields)
