"""Role-play on a real model: how often generated turns flip roles, echo or leak meta-text.

Runs each built-in scenario for N episodes with every role on one OpenAI-compatible model
(by default the local Qwen2.5-Coder 1.5B of ../shared/local-llm), then reports, per speaker:

- **generated**: every turn the model wrote, before validation (first tries and regenerations),
  and the share with each problem — what a pipeline without the gate would have stored;
- **stored**: the turns that entered the dialogues, validated again — the gate's promise is 0;
- **baseline**: for the same user-turn contexts, one reply to the request as dramaturg built it
  before this change (the persona as "you", the assistant's lines unlabelled, a ``[Director]``
  note after them): the effect of the request design alone, on identical contexts.

Critique is off: this measures the performers, and keeps the bench to ~15 minutes on 2 cores.

Run by hand::

    ../shared/local-llm/serve.sh 1.5b /tmp/llm15
    python bench/roleplay.py --base-url "$(cat /tmp/llm15/base_url)" --model qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from dramaturg.evaluators import TurnContext, clean_turn, validate_turn

from dramaturg import RunConfig, Store, run
from dramaturg._model import GenerationParams, Message, ModelRequest
from dramaturg.backends import OpenAIBackend

SHOWN = ("role_flip", "echo", "meta", "copied_instruction", "invented_fact", "empty", "truncated")

LEGACY_HEADER = "You are role-playing a USER who is talking to an AI assistant."


def legacy_request(
    spec: dict[str, object], history: list[tuple[str, str]], instruction: str
) -> tuple[str, list]:
    """The user-simulator request before the change: second person, unlabelled lines."""
    facts = spec["hidden_facts"]
    assert isinstance(facts, dict)
    system = "\n".join(
        [
            LEGACY_HEADER,
            "Stay in character as the user at all times: never answer as the assistant, never offer help.",
            f"Persona: {spec['persona']}",
            f"Traits: {', '.join(spec['traits']) or 'none in particular'}",  # type: ignore[arg-type]
            f"Mood: {spec['mood']}",
            f"Your goal: {spec['goal']}",
            "Facts only you know (reveal one only when the assistant asks for it):",
            *(f"- {k}: {v}" for k, v in facts.items()),
            "",
            "Write one short message at a time, in the first person, as this person would type it.",
            "A [Director] note after the assistant's message tells you what to do now; "
            "follow it without mentioning it.",
            "If your goal is met or you want to stop, end your message with <<END>>.",
        ]
    )
    note = f"[Director] What to do now: {instruction}"
    messages: list[Message] = []
    pending = "(The conversation begins.)"
    for role, text in history:
        if role == "assistant":
            pending = text
        else:
            messages += [Message("user", pending), Message("assistant", text)]
    messages.append(Message("user", f"{pending}\n\n{note}"))
    return system, messages


def context(
    spec: dict[str, object], role: str, before: tuple[tuple[str, str], ...], instruction: str = ""
) -> TurnContext:
    if role == "assistant":
        return TurnContext("assistant", before)
    facts = spec["hidden_facts"]
    variables = spec["variables"]
    assert isinstance(facts, dict) and isinstance(variables, dict)
    given = " ".join([str(spec["goal"]), *(str(v) for v in variables.values())])
    return TurnContext("user", before, str(spec["persona"]), tuple(facts.items()), given, instruction)


def rates(counts: Counter[str], total: int) -> str:
    cells = [f"{(counts[r] / total if total else 0):6.1%}" for r in SHOWN]
    return f"{total:>6} " + " ".join(f"{c:>9}" for c in cells)


async def baseline(db: Path, base_url: str, model: str, seed: int) -> tuple[Counter[str], int]:
    """One legacy-format reply per stored user-turn context, validated the same way."""
    backend = OpenAIBackend(base_url=base_url)
    counts: Counter[str] = Counter()
    total = 0
    with Store.open(db, read_only=True) as store:
        episodes = store.sql("SELECT episode_id, spec FROM episodes ORDER BY episode_id")
        turns = store.sql("SELECT episode_id, idx, role, content, stage FROM turns ORDER BY episode_id, idx")
        scenarios = {name: json.loads(d) for name, d in store.sql("SELECT name, definition FROM scenarios")}
    by_episode: dict[str, list[tuple[int, str, str, str]]] = {}
    for episode_id, idx, role, content, stage in turns:
        by_episode.setdefault(episode_id, []).append((idx, role, content, stage))
    try:
        for episode_id, spec_json in episodes:
            spec = json.loads(spec_json)
            stages = {s["name"]: s["instruction"] for s in scenarios[spec["scenario"]]["stages"]}
            history: list[tuple[str, str]] = []
            for _idx, role, content, stage in by_episode.get(episode_id, []):
                if role == "user":
                    instruction = _fill(stages[stage], spec)
                    system, messages = legacy_request(spec, history, instruction)
                    request = ModelRequest(
                        backend="openai",
                        model=model,
                        role="user_simulator",
                        system=system,
                        messages=tuple(messages),
                        params=GenerationParams(temperature=0.8, max_tokens=200),
                        seed=seed + len(history),
                    )
                    reply = await backend.complete(request)
                    text = clean_turn(reply.text.replace("<<END>>", ""), spec["persona"])
                    problems = validate_turn(text, context(spec, "user", tuple(history), instruction))
                    counts.update({p.reason for p in problems})
                    total += 1
                history.append((role, content))
    finally:
        await backend.aclose()
    return counts, total


def _fill(template: str, spec: dict[str, object]) -> str:
    values = {**spec["variables"], **{k.replace(" ", "_"): v for k, v in spec["hidden_facts"].items()}}  # type: ignore[dict-item]
    try:
        return template.format(**values)
    except (KeyError, IndexError):
        return template


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None, help="keep the store here (default: a temp file)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="report on the store at --db without running anything"
    )
    args = parser.parse_args()
    if not args.base_url:
        parser.error("--base-url (or OPENAI_BASE_URL) is required")
    db = args.db or Path(tempfile.mkdtemp()) / "roleplay.duckdb"
    config = RunConfig(
        scenarios=["support-refund", "math-tutor"],
        episodes=args.episodes,
        model=f"openai:{args.model}",
        base_url=args.base_url,
        critique=False,
        best_of_n=0,
        max_tokens=200,
        concurrency=2,
        timeout_s=600,
        run_id="roleplay",
    )
    if args.report_only:
        summary = None
    else:
        summary = asyncio.run(run(config, db))
        print(f"model {args.model}, {summary.done} episodes ({args.episodes} per built-in), store {db}")
    with Store.open(db, read_only=True) as store:
        rejected = store.sql(
            "SELECT r.kind, r.episode_id, r.turn_idx, r.content, e.spec "
            "FROM turn_rejections r JOIN episodes e USING (episode_id)"
        )
        stored = store.sql(
            "SELECT t.episode_id, t.role, t.content, e.spec FROM turns t JOIN episodes e USING (episode_id) "
            "ORDER BY t.episode_id, t.idx"
        )
        endings = dict(store.sql("SELECT termination_reason, count(*) FROM episodes GROUP BY ALL"))
        definitions = {name: json.loads(d) for name, d in store.sql("SELECT name, definition FROM scenarios")}
    header = f"{'':<22}{'turns':>6} " + " ".join(f"{r[:9]:>9}" for r in SHOWN)
    print(header)
    for speaker in ("user", "assistant"):
        kept = [(e, c, s) for e, r, c, s in stored if r == speaker]
        # Rejected attempts are validated again with this validator (not read from the rows), so
        # the rates are the shipped validator's even on a store made by an earlier version.
        generated: Counter[str] = Counter()
        bad = 0
        dialogue: dict[str, list[tuple[str, str]]] = {}
        for episode_id, role, content, _spec in stored:
            dialogue.setdefault(episode_id, []).append((role, content))
        for kind, episode_id, turn_idx, content, spec_json in rejected:
            if kind != speaker:
                continue
            spec = json.loads(spec_json)
            before = tuple(dialogue.get(episode_id, [])[:turn_idx])
            instruction = ""
            if speaker == "user":
                stages = {st["name"]: st["instruction"] for st in definitions[spec["scenario"]]["stages"]}
                instruction = _fill(stages[spec["stage_path"][turn_idx // 2]], spec)
            text = clean_turn(content, spec["persona"])
            problems = {p.reason for p in validate_turn(text, context(spec, speaker, before, instruction))}
            bad += bool(problems)
            generated.update(problems)
        print(f"{speaker + ' generated':<22}" + rates(generated, len(kept) + bad))
        after: Counter[str] = Counter()
        history: dict[str, list[tuple[str, str]]] = {}
        for episode_id, role, content, spec_json in stored:
            spec = json.loads(spec_json)
            before = tuple(history.setdefault(episode_id, []))
            if role == speaker:
                after.update({p.reason for p in validate_turn(content, context(spec, role, before))})
            history[episode_id].append((role, content))
        print(f"{speaker + ' stored':<22}" + rates(after, len(kept)))
    if not (args.no_baseline or args.report_only):
        counts, total = asyncio.run(baseline(db, args.base_url, args.model, seed=7))
        print(f"{'user, old request':<22}" + rates(counts, total))
    print(f"episodes by ending: {dict(sorted((str(k), v) for k, v in endings.items()))}")
    if summary is not None:
        print(f"calls {summary.calls.calls}, elapsed {summary.elapsed_s:.0f} s")


if __name__ == "__main__":
    main()
