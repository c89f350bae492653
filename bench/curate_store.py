"""Store curation benchmark: ``dramaturg.evaluators.curate`` on runs of 10k and 100k dialogues.

Like bench/curate.py, this times what `dramaturg stats` runs on a store (dedup of dialogues and
pairs, the filters, and every metric, SQL included), but on runs with every table a real run
fills (critiques, judgments, checks, pairs) rather than dialogues only. The store is built in
memory, so it suits sizes up to ~100k; bench/curate.py streams to 1M and beyond.

A small real run of the offline sim backend is the template. Each benchmark episode copies a
template episode with all its rows (turns, critiques, revisions, judgments, checks, pairs,
pair outcomes) and rewrites every text with its own seeded word substitutions (~20 % of the
words), applied consistently, so a pair's chosen text still equals the judged text. 2 % of
the episodes repeat an earlier episode exactly and 3 % repeat one with a few words changed.

    python bench/curate_store.py                          # 10k and 100k, curation in fresh processes
    python bench/curate_store.py --sizes 2000 --workdir /tmp/b   # stores kept there and reused

Acceptance (issue 4): 100k dialogues in under 2 minutes and 4 GiB, growing about linearly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
from dramaturg.evaluators import curate
from dramaturg.memory import EPISODE_TABLES, Store

import dramaturg

__all__ = ["CurationBench", "build_store", "main"]

SIZES = (10_000, 100_000)
TEMPLATE_EPISODES = 25  # per scenario
SEED = 11
_EXACT_SHARE = 0.02
_NEAR_SHARE = 0.03
_SUBSTITUTE = 0.2

# Per table: its columns, which hold text to rewrite, and which hold ids to make unique.
_TEXT = {
    "turns": ("content",),
    "revisions": ("original", "revised"),
    "judgments": ("first_text", "second_text"),
    "preference_pairs": ("chosen", "rejected"),
}
_IDS = {
    "critiques": ("critique_id",),
    "revisions": ("revision_id", "critique_id", "revision_critique_id"),
    "judgments": ("judgment_id",),
    "preference_pairs": ("pair_id",),
    "pair_outcomes": ("pair_id",),
}
_TABLES = EPISODE_TABLES
_WORD = re.compile(r"\S+")


def _template(workdir: Path) -> Path:
    path = workdir / "template.duckdb"
    if not path.exists():
        config = dramaturg.RunConfig(
            scenarios=["math-tutor", "support-refund"],
            episodes=TEMPLATE_EPISODES,
            run_id="template",
            seed=SEED,
        )
        asyncio.run(dramaturg.run(config, path))
    return path


class _Rewriter:
    """One episode's text rewriting: the same input text always gets the same output."""

    def __init__(self, seed: int, vocabulary: Sequence[str], extra_edits: int = 0):
        self._seed = seed
        self._vocabulary = vocabulary
        self._extra = extra_edits
        self._done: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if text not in self._done:
            rng = random.Random(f"{self._seed}:{text}")
            words = _WORD.findall(text)
            out = [rng.choice(self._vocabulary) if rng.random() < _SUBSTITUTE else w for w in words]
            # A near copy changes a few words of its first text only (the opening user turn):
            # a few words in a whole dialogue, like an LLM paraphrasing one line.
            if self._extra and out and not self._done:
                edit = random.Random(f"near:{self._seed}:{text}")
                for _ in range(self._extra):
                    out[edit.randrange(len(out))] = edit.choice(self._vocabulary)
            self._done[text] = " ".join(out)
        return self._done[text]


def build_store(path: Path, size: int, template: Path) -> str:
    """Copy ``template`` to ``path`` and add a run of ``size`` episodes; returns its run id."""
    shutil.copy(template, path)
    run_id = f"bench-{size}"
    con = duckdb.connect(str(path))
    rows = {
        table: con.execute(
            f"SELECT * FROM {table} WHERE episode_id IN (SELECT episode_id FROM episodes "
            f"WHERE run_id = 'template' AND status = 'done') ORDER BY ALL"
        ).fetchall()
        for table in _TABLES
    }
    columns = {
        table: [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description] for table in _TABLES
    }
    by_episode: dict[str, dict[str, list[tuple[object, ...]]]] = {}
    for table, table_rows in rows.items():
        key = columns[table].index("episode_id")
        for row in table_rows:
            by_episode.setdefault(str(row[key]), {}).setdefault(table, []).append(row)
    templates = sorted(by_episode)
    vocabulary = sorted(
        {w for (text,) in con.execute("SELECT content FROM turns").fetchall() for w in _WORD.findall(text)}
    )
    vocabulary += [f"w{i}" for i in range(20_000)]

    rng = random.Random(SEED)
    out: dict[str, list[list[object]]] = {table: [] for table in _TABLES}
    seeds: list[int] = []
    for i in range(size):
        roll = rng.random()
        if seeds and roll < _EXACT_SHARE:
            seed, extra = seeds[rng.randrange(len(seeds))], 0
        elif seeds and roll < _EXACT_SHARE + _NEAR_SHARE:
            seed, extra = seeds[rng.randrange(len(seeds))], 3
        else:
            seed, extra = i, 0
        seeds.append(seed)
        source = templates[seed % len(templates)]
        scenario = source.split("/")[1]
        episode_id = f"{run_id}/{scenario}/{i:06d}"
        rewrite = _Rewriter(seed, vocabulary, extra)
        for table, table_rows in by_episode[source].items():
            names = columns[table]
            for row in table_rows:
                values = dict(zip(names, row, strict=True))
                values["episode_id"] = episode_id
                if "run_id" in values:
                    values["run_id"] = run_id
                if table == "episodes":
                    values.update(idx=i, seed=i)
                for name in _TEXT.get(table, ()):
                    values[name] = rewrite(str(values[name]))
                for name in _IDS.get(table, ()):
                    if values[name] is not None:
                        values[name] = f"{values[name]}~{i}"
                if table == "preference_pairs":
                    prompt = json.loads(str(values["prompt"]))
                    values["prompt"] = json.dumps([{**m, "content": rewrite(m["content"])} for m in prompt])
                    for name in ("judgment_ids", "critique_ids"):
                        values[name] = json.dumps([f"{x}~{i}" for x in json.loads(str(values[name]))])
                out[table].append([values[name] for name in names])
    con.execute(
        "INSERT INTO runs SELECT ?, created_at, seed, config, dramaturg_version FROM runs "
        "WHERE run_id = 'template'",
        [run_id],
    )
    con.execute(
        "INSERT INTO scenarios SELECT ?, name, source, definition FROM scenarios WHERE run_id = 'template'",
        [run_id],
    )
    for table in _TABLES:
        names = columns[table]
        types = [
            t
            for (t,) in con.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]
        unnests = ", ".join(f"unnest(${k + 1}::{t}[])" for k, t in enumerate(types))
        data = [[row[k] for row in out[table]] for k in range(len(names))]
        con.execute(f"INSERT INTO {table} SELECT {unnests}", data)
    con.close()
    return run_id


@dataclass(frozen=True)
class CurationBench:
    """One curation of one run; times in seconds, memory in MiB."""

    size: int
    turns: int
    pairs: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    timings: dict[str, float]
    cpu_timings: dict[str, float]
    dialogue_duplicates: int
    pair_duplicates: int


def _curate_here(path: Path, run_id: str) -> CurationBench:
    store = Store.open(path)
    cpu = time.process_time()
    result = curate(store, run_id)
    cpu_s = time.process_time() - cpu
    turns = store.sql("SELECT count(*) FROM turns WHERE episode_id LIKE ? || '/%'", [run_id])[0][0]
    store.close()
    return CurationBench(
        size=result.dialogues,
        turns=turns,
        pairs=result.pairs,
        wall_s=result.elapsed_s,
        cpu_s=cpu_s,
        peak_rss_mib=_peak_rss_mib(),
        timings={k: round(v, 2) for k, v in result.timings.items()},
        cpu_timings={k: round(v, 2) for k, v in result.cpu_timings.items()},
        dialogue_duplicates=sum(n for (kind, _), n in result.duplicates.items() if kind == "dialogue"),
        pair_duplicates=sum(n for (kind, _), n in result.duplicates.items() if kind == "pair"),
    )


def _peak_rss_mib() -> float:
    """Peak resident memory of this process.

    On Linux, VmHWM: ru_maxrss survives exec, so a child started from a parent that built a
    100k-episode store in memory would report the parent's peak, not its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _curate_child(path: Path, run_id: str) -> CurationBench:
    """Curate in a fresh interpreter, so its peak memory is that size's alone."""
    completed = subprocess.run(
        [sys.executable, __file__, "--curate", str(path), run_id], capture_output=True, text=True, check=True
    )
    return CurationBench(**json.loads(completed.stdout))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--workdir", type=Path, default=None, help="Keep stores here (default: a temp folder)."
    )
    parser.add_argument("--curate", nargs=2, metavar=("DB", "RUN_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.curate:
        print(json.dumps(asdict(_curate_here(Path(args.curate[0]), args.curate[1]))))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dramaturg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    template = _template(workdir)
    results = []
    for size in args.sizes:
        path = workdir / f"bench-{size}.duckdb"
        started = time.perf_counter()
        # A store left in --workdir by an earlier invocation is reused: building is the slow part.
        reused = path.exists()
        run_id = f"bench-{size}" if reused else build_store(path, size, template)
        built = "store reused" if reused else f"built in {time.perf_counter() - started:.1f} s"
        result = _curate_child(path, run_id)
        results.append(result)
        print(
            f"{size:>7} dialogues {result.turns:>9,} turns {result.pairs:>7,} pairs  "
            f"{built}  curated in {result.wall_s:6.1f} s wall / {result.cpu_s:6.1f} s CPU  "
            f"peak {result.peak_rss_mib:6.0f} MiB  "
            f"dups {result.dialogue_duplicates} dialogues / {result.pair_duplicates} pairs",
            flush=True,
        )
        steps = ", ".join(f"{k} {v:.1f} s / {result.cpu_timings[k]:.1f} s" for k, v in result.timings.items())
        print(f"{'':>7} steps (wall / CPU): {steps}", flush=True)
    if len(results) >= 2:
        first, last = results[0], results[-1]
        print(
            f"growth {first.size} -> {last.size} ({last.size / first.size:.0f}x): "
            f"wall {last.wall_s / first.wall_s:.1f}x, CPU {last.cpu_s / first.cpu_s:.1f}x, "
            f"peak memory {last.peak_rss_mib / first.peak_rss_mib:.1f}x"
        )


if __name__ == "__main__":
    main()
