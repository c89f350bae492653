"""Corpus metrics of a run, per run and per scenario, as rows of the ``metrics`` table.

Aggregates over the store are SQL (``GROUPING SETS ((), (scenario))`` gives the run row, with
``scenario`` NULL, and one row per scenario in one scan). Text metrics that need tokens
(distinct-n, self-BLEU, embedding spread) run in Python on texts DuckDB hands over per
(scenario, role), using :mod:`dramaturg.evaluators._diversity`.

Metric names are ``family`` or ``family.key``, where the key comes from the data (a check's
name, a termination reason, a pair source). See :data:`METRIC_FAMILIES`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

import numpy as np
import numpy.typing as npt
from dramaturg.evaluators._diversity import distinct_ns, self_bleu
from dramaturg.evaluators._embed import Embedder, embedding_spread
from dramaturg.memory import Store

from dramaturg._errors import StoreError

__all__ = ["METRIC_FAMILIES", "Metric", "MetricSet", "read_metrics"]

ROLES = ("user", "assistant")
DISTINCT_ORDERS = (1, 2, 3)

# Self-BLEU compares every sampled text with every other. Measured on 10k benchmark
# dialogues (bench/curate_store.py): 200 turns take ~0.05 s and the score moves by
# 0.014-0.017 (standard deviation) between sampling seeds. The seed is the run's, so the
# same run always gives the same value.
SELF_BLEU_SAMPLE = 200

# Turns embedded per role. Spread is a mean over all n(n-1)/2 pairs of the sample, whose
# standard error falls as 1/sqrt(n); 500 short turns keep a CPU encoder to seconds.
EMBED_SAMPLE = 500

# Every family curation writes. Re-curating a run replaces exactly these rows, so metrics
# other code writes (e.g. sim_pair_correctness, at the end of a run) survive.
METRIC_FAMILIES = frozenset(
    {
        "curation",
        "episodes_done",
        "episodes_failed",
        "episodes_running",
        "turns_per_episode",
        "termination",
        "role_flip_rate",
        "user_turn_chars",
        "assistant_turn_chars",
        *(f"distinct_{n}_{role}" for n in DISTINCT_ORDERS for role in ROLES),
        *(f"self_bleu_{role}" for role in ROLES),
        *(f"embedding_spread_{role}" for role in ROLES),
        "coverage_persona_stage_variables",
        "coverage_persona_stage",
        "coverage_personas",
        "coverage_stages",
        "coverage_variable_values",
        "critique_score",
        "revision_rate",
        "check_pass_rate",
        "judge_consistency",
        "pairs",
        "pair_outcome",
        "pair_margin",
        "length_bias_share",
        "length_ratio_mean",
        "duplicate_dialogues",
        "duplicate_pairs",
        "filtered_dialogues",
        "filtered_pairs",
        "kept_dialogues",
        "kept_pairs",
    }
)


@dataclass(frozen=True, slots=True)
class MetricRow:
    """A metric about to be written; ``detail`` is JSON text."""

    scenario: str | None
    name: str
    value: float | None
    detail: str | None = None


# -- SQL metrics -------------------------------------------------------------------------------
# Each query takes the run id as $1 and returns (scenario, name, value, detail JSON).

DONE_CTE = "done AS (SELECT * FROM episodes WHERE run_id = $1 AND status = 'done')"
PAIRS_CTE = f"""{DONE_CTE},
pairs AS (SELECT p.* FROM preference_pairs p JOIN done e USING (episode_id))"""
ITEMS_CTE = f"""{PAIRS_CTE},
items AS (
    SELECT 'dialogue' AS kind, episode_id AS item_id, scenario FROM done
    UNION ALL
    SELECT 'pair', pair_id, scenario FROM pairs
)"""


def _quantiles(column: str) -> str:
    return (
        f"'p10', quantile_cont({column}, 0.1), 'p50', quantile_cont({column}, 0.5), "
        f"'p90', quantile_cont({column}, 0.9), 'min', min({column}), 'max', max({column})"
    )


EPISODE_QUERIES = (
    # Episodes by status.
    """
    SELECT scenario, 'episodes_' || status, count(*), NULL
    FROM episodes WHERE run_id = $1
    GROUP BY GROUPING SETS ((status), (scenario, status))
    """,
    f"""
    WITH {DONE_CTE}
    SELECT scenario, 'turns_per_episode', avg(n_turns),
           json_object('episodes', count(*), 'turns', sum(n_turns), {_quantiles("n_turns")})
    FROM done GROUP BY GROUPING SETS ((), (scenario))
    """,
    # Share of each termination reason; NULL scenario is the run (scenarios are never NULL).
    f"""
    WITH {DONE_CTE}
    SELECT scenario, 'termination.' || coalesce(termination_reason, 'unknown'),
           count(*) / sum(count(*)) OVER (PARTITION BY scenario), json_object('episodes', count(*))
    FROM done GROUP BY GROUPING SETS ((termination_reason), (scenario, termination_reason))
    """,
    f"""
    WITH {DONE_CTE}
    SELECT e.scenario, 'role_flip_rate',
           count(*) FILTER (WHERE t.role_flip) / nullif(count(*), 0),
           json_object('user_turns', count(*), 'role_flips', count(*) FILTER (WHERE t.role_flip))
    FROM turns t JOIN done e USING (episode_id) WHERE t.role = 'user'
    GROUP BY GROUPING SETS ((), (e.scenario))
    """,
    f"""
    WITH {DONE_CTE}
    SELECT e.scenario, t.role || '_turn_chars', avg(length(t.content)),
           json_object('turns', count(*), {_quantiles("length(t.content)")})
    FROM turns t JOIN done e USING (episode_id) WHERE t.role IN ('user', 'assistant')
    GROUP BY GROUPING SETS ((t.role), (e.scenario, t.role))
    """,
)

REVIEW_QUERIES = (
    # Critic scores by what was critiqued: the first answer, its revision, best-of-n candidates.
    f"""
    WITH {DONE_CTE}
    SELECT e.scenario, 'critique_score.' || c.target, avg(c.overall) FILTER (WHERE c.status = 'ok'),
           json_object('critiques', count(*), 'failed', count(*) FILTER (WHERE c.status = 'failed'),
                       {_quantiles("c.overall")},
                       'histogram',
                       histogram(CAST(round(c.overall) AS INTEGER)) FILTER (WHERE c.status = 'ok'))
    FROM critiques c JOIN done e USING (episode_id)
    GROUP BY GROUPING SETS ((c.target), (e.scenario, c.target))
    """,
    # Revisions per assistant turn of the final dialogues (a turn is revised at most once).
    f"""
    WITH {DONE_CTE}
    SELECT e.scenario, 'revision_rate', count(v.revision_id) / nullif(count(*), 0),
           json_object('assistant_turns', count(*), 'revisions', count(v.revision_id))
    FROM turns t JOIN done e USING (episode_id)
    LEFT JOIN revisions v ON v.episode_id = t.episode_id AND v.turn_idx = t.idx
    WHERE t.role = 'assistant'
    GROUP BY GROUPING SETS ((), (e.scenario))
    """,
    # Pass rate of each check over every reply it ran on, with the split by target
    # (original answer, revision, best-of-n candidate, whole episode).
    f"""
    WITH {DONE_CTE},
    per_target AS (
        SELECT e.scenario, c.name, c.target, count(*) AS n, count(*) FILTER (WHERE c.passed) AS passed
        FROM checks c JOIN done e USING (episode_id)
        GROUP BY GROUPING SETS ((c.name, c.target), (e.scenario, c.name, c.target))
    )
    SELECT scenario, 'check_pass_rate.' || name, sum(passed) / sum(n),
           json_object('checks', sum(n), 'passed', sum(passed),
                       'by_target', json_group_object(target, json_object('checks', n, 'passed', passed)))
    FROM per_target GROUP BY scenario, name
    """,
    # Both-order consistency, as dramaturg._review.pair_report counts it: of the candidate
    # pairs with both judgments parsed, how many got the same verdict in both orders.
    f"""
    WITH {DONE_CTE},
    j AS (
        SELECT e.scenario, j.episode_id, j.turn_idx, j.source,
               max(CASE WHEN j.orientation = 'ab' THEN j.winner END) AS ab,
               max(CASE WHEN j.orientation = 'ba' THEN j.winner END) AS ba
        FROM judgments j JOIN done e USING (episode_id) WHERE j.status = 'ok'
        GROUP BY ALL
    ),
    counted AS (
        SELECT scenario,
               count(*) FILTER (WHERE ab IS NOT NULL AND ba IS NOT NULL) AS judged,
               count(*) FILTER (WHERE (ab = 'A' AND ba = 'B') OR (ab = 'B' AND ba = 'A')
                                   OR (ab = 'tie' AND ba = 'tie')) AS agreeing
        FROM j GROUP BY GROUPING SETS ((), (scenario))
    )
    SELECT scenario, 'judge_consistency', agreeing / nullif(judged, 0),
           json_object('judged_both_orders', judged, 'agreeing', agreeing)
    FROM counted
    """,
)

PAIR_QUERIES = (
    f"""
    WITH {PAIRS_CTE}
    SELECT scenario, 'pairs', count(*), NULL FROM pairs GROUP BY GROUPING SETS ((), (scenario))
    UNION ALL
    SELECT scenario, 'pairs.' || source, count(*), NULL
    FROM pairs GROUP BY GROUPING SETS ((source), (scenario, source))
    """,
    f"""
    WITH {DONE_CTE}
    SELECT e.scenario, 'pair_outcome.' || o.outcome, count(*), NULL
    FROM pair_outcomes o JOIN done e USING (episode_id)
    GROUP BY GROUPING SETS ((o.outcome), (e.scenario, o.outcome))
    """,
    f"""
    WITH {PAIRS_CTE}
    SELECT scenario, 'pair_margin', avg(margin),
           json_object('pairs', count(*), {_quantiles("margin")}, 'histogram', histogram(margin))
    FROM pairs GROUP BY GROUPING SETS ((), (scenario))
    """,
    # Length bias, in characters: preference data whose chosen side is mostly the longer one
    # teaches a model to be verbose rather than right.
    f"""
    WITH {PAIRS_CTE}
    SELECT scenario, 'length_bias_share',
           count(*) FILTER (WHERE length(chosen) > length(rejected)) / nullif(count(*), 0),
           json_object('pairs', count(*),
                       'chosen_longer', count(*) FILTER (WHERE length(chosen) > length(rejected)),
                       'same_length', count(*) FILTER (WHERE length(chosen) = length(rejected)))
    FROM pairs GROUP BY GROUPING SETS ((), (scenario))
    UNION ALL
    SELECT scenario, 'length_ratio_mean', avg(length(chosen) / nullif(length(rejected), 0)),
           json_object('pairs', count(*), 'p50', median(length(chosen) / nullif(length(rejected), 0)))
    FROM pairs GROUP BY GROUPING SETS ((), (scenario))
    """,
)

# These read the duplicates and filtered rows, so they run after those are written.
CURATION_QUERIES = (
    f"""
    WITH {ITEMS_CTE}
    SELECT i.scenario, 'duplicate_' || i.kind || 's', count(d.item_id),
           json_object('items', count(*), 'exact', count(*) FILTER (WHERE d.method = 'exact'),
                       'near', count(*) FILTER (WHERE d.method = 'near'),
                       -- repeats of an item of a run created before this one
                       'earlier_runs', count(*) FILTER (WHERE d.item_id IS NOT NULL AND NOT EXISTS (
                           SELECT 1 FROM items k WHERE k.kind = d.kind AND k.item_id = d.duplicate_of)))
    FROM items i LEFT JOIN duplicates d ON d.kind = i.kind AND d.item_id = i.item_id AND d.run_id = $1
    GROUP BY GROUPING SETS ((i.kind), (i.scenario, i.kind))
    """,
    f"""
    WITH {ITEMS_CTE}
    SELECT i.scenario, 'filtered_' || i.kind || 's.' || f.reason, count(*), NULL
    FROM items i JOIN filtered f ON f.kind = i.kind AND f.item_id = i.item_id AND f.run_id = $1
    GROUP BY GROUPING SETS ((i.kind, f.reason), (i.scenario, i.kind, f.reason))
    """,
    f"""
    WITH {ITEMS_CTE},
    marked AS (
        SELECT i.*,
               i.item_id IN (SELECT item_id FROM duplicates WHERE run_id = $1 AND kind = i.kind) AS dup,
               i.item_id IN (SELECT item_id FROM filtered WHERE run_id = $1 AND kind = i.kind) AS filt
        FROM items i
    )
    SELECT scenario, 'kept_' || kind || 's', count(*) FILTER (WHERE NOT dup AND NOT filt),
           json_object('items', count(*), 'duplicates', count(*) FILTER (WHERE dup),
                       'filtered', count(*) FILTER (WHERE filt))
    FROM marked GROUP BY GROUPING SETS ((kind), (scenario, kind))
    """,
)


# -- text metrics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleTexts:
    """A run's turns of one role, grouped by scenario."""

    role: str
    by_scenario: Mapping[str, Sequence[str]]


def load_texts(store: Store, run_id: str) -> list[RoleTexts]:
    """The user and the assistant turns of a run's finished episodes, in dialogue order."""
    rows = store.sql(
        "SELECT e.scenario, t.role, list(t.content ORDER BY t.episode_id, t.idx) "
        "FROM turns t JOIN episodes e USING (episode_id) "
        "WHERE e.run_id = ? AND e.status = 'done' AND t.role IN ('user', 'assistant') "
        "GROUP BY ALL ORDER BY e.scenario",
        [run_id],
    )
    grouped: dict[str, dict[str, Sequence[str]]] = {role: {} for role in ROLES}
    for scenario, role, texts in rows:
        grouped[role][scenario] = texts
    return [RoleTexts(role, grouped[role]) for role in ROLES]


def text_metrics(texts: Sequence[RoleTexts], *, seed: int) -> list[MetricRow]:
    """distinct-1/2/3 and self-BLEU per role, for the run and for each scenario.

    A run of one scenario is measured once: its scenario rows copy the run rows.
    """
    rows: list[MetricRow] = []
    for role_texts in texts:
        role, by_scenario = role_texts.role, role_texts.by_scenario
        run_rows = _text_rows(None, role, list(chain.from_iterable(by_scenario.values())), seed)
        rows += run_rows
        if len(by_scenario) == 1:
            (scenario,) = by_scenario
            rows += [MetricRow(scenario, r.name, r.value, r.detail) for r in run_rows]
        else:
            for scenario, corpus in by_scenario.items():
                rows += _text_rows(scenario, role, corpus, seed)
    return rows


def _text_rows(scenario: str | None, role: str, corpus: Sequence[str], seed: int) -> list[MetricRow]:
    # No texts is "not measured", not "no diversity".
    distinct: Mapping[int, float | None] = (
        distinct_ns(corpus, DISTINCT_ORDERS) if corpus else dict.fromkeys(DISTINCT_ORDERS)
    )
    detail = json.dumps({"texts": len(corpus)})
    rows = [MetricRow(scenario, f"distinct_{n}_{role}", distinct[n], detail) for n in DISTINCT_ORDERS]
    sample = min(SELF_BLEU_SAMPLE, len(corpus))
    bleu = self_bleu(corpus, sample=SELF_BLEU_SAMPLE, seed=seed) if sample >= 2 else None
    rows.append(MetricRow(scenario, f"self_bleu_{role}", bleu, json.dumps({"sample": sample})))
    return rows


def spread_metrics(texts: Sequence[RoleTexts], embedder: Embedder, *, seed: int) -> list[MetricRow]:
    """Embedding spread per role on one seeded sample of turns; scenarios use their part of it."""
    rows: list[MetricRow] = []
    rng = random.Random(seed)
    for role_texts in texts:
        labelled = [(s, text) for s, corpus in role_texts.by_scenario.items() for text in corpus]
        sample = [
            labelled[i] for i in sorted(rng.sample(range(len(labelled)), min(EMBED_SAMPLE, len(labelled))))
        ]
        if len(sample) < 2:
            continue
        vectors = embedder.embed([text for _, text in sample])
        scenarios = np.array([s for s, _ in sample], dtype=object)
        groups: list[tuple[str | None, npt.NDArray[np.bool_]]] = [(None, np.ones(len(sample), dtype=bool))]
        groups += [(s, np.asarray(scenarios == s, dtype=bool)) for s in role_texts.by_scenario]
        for scenario, mask in groups:
            spread = embedding_spread(vectors[mask])
            detail = json.dumps({"sample": int(mask.sum()), "model": embedder.name})
            rows.append(MetricRow(scenario, f"embedding_spread_{role_texts.role}", spread, detail))
    return rows


# -- coverage ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a scenario can vary: its personas, stages and declared variables' value counts."""

    personas: tuple[str, ...]
    stages: tuple[str, ...]
    variables: tuple[tuple[str, int], ...]

    @property
    def variable_combinations(self) -> int:
        return math.prod(count for _, count in self.variables)


def _shape(scenario: str, definition: str) -> _Shape:
    try:
        data = json.loads(definition)
        personas = tuple(str(p["name"]) for p in data["personas"])
        stages = tuple(str(s["name"]) for s in data["stages"])
        variables = tuple(sorted((str(k), len(v)) for k, v in (data.get("variables") or {}).items()))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"scenario {scenario!r}: stored definition is not a scenario ({exc})") from exc
    return _Shape(personas, stages, variables)


def _json_path(variable: str) -> str:
    return '$.variables."' + variable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def coverage_metrics(store: Store, run_id: str) -> list[MetricRow]:
    """Coverage of personas × stages × sampled variable values, per scenario and for the run.

    A cell is one (persona, stage, combination of the declared variables' values). Stages
    are the ones performed (``turns.stage``), not the planned ``stage_path``, so an episode
    cut short by ``max_turns`` claims no stage it never reached. Variables derived from the
    sampled ones are not dimensions: they add no freedom.
    """
    shapes = {
        name: _shape(name, definition)
        for name, definition in store.sql("SELECT name, definition FROM scenarios WHERE run_id = ?", [run_id])
    }
    rows: list[MetricRow] = []
    totals = {"triple": [0, 0], "pair": [0, 0], "personas": [0, 0], "stages": [0, 0], "values": [0, 0]}

    def add(scenario: str | None, name: str, covered: int, possible: int, **extra: object) -> None:
        detail = json.dumps({"covered": covered, "possible": possible, **extra})
        rows.append(MetricRow(scenario, name, covered / possible if possible else None, detail))

    for scenario, shape in shapes.items():
        # $1 run, $2 scenario, $3 personas, $4 stages, $5... JSON paths of the declared variables.
        paths = [_json_path(name) for name, _ in shape.variables]
        params = [run_id, scenario, list(shape.personas), list(shape.stages), *paths]
        values = ", ".join(f"json_extract_string(spec, ${i})" for i in range(5, 5 + len(paths)))
        performed = f"""
            SELECT DISTINCT e.episode_id, e.persona, t.stage, list_value({values}) AS combination
            FROM episodes e JOIN turns t USING (episode_id)
            WHERE e.run_id = $1 AND e.scenario = $2 AND e.status = 'done'
              AND list_contains($3::VARCHAR[], e.persona) AND list_contains($4::VARCHAR[], t.stage)
        """
        cells = {
            (persona, stage): (episodes, combinations)
            for persona, stage, episodes, combinations in store.sql(
                f"SELECT persona, stage, count(DISTINCT episode_id), count(DISTINCT combination) "
                f"FROM ({performed}) GROUP BY ALL",
                params,
            )
        }
        matrix = [[cells.get((p, s), (0, 0))[0] for s in shape.stages] for p in shape.personas]
        triple = sum(combinations for _, combinations in cells.values())
        seen = ", ".join(f"count(DISTINCT json_extract_string(spec, ${i}))" for i in range(3, 3 + len(paths)))
        seen_values = (
            store.sql(
                f"SELECT {seen} FROM episodes WHERE run_id = $1 AND scenario = $2 AND status = 'done'",
                [run_id, scenario, *paths],
            )[0]
            if paths
            else ()
        )
        possible_values = sum(count for _, count in shape.variables)
        counts = {
            "triple": (triple, len(shape.personas) * len(shape.stages) * shape.variable_combinations),
            "pair": (sum(1 for row in matrix for n in row if n), len(shape.personas) * len(shape.stages)),
            "personas": (sum(1 for row in matrix if any(row)), len(shape.personas)),
            "stages": (
                sum(1 for j in range(len(shape.stages)) if any(row[j] for row in matrix)),
                len(shape.stages),
            ),
            "values": (min(sum(seen_values), possible_values), possible_values),
        }
        for key, (covered, possible) in counts.items():
            totals[key][0] += covered
            totals[key][1] += possible
        add(
            scenario,
            "coverage_persona_stage_variables",
            *counts["triple"],
            variables=[name for name, _ in shape.variables],
        )
        add(
            scenario,
            "coverage_persona_stage",
            *counts["pair"],
            personas=list(shape.personas),
            stages=list(shape.stages),
            episodes=matrix,
        )
        add(scenario, "coverage_personas", *counts["personas"])
        add(scenario, "coverage_stages", *counts["stages"])
        add(
            scenario,
            "coverage_variable_values",
            *counts["values"],
            by_variable={
                name: [seen, count] for (name, count), seen in zip(shape.variables, seen_values, strict=True)
            },
        )
    names = {
        "triple": "coverage_persona_stage_variables",
        "pair": "coverage_persona_stage",
        "personas": "coverage_personas",
        "stages": "coverage_stages",
        "values": "coverage_variable_values",
    }
    if shapes:
        for key, name in names.items():
            add(None, name, totals[key][0], totals[key][1])
    return rows


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    """One stored metric.

    Attributes:
        scenario: The scenario it describes; None for the whole run.
        name: ``family`` or ``family.key`` (e.g. ``check_pass_rate.json_valid``).
        value: The number; None when it cannot be computed (e.g. a rate over zero items).
        detail: The counts and distributions behind the value, as stored (JSON object).
        computed_at: When it was written (UTC).
    """

    scenario: str | None
    name: str
    value: float | None
    detail: Mapping[str, object]
    computed_at: datetime

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str | None:
        """The data-derived part after the first dot, if any."""
        parts = self.name.split(".", 1)
        return parts[1] if len(parts) == 2 else None


@dataclass(frozen=True, slots=True)
class MetricSet:
    """A run's metrics, addressable by (name, scenario)."""

    run_id: str
    metrics: tuple[Metric, ...]
    scenarios: tuple[str, ...]
    _index: Mapping[tuple[str, str | None], Metric] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {(m.name, m.scenario): m for m in self.metrics})

    def get(self, name: str, scenario: str | None = None) -> Metric | None:
        """The metric ``name`` of ``scenario`` (None: the run), or None if not stored."""
        return self._index.get((name, scenario))

    def value(self, name: str, scenario: str | None = None) -> float | None:
        """The value of :meth:`get`, or None."""
        metric = self.get(name, scenario)
        return metric.value if metric else None

    def keys(self, family: str) -> list[str]:
        """The keys stored under ``family`` (``family.KEY``) for any scenario, sorted."""
        return sorted({m.key for m in self.metrics if m.family == family and m.key is not None})


def read_metrics(store: Store, run_id: str) -> MetricSet:
    """Every metric stored for ``run_id``.

    Example:
        >>> metrics = read_metrics(store, run_id)        # doctest: +SKIP
        >>> metrics.value("distinct_2_assistant")         # doctest: +SKIP
        0.41
    """
    rows = store.sql(
        "SELECT scenario, name, value, detail, computed_at FROM metrics WHERE run_id = ? "
        "ORDER BY scenario NULLS FIRST, name",
        [run_id],
    )
    metrics = tuple(
        Metric(scenario, name, value, json.loads(detail) if detail else {}, computed_at)
        for scenario, name, value, detail, computed_at in rows
    )
    scenarios = tuple(sorted({m.scenario for m in metrics if m.scenario is not None}))
    return MetricSet(run_id, metrics, scenarios)
