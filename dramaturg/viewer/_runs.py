"""The runs page and a run's page with its episodes, read from the store."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from dramaturg.memory import Store

__all__ = [
    "DUPLICATE",
    "EPISODES_PER_PAGE",
    "EpisodeFilters",
    "EpisodeList",
    "EpisodeRow",
    "RoleUsage",
    "RunPage",
    "RunSummary",
    "episode_list",
    "run_page",
    "run_summaries",
    "set_only",
    "values",
]

EPISODES_PER_PAGE = 50
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


def set_only(values: dict[str, object]) -> dict[str, str]:
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
        return set_only(values)


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    flags: tuple[str, ...]
    tags: tuple[str, ...]
    # The rest in the order episode_list selects them.
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
        "list_concat(coalesce((SELECT list(DISTINCT f.reason ORDER BY f.reason) FROM filtered f "
        "  WHERE f.kind = 'dialogue' AND f.item_id = e.episode_id), []), "
        f" CASE WHEN EXISTS (SELECT 1 FROM duplicates d WHERE d.kind = 'dialogue' "
        f"  AND d.item_id = e.episode_id) THEN ['{DUPLICATE}'] ELSE [] END), "
        "coalesce((SELECT list(t.tag ORDER BY t.tag) FROM annotation_tags t "
        "  WHERE t.kind = 'episode' AND t.item_id = e.episode_id), []) "
        f"FROM episodes e WHERE {where} ORDER BY e.scenario, e.idx LIMIT ? OFFSET ?",
        [*params, EPISODES_PER_PAGE, (page - 1) * EPISODES_PER_PAGE],
    )
    episode_rows = tuple(EpisodeRow(tuple(row[-2]), tuple(row[-1]), *row[:-2]) for row in rows)
    in_run = "episode_id IN (SELECT episode_id FROM episodes WHERE run_id = ?)"
    return EpisodeList(
        rows=episode_rows,
        total=total,
        page=page,
        pages=pages,
        scenarios=values(store, "SELECT DISTINCT scenario FROM episodes WHERE run_id = ?", run_id),
        statuses=values(store, "SELECT DISTINCT status FROM episodes WHERE run_id = ?", run_id),
        reasons=values(
            store,
            "SELECT DISTINCT termination_reason FROM episodes "
            "WHERE run_id = ? AND termination_reason IS NOT NULL",
            run_id,
        ),
        failed_check_names=values(
            store, f"SELECT DISTINCT name FROM checks WHERE NOT passed AND {in_run}", run_id
        ),
        flags=values(
            store,
            "SELECT DISTINCT reason FROM filtered WHERE kind = 'dialogue' AND run_id = ? "
            f"UNION SELECT '{DUPLICATE}' FROM duplicates WHERE kind = 'dialogue' AND run_id = ?",
            run_id,
            run_id,
        ),
        tags=values(
            store,
            "SELECT DISTINCT tag FROM annotation_tags WHERE kind = 'episode' AND item_id IN "
            "(SELECT episode_id FROM episodes WHERE run_id = ?)",
            run_id,
        ),
    )


def values(store: Store, query: str, *params: object) -> tuple[str, ...]:
    return tuple(sorted(str(value) for (value,) in store.sql(query, list(params))))
