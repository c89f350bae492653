"""Curation benchmark: ``curate`` on a store of N synthetic dialogues, one fresh process per size.

Generates N support dialogues deterministically (six domains, one scenario each; sampled
turns and facts; ~200 words in ~10 turns) with planted duplicates (2 % exact copies with
cosmetic changes, 5 % near copies with 3-6 words substituted or deleted), and writes them to a
dramaturg store as one run, in chunks: no process ever holds the corpus. Then it curates the
run as `dramaturg stats` does (dedup, every filter and metric, written back), in a fresh
process whose peak memory and CPU time per step it reports, with the recall of the planted
duplicates. Each process is started by this small one, so ``ru_maxrss`` is the curation's own.

    python bench/curate.py                                # 100k and 1M: ~20 min on 2 cores
    python bench/curate.py --sizes 10000 100000 --workdir /tmp/b   # stores kept there, reused

Acceptance (issue 13): 1M dialogues curated under 2 GiB peak, CPU growth from 100k to 1M at
most 11x.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["Bench", "build_store", "generate", "main"]

SIZES = (100_000, 1_000_000)
SEED = 7
RUN_ID = "bench"
_CHUNK = 20_000  # dialogues generated and inserted at a time

_FIRST = (
    "Maria", "James", "Aisha", "Tomasz", "Chen", "Priya", "Lucas", "Fatima", "Noah", "Elena",
    "Kwame", "Sofia", "Hiroshi", "Grace", "Omar", "Ingrid", "Mateo", "Zara", "Ivan", "Leila",
)  # fmt: skip
_THINGS = (
    "wireless headphones", "standing desk", "espresso machine", "hiking backpack", "tent",
    "mechanical keyboard", "air purifier", "robot vacuum", "gaming monitor", "smart watch",
    "office chair", "desk lamp", "water filter", "stroller", "blender", "router", "printer",
)  # fmt: skip
_PLACES = (
    "Lisbon", "Denver", "Nairobi", "Osaka", "Toronto", "Krakow", "Austin", "Lyon", "Accra",
    "Porto", "Seattle", "Munich", "Dublin", "Quito", "Leeds", "Perth", "Oslo", "Cairo",
)  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FILLERS = ("really", "actually", "please", "just", "also", "quite", "very", "now", "still")


def _facts(rng: random.Random) -> dict[str, str]:
    return {
        "name": rng.choice(_FIRST),
        "thing": rng.choice(_THINGS),
        "place": rng.choice(_PLACES),
        "ref": f"{rng.choice('ABCDEFGHKMNPRSTX')}{rng.randrange(100_000, 999_999)}",
        "date": f"{rng.choice(_MONTHS)} {rng.randrange(1, 29)}",
        "amount": f"${rng.randrange(10, 2000)}.{rng.randrange(100):02d}",
        "count": str(rng.randrange(2, 30)),
        "time": f"{rng.randrange(6, 22)}:{rng.randrange(0, 60, 5):02d}",
    }


# Per domain: lines the user may say and lines the assistant may say; a dialogue samples a
# few of each, in random order, so dialogues of one domain are look-alikes, not copies.
_DOMAINS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        (
            "My order {ref} for the {thing} has not arrived and it was due on {date}.",
            "The tracking page for {ref} has not changed in {count} days, is it lost?",
            "Can you send the {thing} to my office in {place} instead of my home?",
            "I was charged {amount} twice for order {ref}, can you check that?",
            "If it does not come by {date} I would like a refund please.",
            "Is there any discount you can offer for the delay with the {thing}?",
            "The box arrived but the {thing} inside is damaged and will not turn on.",
            "Could you email me the invoice for {ref} with the {amount} total?",
        ),
        (
            "I am sorry about that, {name}. Order {ref} left our {place} warehouse on {date}.",
            "The carrier expects the {thing} within {count} business days.",
            "I have issued a refund of {amount}; it will show up in three to five days.",
            "A replacement {thing} ships today and should reach you by {date}.",
            "I added a note to {ref} so every agent can see our conversation.",
            "I can change the delivery address to {place} while the parcel is still with us.",
            "The duplicate charge of {amount} was reversed this morning.",
            "You will get a ten percent voucher for the trouble, {name}.",
        ),
    ),
    (
        (
            "My flight {ref} to {place} on {date} was cancelled, can you rebook me?",
            "Is there an earlier connection than the {time} departure?",
            "I need to travel with {count} kilograms of luggage, is that allowed?",
            "Can I get a refund of the {amount} fare instead of a new flight?",
            "Will my seat and meal preference carry over to the new booking?",
            "Do I need a visa for a short layover in {place}?",
            "My bag did not arrive in {place}, the tag number is {ref}.",
        ),
        (
            "I found a seat on the {time} flight to {place} on {date}, {name}.",
            "The change fee of {amount} is waived because we cancelled your flight.",
            "Your baggage allowance is {count} kilograms in the hold plus one cabin bag.",
            "I have filed a missing bag report under reference {ref}.",
            "A hotel voucher for {place} has been added to your booking.",
            "The refund of {amount} goes back to the card you paid with.",
            "You do not need a visa if you stay airside in {place}.",
        ),
    ),
    (
        (
            "Since the update my {thing} keeps restarting every {count} minutes.",
            "The app shows error {ref} when I try to log in.",
            "I already tried turning it off and on again, twice.",
            "How do I reset the {thing} to factory settings without losing my data?",
            "Is the {thing} still under warranty? I bought it on {date}.",
            "Can a technician come to {place} to look at it?",
            "The battery drains from full to empty in {count} hours now.",
        ),
        (
            "Thanks, {name}. Error {ref} usually means the login token expired.",
            "Please hold the power button for ten seconds, then wait for the light to turn blue.",
            "Your {thing} is under warranty until {date} next year.",
            "I booked a technician visit in {place} on {date} at {time}.",
            "Clearing the cache fixes the restart loop in most cases.",
            "A firmware patch that fixes the battery drain is available now.",
            "Your settings are backed up, so a reset will not lose any data.",
        ),
    ),
    (
        (
            "There is a payment of {amount} to a shop in {place} that I did not make.",
            "Please block my card, I think it was stolen on {date}.",
            "How long does a dispute usually take?",
            "Can I still pay my rent by transfer while the card is blocked?",
            "I want to raise my daily limit to {amount} for a few days.",
            "Why was my transfer {ref} rejected this morning?",
        ),
        (
            "I have blocked the card and opened dispute {ref} for the {amount} payment.",
            "A new card will arrive at your address within {count} days, {name}.",
            "Disputes are usually settled within {count} business days.",
            "Transfers keep working; only the card itself is blocked.",
            "Your daily limit is now {amount} until {date}.",
            "Transfer {ref} was held for a routine check and has now been released.",
        ),
    ),
    (
        (
            "I would like to book a table for {count} people on {date} at {time}.",
            "Do you have vegetarian options on the menu?",
            "Can we bring a birthday cake for one of the guests?",
            "Is there parking near the restaurant in {place}?",
            "We might be {count} minutes late, will you keep the table?",
            "Can I pay the {amount} deposit by card?",
        ),
        (
            "Your table for {count} on {date} at {time} is confirmed, {name}.",
            "Half of our menu is vegetarian and we can adapt most dishes.",
            "Of course, we will keep the cake in the fridge until dessert.",
            "There is a public car park two minutes from us in {place}.",
            "We hold tables for twenty minutes; just call us if you are running late.",
            "The deposit of {amount} can be paid by card; your reference is {ref}.",
        ),
    ),
    (
        (
            "I want to cancel my gym membership from {date}.",
            "Can I freeze the membership for {count} weeks instead?",
            "Why was I charged {amount} this month?",
            "Are there yoga classes at the {place} branch in the evening?",
            "Can my partner join on my contract?",
        ),
        (
            "Your membership ends on {date}; there is no cancellation fee, {name}.",
            "I can freeze it for {count} weeks starting next Monday.",
            "The {amount} includes the yearly maintenance fee, charged once.",
            "The {place} branch runs yoga at {time} on weekdays.",
            "A partner can join for half price; the reference is {ref}.",
        ),
    ),
)


_SCENARIOS = ("orders", "flights", "devices", "banking", "restaurant", "gym")

Turns = list[tuple[str, str]]


def _dialogue(rng: random.Random) -> tuple[str, Turns]:
    """A scenario and its turns, user and assistant alternating."""
    domain = rng.randrange(len(_DOMAINS))
    users, assistants = _DOMAINS[domain]
    facts = _facts(rng)
    turns: Turns = []
    for _ in range(rng.randrange(2, 9)):
        for role, pool in (("user", users), ("assistant", assistants)):
            said = rng.sample(pool, rng.randrange(1, 3))
            turns.append((role, " ".join(line.format(**facts) for line in said)))
    turns[0] = ("user", f"Hi, my name is {facts['name']}. {turns[0][1]}")
    turns[-1] = ("assistant", f"{turns[-1][1]} Is there anything else I can help with, {facts['name']}?")
    return _SCENARIOS[domain], turns


def _near_copy(turns: Turns, rng: random.Random) -> Turns:
    words = [content.split(" ") for _, content in turns]
    flat = [(t, k) for t, turn in enumerate(words) for k in range(len(turn))]
    for position in sorted(rng.sample(range(1, len(flat)), rng.randrange(3, 7)), reverse=True):
        t, k = flat[position]
        if rng.random() < 0.5 or len(words[t]) == 1:
            words[t][k] = rng.choice(_FILLERS)
        else:
            del words[t][k]
    return [(role, " ".join(turn)) for (role, _), turn in zip(turns, words, strict=True)]


def _exact_copy(turns: Turns, rng: random.Random) -> Turns:
    if rng.random() < 0.5:
        return [(role, content.upper()) for role, content in turns]
    return [(role, "  " + content.replace(" ", "  ") + "\n") for role, content in turns]


@dataclass(frozen=True)
class Planted:
    """Ground truth of the generated corpus: duplicate index → index of its source."""

    exact: dict[int, int]
    near: dict[int, int]


class _Corpus:
    """The corpus as recipes: 5 bytes per dialogue, every text regenerated on demand.

    Originals come from a seed of their own, so a copy regenerates its source instead of
    keeping it: generating N dialogues holds N recipes, not N texts.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.kind = bytearray()  # 0 original, 1 exact copy, 2 near copy
        self.source = array("i")
        self.originals = array("i")

    def turns(self, index: int) -> tuple[str, Turns]:
        kind, source = self.kind[index], self.source[index]
        if kind == 0:
            return _dialogue(random.Random(f"{self.seed}:{index}"))
        scenario, turns = self.turns(source)
        edit = random.Random(f"{self.seed}:copy:{index}")
        return scenario, _exact_copy(turns, edit) if kind == 1 else _near_copy(turns, edit)


def generate(size: int, seed: int = SEED) -> tuple[Iterator[tuple[int, str, Turns]], Planted]:
    """``size`` dialogues ``(index, scenario, turns)``, ~2 % exact and ~5 % near copies of earlier ones.

    Near copies are made of original dialogues only: a near copy of a near copy may fall
    below the threshold against the kept original, which would blur the recall figure. The
    ground truth fills in as the iterator is consumed.
    """
    corpus = _Corpus(seed)
    planted = Planted({}, {})

    def dialogues() -> Iterator[tuple[int, str, Turns]]:
        rng = random.Random(seed)
        for index in range(size):
            roll = rng.random()
            if index and roll < 0.02:
                corpus.kind.append(1)
                corpus.source.append(rng.randrange(index))
                planted.exact[index] = corpus.source[index]
            elif index and roll < 0.07:
                corpus.kind.append(2)
                corpus.source.append(corpus.originals[rng.randrange(len(corpus.originals))])
                planted.near[index] = corpus.source[index]
            else:
                corpus.kind.append(0)
                corpus.source.append(-1)
                corpus.originals.append(index)
            yield index, *corpus.turns(index)

    return dialogues(), planted


def _episode_id(index: int, scenario: str) -> str:
    return f"{RUN_ID}/{scenario}/{index:07d}"


def build_store(path: Path, size: int, seed: int = SEED) -> None:
    """Write a run of ``size`` generated dialogues to a new store, ``_CHUNK`` at a time.

    The planted duplicates go to ``<path>.planted.json``, as episode id → source episode id.
    """
    from dramaturg.memory import Store

    dialogues, planted = generate(size, seed)
    truth: dict[str, dict[str, str]] = {"exact": {}, "near": {}}
    now = datetime(2025, 1, 1)
    definition = json.dumps({"personas": [{"name": "customer"}], "stages": [{"name": "support"}]})
    episodes: tuple[list[object], ...] = ([], [], [], [])  # id, scenario, index, turns
    turns: tuple[list[object], ...] = ([], [], [], [])  # episode id, index, role, content
    with Store.open(path) as store:
        with store.transaction() as con:
            con.execute("INSERT INTO runs VALUES (?, ?, ?, '{}', 'bench')", [RUN_ID, now, seed])
            for scenario in _SCENARIOS:
                con.execute("INSERT INTO scenarios VALUES (?, ?, 'bench', ?)", [RUN_ID, scenario, definition])

        def flush() -> None:
            with store.transaction() as con:
                con.execute(
                    "INSERT INTO episodes (episode_id, run_id, scenario, idx, seed, status, "
                    "termination_reason, persona, spec, n_turns, role_flips, started_at, finished_at) "
                    "SELECT e, $1, s, i, i, 'done', 'user_ended', 'customer', '{}', n, 0, $2, $2 "
                    "FROM (SELECT unnest($3::VARCHAR[]) AS e, unnest($4::VARCHAR[]) AS s, "
                    "unnest($5::INTEGER[]) AS i, unnest($6::INTEGER[]) AS n)",
                    [RUN_ID, now, *episodes],
                )
                con.execute(
                    "INSERT INTO turns (episode_id, idx, role, content, stage) SELECT unnest($1::VARCHAR[]), "
                    "unnest($2::INTEGER[]), unnest($3::VARCHAR[]), unnest($4::VARCHAR[]), 'support'",
                    list(turns),
                )
            for column in (*episodes, *turns):
                column.clear()

        for index, scenario, dialogue in dialogues:
            episode_id = _episode_id(index, scenario)
            for kind, sources in (("exact", planted.exact), ("near", planted.near)):
                if index in sources:  # a copy keeps its source's scenario
                    truth[kind][episode_id] = _episode_id(sources[index], scenario)
            for column, value in zip(episodes, (episode_id, scenario, index, len(dialogue)), strict=True):
                column.append(value)
            for turn, (role, content) in enumerate(dialogue):
                for column, value in zip(turns, (episode_id, turn, role, content), strict=True):
                    column.append(value)
            if len(episodes[0]) >= _CHUNK:
                flush()
        if episodes[0]:
            flush()
    Path(f"{path}.planted.json").write_text(json.dumps(truth))


@dataclass(frozen=True)
class Bench:
    """One curation of one store; times in seconds, memory in MiB."""

    size: int
    turns: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    steps_cpu: dict[str, float]
    steps_wall: dict[str, float]
    exact_found: int
    near_found: int
    exact_recall: float
    near_recall: float
    unplanted_flags: int
    distinct_assistant: dict[int, float]
    self_bleu_assistant: float


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS. This process was started by the small
    # parent, so the peak is the curation's own (ru_maxrss survives exec).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _curate_here(path: Path) -> Bench:
    """Curate the store's run in this process, then score it against the planted duplicates."""
    from dramaturg.evaluators import curate
    from dramaturg.memory import Store

    with Store.open(path) as store:
        cpu = time.process_time()
        result = curate(store, RUN_ID)
        cpu_s = time.process_time() - cpu
        peak = _peak_rss_mib()
        turns = store.sql("SELECT count(*) FROM turns")[0][0]
        found = dict(
            store.sql("SELECT method, list(item_id) FROM duplicates WHERE kind = 'dialogue' GROUP BY 1")
        )
        metrics = dict(
            store.sql(
                "SELECT name, value FROM metrics WHERE scenario IS NULL AND name LIKE '%_assistant' "
                "AND (name LIKE 'distinct_%' OR name LIKE 'self_bleu_%')"
            )
        )
    truth = json.loads(Path(f"{path}.planted.json").read_text())
    exact, near = set(found.get("exact", [])), set(found.get("near", []))
    planted = truth["exact"].keys() | truth["near"].keys()
    return Bench(
        size=result.dialogues,
        turns=turns,
        wall_s=result.elapsed_s,
        cpu_s=cpu_s,
        peak_rss_mib=peak,
        steps_cpu={step: round(s, 2) for step, s in result.cpu_timings.items()},
        steps_wall={step: round(s, 2) for step, s in result.timings.items()},
        exact_found=len(exact),
        near_found=len(near),
        exact_recall=sum(i in exact for i in truth["exact"]) / max(len(truth["exact"]), 1),
        near_recall=sum(i in near for i in truth["near"]) / max(len(truth["near"]), 1),
        unplanted_flags=len((exact | near) - planted),
        distinct_assistant={n: metrics[f"distinct_{n}_assistant"] for n in (1, 2, 3)},
        self_bleu_assistant=metrics["self_bleu_assistant"],
    )


def _child(*args: str) -> str:
    completed = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if completed.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{completed.stderr}")
    return completed.stdout


def _row(r: Bench) -> str:
    steps = "  ".join(f"{step} {r.steps_cpu[step]:.1f}" for step in r.steps_cpu)
    return (
        f"{r.size:>9,} {r.turns:>11,} {r.wall_s:>7.1f} {r.cpu_s:>7.1f} {r.peak_rss_mib:>8.0f}  "
        f"{f'{r.exact_found} ({r.exact_recall:.3f})':>15} {f'{r.near_found} ({r.near_recall:.3f})':>15} "
        f"{r.unplanted_flags:>5}  {r.distinct_assistant[1]:.4f} {r.distinct_assistant[2]:.4f} "
        f"{r.distinct_assistant[3]:.4f} {r.self_bleu_assistant:.3f}  | {steps}"
    )


def main(argv: list[str] | None = None) -> None:
    """Build a store per size (in a child process), curate it in another, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--workdir", type=Path, default=None, help="keep stores here, and reuse them")
    parser.add_argument("--build", nargs=2, metavar=("DB", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--curate", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        build_store(Path(args.build[0]), int(args.build[1]))
        return
    if args.curate:
        print(json.dumps(asdict(_curate_here(Path(args.curate)))))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dramaturg-curate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"{'dialogues':>9} {'turns':>11} {'wall s':>7} {'cpu s':>7} {'peak MiB':>8}  {'exact (recall)':>15} "
        f"{'near (recall)':>15} {'extra':>5}  {'d-1':>6} {'d-2':>6} {'d-3':>6} {'sBLEU':>5}  "
        "| cpu s per step",
        flush=True,
    )
    results: list[Bench] = []
    for size in args.sizes:
        path = workdir / f"bench-{size}.duckdb"
        # A store left in --workdir by an earlier invocation is reused: building is slow.
        if not Path(f"{path}.planted.json").exists():
            path.unlink(missing_ok=True)
            _child("--build", str(path), str(size))
        results.append(_parse(_child("--curate", str(path))))
        print(_row(results[-1]), flush=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large.size / small.size
        steps = ", ".join(
            f"{step} {large.steps_cpu[step] / max(small.steps_cpu[step], 1e-9):.1f}x"
            for step in small.steps_cpu
        )
        print(
            f"growth {small.size:,} -> {large.size:,} ({ratio:.0f}x): CPU {large.cpu_s / small.cpu_s:.1f}x "
            f"(limit {1.1 * ratio:.0f}x), wall {large.wall_s / small.wall_s:.1f}x, "
            f"peak memory {large.peak_rss_mib / small.peak_rss_mib:.1f}x; per step CPU: {steps}"
        )
    print(
        "peak MiB: ru_maxrss of the curating process (limit 2048); exact/near: dialogues marked "
        "(recall of the planted ones); extra: marked but not planted; d-n, sBLEU: assistant turns"
    )


def _parse(text: str) -> Bench:
    raw: dict[str, Any] = json.loads(text)
    raw["distinct_assistant"] = {int(n): v for n, v in raw["distinct_assistant"].items()}
    return Bench(**raw)


if __name__ == "__main__":
    main()
