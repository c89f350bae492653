"""Corpus metrics of a run, per run and per scenario, as rows of the ``metrics`` table.

Aggregates over the store are SQL (``GROUPING SETS ((), (scenario))`` gives the run row, with
``scenario`` NULL, and one row per scenario in one scan). Text metrics that need tokens
(distinct-n, self-BLEU, embedding spread) run in Python, using
:mod:`dramaturg.evaluators._diversity`, on turns DuckDB streams in batches: distinct-n counts
every turn in bounded memory, and self-BLEU and embedding spread fetch only their samples,
whose positions follow from the turn counts and the run seed.

Metric names are ``family`` or ``family.key``, where the key comes from the data (a check's
name, a termination reason, a pair source). See :data:`METRIC_FAMILIES`.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
from dramaturg.evaluators._diversity import DistinctCounter, self_bleu_of_sample, self_bleu_positions
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
    # One list quantile, not three: DuckDB keeps every value of a holistic aggregate in memory
    # (it cannot spill them), once per call.
    deciles = f"quantile_cont({column}, [0.1, 0.5, 0.9])"
    return (
        f"'p10', {deciles}[1], 'p50', {deciles}[2], 'p90', {deciles}[3], "
        f"'min', min({column}), 'max', max({column})"
    )


def _histogram_quantile(q: float) -> str:
    """``quantile_cont(chars, q)`` of the ``ranked`` histogram below, exactly as DuckDB computes
    it: the values at the ranks around (count - 1)·q, in double arithmetic, interpolated."""
    rank = f"(total - 1)::DOUBLE * {q}::DOUBLE"
    low = f"min(chars) FILTER (WHERE upto > floor({rank}))::DOUBLE"
    high = f"min(chars) FILTER (WHERE upto > ceil({rank}))::DOUBLE"
    return f"{low} + ({high} - {low}) * (any_value({rank}) - floor(any_value({rank})))"


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
    # Turn lengths come from a histogram (length -> turns): a quantile over every turn would keep
    # every length in memory, and a run has ten times more turns than dialogues.
    f"""
    WITH {DONE_CTE},
    lengths AS (
        SELECT e.scenario, t.role, length(t.content) AS chars, count(*) AS n
        FROM turns t JOIN done e USING (episode_id) WHERE t.role IN ('user', 'assistant')
        GROUP BY ALL
    ),
    histogram AS (
        SELECT scenario, role, chars, sum(n) AS n
        FROM lengths GROUP BY GROUPING SETS ((role, chars), (scenario, role, chars))
    ),
    ranked AS (
        SELECT *, sum(n) OVER (PARTITION BY scenario, role ORDER BY chars) AS upto,
               sum(n) OVER (PARTITION BY scenario, role) AS total
        FROM histogram
    )
    SELECT scenario, role || '_turn_chars', sum(chars * n)::DOUBLE / sum(n),
           json_object('turns', sum(n)::BIGINT, 'p10', {_histogram_quantile(0.1)},
                       'p50', {_histogram_quantile(0.5)}, 'p90', {_histogram_quantile(0.9)},
                       'min', min(chars), 'max', max(chars))
    FROM ranked GROUP BY scenario, role
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


# Turns fetched from DuckDB per batch, and texts per role and scenario tokenised together.
_FETCH_ROWS = 4096
_COUNT_BATCH = 2048

# The run's finished user and assistant turns; $1 is the run id.
_RUN_TURNS = """
    FROM turns t JOIN episodes e USING (episode_id)
    WHERE e.run_id = $1 AND e.status = 'done' AND t.role IN ('user', 'assistant')
"""


@dataclass(frozen=True, slots=True)
class RoleSample:
    """The seeded sample of a run's turns of one role that embedding spread measures.

    Attributes:
        role: ``user`` or ``assistant``.
        scenarios: The scenarios with turns of this role, in order.
        sample: ``(scenario, text)`` of the sampled turns, in corpus order.
    """

    role: str
    scenarios: tuple[str, ...]
    sample: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Corpus:
    """One role's turns, as counted per scenario: the corpus order is by scenario, then by
    episode id and turn index, as if the scenarios' turn lists were concatenated."""

    role: str
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def locate(self, positions: Sequence[int]) -> list[tuple[str, int]]:
        """``(scenario, position within the scenario)`` of positions in the whole corpus."""
        scenarios = list(self.counts)
        starts = [0, *accumulate(self.counts.values())][:-1]
        found = []
        for position in positions:
            k = bisect.bisect_right(starts, position) - 1
            found.append((scenarios[k], position - starts[k]))
        return found


def stream_rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object]
) -> Iterator[tuple[Any, ...]]:
    """Rows of a query, fetched ``_FETCH_ROWS`` at a time: never the whole result at once."""
    result = con.execute(sql, list(params))
    while rows := result.fetchmany(_FETCH_ROWS):
        yield from rows


def text_metrics(
    con: duckdb.DuckDBPyConnection, run_id: str, *, seed: int
) -> tuple[list[MetricRow], list[RoleSample]]:
    """distinct-1/2/3 and self-BLEU per role, for the run and for each scenario; and the sample
    of turns embedding spread measures (see :func:`spread_metrics`).

    Streams: distinct-n counts every turn as DuckDB hands it over (bounded memory, see
    :class:`DistinctCounter`); self-BLEU and the embedding sample draw their positions from
    the turn counts and ``seed`` and fetch only those turns, so the values are the ones the
    whole corpus in memory would give. A run of one scenario is measured once: its scenario
    rows copy the run rows.
    """
    counts: dict[str, dict[str, int]] = {role: {} for role in ROLES}
    for role, scenario, n in con.execute(
        f"SELECT t.role, e.scenario, count(*) {_RUN_TURNS} GROUP BY ALL ORDER BY e.scenario", [run_id]
    ).fetchall():
        counts[role][scenario] = n
    corpora = [_Corpus(role, counts[role]) for role in ROLES]

    # What self-BLEU and the embeddings sample: (role, scenario) -> positions in the scenario.
    bleu: dict[tuple[str, str | None], list[tuple[str, int]]] = {}
    embed: dict[str, list[tuple[str, int]]] = {}
    rng = random.Random(seed)
    for corpus in corpora:
        total = corpus.total
        bleu[corpus.role, None] = corpus.locate(
            self_bleu_positions(total, sample=SELF_BLEU_SAMPLE, seed=seed)
        )
        if len(corpus.counts) > 1:
            for scenario, n in corpus.counts.items():
                positions = self_bleu_positions(n, sample=SELF_BLEU_SAMPLE, seed=seed)
                bleu[corpus.role, scenario] = [(scenario, position) for position in positions]
        embed[corpus.role] = corpus.locate(sorted(rng.sample(range(total), min(EMBED_SAMPLE, total))))
    wanted = {(role, *at) for (role, _), places in bleu.items() for at in places}
    wanted |= {(role, *at) for role, places in embed.items() for at in places}
    fetched = _turns_at(con, run_id, wanted)

    counters = _count_distinct(con, run_id, corpora)
    rows: list[MetricRow] = []
    for corpus in corpora:
        role = corpus.role
        whole = DistinctCounter(DISTINCT_ORDERS)
        for scenario in corpus.counts:
            whole.update(counters[role, scenario])
        run_rows = _text_rows(
            None, role, corpus.total, whole, [fetched[role, *at] for at in bleu[role, None]]
        )
        rows += run_rows
        if len(corpus.counts) == 1:
            (scenario,) = corpus.counts
            rows += [MetricRow(scenario, r.name, r.value, r.detail) for r in run_rows]
        else:
            for scenario, n in corpus.counts.items():
                sampled = [fetched[role, *at] for at in bleu[role, scenario]]
                rows += _text_rows(scenario, role, n, counters[role, scenario], sampled)
    samples = [
        RoleSample(
            corpus.role,
            tuple(corpus.counts),
            tuple(
                (scenario, fetched[corpus.role, scenario, position])
                for scenario, position in embed[corpus.role]
            ),
        )
        for corpus in corpora
    ]
    return rows, samples


def _turns_at(
    con: duckdb.DuckDBPyConnection, run_id: str, wanted: set[tuple[str, str, int]]
) -> dict[tuple[str, str, int], str]:
    """The texts of the turns at ``(role, scenario, position)``, counted in corpus order.

    Positions are numbered over the keys only (episode id, turn index), then the few wanted
    turns are joined back for their text: DuckDB never sorts the texts themselves.
    """
    if not wanted:
        return {}
    roles, scenarios, positions = zip(*sorted(wanted), strict=True)
    rows = con.execute(
        f"""
        WITH wanted AS (
            SELECT unnest($2::VARCHAR[]) AS role, unnest($3::VARCHAR[]) AS scenario,
                   unnest($4::BIGINT[]) AS position
        ),
        ranked AS (
            SELECT t.role, e.scenario, t.episode_id, t.idx,
                   row_number() OVER (PARTITION BY t.role, e.scenario ORDER BY t.episode_id, t.idx) - 1
                       AS position
            {_RUN_TURNS}
        )
        SELECT r.role, r.scenario, r.position, t.content
        FROM ranked r JOIN wanted w USING (role, scenario, position)
        JOIN turns t ON t.episode_id = r.episode_id AND t.idx = r.idx
        """,
        [run_id, list(roles), list(scenarios), list(positions)],
    ).fetchall()
    return {(role, scenario, position): text for role, scenario, position, text in rows}


def _count_distinct(
    con: duckdb.DuckDBPyConnection, run_id: str, corpora: Sequence[_Corpus]
) -> dict[tuple[str, str], DistinctCounter]:
    """A distinct-n counter per (role, scenario), fed every turn in one unordered scan.

    Counting is order-free (n-grams never span two turns), so DuckDB streams the turns as
    they lie, with no sort.
    """
    counters = {
        (corpus.role, scenario): DistinctCounter(DISTINCT_ORDERS)
        for corpus in corpora
        for scenario in corpus.counts
    }
    pending: dict[tuple[str, str], list[str]] = {key: [] for key in counters}
    for role, scenario, text in stream_rows(
        con, f"SELECT t.role, e.scenario, t.content {_RUN_TURNS}", [run_id]
    ):
        batch = pending[role, scenario]
        batch.append(text)
        if len(batch) >= _COUNT_BATCH:
            counters[role, scenario].add(batch)
            batch.clear()
    for key, batch in pending.items():
        counters[key].add(batch)
    return counters


def _text_rows(
    scenario: str | None, role: str, texts: int, counter: DistinctCounter, sampled: Sequence[str]
) -> list[MetricRow]:
    # No texts is "not measured", not "no diversity".
    distinct: Mapping[int, float | None] = counter.ratios() if texts else dict.fromkeys(DISTINCT_ORDERS)
    detail = json.dumps({"texts": texts})
    rows = [MetricRow(scenario, f"distinct_{n}_{role}", distinct[n], detail) for n in DISTINCT_ORDERS]
    bleu = self_bleu_of_sample(sampled) if len(sampled) >= 2 else None
    rows.append(MetricRow(scenario, f"self_bleu_{role}", bleu, json.dumps({"sample": len(sampled)})))
    return rows


def spread_metrics(samples: Sequence[RoleSample], embedder: Embedder) -> list[MetricRow]:
    """Embedding spread per role on its sample of turns; scenarios use their part of it."""
    rows: list[MetricRow] = []
    for role_sample in samples:
        sample = role_sample.sample
        if len(sample) < 2:
            continue
        vectors = embedder.embed([text for _, text in sample])
        scenarios = np.array([s for s, _ in sample], dtype=object)
        groups: list[tuple[str | None, npt.NDArray[np.bool_]]] = [(None, np.ones(len(sample), dtype=bool))]
        groups += [(s, np.asarray(scenarios == s, dtype=bool)) for s in role_sample.scenarios]
        for scenario, mask in groups:
            spread = embedding_spread(vectors[mask])
            detail = json.dumps({"sample": int(mask.sum()), "model": embedder.name})
            rows.append(MetricRow(scenario, f"embedding_spread_{role_sample.role}", spread, detail))
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
