"""The seed methods of the synthetic-dialogue literature as recipes (issue 11), on the sim backend.

Self-Refine (rounds of critique and revision), UltraFeedback (best-of-n across models),
Constitutional AI (principles sampled per critique), Self-Rewarding (one model in every role),
and the openings: Baize's seed questions, UltraChat's topics, Evol-Instruct's evolutions,
continued real conversations and SPIN over the shipped sample.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dramaturg.scenarios import SAMPLE_DIALOGUES, read_dialogues

from dramaturg import (
    FunctionBackend,
    ModelOptions,
    ModelRequest,
    ReviewOptions,
    RunConfig,
    SimBackend,
    run,
)
from dramaturg._markers import (
    CRITIC_HEADER,
    EVOL_JUDGE_HEADER,
    JUDGE_HEADER,
    RESPONSE_B_OPEN,
    REVISION_REQUEST,
    RUBRIC_LABEL,
)
from tests.conftest import REPO, query

# Words for the test reviser's versions: every version is new text, so none is an echo.
WORDS = [
    *("balance", "equation", "coefficient", "constant", "subtract", "divide", "isolate", "check"),
    *("substitute", "side", "value", "step", "operation", "undo", "first", "next", "compare"),
    *("exact", "term", "number", "result", "inverse"),
]


def new_version(n: int) -> str:
    words = random.Random(n).sample(WORDS, 10)
    return f"Revision step {n}: {' '.join(words)}."


def rubric(critic_prompt: str) -> list[str]:
    lines = critic_prompt.split(RUBRIC_LABEL, 1)[1].splitlines()[1:]
    return [line[2:] for line in itertools.takewhile(lambda line: line.startswith("- "), lines)]


def critic_scores_below_until(rounds: int) -> tuple[FunctionBackend, list[int]]:
    """The sim, with a critic that scores a turn's first ``rounds`` versions 4 and later ones 9."""
    sim = SimBackend()
    seen: dict[str, int] = {}  # critiques so far of each turn (by episode seed and history)
    versions: list[int] = []

    def answer(request: ModelRequest) -> Any:
        if request.messages and request.messages[-1].content.startswith(REVISION_REQUEST):
            versions.append(-1)  # a reviser that writes a new version each time it is asked
            return new_version(len(versions))
        if request.system.startswith(JUDGE_HEADER):  # a judge that prefers any revision
            first = request.messages[-1].content.split(RESPONSE_B_OPEN)[0]
            winner = "A" if "Revision step" in first else "B"
            return json.dumps({"reason": "the revision is clearer", "winner": winner})
        if not request.system.startswith(CRITIC_HEADER):
            return sim.complete(request)
        asked = request.messages[-1].content
        conversation = f"{request.seed}:{asked.split('Reply under review:', 1)[0]}"
        version = seen.get(conversation, 0)
        seen[conversation] = version + 1
        versions.append(version)
        score = 4 if version < rounds else 9
        scores = {criterion: score for criterion in rubric(request.system)}
        feedback = f"- say more (version {version})" if score < 7 else "- nothing to change"
        return json.dumps({"feedback": feedback, "scores": scores, "overall": score})

    return FunctionBackend(answer), versions


def test_self_refine_revises_until_the_critic_is_satisfied(tmp_path: Path) -> None:
    backend, _ = critic_scores_below_until(3)  # the original and two revisions score 4
    config = RunConfig(
        scenarios=["math-tutor"],
        episodes=2,
        review=ReviewOptions(best_of_n=0, refine_rounds=4),
        sim={"mistake_rate": 0.0},
    )
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": backend}))
    assert summary.done == 2
    db = tmp_path / "x.duckdb"
    rounds = query(db, "SELECT episode_id, turn_idx, max(round) FROM revisions GROUP BY ALL")
    assert rounds and {r for _, _, r in rounds} == {3}  # stopped as soon as a version scored 9
    # Each round revises the round before it; the pair is the first version against the last.
    chain = query(
        db,
        "SELECT episode_id, turn_idx, round, original, revised FROM revisions ORDER BY ALL",
    )
    by_turn: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for episode, turn, _, original, revised in chain:
        by_turn.setdefault((episode, turn), []).append((original, revised))
    for steps in by_turn.values():
        assert all(steps[i][1] == steps[i + 1][0] for i in range(len(steps) - 1))
    pairs = query(db, "SELECT episode_id, turn_idx, chosen, rejected FROM preference_pairs")
    assert pairs
    for episode, turn, chosen, rejected in pairs:
        steps = by_turn[(episode, turn)]
        assert (rejected, chosen) == (steps[0][0], steps[-1][1])
    # The dialogue continues with the final version, and only its checks stand for the turn.
    final = query(
        db,
        "SELECT t.content FROM turns t JOIN preference_pairs p USING (episode_id) WHERE t.idx = p.turn_idx",
    )
    assert {text for (text,) in final} == {chosen for _, _, chosen, _ in pairs}


def test_one_round_is_the_default_and_stops_there(tmp_path: Path) -> None:
    backend, _ = critic_scores_below_until(10)  # never satisfied
    config = RunConfig(scenarios=["math-tutor"], episodes=1, review=ReviewOptions(best_of_n=0))
    asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": backend}))
    (most,) = query(tmp_path / "x.duckdb", "SELECT max(round) FROM revisions")[0]
    assert most == 1


def test_ultrafeedback_takes_one_candidate_from_each_model(tmp_path: Path, cli: Any) -> None:
    db = tmp_path / "x.duckdb"
    result = cli(
        "run", "math-tutor", "-n", "4", "--candidate-models", "sim:alpha,sim:beta,sim:gamma", "--db", db
    )
    assert result.exit_code == 0, result.output
    models = dict(
        query(
            db, "SELECT model, count(*) FROM llm_calls WHERE role = 'assistant' AND model <> 'sim' GROUP BY 1"
        )
    )
    assert models == {"alpha": 4, "beta": 4, "gamma": 4}  # one per episode's best-of-n turn
    (candidates,) = query(db, "SELECT count(*) FROM critiques WHERE target = 'candidate'")[0]
    assert candidates == 4 * 4  # the assistant's own reply and one from each model, all critiqued
    provenance = query(
        db,
        "SELECT c.model, r.model FROM preference_pairs p JOIN llm_calls c ON c.call_id = p.chosen_call_id "
        "JOIN llm_calls r ON r.call_id = p.rejected_call_id WHERE p.source = 'best_of_n'",
    )
    assert provenance  # each side of a pair names the model that wrote it
    stored = json.loads(query(db, "SELECT config FROM runs")[0][0])
    assert stored["models"]["candidate_models"] == ["sim:alpha", "sim:beta", "sim:gamma"]


def test_constitutional_ai_samples_principles_per_critique(tmp_path: Path) -> None:
    constitution = [f"Principle {i}: rule number {i} must hold." for i in range(12)]
    scenario = tmp_path / "cai.py"
    scenario.write_text(
        "from dramaturg.scenarios import load_scenario\n"
        "base = load_scenario('math-tutor').scenario\n"
        f"scenario = base.model_copy(update={{'name': 'cai', 'principles': {constitution!r}}})\n"
    )
    shown: list[set[str]] = []
    sim = SimBackend()

    def answer(request: ModelRequest) -> Any:
        if request.system.startswith(CRITIC_HEADER):
            shown.append(set(re.findall(r"Principle \d+", request.system)))
        return sim.complete(request)

    config = RunConfig(
        scenarios=[f"{scenario}:cai"],
        episodes=3,
        review=ReviewOptions(best_of_n=0, principles_per_critique=2),
    )
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(answer)}))
    assert summary.done == 3
    assert shown and all(len(principles) == 2 for principles in shown)
    assert len(set().union(*shown)) > 6  # different critiques judge by different principles


def test_self_rewarding_is_one_model_in_every_role(tmp_path: Path) -> None:
    config = RunConfig(scenarios=["math-tutor"], episodes=2, models=ModelOptions(model="sim:self"))
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert summary.done == 2 and summary.pairs > 0
    roles = query(tmp_path / "x.duckdb", "SELECT DISTINCT role, model FROM llm_calls ORDER BY 1")
    assert {role for role, _ in roles} >= {"user_simulator", "assistant", "critic", "verifier"}
    assert {model for _, model in roles} == {"self"}


# -- openings: seeds, topics, evolutions, imported conversations ---------------------------------

SEEDS = [
    "How do I keep basil alive indoors over the winter?",
    "What is the difference between a Roth IRA and a traditional IRA?",
    "How can I stop procrastinating on my thesis?",
]


def test_baize_opens_each_episode_with_its_seed_verbatim(tmp_path: Path) -> None:
    seeds = tmp_path / "questions.txt"
    seeds.write_text("\n".join(SEEDS) + "\n")
    summary = asyncio.run(run(RunConfig(scenarios=[f"baize:{seeds}"], episodes=3), tmp_path / "x.duckdb"))
    assert summary.done == 3
    first = query(
        tmp_path / "x.duckdb",
        "SELECT content, origin FROM turns WHERE idx = 0 ORDER BY episode_id",
    )
    assert first == [(seed, "seed") for seed in SEEDS]  # episode i opens with seed i
    (generated,) = query(
        tmp_path / "x.duckdb", "SELECT count(*) FROM turns WHERE idx > 0 AND origin = 'generated'"
    )[0]
    assert generated > 0


def test_ultrachat_expands_topics_into_requests_by_model(tmp_path: Path) -> None:
    config = RunConfig(scenarios=["x"], episodes=2).with_changes(
        scenarios=["ultrachat:" + str(_topics(tmp_path))]
    )
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert summary.done == 2 and summary.openings == {"topic": 2}
    rows = query(
        tmp_path / "x.duckdb",
        "SELECT o.source_text, o.opening, t.content, t.origin, o.call_ids FROM openings o "
        "JOIN turns t ON t.episode_id = o.episode_id AND t.idx = 0 ORDER BY o.episode_id",
    )
    assert [topic for topic, *_ in rows] == ["home composting", "learning the guitar as an adult"]
    for topic, opening, first, origin, calls in rows:
        assert first == opening and origin == "generated" and topic.split()[-1] in opening.lower()
        (call,) = json.loads(calls)  # the expansion is a model call, cached like any other
        assert query(tmp_path / "x.duckdb", "SELECT role FROM llm_calls WHERE call_id = ?", [call]) == [
            ("user_simulator",)
        ]


def _topics(folder: Path) -> Path:
    path = folder / "topics.txt"
    path.write_text("home composting\nlearning the guitar as an adult\n")
    return path


def test_evol_instruct_eliminates_evolutions_that_add_nothing(tmp_path: Path) -> None:
    from dramaturg.recipes import evol_instruct

    sim = SimBackend()

    def answer(request: ModelRequest) -> Any:
        if request.system.startswith(EVOL_JUDGE_HEADER):
            return json.dumps({"reason": "same request", "verdict": "no"})  # finds nothing harder
        return sim.complete(request)

    scenario = tmp_path / "evol.py"
    scenario.write_text(
        "from dramaturg.recipes import evol_instruct\n"
        f"scenario = evol_instruct({SEEDS!r}, operators=['add_constraints'])\n"
    )
    assert evol_instruct(SEEDS).opening is not None
    config = RunConfig(scenarios=[str(scenario)], episodes=12)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb", backends={"sim": FunctionBackend(answer)}))
    assert summary.done == 12
    rows = query(
        tmp_path / "x.duckdb",
        "SELECT o.source_text, o.opening, o.kept, o.drop_reason, t.content, t.origin FROM openings o "
        "JOIN turns t ON t.episode_id = o.episode_id AND t.idx = 0",
    )
    reasons = {reason for *_, reason, _, _ in rows}
    # The sim plants copied prompts and unchanged evolutions; the judge rejects the rest.
    assert reasons == {"copied_prompt", "unchanged", "not_harder"}
    for seed, opening, kept, _, first, origin in rows:
        assert not kept and opening == first == seed and origin == "seed"  # dropped: the seed opens
    assert sum(summary.eliminated.values()) == 12


def test_kept_evolutions_are_harder_and_open_the_episode(tmp_path: Path, cli: Any) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(SEEDS) + "\n")
    db = tmp_path / "x.duckdb"
    result = cli("run", f"evol:{seeds}", "-n", "12", "--db", db)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("openings")]
    kept = query(db, "SELECT source_text, opening, operator FROM openings WHERE kept")
    dropped = query(db, "SELECT count(*) FROM openings WHERE NOT kept")[0][0]
    assert kept and f"evolutions kept {len(kept)} of 12" in line
    assert dropped == 12 - len(kept)
    for seed, opening, operator in kept:
        assert opening != seed and operator
    first = dict(
        query(
            db, "SELECT o.opening, t.content FROM openings o JOIN turns t USING (episode_id) WHERE t.idx = 0"
        )
    )
    assert all(opening == content for opening, content in first.items())


def test_continued_dialogues_keep_their_imported_prefix(tmp_path: Path) -> None:
    dialogues = read_dialogues(SAMPLE_DIALOGUES)
    config = RunConfig(scenarios=[f"continue:{SAMPLE_DIALOGUES}"], episodes=len(dialogues), concurrency=4)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert summary.done == len(dialogues)
    db = tmp_path / "x.duckdb"
    ids = dict(query(db, "SELECT episode_id, source_id FROM openings"))
    turns: dict[str, list[tuple[str, str, str]]] = {}
    for episode, role, content, origin in query(
        db, "SELECT episode_id, role, content, origin FROM turns ORDER BY episode_id, idx"
    ):
        turns.setdefault(episode, []).append((role, content, origin))
    by_id = {d.id: d for d in dialogues}
    ends_on_user = 0
    for episode, stored in turns.items():
        real = by_id[ids[episode]]
        prefix = stored[: len(real.turns)]
        assert [(role, content) for role, content, _ in prefix] == list(real.turns)  # byte-identical
        assert {origin for *_, origin in prefix} == {"imported"}
        continued = stored[len(real.turns) :]
        assert continued and {origin for *_, origin in continued} == {"generated"}
        if real.turns[-1][0] == "user":
            ends_on_user += 1
            assert continued[0][0] == "assistant"  # the assistant answers the last real message
        else:
            assert continued[0][0] == "user"
    assert ends_on_user > 0
    # A conversation's own system message is the assistant's prompt.
    with_system = [d for d in dialogues if d.system]
    assert with_system


def test_spin_chooses_every_real_reply_over_the_models_own(tmp_path: Path) -> None:
    dialogues = read_dialogues(SAMPLE_DIALOGUES)
    config = RunConfig(scenarios=[f"spin:{SAMPLE_DIALOGUES}"], episodes=len(dialogues), concurrency=4)
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    assert summary.done == len(dialogues)
    db = tmp_path / "x.duckdb"
    ids = dict(query(db, "SELECT episode_id, source_id FROM openings"))
    real_replies = {
        (d.id, i): text
        for d in dialogues
        for i, (speaker, text) in enumerate(d.turns)
        if speaker == "assistant" and i > 0 and d.turns[i - 1][0] == "user"
    }
    pairs = query(
        db,
        "SELECT episode_id, turn_idx, chosen, rejected, chosen_call_id, rejected_call_id, judge_agreement "
        "FROM preference_pairs WHERE source = 'spin'",
    )
    outcomes = query(db, "SELECT outcome, count(*) FROM pair_outcomes WHERE source = 'spin' GROUP BY 1")
    assert sum(n for _, n in outcomes) == len(real_replies)  # every real reply was tried
    assert len(pairs) > len(real_replies) // 2
    for episode, turn, chosen, rejected, chosen_call, rejected_call, _ in pairs:
        assert chosen == real_replies[(ids[episode], turn)]  # byte-identical to the real reply
        assert chosen_call is None and rejected_call is not None and rejected != chosen
    # The imported turns are stored as such; the dialogue is the real one, not regenerated.
    (generated,) = query(db, "SELECT count(*) FROM turns WHERE origin <> 'imported'")[0]
    assert generated == 0


def test_a_recipe_on_a_missing_file_is_one_clear_error(cli: Any, tmp_path: Path) -> None:
    result = cli("run", "baize:nope.txt", "--db", tmp_path / "x.duckdb")
    assert result.exit_code == 2
    assert "baize: no such file: nope.txt" in result.output
    assert not (tmp_path / "x.duckdb").exists()


def test_persona_hub_covers_a_pool_from_a_file(tmp_path: Path) -> None:
    from dramaturg.recipes import baize, persona_hub

    pool = tmp_path / "personas.csv"
    pool.write_text(
        "name,description,traits\n"
        + "".join(f"Person {i},a resident of town {i},curious;patient\n" for i in range(12))
    )
    scenario = persona_hub(baize(SEEDS), pool)
    assert len(scenario.personas) == 12 and scenario.personas[0].description == "a resident of town 0"
    assert scenario.personas[0].goal == baize(SEEDS).personas[0].goal


# -- docs/recipes.md runs as written ---------------------------------------------------------------


def test_the_recipes_page_runs_as_written(tmp_path: Path) -> None:
    """Every block of docs/recipes.md, in order: python files written, bash blocks run; each
    command's output block holds lines the command really printed."""
    page = (REPO / "docs" / "recipes.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = ""
    checked = 0
    for language, body in blocks:
        if language == "python":
            name = body.splitlines()[0].removeprefix("# ").strip()
            (tmp_path / name).write_text(body)
        elif language == "bash":
            result = subprocess.run(
                ["bash", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, result.stdout + result.stderr
            printed = result.stdout
        elif language == "":
            for line in body.strip().splitlines():
                assert line in printed.splitlines(), (line, printed)
            checked += 1
    assert checked >= 4
