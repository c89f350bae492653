"""The pairs page: prompt, chosen and rejected side by side, with what judged them and the verdicts."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass

from dramaturg.memory import Store, annotation_tags
from dramaturg.viewer._runs import set_only, values

__all__ = [
    "PAIRS_PER_PAGE",
    "PairCard",
    "PairFilters",
    "PairJudgment",
    "PairList",
    "ToolCallView",
    "pair_list",
    "steps_as_calls",
    "text",
]

PAIRS_PER_PAGE = 20


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


def steps_as_calls(tool_steps: str | None) -> list[ToolCallView]:
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
                    text(call.get("arguments")),
                    "error" if result.get("is_error") else str(result.get("status", "ok")),
                    text(result.get("content", "")),
                    None,
                    "dialogue",
                    0.0,
                )
            )
    return views


def text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


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
        return set_only(values)


@dataclass(frozen=True, slots=True)
class PairJudgment:
    orientation: str
    status: str
    verdict: str  # chosen | rejected | tie | no verdict


@dataclass(frozen=True, slots=True)
class PairCard:
    judgments: tuple[PairJudgment, ...]
    flags: tuple[tuple[str, str | None], ...]
    tags: tuple[str, ...]
    # The rest in the order pair_list selects them.
    pair_id: str
    run_id: str
    episode_id: str
    scenario: str
    turn_idx: int
    prompt_json: str
    chosen: str
    rejected: str
    source: str
    margin: float
    judge_agreement: bool
    checks_passed: bool
    chosen_model: str  # backend:model, or "imported" for a real reply
    rejected_model: str
    chosen_steps_json: str | None
    rejected_steps_json: str | None
    verdict: str | None  # accept | reject | flip
    verdict_note: str | None

    @property
    def prompt(self) -> tuple[tuple[str, str], ...]:
        """(role, content) of each prompt message."""
        return tuple((str(m.get("role")), text(m.get("content", ""))) for m in json.loads(self.prompt_json))

    @property
    def last_user(self) -> str:
        return next((content for role, content in reversed(self.prompt) if role == "user"), "")

    @property
    def chosen_tools(self) -> tuple[ToolCallView, ...]:
        return tuple(steps_as_calls(self.chosen_steps_json))

    @property
    def rejected_tools(self) -> tuple[ToolCallView, ...]:
        return tuple(steps_as_calls(self.rejected_steps_json))


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


def _pair_verdict(winner: str | None, first_is_chosen: bool) -> str:
    """A judgment's winner as a side of the pair: chosen | rejected | tie | no verdict."""
    if winner == "tie":
        return "tie"
    if winner not in ("A", "B"):
        return "no verdict"
    return "chosen" if (winner == "A") == first_is_chosen else "rejected"


def pair_list(store: Store, filters: PairFilters, *, per_page: int | None = None) -> PairList:
    """One page (``per_page`` pairs, default PAIRS_PER_PAGE) of the pairs that pass ``filters``,
    with what they were judged by and their verdicts."""
    per_page = per_page or PAIRS_PER_PAGE
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
    # PairCard's fields from pair_id to verdict_note, then the judgment ids.
    rows = store.sql(
        "SELECT p.pair_id, p.run_id, p.episode_id, p.scenario, p.turn_idx, p.prompt, p.chosen, p.rejected, "
        "p.source, p.margin, p.judge_agreement, p.checks_passed, "
        "coalesce(cc.backend || ':' || cc.model, 'imported'), "
        "coalesce(rc.backend || ':' || rc.model, 'imported'), "
        "p.chosen_tool_steps, p.rejected_tool_steps, v.verdict, v.note, p.judgment_ids "
        f"FROM {joined} LEFT JOIN llm_calls cc ON cc.call_id = p.chosen_call_id "
        "LEFT JOIN llm_calls rc ON rc.call_id = p.rejected_call_id "
        f"WHERE {where} ORDER BY p.run_id, p.episode_id, p.turn_idx, p.source, p.pair_id LIMIT ? OFFSET ?",
        [*params, per_page, (page - 1) * per_page],
    )
    ids = [row[0] for row in rows]
    judgment_ids = [jid for row in rows for jid in json.loads(row[-1] or "[]")]
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
    for row in rows:
        pair_id, chosen = row[0], row[6]
        judgments = []
        for jid in json.loads(row[-1] or "[]"):
            if jid in judged:
                orientation, j_status, winner, first = judged[jid]
                judgments.append(PairJudgment(orientation, j_status, _pair_verdict(winner, first == chosen)))
        cards.append(
            PairCard(tuple(judgments), tuple(flags.get(pair_id, ())), tuple(tags.get(pair_id, ())), *row[:-1])
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
        runs=values(store, "SELECT DISTINCT run_id FROM preference_pairs"),
        scenarios=values(store, f"SELECT DISTINCT scenario FROM preference_pairs {scope}", *scope_params),
        sources=values(store, f"SELECT DISTINCT source FROM preference_pairs {scope}", *scope_params),
        verdict_counts=tuple(sorted(verdict_counts.items())),
    )
