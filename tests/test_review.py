"""Critique, revision, verification and pairs: failures are recorded, never passed on as data."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

import pytest

from dramaturg import FunctionBackend, ModelRequest, ModelResponse, RunConfig, SimBackend, Store, run

GARBAGE = "Sure! I think this reply is pretty good overall, maybe a seven?"


def _sim_except(*roles: str) -> tuple[FunctionBackend, Counter[str]]:
    """The sim for every role but ``roles``, which answer garbage. Counts requests per role."""
    sim = SimBackend()
    seen: Counter[str] = Counter()

    def answer(request: ModelRequest) -> str | Awaitable[ModelResponse]:
        seen[request.role] += 1
        if request.role in roles:
            return GARBAGE
        return sim.complete(request)

    return FunctionBackend(answer), seen


def _run(tmp_path: Path, backend: FunctionBackend, **config: object) -> Store:
    settings = RunConfig(scenarios=["support-refund"], episodes=3, run_id="r", **config)  # type: ignore[arg-type]
    asyncio.run(run(settings, tmp_path / "x.duckdb", backends={"sim": backend}))
    return Store.open(tmp_path / "x.duckdb")


def test_a_critic_that_fails_once_is_asked_again_and_its_second_reply_kept(tmp_path: Path) -> None:
    sim = SimBackend()

    def answer(request: ModelRequest) -> str | Awaitable[ModelResponse]:
        # The first try at each critique is garbage; the re-ask ("Your reply could not be used")
        # gets a real one.
        if request.role == "critic" and len(request.messages) == 1:
            return GARBAGE
        return sim.complete(request)

    store = _run(tmp_path, FunctionBackend(answer), best_of_n=0)
    critiques = store.sql("SELECT status, attempts, raw FROM critiques")
    done = store.sql("SELECT count(*) FROM episodes WHERE status = 'done'")[0][0]
    store.close()
    assert done == 3  # half the critic's replies fail: regenerated, not fatal
    assert critiques and all(row[:2] == ("ok", 2) for row in critiques)
    assert all(row[2] != GARBAGE for row in critiques)


def test_a_critic_answering_in_prose_stops_the_run_loudly_then_resumes_with_a_working_one(
    tmp_path: Path,
) -> None:
    backend, seen = _sim_except("critic")
    db = tmp_path / "x.duckdb"
    settings = RunConfig(scenarios=["support-refund"], episodes=3, run_id="r", best_of_n=0)
    summary = asyncio.run(run(settings, db, backends={"sim": backend}))
    assert summary.stopped is not None
    assert "critic (sim:sim)" in summary.stopped and GARBAGE[:30] in summary.stopped
    # Within 20 critiques (each asked 3 times): 12 failures trip it, plus those in flight.
    assert seen["critic"] <= 20
    with Store.open(db) as store:
        assert store.sql("SELECT DISTINCT status FROM episodes") == [("running",)]
        health = summary.health
        assert health is not None
        assert health.failures[("critic", "sim:sim", "parse_failed")] == seen["critic"]
    # The same run, with a critic model that answers: it finishes, replaying the rest.
    fixed = SimBackend()
    resumed = asyncio.run(run(settings.with_changes(critic_model="sim:fixed"), db, backends={"sim": fixed}))
    assert resumed.stopped is None and resumed.done == 3
    assert resumed.calls.cache_hits > 0  # the user and assistant turns came from the cache
    assert not resumed.failed_without_pairs


def test_garbage_judge_stops_the_run_naming_the_verifier(tmp_path: Path) -> None:
    backend, _ = _sim_except("verifier")
    settings = RunConfig(scenarios=["support-refund"], episodes=3, run_id="r", sim_mistake_rate=0.6)
    summary = asyncio.run(run(settings, tmp_path / "x.duckdb", backends={"sim": backend}))
    assert summary.stopped is not None and "verifier (sim:sim)" in summary.stopped
    assert summary.pairs == 0
    assert summary.failed_without_pairs


def test_pairs_are_judged_in_both_orders_and_follow_the_prompt_format(tmp_path: Path) -> None:
    store = _run(tmp_path, FunctionBackend(SimBackend().complete), sim_mistake_rate=0.5)
    pairs = store.sql("SELECT prompt, chosen, rejected, judge_agreement, judgment_ids FROM preference_pairs")
    orientations = store.sql(
        "SELECT episode_id, turn_idx, source, list(orientation ORDER BY orientation) "
        "FROM judgments GROUP BY ALL"
    )
    store.close()
    assert pairs
    for prompt_json, chosen, rejected, agreement, judgment_ids in pairs:
        prompt = json.loads(prompt_json)
        assert prompt[0]["role"] == "system" and prompt[-1]["role"] == "user"
        roles = [m["role"] for m in prompt[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        assert chosen != rejected and agreement
        assert len(json.loads(judgment_ids)) == 2
    assert all(order == ["ab", "ba"] for *_, order in orientations)


def test_dialogue_continues_from_the_revision(tmp_path: Path) -> None:
    requests: list[ModelRequest] = []
    sim = SimBackend()

    def record(request: ModelRequest) -> Awaitable[ModelResponse]:
        requests.append(request)
        return sim.complete(request)

    store = _run(tmp_path, FunctionBackend(record), sim_mistake_rate=0.8, best_of_n=0)
    revisions = store.sql(
        "SELECT episode_id, turn_idx, original, revised FROM revisions WHERE original <> revised"
    )
    turns = dict(
        ((episode, idx), content)
        for episode, idx, content in store.sql("SELECT episode_id, idx, content FROM turns")
    )
    store.close()
    assert revisions
    dialogue_of: dict[str, list[str]] = {}
    for (episode, _), content in sorted(turns.items()):
        dialogue_of.setdefault(episode, []).append(content)
    for episode, idx, original, revised in revisions:
        assert turns[(episode, idx)] == revised  # the stored dialogue holds the revision
        before = dialogue_of[episode][:idx]
        # Later requests of this conversation (same history up to the turn, then more), read
        # as the dialogue (tool calls and results are not turns); the reviser sees its draft.
        spoken = [[m for m in r.messages if m.role != "tool" and not m.tool_calls] for r in requests]
        later = [
            messages
            for messages in spoken
            if [m.content for m in messages[:idx]] == before
            and len(messages) > idx + 1
            and not any(m.content.startswith("[Revision request]") for m in messages)
        ]
        assert later, "the conversation went on after the revision"
        for messages in later:
            seen = messages[idx].content
            assert original != seen  # the assistant's own context holds the revision
        user_views = [m.content for r in requests if r.role == "user_simulator" for m in r.messages]
        assert not any(original in text for text in user_views)


@pytest.mark.slow
def test_offline_pair_correctness_is_measured_and_high(tmp_path: Path) -> None:
    config = RunConfig(scenarios=["math-tutor", "support-refund"], episodes=10, run_id="r")
    summary = asyncio.run(run(config, tmp_path / "x.duckdb"))
    report = summary.pair_report
    assert report is not None and report.correctness is not None
    # support-refund uses tools, so it makes revision pairs only (no best-of-n).
    assert sum(report.pairs.values()) >= 15
    assert report.correctness >= 0.95
    with Store.open(tmp_path / "x.duckdb") as store:
        stored = store.sql("SELECT value FROM metrics WHERE name = 'sim_pair_correctness'")[0][0]
    assert stored == pytest.approx(report.correctness)
