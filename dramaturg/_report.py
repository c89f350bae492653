"""`dramaturg report`: one self-contained HTML file with a run's plots and stats tables.

Plots are inline SVG drawn here, styles are inline CSS: the file references nothing outside
itself, so it displays offline and can be attached to a ticket or a model card as is.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dramaturg._stats import StatsTable, stats_tables
from dramaturg.evaluators import MetricSet, read_metrics
from dramaturg.memory import Store

__all__ = ["write_report"]

# Colour-blind-safe (Okabe-Ito) series colours.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
_WIDTH, _HEIGHT = 640, 300
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 56, 16, 46, 46
# Legend row between the title (baseline 18) and the plot area.
_LEGEND_Y = 26
# Rough width of one character at font-size 11, to lay out legend entries.
_CHAR_W = 6.5
_BINS = 30


@dataclass(frozen=True, slots=True)
class _Series:
    name: str
    values: Sequence[float]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg(body: list[str], title: str, width: int = _WIDTH, height: int = _HEIGHT) -> str:
    return (
        f'<svg role="img" aria-label="{_e(title)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="system-ui, sans-serif" font-size="11">'
        f'<title>{_e(title)}</title><text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="600">{_e(title)}</text>' + "".join(body) + "</svg>"
    )


def _count_axis(peak: float) -> tuple[float, float]:
    """(top, step) of a count axis: a whole 1, 2 or 5 × 10^k step, four to eight steps to the top."""
    raw = max(peak, 1.0) / 4
    magnitude = 10 ** np.floor(np.log10(raw))
    step = max(float(m * magnitude) for m in (1, 2, 5) if m * magnitude <= raw)
    step = max(step, 1.0)
    return step * float(np.ceil(max(peak, 1.0) / step)), step


def _tick(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _axes(
    y_max: float, step: float, x_label: str, y_label: str, width: int = _WIDTH, height: int = _HEIGHT
) -> list[str]:
    left, bottom = _MARGIN_LEFT, height - _MARGIN_BOTTOM
    right, top = width - _MARGIN_RIGHT, _MARGIN_TOP
    parts = [
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>',
        f'<text x="{(left + right) / 2}" y="{height - 8}" text-anchor="middle">{_e(x_label)}</text>',
        f'<text transform="translate(14 {(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
        f"{_e(y_label)}</text>",
    ]
    for k in range(round(y_max / step) + 1):
        value = step * k
        y = bottom - (bottom - top) * value / y_max
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(value)}</text>')
    return parts


def _legend(names: Sequence[str], width: int = _WIDTH) -> list[str]:
    """Legend entries in one row, right-aligned above the plot."""
    widths = [14 + _CHAR_W * len(name) + 16 for name in names]
    x = width - _MARGIN_RIGHT - sum(widths)
    parts = []
    for i, (name, entry_w) in enumerate(zip(names, widths, strict=True)):
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<rect x="{x:.1f}" y="{_LEGEND_Y}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14:.1f}" y="{_LEGEND_Y + 9}">{_e(name)}</text>')
        x += entry_w
    return parts


def bar_chart(
    title: str, categories: Sequence[str], series: Sequence[_Series], x_label: str, y_label: str
) -> str:
    """Grouped vertical bars: one group per category, one bar per series."""
    y_max, step = _count_axis(max((v for s in series for v in s.values), default=0.0))
    left, bottom = _MARGIN_LEFT, _HEIGHT - _MARGIN_BOTTOM
    plot_w, plot_h = _WIDTH - _MARGIN_RIGHT - left, bottom - _MARGIN_TOP
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    body = _axes(y_max, step, x_label, y_label)
    for c, category in enumerate(categories):
        x0 = left + c * group_w + group_w * 0.1
        body.append(
            f'<text x="{left + (c + 0.5) * group_w:.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{_e(category)}</text>"
        )
        for s, one in enumerate(series):
            value = one.values[c]
            h = plot_h * value / y_max
            body.append(
                f'<rect x="{x0 + s * bar_w:.1f}" y="{bottom - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{_PALETTE[s % len(_PALETTE)]}">'
                f"<title>{_e(one.name)} {_e(category)}: {value:g}</title></rect>"
            )
    if len(series) > 1:
        body += _legend([s.name for s in series])
    return _svg(body, title)


def histogram(title: str, series: Sequence[_Series], x_label: str, bins: int = _BINS) -> str:
    """Overlaid histograms on shared bins; each series is drawn half transparent.

    Whole-number data spanning at most ``bins`` values (critic margins) gets one bin per value,
    labelled at its centre, so no bin straddles two values.
    """
    values = [np.asarray(s.values, dtype=np.float64) for s in series]
    every = np.concatenate(values) if values else np.empty(0)
    if every.size == 0:
        return _svg([f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle">no data</text>'], title)
    low, high = float(every.min()), float(every.max())
    discrete = bool(np.all(every == np.round(every))) and high - low < bins
    if discrete:
        edges = np.arange(low - 0.5, high + 1.0, 1.0)
    else:
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    bins = len(edges) - 1
    counts = [np.histogram(v, bins=edges)[0] for v in values]
    y_max, step = _count_axis(float(max(c.max() for c in counts)))
    left, bottom = _MARGIN_LEFT, _HEIGHT - _MARGIN_BOTTOM
    plot_w, plot_h = _WIDTH - _MARGIN_RIGHT - left, bottom - _MARGIN_TOP
    bin_w = plot_w / bins
    body = _axes(y_max, step, x_label, "count")
    ticks = (
        [(k + 0.5, edges[k] + 0.5) for k in range(bins)]
        if discrete
        else [(k, edges[k]) for k in range(0, bins + 1, max(bins // 6, 1))]
    )
    for position, value in ticks:
        body.append(
            f'<text x="{left + position * bin_w:.1f}" y="{bottom + 14}" text-anchor="middle">'
            f"{_tick(value)}</text>"
        )
    for s, (one, count) in enumerate(zip(series, counts, strict=True)):
        colour = _PALETTE[s % len(_PALETTE)]
        for k, n in enumerate(count):
            if n:
                h = plot_h * n / y_max
                body.append(
                    f'<rect x="{left + k * bin_w:.1f}" y="{bottom - h:.1f}" width="{max(bin_w - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="{colour}" fill-opacity="0.55"><title>{_e(one.name)} '
                    f"{_tick(edges[k])}–{_tick(edges[k + 1])}: {n}</title></rect>"
                )
    body += _legend([f"{s.name} (n={len(s.values):,})" for s in series])
    return _svg(body, title)


def heatmap(
    title: str, rows: Sequence[str], columns: Sequence[str], counts: Sequence[Sequence[float]]
) -> str:
    """A grid of cells shaded by count; cells never covered are grey."""
    cell_w = max(min(90, (_WIDTH - 140) // max(len(columns), 1)), 30)
    cell_h = 24
    left, top = 120, _MARGIN_TOP + 10
    width = left + cell_w * len(columns) + _MARGIN_RIGHT
    height = top + cell_h * len(rows) + 12
    peak = max((v for row in counts for v in row), default=0) or 1
    body = []
    for j, column in enumerate(columns):
        body.append(
            f'<text x="{left + (j + 0.5) * cell_w:.1f}" y="{top - 6}" text-anchor="middle">'
            f"{_e(column)}</text>"
        )
    for i, row in enumerate(rows):
        y = top + i * cell_h
        body.append(f'<text x="{left - 6}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end">{_e(row)}</text>')
        for j, value in enumerate(counts[i]):
            x = left + j * cell_w
            if value:
                shade = 0.15 + 0.85 * value / peak
                fill = f'fill="#0072B2" fill-opacity="{shade:.2f}"'
            else:
                fill = 'fill="#eee"'
            body.append(
                f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" {fill}>'
                f"<title>{_e(row)} × {_e(columns[j])}: {value:g} episodes</title></rect>"
            )
            colour = "#fff" if value and value / peak > 0.5 else "#333"
            body.append(
                f'<text x="{x + (cell_w - 2) / 2:.1f}" y="{y + cell_h / 2 + 3:.1f}" text-anchor="middle" '
                f'fill="{colour}">{value:g}</text>'
            )
    return _svg(body, title, width=max(width, 320), height=height)


def _table_html(table: StatsTable) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    note = f"<p class=note>{_e(table.note)}</p>" if table.note else ""
    return (
        f"<section><h3>{_e(table.title)}</h3><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>{note}</section>"
    )


def _figures(store: Store, run_id: str, metrics: MetricSet) -> list[tuple[str, str]]:
    """(svg, caption) of every plot."""
    figures: list[tuple[str, str]] = []
    targets = metrics.keys("critique_score")
    if targets:
        scores = [str(k) for k in range(1, 11)]
        series = []
        for target in targets:
            metric = metrics.get(f"critique_score.{target}")
            raw = metric.detail.get("histogram") if metric else None
            histogram_counts = raw if isinstance(raw, dict) else {}
            series.append(_Series(target, [float(histogram_counts.get(score, 0)) for score in scores]))
        figures.append(
            (
                bar_chart("Critic scores", scores, series, "overall score (1-10, rounded)", "critiques"),
                "How the critic scored first answers (original), their revisions and best-of-n candidates.",
            )
        )
    done = "SELECT episode_id FROM episodes WHERE run_id = ? AND status = 'done'"
    turn_lengths = {
        role: [
            float(n)
            for (n,) in store.sql(
                f"SELECT length(content) FROM turns WHERE role = ? AND episode_id IN ({done})", [role, run_id]
            )
        ]
        for role in ("user", "assistant")
    }
    figures.append(
        (
            histogram(
                "Turn lengths", [_Series(role, v) for role, v in turn_lengths.items()], "characters per turn"
            ),
            "Length of every user and assistant turn in the finished dialogues.",
        )
    )
    pairs = store.sql(
        f"SELECT length(chosen), length(rejected), margin FROM preference_pairs "
        f"WHERE run_id = ? AND episode_id IN ({done})",
        [run_id, run_id],
    )
    if pairs:
        figures.append(
            (
                histogram(
                    "Pair lengths: chosen vs rejected",
                    [
                        _Series("chosen", [float(r[0]) for r in pairs]),
                        _Series("rejected", [float(r[1]) for r in pairs]),
                    ],
                    "characters",
                ),
                "If chosen replies are mostly the longer ones, a model trained on these pairs learns length, "
                "not quality (see length bias in the Pairs table).",
            )
        )
        margins = [float(r[2]) for r in pairs]
        figures.append(
            (
                histogram(
                    "Pair margins", [_Series("margin", margins)], "critic score of chosen minus rejected"
                ),
                "Critic-score margin of every preference pair.",
            )
        )
    for scenario in metrics.scenarios:
        metric = metrics.get("coverage_persona_stage", scenario)
        if metric is None:
            continue
        personas, stages, episodes = (metric.detail.get(k) for k in ("personas", "stages", "episodes"))
        if isinstance(personas, list) and isinstance(stages, list) and isinstance(episodes, list):
            figures.append(
                (
                    heatmap(
                        f"Coverage: {scenario}",
                        [str(p) for p in personas],
                        [str(s) for s in stages],
                        [[float(v) for v in row] for row in episodes],
                    ),
                    f"Episodes of {scenario} per persona (rows) and performed stage (columns); "
                    "grey cells were never covered.",
                )
            )
    reasons = metrics.keys("termination")
    if reasons:
        counts = []
        for reason in reasons:
            metric = metrics.get(f"termination.{reason}")
            n = metric.detail.get("episodes") if metric else 0
            counts.append(float(n) if isinstance(n, int | float) else 0.0)
        figures.append(
            (
                bar_chart(
                    "Termination reasons", reasons, [_Series("episodes", counts)], "reason", "episodes"
                ),
                "Why episodes ended.",
            )
        )
    return figures


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; color: #222;
       padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
figure { margin: 1.5rem 0; } figcaption { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { padding: 0.2rem 0.8rem; border-bottom: 1px solid #e5e5e5; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 0.85rem; margin: 0.2rem 0 1rem; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def write_report(store: Store, run_id: str, out: Path) -> int:
    """Write the HTML report of a curated run to ``out``; returns the number of plots.

    Args:
        store: An open store whose run has metrics (see :func:`~dramaturg.evaluators.ensure_curated`).
        run_id: The run.
        out: The HTML file to write (replaced if it exists).

    Returns:
        How many plots the report holds.
    """
    metrics = read_metrics(store, run_id)
    figures = _figures(store, run_id, metrics)
    created = store.sql("SELECT created_at, dramaturg_version FROM runs WHERE run_id = ?", [run_id])
    created_at, version = created[0] if created else ("?", "?")
    figure_html = "".join(
        f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>" for svg, caption in figures
    )
    tables_html = "".join(_table_html(table) for table in stats_tables(metrics))
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dramaturg report: {_e(run_id)}</title><style>{_STYLE}</style></head>
<body>
<h1>dramaturg report: {_e(run_id)}</h1>
<p>Run created {_e(created_at)} with dramaturg {_e(version)}; report written {now}
from <code>{_e(store.path)}</code>.
Every number comes from the store's <code>metrics</code> table
(<code>SELECT * FROM metrics WHERE run_id = '{_e(run_id)}'</code>).</p>
<h2>Plots</h2>
{figure_html}
<h2>Stats</h2>
{tables_html}
</body></html>
"""
    out.write_text(document, encoding="utf-8")
    return len(figures)
