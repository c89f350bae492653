"""Curation benchmark: dedup and diversity metrics on a synthetic dialogue corpus.

Generates N support dialogues deterministically (six domains, sampled turns and facts, ~200
words each) with planted duplicates (2 % exact copies with cosmetic changes, 5 % near copies
with 3-6 words substituted or deleted), then times each curation step and reports the peak
memory of the process.

    python bench/curate.py                        # 10k and 100k, each in a fresh process
    python bench/curate.py --size 10000 --json    # one size; JSON result on stdout

Acceptance: 100k dialogues curated in under 2 minutes and 4 GiB, growing about linearly.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from dramaturg.evaluators._dedup import find_duplicates
from dramaturg.evaluators._diversity import distinct_ns, length_stats, self_bleu

__all__ = ["BenchResult", "generate", "main", "run"]

SIZES = (10_000, 100_000)
SEED = 7

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


def _dialogue(rng: random.Random) -> str:
    users, assistants = rng.choice(_DOMAINS)
    facts = _facts(rng)
    lines = [f"User: Hi, my name is {facts['name']}."]
    for _ in range(rng.randrange(2, 9)):
        for speaker, pool in (("User", users), ("Assistant", assistants)):
            said = rng.sample(pool, rng.randrange(1, 3))
            lines.append(f"{speaker}: " + " ".join(line.format(**facts) for line in said))
    lines.append(f"Assistant: Is there anything else I can help with, {facts['name']}?")
    return "\n".join(lines)


def _near_copy(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for position in sorted(rng.sample(range(1, len(words)), rng.randrange(3, 7)), reverse=True):
        if rng.random() < 0.5:
            words[position] = rng.choice(_FILLERS)
        else:
            del words[position]
    return " ".join(words)


def _exact_copy(text: str, rng: random.Random) -> str:
    return text.upper() if rng.random() < 0.5 else "  " + text.replace(" ", "  ") + "\n"


@dataclass(frozen=True)
class Planted:
    """Ground truth of the generated corpus: duplicate id → id of its source."""

    exact: dict[str, str]
    near: dict[str, str]


def generate(size: int, seed: int = SEED) -> tuple[list[tuple[str, str]], Planted]:
    """Generate ``size`` dialogues, ~2 % exact and ~5 % near copies of earlier dialogues.

    Near copies are made of original dialogues only: a near copy of a near copy may fall
    below the threshold against the kept original, which would blur the recall figure.
    """
    rng = random.Random(seed)
    items: list[tuple[str, str]] = []
    originals: list[int] = []
    exact: dict[str, str] = {}
    near: dict[str, str] = {}
    while len(items) < size:
        roll = rng.random()
        item_id = f"d{len(items)}"
        if items and roll < 0.02:
            source_id, source = items[rng.randrange(len(items))]
            items.append((item_id, _exact_copy(source, rng)))
            exact[item_id] = source_id
        elif items and roll < 0.07:
            source_id, source = items[rng.choice(originals)]
            items.append((item_id, _near_copy(source, rng)))
            near[item_id] = source_id
        else:
            originals.append(len(items))
            items.append((item_id, _dialogue(rng)))
    return items, Planted(exact, near)


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run; times in seconds, memory in MiB."""

    size: int
    words_mean: float
    generate_s: float
    dedup_s: float
    distinct_s: float
    self_bleu_s: float
    lengths_s: float
    curate_s: float
    curate_cpu_s: float
    peak_rss_mib: float
    exact_found: int
    near_found: int
    exact_recall: float
    near_recall: float
    unplanted_flags: int
    distinct: dict[int, float]
    self_bleu: float


_T = TypeVar("_T")


def _timed(step: Callable[[], _T]) -> tuple[_T, float]:
    start = time.perf_counter()
    value = step()
    return value, time.perf_counter() - start


def run(size: int, seed: int = SEED) -> BenchResult:
    """Generate a corpus and time every curation step on it, in this process."""
    (items, planted), generate_s = _timed(lambda: generate(size, seed))
    texts = [text for _, text in items]
    # CPU time next to wall time: on a shared machine wall time also measures the neighbours.
    cpu_start = time.process_time()
    found, dedup_s = _timed(lambda: find_duplicates(items))
    distinct, distinct_s = _timed(lambda: distinct_ns(texts, (1, 2, 3)))
    bleu, self_bleu_s = _timed(lambda: self_bleu(texts, sample=200, seed=seed))
    lengths, lengths_s = _timed(lambda: length_stats([len(t.split()) for t in texts]))
    curate_cpu_s = time.process_time() - cpu_start
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 2**10

    flagged = found.duplicates
    planted_ids = planted.exact.keys() | planted.near.keys()
    return BenchResult(
        size=size,
        words_mean=round(lengths.mean, 1),
        generate_s=generate_s,
        dedup_s=dedup_s,
        distinct_s=distinct_s,
        self_bleu_s=self_bleu_s,
        lengths_s=lengths_s,
        curate_s=dedup_s + distinct_s + self_bleu_s + lengths_s,
        curate_cpu_s=curate_cpu_s,
        peak_rss_mib=peak_mib,
        exact_found=len(found.exact),
        near_found=len(found.near),
        exact_recall=sum(i in found.exact for i in planted.exact) / max(len(planted.exact), 1),
        near_recall=sum(i in found.near for i in planted.near) / max(len(planted.near), 1),
        unplanted_flags=sum(dup not in planted_ids for dup in flagged),
        distinct=distinct,
        self_bleu=bleu,
    )


def _child(size: int) -> BenchResult:
    """Run one size in a fresh interpreter, so peak memory is that size's alone."""
    completed = subprocess.run(
        [sys.executable, __file__, "--size", str(size), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    raw = json.loads(completed.stdout)
    raw["distinct"] = {int(n): value for n, value in raw["distinct"].items()}
    return BenchResult(**raw)


def _table(results: list[BenchResult]) -> None:
    header = (
        f"{'size':>7} {'words':>5} {'gen s':>6} {'dedup s':>7} {'dist s':>6} {'bleu s':>6} "
        f"{'len s':>5} {'curate s':>8} {'cpu s':>6} {'peak MiB':>8} {'exact':>11} {'near':>11} "
        f"{'extra':>5} {'d-1':>5} {'d-2':>5} {'d-3':>5} {'sBLEU':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.size:>7} {r.words_mean:>5.0f} {r.generate_s:>6.1f} {r.dedup_s:>7.2f} "
            f"{r.distinct_s:>6.2f} {r.self_bleu_s:>6.2f} {r.lengths_s:>5.2f} "
            f"{r.curate_s:>8.2f} {r.curate_cpu_s:>6.2f} {r.peak_rss_mib:>8.0f} "
            f"{f'{r.exact_found} ({r.exact_recall:.3f})':>11} "
            f"{f'{r.near_found} ({r.near_recall:.3f})':>11} {r.unplanted_flags:>5} "
            f"{r.distinct[1]:>5.3f} {r.distinct[2]:>5.3f} {r.distinct[3]:>5.3f} "
            f"{r.self_bleu:>5.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark: every size in a child process, or one size with ``--size``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, help="run one size in this process")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.size is not None:
        result = run(args.size)
        if args.json:
            print(json.dumps(asdict(result)))
        else:
            _table([result])
        return

    results = [_child(size) for size in SIZES]
    _table(results)
    small, large = results[0], results[-1]

    def growth(metric: Callable[[BenchResult], float]) -> str:
        return f"{metric(large) / metric(small):.1f}"

    print()
    print(
        f"time growth t({large.size // 1000}k)/t({small.size // 1000}k), ideal "
        f"{large.size / small.size:.1f}: curate {growth(lambda r: r.curate_s)} wall, "
        f"{growth(lambda r: r.curate_cpu_s)} cpu; dedup {growth(lambda r: r.dedup_s)}; "
        f"distinct {growth(lambda r: r.distinct_s)}; generation {growth(lambda r: r.generate_s)}"
    )
    print(
        f"peak memory: {small.peak_rss_mib:.0f} MiB at {small.size}, "
        f"{large.peak_rss_mib:.0f} MiB at {large.size} (limit 4096 MiB)"
    )
    print(
        "curate s = dedup + distinct-1/2/3 + self-BLEU + lengths (wall); cpu s: the same, CPU "
        "time; exact/near: duplicates found (recall of planted ones); extra: flagged items "
        "that were not planted"
    )


if __name__ == "__main__":
    main()
