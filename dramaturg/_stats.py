"""A run's stored metrics as tables: one model, two views (`dramaturg stats` and the HTML report).

Every table has a label column, a column for the whole run and, when the run has more than
one scenario, a column per scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dramaturg.evaluators import Metric, MetricSet

__all__ = ["StatsTable", "stats_tables"]

MISSING = "–"


@dataclass(frozen=True, slots=True)
class StatsTable:
    """A titled table of already formatted cells."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


Formatter = Callable[[Metric], str]


def _number(detail: Mapping[str, object], key: str) -> float | None:
    value = detail.get(key)
    return float(value) if isinstance(value, int | float) else None


def _num(value: float | None, spec: str = ".3f") -> str:
    return MISSING if value is None else format(value, spec)


def _value(spec: str = ".3f") -> Formatter:
    return lambda m: _num(m.value, spec)


def _count(m: Metric) -> str:
    return _num(m.value, ",.0f")


def _share_of(numerator: str, denominator: str) -> Formatter:
    """``87.5% (7/8)``: the value as a percentage, with the counts behind it."""

    def format_(m: Metric) -> str:
        top, bottom = _number(m.detail, numerator), _number(m.detail, denominator)
        counts = f" ({top:,.0f}/{bottom:,.0f})" if top is not None and bottom is not None else ""
        return _num(m.value, ".1%") + counts

    return format_


def _covered_of(covered: float | None, possible: float | None) -> str:
    """``38 of 40 (95%)``, ``33 of 36 (91.7%)``: a whole percentage without its decimal."""
    if covered is None or not possible:
        return MISSING
    tenths = round(covered / possible * 1000)
    if covered < possible:
        tenths = min(tenths, 999)  # 9,999 of 10,000 is not 100%
    whole, tenth = divmod(tenths, 10)
    return f"{covered:,.0f} of {possible:,.0f} ({whole}{f'.{tenth}' if tenth else ''}%)"


def _coverage(m: Metric) -> str:
    return _covered_of(_number(m.detail, "covered"), _number(m.detail, "possible"))


def _variable_coverage(variable: str) -> Formatter:
    """How many of one variable's values the scenario's episodes used, from its ``by_variable``."""

    def format_(m: Metric) -> str:
        by_variable = m.detail.get("by_variable")
        counts = by_variable.get(variable) if isinstance(by_variable, dict) else None
        if not isinstance(counts, list) or len(counts) != 2:
            return MISSING
        return _covered_of(*(float(n) if isinstance(n, int | float) else None for n in counts))

    return format_


def _distribution(spec: str = ".1f") -> Formatter:
    """``7.4 (p50 8)``: the mean and the median."""

    def format_(m: Metric) -> str:
        p50 = _number(m.detail, "p50")
        if m.value is None:
            return MISSING
        return f"{m.value:{spec}} (p50 {_num(p50, '.4g')})"

    return format_


def _share_with(key: str) -> Formatter:
    """``80.0% (16)``: a share, with the count ``key`` of its detail."""

    def format_(m: Metric) -> str:
        n = _number(m.detail, key)
        return _num(m.value, ".1%") + (f" ({n:,.0f})" if n is not None else "")

    return format_


def _split(keys: tuple[str, ...]) -> Formatter:
    """``3 (1 exact, 2 near)``; parts that are zero are left out."""

    def format_(m: Metric) -> str:
        parts = [(k, _number(m.detail, k)) for k in keys]
        shown = ", ".join(f"{n:,.0f} {k}" for k, n in parts if n)
        return _count(m) + (f" ({shown})" if shown else "")

    return format_


def _detail_count(key: str, *, hide_zero: bool = False) -> Formatter:
    """The count ``key`` of the detail; with ``hide_zero``, a zero is missing (a row of them is not shown)."""

    def format_(m: Metric) -> str:
        n = _number(m.detail, key)
        return MISSING if hide_zero and not n else _num(n, ",.0f")

    return format_


class _Builder:
    def __init__(self, metrics: MetricSet):
        self.metrics = metrics
        self.scenarios: tuple[str | None, ...] = (
            (None, *metrics.scenarios) if len(metrics.scenarios) > 1 else (None,)
        )

    @property
    def columns(self) -> tuple[str, ...]:
        if len(self.scenarios) == 1:
            return ("", self.metrics.scenarios[0] if self.metrics.scenarios else "run")
        return ("", "run", *self.metrics.scenarios)

    def row(
        self, label: str, name: str, fmt: Formatter, *, per_scenario: bool = False
    ) -> tuple[str, ...] | None:
        """One row; ``per_scenario``: the metric is a scenario's only (its run column is empty,
        unless the run has one scenario, whose column it is)."""
        cells = []
        only = self.metrics.scenarios[0] if per_scenario and len(self.metrics.scenarios) == 1 else None
        for scenario in self.scenarios:
            metric = self.metrics.get(name, scenario or only)
            cells.append(fmt(metric) if metric is not None else MISSING)
        if all(cell == MISSING for cell in cells):
            return None
        return (label, *cells)

    def table(self, title: str, rows: list[tuple[str, ...] | None], note: str = "") -> StatsTable | None:
        kept = tuple(row for row in rows if row is not None)
        return StatsTable(title, self.columns, kept, note) if kept else None

    def variables(self) -> list[str]:
        """The declared variables of every scenario whose coverage is stored, sorted."""
        names: set[str] = set()
        for scenario in self.metrics.scenarios:
            metric = self.metrics.get("coverage_variable_values", scenario)
            by_variable = metric.detail.get("by_variable") if metric else None
            if isinstance(by_variable, dict):
                names.update(str(name) for name in by_variable)
        return sorted(names)

    def family(
        self, family: str, label: Callable[[str], str], fmt: Formatter
    ) -> list[tuple[str, ...] | None]:
        return [self.row(label(key), f"{family}.{key}", fmt) for key in self.metrics.keys(family)]


def stats_tables(metrics: MetricSet) -> list[StatsTable]:
    """The tables of `dramaturg stats` for one run's metrics (see :func:`~dramaturg.evaluators.curate`)."""
    b = _Builder(metrics)
    roles = ("user", "assistant")
    spread = [b.row(f"embedding spread {role}", f"embedding_spread_{role}", _value()) for role in roles]
    curation = metrics.get("curation")
    embedding_note = ""
    if all(row is None for row in spread) and curation is not None:
        embedding_note = f"embedding spread {curation.detail.get('embedding', 'not measured')}"
    tables = [
        b.table(
            "Episodes",
            [
                b.row("done", "episodes_done", _count),
                b.row("failed", "episodes_failed", _count),
                b.row("still running", "episodes_running", _count),
                b.row("turns/episode", "turns_per_episode", _distribution()),
                b.row("user turn chars", "user_turn_chars", _distribution(".0f")),
                b.row("assistant turn chars", "assistant_turn_chars", _distribution(".0f")),
                b.row("role flips", "role_flip_rate", _share_of("role_flips", "user_turns")),
                *b.family("termination", lambda key: f"ended: {key}", _share_with("episodes")),
            ],
        ),
        b.table(
            "Diversity",
            [
                *(
                    b.row(f"distinct-{n} {role}", f"distinct_{n}_{role}", _value())
                    for role in roles
                    for n in (1, 2, 3)
                ),
                *(b.row(f"self-BLEU {role}", f"self_bleu_{role}", _value()) for role in roles),
                *spread,
            ],
            note="distinct-n: unique / total n-grams (higher is more diverse); "
            "self-BLEU on a sample (lower is more diverse)"
            + (f"; {embedding_note}" if embedding_note else ""),
        ),
        b.table(
            "Coverage",
            [
                b.row("persona×stage×variables", "coverage_persona_stage_variables", _coverage),
                b.row("persona×stage", "coverage_persona_stage", _coverage),
                b.row("personas", "coverage_personas", _coverage),
                b.row("stages", "coverage_stages", _coverage),
                b.row("variable values", "coverage_variable_values", _coverage),
                *(
                    b.row(
                        f"  {name}",
                        "coverage_variable_values",
                        _variable_coverage(name),
                        per_scenario=True,
                    )
                    for name in b.variables()
                ),
            ],
            note="used of possible, over the done episodes: personas of the scenario's pool, "
            "stages as performed, values of each declared variable",
        ),
        b.table(
            "Critique and verification",
            [
                *b.family("critique_score", lambda key: f"critic: {key}", _distribution()),
                b.row("revision rate", "revision_rate", _share_of("revisions", "assistant_turns")),
                b.row("judges agree", "judge_consistency", _share_of("agreeing", "judged_both_orders")),
                b.row("sim correctness", "sim_pair_correctness", _share_of("correct", "pairs")),
            ],
            note="critic scores 1-10: mean (median); judges agree: same verdict in both orders; "
            "sim correctness: pairs whose chosen side lacks the sim's planted mistake",
        ),
        b.table(
            "Checks",
            b.family("check_pass_rate", lambda key: key, _share_of("passed", "checks")),
            note="pass rate over every reply checked (originals, revisions, candidates)",
        ),
        b.table(
            "Pairs",
            [
                b.row("pairs", "pairs", _count),
                *b.family("pairs", lambda key: f"from {key}", _count),
                *(
                    b.row(f"no pair: {key}", f"pair_outcome.{key}", _count)
                    for key in metrics.keys("pair_outcome")
                    if key != "paired"
                ),
                b.row("margin", "pair_margin", _distribution()),
                b.row("length bias", "length_bias_share", _share_of("chosen_longer", "pairs")),
                b.row("length ratio", "length_ratio_mean", _value(".2f")),
            ],
            note="margin: critic score of chosen minus rejected, mean (median); length bias: share of pairs "
            "whose chosen reply is longer; length ratio: mean chosen/rejected length, in characters",
        ),
        b.table(
            "Curation",
            [
                b.row("dialogues", "kept_dialogues", _detail_count("items")),
                b.row("  duplicates", "duplicate_dialogues", _split(("exact", "near"))),
                b.row(
                    "    of earlier runs",
                    "duplicate_dialogues",
                    _detail_count("earlier_runs", hide_zero=True),
                ),
                b.row("  filtered", "kept_dialogues", _detail_count("filtered")),
                *b.family("filtered_dialogues", lambda key: f"    {key}", _count),
                b.row("  kept", "kept_dialogues", _count),
                b.row("pairs", "kept_pairs", _detail_count("items")),
                b.row("  duplicates", "duplicate_pairs", _split(("exact", "near"))),
                b.row(
                    "    of earlier runs", "duplicate_pairs", _detail_count("earlier_runs", hide_zero=True)
                ),
                b.row("  filtered", "kept_pairs", _detail_count("filtered")),
                *b.family("filtered_pairs", lambda key: f"    {key}", _count),
                b.row("  kept", "kept_pairs", _count),
            ],
            note="duplicates are marked, not deleted; of earlier runs: copies of items of runs created "
            "before this one; an item can fail several filters; SQL: tables duplicates and filtered",
        ),
    ]
    return [table for table in tables if table is not None]
