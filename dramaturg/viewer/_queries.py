"""What each page shows, read from the store into plain values.

Every function here takes a :class:`~dramaturg.memory.Store` and runs on the store's thread
(see :mod:`dramaturg.viewer._access`); templates only lay the values out.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dramaturg.memory import Annotation, Store, annotation_history, annotation_tags
from dramaturg.viewer._diff import DiffSegment, word_diff

__all__ = [
    "EPISODES_PER_PAGE",
    "PAIRS_PER_PAGE",
    "EpisodeFilters",
    "EpisodeList",
    "EpisodePage",
    "PairFilters",
    "PairList",
    "RunPage",
    "RunSummary",
    "episode_list",
    "episode_page",
    "pair_list",
    "run_page",
    "run_summaries",
]

EPISODES_PER_PAGE = 50
PAIRS_PER_PAGE = 20
DUPLICATE = "duplicate"  # a flag of its own beside the `filtered` reasons: curation marked a copy


# -- runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    created_at: datetime
    seed: int
    version: str
    scenarios: tuple[str, ...]
    done: int = 0
    failed: int = 0
    running: int = 0
    turns: int = 0
    pairs: int = 0
    calls: int = 0
    failed_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)  # accept | reject | flip -> pairs


def run_summaries(store: Store, run_id: str | None = None) -> list[RunSummary]:
    """Every run (or one), newest first, with its counts."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    runs = store.sql(
        f"SELECT run_id, created_at, seed, dramaturg_version FROM runs {where} ORDER BY created_at DESC",
        params,
    )
    scenarios: dict[str, list[str]] = defaultdict(list)
    for rid, name in store.sql(f"SELECT run_id, name FROM scenarios {where} ORDER BY name", params):
        scenarios[rid].append(name)
    episodes = {
        row[0]: row[1:]
        for row in store.sql(
            "SELECT run_id, count(*) FILTER (WHERE status = 'done'), "
            "count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'running'), "
            f"coalesce(sum(n_turns), 0) FROM episodes {where} "
            "GROUP BY run_id",
            params,
        )
    }
    pairs = dict(store.sql(f"SELECT run_id, count(*) FROM preference_pairs {where} GROUP BY run_id", params))
    calls = {
        row[0]: row[1:]
        for row in store.sql(
            "SELECT run_id, count(*), count(*) FILTER (WHERE status = 'error'), sum(input_tokens), "
            f"sum(output_tokens), sum(cost_usd) FROM llm_calls {where} GROUP BY run_id",
            params,
        )
    }
    verdicts: dict[str, dict[str, int]] = defaultdict(dict)
    for rid, verdict, n in store.sql(
        "SELECT p.run_id, v.verdict, count(*) FROM pair_verdicts v JOIN preference_pairs p USING (pair_id) "
        f"{where.replace('run_id', 'p.run_id')} GROUP BY ALL",
        params,
    ):
        verdicts[rid][verdict] = n
    summaries = []
    for rid, created_at, seed, version in runs:
        done, failed, running, turns = episodes.get(rid, (0, 0, 0, 0))
        n_calls, failed_calls, tokens_in, tokens_out, cost = calls.get(rid, (0, 0, 0, 0, 0.0))
        summaries.append(
            RunSummary(
                rid,
                created_at,
                seed,
                version,
                tuple(scenarios.get(rid, ())),
                done,
                failed,
                running,
                int(turns),
                pairs.get(rid, 0),
                n_calls,
                failed_calls,
                int(tokens_in or 0),
                int(tokens_out or 0),
                float(cost or 0.0),
                verdicts.get(rid, {}),
            )
        )
    return summaries


@dataclass(frozen=True, slots=True)
class RoleUsage:
    role: str
    model: str  # backend:model
    calls: int
    failed: int
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class RunPage:
    summary: RunSummary
    config: str  # the stored config as indented JSON
    sources: tuple[tuple[str, str], ...]  # scenario name, where it came from
    usage: tuple[RoleUsage, ...]
    pair_sources: tuple[tuple[str, int], ...]
    no_pair: tuple[tuple[str, int], ...]  # pair outcomes that made no pair, and how often
    terminations: tuple[tuple[str, int], ...]
    tool_calls: tuple[tuple[str, int], ...]  # status -> calls


def run_page(store: Store, run_id: str) -> RunPage | None:
    summaries = run_summaries(store, run_id)
    if not summaries:
        return None
    (config,) = store.sql("SELECT config FROM runs WHERE run_id = ?", [run_id])[0]
    in_run = "episode_id IN (SELECT episode_id FROM episodes WHERE run_id = ?)"
    return RunPage(
        summary=summaries[0],
        config=json.dumps(json.loads(config), indent=2),
        sources=tuple(
            (name, source)
            for name, source in store.sql(
                "SELECT name, source FROM scenarios WHERE run_id = ? ORDER BY name", [run_id]
            )
        ),
        usage=tuple(
            RoleUsage(role, model, n, failed, int(tin or 0), int(tout or 0), float(cost or 0))
            for role, model, n, failed, tin, tout, cost in store.sql(
                "SELECT role, backend || ':' || model, count(*), count(*) FILTER (WHERE status = 'error'), "
                "sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM llm_calls WHERE run_id = ? "
                "GROUP BY ALL ORDER BY role, 2",
                [run_id],
            )
        ),
        pair_sources=_counts(
            store, "SELECT source, count(*) FROM preference_pairs WHERE run_id = ? GROUP BY 1", [run_id]
        ),
        no_pair=_counts(
            store,
            f"SELECT outcome, count(*) FROM pair_outcomes WHERE outcome <> 'paired' AND {in_run} GROUP BY 1",
            [run_id],
        ),
        terminations=_counts(
            store,
            "SELECT coalesce(termination_reason, status), count(*) FROM episodes WHERE run_id = ? GROUP BY 1",
            [run_id],
        ),
        tool_calls=_counts(
            store, f"SELECT status, count(*) FROM tool_calls WHERE {in_run} GROUP BY 1", [run_id]
        ),
    )


def _counts(store: Store, query: str, params: list[object]) -> tuple[tuple[str, int], ...]:
    return tuple(
        sorted(((str(k), int(n)) for k, n in store.sql(query, params)), key=lambda kv: (-kv[1], kv[0]))
    )


def _set_only(values: dict[str, object]) -> dict[str, str]:
    """URL parameters of the filters that are set (page 1 is the default, so it is left out)."""
    return {
        k: str(v) for k, v in values.items() if v not in ("", None) and not (k == "page" and v in (1, "1"))
    }


# -- episodes of a run ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpisodeFilters:
    """The episode list's filters; empty strings mean "any"."""

    scenario: str = ""
    status: str = ""
    reason: str = ""  # termination reason
    check: str = ""  # "*": any failed check; else the name of one
    flagged: str = ""  # "*": any curation flag; else a `filtered` reason or "duplicate"
    role_flips: bool = False
    tag: str = ""
    page: int = 1

    def query_params(self, **changes: object) -> dict[str, str]:
        """The filters as URL query parameters (only those set), with ``changes`` applied."""
        values: dict[str, object] = {
            "scenario": self.scenario,
            "status": self.status,
            "reason": self.reason,
            "check": self.check,
            "flagged": self.flagged,
            "role_flips": "1" if self.role_flips else "",
            "tag": self.tag,
            "page": self.page if self.page > 1 else "",
        }
        values.update(changes)
        return _set_only(values)


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    episode_id: str
    scenario: str
    idx: int
    persona: str | None
    status: str
    termination_reason: str | None
    n_turns: int | None
    role_flips: int
    goal_met: bool | None
    pairs: int
    failed_checks: int
    flags: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EpisodeList:
    rows: tuple[EpisodeRow, ...]
    total: int
    page: int
    pages: int
    scenarios: tuple[str, ...]
    statuses: tuple[str, ...]
    reasons: tuple[str, ...]
    failed_check_names: tuple[str, ...]
    flags: tuple[str, ...]
    tags: tuple[str, ...]


def episode_list(store: Store, run_id: str, filters: EpisodeFilters) -> EpisodeList:
    """One page of the run's episodes that pass ``filters``, and the values each filter offers."""
    conditions = ["e.run_id = ?"]
    params: list[object] = [run_id]
    for column, value in (
        ("e.scenario", filters.scenario),
        ("e.status", filters.status),
        ("e.termination_reason", filters.reason),
    ):
        if value:
            conditions.append(f"{column} = ?")
            params.append(value)
    if filters.check:
        named = "" if filters.check == "*" else " AND c.name = ?"
        conditions.append(
            f"EXISTS (SELECT 1 FROM checks c WHERE c.episode_id = e.episode_id AND NOT c.passed{named})"
        )
        params += [] if filters.check == "*" else [filters.check]
    if filters.flagged:
        any_filter = (
            "EXISTS (SELECT 1 FROM filtered f WHERE f.kind = 'dialogue' AND f.item_id = e.episode_id{})"
        )
        duplicate = (
            "EXISTS (SELECT 1 FROM duplicates d WHERE d.kind = 'dialogue' AND d.item_id = e.episode_id)"
        )
        if filters.flagged == "*":
            conditions.append(f"({any_filter.format('')} OR {duplicate})")
        elif filters.flagged == DUPLICATE:
            conditions.append(duplicate)
        else:
            conditions.append(any_filter.format(" AND f.reason = ?"))
            params.append(filters.flagged)
    if filters.role_flips:
        # Flips that entered the dialogue, and those the turn validator caught and regenerated.
        conditions.append(
            "(coalesce(e.role_flips, 0) > 0 OR EXISTS (SELECT 1 FROM turn_rejections r "
            "WHERE r.episode_id = e.episode_id AND r.reason = 'role_flip'))"
        )
    if filters.tag:
        conditions.append(
            "EXISTS (SELECT 1 FROM annotation_tags t WHERE t.kind = 'episode' "
            "AND t.item_id = e.episode_id AND t.tag = ?)"
        )
        params.append(filters.tag)
    where = " AND ".join(conditions)
    total = int(store.sql(f"SELECT count(*) FROM episodes e WHERE {where}", params)[0][0])
    pages = max(1, -(-total // EPISODES_PER_PAGE))
    page = min(max(filters.page, 1), pages)
    rows = store.sql(
        "SELECT e.episode_id, e.scenario, e.idx, e.persona, e.status, e.termination_reason, e.n_turns, "
        "coalesce(e.role_flips, 0), e.goal_met, "
        "(SELECT count(*) FROM preference_pairs p WHERE p.episode_id = e.episode_id), "
        "(SELECT count(*) FROM checks c WHERE c.episode_id = e.episode_id AND NOT c.passed), "
        "(SELECT list(DISTINCT f.reason ORDER BY f.reason) FROM filtered f "
        " WHERE f.kind = 'dialogue' AND f.item_id = e.episode_id), "
        "EXISTS (SELECT 1 FROM duplicates d WHERE d.kind = 'dialogue' AND d.item_id = e.episode_id), "
        "(SELECT list(t.tag ORDER BY t.tag) FROM annotation_tags t "
        " WHERE t.kind = 'episode' AND t.item_id = e.episode_id) "
        f"FROM episodes e WHERE {where} ORDER BY e.scenario, e.idx LIMIT ? OFFSET ?",
        [*params, EPISODES_PER_PAGE, (page - 1) * EPISODES_PER_PAGE],
    )
    episode_rows = tuple(
        EpisodeRow(
            episode_id,
            scenario,
            idx,
            persona,
            status,
            reason,
            n_turns,
            role_flips,
            goal_met,
            pairs,
            failed_checks,
            flags=tuple(flags or ()) + ((DUPLICATE,) if duplicate else ()),
            tags=tuple(tags or ()),
        )
        for (
            episode_id,
            scenario,
            idx,
            persona,
            status,
            reason,
            n_turns,
            role_flips,
            goal_met,
            pairs,
            failed_checks,
            flags,
            duplicate,
            tags,
        ) in rows
    )
    in_run = "episode_id IN (SELECT episode_id FROM episodes WHERE run_id = ?)"
    return EpisodeList(
        rows=episode_rows,
        total=total,
        page=page,
        pages=pages,
        scenarios=_values(store, "SELECT DISTINCT scenario FROM episodes WHERE run_id = ?", run_id),
        statuses=_values(store, "SELECT DISTINCT status FROM episodes WHERE run_id = ?", run_id),
        reasons=_values(
            store,
            "SELECT DISTINCT termination_reason FROM episodes "
            "WHERE run_id = ? AND termination_reason IS NOT NULL",
            run_id,
        ),
        failed_check_names=_values(
            store, f"SELECT DISTINCT name FROM checks WHERE NOT passed AND {in_run}", run_id
        ),
        flags=_values(
            store,
            "SELECT DISTINCT reason FROM filtered WHERE kind = 'dialogue' AND run_id = ? "
            f"UNION SELECT '{DUPLICATE}' FROM duplicates WHERE kind = 'dialogue' AND run_id = ?",
            run_id,
            run_id,
        ),
        tags=_values(
            store,
            "SELECT DISTINCT tag FROM annotation_tags WHERE kind = 'episode' AND item_id IN "
            "(SELECT episode_id FROM episodes WHERE run_id = ?)",
            run_id,
        ),
    )


def _values(store: Store, query: str, *params: object) -> tuple[str, ...]:
    return tuple(sorted(str(value) for (value,) in store.sql(query, list(params))))


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
class ToolCallView:
    target: str
    attempt: int
    tool: str
    arguments: str
    status: str
    result: str
    error: str | None
    source: str
    latency_ms: float


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
    episode_id: str
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
    spec: tuple[tuple[str, str], ...]  # the episode spec's fields, as text
    turns: tuple[TurnView, ...]
    episode_checks: tuple[CheckView, ...]
    openings: tuple[OpeningView, ...]
    flags: tuple[tuple[str, str | None], ...]  # curation: reason, detail
    tags: tuple[str, ...]
    history: tuple[Annotation, ...]
    pairs: PairList


def episode_page(store: Store, episode_id: str) -> EpisodePage | None:
    head = store.sql(
        "SELECT run_id, scenario, idx, seed, status, termination_reason, persona, goal_met, user_consistent, "
        "consistency_detail, error, started_at, finished_at, spec FROM episodes WHERE episode_id = ?",
        [episode_id],
    )
    if not head:
        return None
    (
        run_id,
        scenario,
        idx,
        seed,
        status,
        reason,
        persona,
        goal_met,
        consistent,
        detail,
        error,
        started,
        finished,
        spec_json,
    ) = head[0]
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
            tool_calls=tuple(tool_calls.get(t_idx, ()) or _steps_as_calls(tool_steps)),
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
        episode_id=episode_id,
        run_id=run_id,
        scenario=scenario,
        idx=idx,
        seed=seed,
        status=status,
        termination_reason=reason,
        persona=persona,
        goal_met=goal_met,
        user_consistent=consistent,
        consistency_detail=detail,
        error=error,
        started_at=started,
        finished_at=finished,
        spec=_spec_fields(spec_json),
        turns=turns,
        episode_checks=tuple(checks.get(None, ())),
        openings=openings,
        flags=flags,
        tags=tuple(annotation_tags(store, "episode", episode_id).get(episode_id, ())),
        history=tuple(annotation_history(store, "episode", episode_id)),
        pairs=pairs,
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


def _steps_as_calls(tool_steps: str | None) -> list[ToolCallView]:
    """A turn's tool rounds from ``turns.tool_steps``, for turns with no ``tool_calls`` rows
    (an imported dialogue's calls were never made here)."""
    if not tool_steps:
        return []
    views = []
    for step in json.loads(tool_steps):
        results = {r.get("call_id"): r for r in step.get("results", [])}
        for call in step.get("calls", []):
            result = results.get(call.get("id"), {})
            views.append(
                ToolCallView(
                    "dialogue",
                    0,
                    str(call.get("name")),
                    _text(call.get("arguments")),
                    "error" if result.get("is_error") else str(result.get("status", "ok")),
                    _text(result.get("content", "")),
                    None,
                    "dialogue",
                    0.0,
                )
            )
    return views


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


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
            text = "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
        elif isinstance(value, list):
            text = (
                " → ".join(_text(v) for v in value) if key == "stage_path" else ", ".join(map(_text, value))
            )
        else:
            text = _text(value)
        fields.append((key.replace("_", " "), text))
    return tuple(fields)


# -- pairs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairFilters:
    run: str = ""
    scenario: str = ""
    source: str = ""
    verdict: str = ""  # accept | reject | flip | none (not judged by a person)
    episode: str = ""
    pair: str = ""
    page: int = 1

    def query_params(self, **changes: object) -> dict[str, str]:
        values: dict[str, object] = {
            "run": self.run,
            "scenario": self.scenario,
            "source": self.source,
            "verdict": self.verdict,
            "episode": self.episode,
            "pair": self.pair,
            "page": self.page if self.page > 1 else "",
        }
        values.update(changes)
        return _set_only(values)


@dataclass(frozen=True, slots=True)
class PairJudgment:
    orientation: str
    status: str
    verdict: str  # chosen | rejected | tie | no verdict


@dataclass(frozen=True, slots=True)
class PairCard:
    pair_id: str
    run_id: str
    episode_id: str
    scenario: str
    turn_idx: int
    prompt: tuple[tuple[str, str], ...]  # (role, content)
    chosen: str
    rejected: str
    source: str
    margin: float
    judge_agreement: bool
    checks_passed: bool
    chosen_model: str  # backend:model, or "imported" for a real reply
    rejected_model: str
    chosen_tools: tuple[ToolCallView, ...]
    rejected_tools: tuple[ToolCallView, ...]
    judgments: tuple[PairJudgment, ...]
    flags: tuple[tuple[str, str | None], ...]
    verdict: str | None  # accept | reject | flip
    verdict_note: str | None
    tags: tuple[str, ...]

    @property
    def last_user(self) -> str:
        return next((content for role, content in reversed(self.prompt) if role == "user"), "")


@dataclass(frozen=True, slots=True)
class PairList:
    cards: tuple[PairCard, ...]
    total: int
    page: int
    pages: int
    runs: tuple[str, ...]
    scenarios: tuple[str, ...]
    sources: tuple[str, ...]
    verdict_counts: tuple[tuple[str, int], ...]


def pair_list(store: Store, filters: PairFilters, *, per_page: int = PAIRS_PER_PAGE) -> PairList:
    """One page of the pairs that pass ``filters``, with what they were judged by and their verdicts."""
    conditions, params = ["TRUE"], []
    for column, value in (
        ("p.run_id", filters.run),
        ("p.scenario", filters.scenario),
        ("p.source", filters.source),
        ("p.episode_id", filters.episode),
        ("p.pair_id", filters.pair),
    ):
        if value:
            conditions.append(f"{column} = ?")
            params.append(value)
    if filters.verdict == "none":
        conditions.append("v.verdict IS NULL")
    elif filters.verdict:
        conditions.append("v.verdict = ?")
        params.append(filters.verdict)
    where = " AND ".join(conditions)
    joined = "preference_pairs p LEFT JOIN pair_verdicts v USING (pair_id)"
    total = int(store.sql(f"SELECT count(*) FROM {joined} WHERE {where}", params)[0][0])
    pages = max(1, -(-total // per_page))
    page = min(max(filters.page, 1), pages)
    rows = store.sql(
        "SELECT p.pair_id, p.run_id, p.episode_id, p.scenario, p.turn_idx, p.prompt, p.chosen, p.rejected, "
        "p.source, p.margin, p.judge_agreement, p.checks_passed, "
        "coalesce(cc.backend || ':' || cc.model, 'imported'), "
        "coalesce(rc.backend || ':' || rc.model, 'imported'), "
        "p.chosen_tool_steps, p.rejected_tool_steps, p.judgment_ids, v.verdict, v.note "
        f"FROM {joined} LEFT JOIN llm_calls cc ON cc.call_id = p.chosen_call_id "
        "LEFT JOIN llm_calls rc ON rc.call_id = p.rejected_call_id "
        f"WHERE {where} ORDER BY p.run_id, p.episode_id, p.turn_idx, p.source, p.pair_id LIMIT ? OFFSET ?",
        [*params, per_page, (page - 1) * per_page],
    )
    ids = [row[0] for row in rows]
    judgment_ids = [jid for row in rows for jid in json.loads(row[16] or "[]")]
    judged = {
        jid: (orientation, status, winner, first)
        for jid, orientation, status, winner, first in store.sql(
            "SELECT judgment_id, orientation, status, winner, first_text FROM judgments "
            "WHERE list_contains(?, judgment_id)",
            [judgment_ids],
        )
    }
    flags: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for item, flag, flag_detail in store.sql(
        "SELECT item_id, reason, detail FROM filtered WHERE kind = 'pair' AND list_contains(?, item_id) "
        "UNION ALL SELECT item_id, 'duplicate', 'of ' || duplicate_of FROM duplicates "
        "WHERE kind = 'pair' AND list_contains(?, item_id) ORDER BY 1, 2",
        [ids, ids],
    ):
        flags[item].append((flag, flag_detail))
    tags = annotation_tags(store, "pair")
    cards = []
    for (
        pair_id,
        run_id,
        episode_id,
        scenario,
        turn_idx,
        prompt,
        chosen,
        rejected,
        source,
        margin,
        agreement,
        checks_ok,
        chosen_model,
        rejected_model,
        chosen_steps,
        rejected_steps,
        j_ids,
        verdict,
        note,
    ) in rows:
        judgments = []
        for jid in json.loads(j_ids or "[]"):
            if jid not in judged:
                continue
            orientation, j_status, winner, first = judged[jid]
            first_is_chosen = first == chosen
            side = {"A": first_is_chosen, "B": not first_is_chosen}.get(winner or "")
            if winner == "tie":
                pair_verdict = "tie"
            elif side is None:
                pair_verdict = "no verdict"
            else:
                pair_verdict = "chosen" if side else "rejected"
            judgments.append(PairJudgment(orientation, j_status, pair_verdict))
        cards.append(
            PairCard(
                pair_id,
                run_id,
                episode_id,
                scenario,
                turn_idx,
                tuple((str(m.get("role")), _text(m.get("content", ""))) for m in json.loads(prompt)),
                chosen,
                rejected,
                source,
                margin,
                agreement,
                checks_ok,
                chosen_model,
                rejected_model,
                tuple(_steps_as_calls(chosen_steps)),
                tuple(_steps_as_calls(rejected_steps)),
                tuple(judgments),
                tuple(flags.get(pair_id, ())),
                verdict,
                note,
                tuple(tags.get(pair_id, ())),
            )
        )
    scope, scope_params = ("WHERE run_id = ?", [filters.run]) if filters.run else ("", [])
    verdict_counts = Counter(
        {
            verdict: n
            for verdict, n in store.sql(
                f"SELECT v.verdict, count(*) FROM pair_verdicts v JOIN preference_pairs p USING (pair_id) "
                f"{scope.replace('run_id', 'p.run_id')} GROUP BY 1",
                scope_params,
            )
        }
    )
    return PairList(
        cards=tuple(cards),
        total=total,
        page=page,
        pages=pages,
        runs=_values(store, "SELECT DISTINCT run_id FROM preference_pairs"),
        scenarios=_values(store, f"SELECT DISTINCT scenario FROM preference_pairs {scope}", *scope_params),
        sources=_values(store, f"SELECT DISTINCT source FROM preference_pairs {scope}", *scope_params),
        verdict_counts=tuple(sorted(verdict_counts.items())),
    )
