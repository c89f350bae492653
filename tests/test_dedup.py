"""Exact and near-duplicate detection, measured on a labelled synthetic corpus.

The corpus is built in code, deterministically: ~300 distinct dialogues from a few support
templates whose facts vary (order ids, names, dates, amounts, products), so most pairs from
one template are *distinct look-alikes*; some bases are "twins" that reuse another base's
exact wording with fresh facts, the hardest look-alikes. Planted on top: exact copies with
case / whitespace / typography changes, and near-duplicates with 3-6 words substituted or
deleted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
from dramaturg.evaluators import _dedup
from dramaturg.evaluators._dedup import (
    DedupResult,
    exact_key,
    find_duplicates,
    normalize_text,
    normalized_tokens,
)

# --- the labelled corpus ---------------------------------------------------------------------

_FIRST = (
    "Maria", "James", "Aisha", "Tomasz", "Chen", "Priya", "Lucas", "Fatima", "Noah", "Elena",
    "Kwame", "Sofia", "Hiroshi", "Grace", "Omar", "Ingrid", "Mateo", "Zara", "Ivan", "Leila",
)  # fmt: skip
_LAST = (
    "Lopez", "Smith", "Khan", "Nowak", "Wei", "Patel", "Martin", "Haddad", "Brown", "Rossi",
    "Mensah", "Costa", "Tanaka", "Okafor", "Farouk", "Berg", "Silva", "Ahmed", "Petrov", "Novak",
)  # fmt: skip
_PRODUCTS = (
    "wireless headphones", "standing desk", "espresso machine", "hiking backpack",
    "mechanical keyboard", "air purifier", "yoga mat", "robot vacuum", "electric kettle",
    "gaming monitor", "winter jacket", "running shoes", "smart watch", "cast iron skillet",
    "bluetooth speaker", "office chair", "camping tent", "desk lamp", "water filter",
    "baby stroller",
)  # fmt: skip
_CITIES = (
    "Lisbon", "Denver", "Nairobi", "Osaka", "Toronto", "Krakow", "Austin", "Lyon", "Accra",
    "Porto", "Seattle", "Munich", "Dublin", "Quito", "Leeds", "Perth",
)  # fmt: skip
_CARRIERS = ("UPS", "FedEx", "DHL", "USPS", "Royal Mail", "GLS")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_DEVICES = (
    "laptop", "tablet", "phone", "router", "printer", "smart TV", "desktop PC", "e-reader",
)  # fmt: skip
_APPS = ("Mail", "Photos", "Calendar", "Notes", "Drive", "Music", "Maps", "Wallet")
_AIRPORTS = (
    "Lisbon", "Frankfurt", "Chicago", "Singapore", "Madrid", "Boston", "Vienna", "Cairo",
    "Oslo", "Miami", "Zurich", "Delhi",
)  # fmt: skip
_FILLERS = (
    "really", "actually", "please", "just", "also", "quite", "very", "now", "still", "maybe",
    "kindly", "soon", "again", "there", "then", "simply",
)  # fmt: skip


def _order_facts(rng: random.Random) -> dict[str, str]:
    return {
        "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "order": f"{rng.choice('ABCDEFGHK')}-{rng.randrange(10_000, 99_999)}",
        "product": rng.choice(_PRODUCTS),
        "date": f"{rng.choice(_MONTHS)} {rng.randrange(1, 29)}",
        "amount": f"${rng.randrange(20, 900)}.{rng.randrange(0, 99):02d}",
        "carrier": rng.choice(_CARRIERS),
        "city": rng.choice(_CITIES),
        "days": str(rng.randrange(2, 15)),
    }


def _flight_facts(rng: random.Random) -> dict[str, str]:
    origin, destination = rng.sample(_AIRPORTS, 2)
    return {
        "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "flight": f"{rng.choice(('TP', 'LH', 'UA', 'SQ', 'IB'))}{rng.randrange(100, 9999)}",
        "origin": origin,
        "destination": destination,
        "date": f"{rng.choice(_MONTHS)} {rng.randrange(1, 29)}",
        "time": f"{rng.randrange(5, 23)}:{rng.choice(('05', '15', '30', '40', '55'))}",
        "seat": f"{rng.randrange(3, 40)}{rng.choice('ABCDEF')}",
        "fee": f"${rng.randrange(40, 300)}",
    }


def _tech_facts(rng: random.Random) -> dict[str, str]:
    return {
        "name": rng.choice(_FIRST),
        "device": rng.choice(_DEVICES),
        "app": rng.choice(_APPS),
        "version": f"{rng.randrange(9, 18)}.{rng.randrange(0, 9)}.{rng.randrange(0, 9)}",
        "code": f"0x{rng.randrange(0x1000, 0xFFFF):04X}",
        "ticket": f"T-{rng.randrange(100_000, 999_999)}",
        "minutes": str(rng.randrange(5, 60)),
        "gigabytes": str(rng.randrange(2, 64)),
    }


def _bank_facts(rng: random.Random) -> dict[str, str]:
    return {
        "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "amount": f"${rng.randrange(10, 5000)}.{rng.randrange(0, 99):02d}",
        "merchant": f"{rng.choice(_CITIES)} {rng.choice(('Market', 'Electronics', 'Travel'))}",
        "last4": str(rng.randrange(1000, 9999)),
        "date": f"{rng.choice(_MONTHS)} {rng.randrange(1, 29)}",
        "case": f"D{rng.randrange(1_000_000, 9_999_999)}",
        "days": str(rng.randrange(3, 11)),
        "city": rng.choice(_CITIES),
    }


# A turn is a speaker and its alternative phrasings; a base picks one phrasing per turn.
_Turn = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class _Template:
    facts: Callable[[random.Random], dict[str, str]]
    opening: tuple[_Turn, ...]
    extras: tuple[tuple[_Turn, _Turn], ...]  # optional exchanges that make dialogues longer
    closing: tuple[_Turn, ...]


def _turns(script: str) -> tuple[_Turn, ...]:
    """Parse turns: "U:" / "A:" starts a turn, "|" an alternative, other lines continue."""
    turns: list[tuple[str, list[str]]] = []
    for line in filter(None, (raw.strip() for raw in script.splitlines())):
        if line[:2] in ("U:", "A:"):
            turns.append(("User" if line[0] == "U" else "Assistant", [line[2:].strip()]))
        elif line.startswith("|"):
            turns[-1][1].append(line[1:].strip())
        else:
            turns[-1][1][-1] += " " + line
    return tuple((who, tuple(options)) for who, options in turns)


def _exchanges(script: str) -> tuple[tuple[_Turn, _Turn], ...]:
    turns = _turns(script)
    return tuple(zip(turns[::2], turns[1::2], strict=True))


def _template(
    facts: Callable[[random.Random], dict[str, str]], *, opening: str, extras: str, closing: str
) -> _Template:
    return _Template(facts, _turns(opening), _exchanges(extras), _turns(closing))


_TEMPLATES = (
    _template(
        _order_facts,
        opening="""
    U: Hi, my name is {name} and my order {order} for a {product} still has not arrived. It was
        supposed to be here by {date}.
      | Hello, I am {name}. I ordered a {product}, order number {order}, and it was due on
        {date} but nothing came.
    A: I am sorry about the delay, {name}. I can see order {order} for the {product}. It
        shipped with {carrier} and the last scan was in {city}.
      | Thanks for reaching out, {name}. Order {order} left our warehouse with {carrier}; the
        tracking shows it was last scanned in {city}.
    U: That is strange, I do not live anywhere near {city}. Can you tell me when the {product}
        will get here?
      | Why would it be in {city}? I need the {product} soon, so when will it arrive?
    A: {carrier} estimates another {days} days. If it does not arrive by then I can refund the
        full {amount} or send a replacement {product}.
      | The carrier expects it within {days} days. Otherwise I will either refund {amount} or
        ship a new {product} right away.
""",
        extras="""
    U: Could you send me the {carrier} tracking link for order {order}?
      | Please email me the tracking link for {order}.
    A: Of course. I have emailed the {carrier} tracking link for order {order} to the address
        on your account.
      | Done, the tracking link for {order} is in your inbox now.

    U: Is the {amount} charge already final on my card?
      | Have you charged me the {amount} yet?
    A: Yes, the {amount} was captured on {date} when the {product} shipped.
      | The {amount} was charged on {date}, the day the order shipped.

    U: Can I change the delivery address to my office instead?
      | Could the {product} be delivered to my office instead?
    A: Once a parcel is with {carrier} we cannot change the address, but you can redirect it on
        their website using order {order}.
      | {carrier} allows redirects online; use order {order} and your postcode.

    U: What happens if the {product} arrives damaged?
      | And if the box is damaged when it arrives?
    A: Take a photo, refuse the parcel if you can, and we will replace the {product} at no cost
        within {days} days.
      | Send us a photo and we will replace it free of charge.

    U: Do you have the {product} in stock in case I need a replacement?
      | Is there stock for another {product}?
    A: We have several units in our {city} warehouse, so a replacement would ship the same day.
      | Yes, there is stock, and a replacement ships the same day.

    U: Will I get a discount for the trouble with order {order}?
      | Can you offer anything for the inconvenience?
    A: I have added a ten percent voucher to your account, {name}. It applies to your next
        order.
      | I added a voucher worth ten percent to your account for next time.
""",
        closing="""
    U: Okay, I will wait {days} days then. Thanks for your help.
      | Fine, I will give it {days} more days. Thank you.
    A: You are welcome, {name}. I have added a note to order {order} so anyone you speak to
        will see this conversation.
      | Happy to help, {name}. Order {order} now has a note about this chat.
""",
    ),
    _template(
        _flight_facts,
        opening="""
    U: Hello, this is {name}. My flight {flight} from {origin} to {destination} on {date} was
        cancelled. Can you rebook me?
      | Hi, I am {name} and {flight} from {origin} to {destination} on {date} just got
        cancelled. I need another flight.
    A: I am sorry, {name}. The next available flight from {origin} to {destination} leaves on
        {date} at {time}. Shall I move you to it?
      | Let me check, {name}. There is a seat on a later departure from {origin} at {time} on
        {date}. Would that work?
    U: Yes, {time} is fine. Can I keep an aisle seat, ideally {seat}?
      | That works. I would like seat {seat} if it is free.
    A: Seat {seat} is available and I have assigned it. There is no change fee because the
        cancellation was on our side.
      | Done, you are in {seat}. The usual {fee} change fee is waived since we cancelled
        {flight}.
""",
        extras="""
    U: Will my checked bag be moved to the new flight automatically?
      | What about my suitcase?
    A: Yes, your bag is rebooked to {destination} with you; no need to collect it in {origin}.
      | Your bag follows you to {destination} automatically.

    U: Can I get a meal voucher while I wait at {origin}?
      | Is there any food voucher for the wait?
    A: Yes, a voucher has been added to your booking; show it at any cafe in the {origin}
        terminal.
      | I have added a meal voucher to your booking for the {origin} airport.

    U: If the {time} flight is also delayed, what are my options?
      | What if that one is late too?
    A: Then you can choose a refund of the {fee} fare difference or a hotel night in {origin}.
      | You could take a refund or a hotel in {origin} on us.

    U: Could you send the new itinerary to my email?
      | Please email me the updated booking.
    A: Sent. The itinerary shows {flight} replaced by the {time} departure on {date}, seat
        {seat}.
      | The new itinerary with seat {seat} is in your inbox.

    U: Do I keep my lounge access in {origin}?
      | Can I still use the lounge?
    A: Yes, lounge access carries over to the new flight to {destination}.
      | Your lounge access still applies, {name}.
""",
        closing="""
    U: Great, thank you for sorting this out so quickly.
      | Perfect, thanks a lot for the help.
    A: You are welcome, {name}. Have a good trip to {destination} on {date}.
      | Safe travels to {destination}, {name}. Seat {seat} is confirmed.
""",
    ),
    _template(
        _tech_facts,
        opening="""
    U: Hi, I am {name}. Since updating my {device} to version {version} the {app} app crashes
        with error {code} every time I open it.
      | Hello, {name} here. After the {version} update, {app} on my {device} shows error {code}
        and closes immediately.
    A: Thanks, {name}. Error {code} usually means the {app} cache is corrupted after the
        {version} update. Let us clear it first.
      | Sorry about that, {name}. {code} in {app} on version {version} is normally a broken
        cache, so we will start there.
    U: How do I clear the cache on the {device}?
      | Okay, where do I find the cache setting for {app}?
    A: Open Settings, then Apps, choose {app}, tap Storage and then Clear cache. It frees about
        {gigabytes} GB and keeps your data.
      | Go to Settings, Apps, {app}, Storage, Clear cache. Your files stay, and you should get
        back around {gigabytes} GB.
""",
        extras="""
    U: I cleared it but {app} still shows {code}.
      | Still getting error {code}.
    A: Then please restart the {device} and install the {app} update that fixes {code}; it
        takes about {minutes} minutes.
      | Restart the {device} and update {app}; the fix for {code} shipped this week.

    U: Will I lose my {app} data if I reinstall?
      | Is reinstalling {app} safe for my files?
    A: No, your {app} data is synced, so a reinstall on the {device} keeps it.
      | Your data is backed up, so reinstalling is safe.

    U: Can I roll back to the version before {version}?
      | Is there a way to undo the {version} update?
    A: Rolling back {version} is not supported on the {device}, but the patch arrives within
        {minutes} minutes of checking for updates.
      | A rollback is not possible, but a patch is available now.

    U: My {device} also feels slow since the update.
      | Is it normal that everything is slower?
    A: That is indexing after {version}; it finishes in about {minutes} minutes if the {device}
        stays plugged in.
      | It is re-indexing and should settle within {minutes} minutes.

    U: Can you open a ticket in case it happens again?
      | Please log this somewhere.
    A: I opened ticket {ticket} for error {code} on {app} {version}.
      | Ticket {ticket} is open; mention it if {code} comes back.
""",
        closing="""
    U: It works now, thank you!
      | That fixed it, thanks.
    A: Glad to hear it, {name}. Ticket {ticket} stays open for {minutes} days in case {code}
        returns.
      | Great, {name}. If {app} shows {code} again, reply to ticket {ticket}.
""",
    ),
    _template(
        _bank_facts,
        opening="""
    U: Hello, I am {name}. There is a charge of {amount} from {merchant} on my card ending
        {last4} dated {date} that I did not make.
      | Hi, this is {name}. I see {amount} from {merchant} on {date} on the card ending in
        {last4}, and it was not me.
    A: I am sorry to hear that, {name}. I have frozen the card ending {last4} so no further
        charges can go through.
      | Thank you, {name}. First I have blocked card {last4} to stop any new payments.
    U: Thank you. Will I get the {amount} back?
      | Good. What about the {amount} from {merchant}?
    A: I have opened dispute {case} for the {amount} charge from {merchant}. You will see a
        temporary credit within {days} business days.
      | Dispute {case} is now open for {amount}. A provisional refund should appear in {days}
        business days.
""",
        extras="""
    U: Do I need to contact {merchant} myself?
      | Should I call {merchant}?
    A: No, we contact {merchant} directly as part of dispute {case}.
      | There is no need; dispute {case} covers that.

    U: When will I receive a new card to replace {last4}?
      | How long until the new card arrives?
    A: A new card is on its way to your address in {city} and should arrive in {days} business
        days.
      | Your replacement card ships today and arrives within {days} days.

    U: Were there any other suspicious payments around {date}?
      | Can you check for other strange charges?
    A: I checked the last thirty days on card {last4}; the {amount} charge is the only one that
        looks unusual.
      | Only the {merchant} charge looks unusual in the past month.

    U: Can I still use online banking while the card is frozen?
      | Does the freeze affect my account?
    A: Yes, transfers and online banking work as usual; only card {last4} is frozen.
      | Only the card is blocked; the account itself works normally.

    U: What if {merchant} disputes the dispute?
      | What if they say the charge was valid?
    A: Then we will ask you to sign a statement, and case {case} usually still resolves in your
        favour within {days} weeks.
      | We would ask for a signed statement; that rarely changes the outcome.
""",
        closing="""
    U: Okay, that is reassuring. Thanks.
      | Great, thank you for the quick help.
    A: You are welcome, {name}. Keep the dispute number {case} for reference.
      | Any time, {name}. Your reference is {case}.
""",
    ),
)

_GENERIC_EXTRAS = _exchanges(
    """
    U: Sorry, one more thing before you go.
      | Actually, I have another question.
    A: Of course, {name}, take your time.
      | Sure, what else can I do for you?

    U: Can I get a written summary of this chat?
      | Could you email me this transcript?
    A: Yes, a summary will be sent to your email within the hour.
      | I will email you the transcript as soon as we finish.
"""
)


@dataclass(frozen=True)
class _Corpus:
    items: list[tuple[str, str]]  # (id, text) in input order
    group: dict[str, str]  # id -> id of the base dialogue it was derived from
    exact: frozenset[str]  # planted exact copies
    near: frozenset[str]  # planted near-duplicates


def _render(template: _Template, facts: dict[str, str], layout: random.Random) -> str:
    """Render one dialogue; ``layout`` decides phrasings and extras, ``facts`` the slots."""
    target = layout.randrange(80, 280)
    turns = [(who, layout.choice(options)) for who, options in template.opening]
    closing = [(who, layout.choice(options)) for who, options in template.closing]
    extras = list(template.extras + _GENERIC_EXTRAS)
    layout.shuffle(extras)
    words = sum(len(text.split()) for _, text in turns + closing)
    for exchange in extras:
        if words >= target:
            break
        for who, options in exchange:
            text = layout.choice(options)
            turns.append((who, text))
            words += len(text.split())
    return "\n".join(f"{who}: {text.format(**facts)}" for who, text in turns + closing)


def _copy_with_cosmetic_changes(text: str, rng: random.Random) -> str:
    """An exact duplicate after normalisation: case, whitespace and typography only."""
    change = rng.randrange(4)
    if change == 0:
        text = text.upper()
    elif change == 1:
        text = "  " + text.replace(" ", "   ").replace("\n", " \n\n ") + "\t"
    elif change == 2:
        text = " ".join(w.capitalize() if rng.random() < 0.3 else w for w in text.split(" "))
    else:
        text = text.replace("'", "\u2019").replace(". ", "!  ").lower()
    return text


def _near_copy(text: str, rng: random.Random) -> str:
    """A near-duplicate: 3-6 words substituted or deleted (role labels left alone)."""
    lines = [line.split(" ") for line in text.split("\n")]
    slots = [(i, j) for i, line in enumerate(lines) for j in range(1, len(line))]
    edits = rng.sample(slots, rng.randrange(3, 7))
    for i, j in sorted(edits, reverse=True):  # right to left so deletions keep indices valid
        if rng.random() < 0.5:
            lines[i][j] = rng.choice(_FILLERS)
        else:
            del lines[i][j]
    return "\n".join(" ".join(line) for line in lines)


def _build_corpus(seed: int, bases: int = 300, exact: int = 40, near: int = 60) -> _Corpus:
    rng = random.Random(seed)
    texts: list[tuple[str, str]] = []  # base dialogues, in input order
    layouts: list[tuple[int, int]] = []  # (template, layout seed) of each base
    for n in range(bases):
        if layouts and rng.random() < 0.3:
            # A twin: the same template and phrasing as an earlier base, with fresh facts.
            template_index, layout_seed = rng.choice(layouts)
        else:
            template_index, layout_seed = rng.randrange(len(_TEMPLATES)), rng.randrange(2**32)
        template = _TEMPLATES[template_index]
        layouts.append((template_index, layout_seed))
        text = _render(template, template.facts(rng), random.Random(layout_seed))
        texts.append((f"base-{n}", text))

    # Planted copies go after their source: the base is then the one to keep.
    rank = {item_id: float(n) for n, (item_id, _) in enumerate(texts)}
    group = {item_id: item_id for item_id, _ in texts}
    planted: list[tuple[str, str]] = []
    near_ids = [f"near-{n}" for n in range(near)]
    for item_id in near_ids:
        source_id, source = rng.choice(texts)
        planted.append((item_id, _near_copy(source, rng)))
        rank[item_id] = rng.uniform(rank[source_id], bases)
        group[item_id] = source_id
    exact_ids = [f"exact-{n}" for n in range(exact)]
    for item_id in exact_ids:
        # Mostly copies of bases, some copies of planted near-duplicates.
        source_id, source = rng.choice(planted if rng.random() < 0.2 else texts)
        planted.append((item_id, _copy_with_cosmetic_changes(source, rng)))
        rank[item_id] = rng.uniform(rank[source_id], bases + 1)
        group[item_id] = group[source_id]
    items = sorted(texts + planted, key=lambda item: rank[item[0]])
    return _Corpus(items, group, frozenset(exact_ids), frozenset(near_ids))


@dataclass(frozen=True)
class _Score:
    exact_recall: float
    near_recall: float
    false_positives: list[tuple[str, str]]


def _score(corpus: _Corpus, result: DedupResult) -> _Score:
    flagged = result.duplicates
    false_positives = [
        (dup, kept) for dup, kept in flagged.items() if corpus.group[dup] != corpus.group[kept]
    ]
    # A base is never a duplicate: everything derived from it comes later in input order.
    false_positives += [(dup, kept) for dup, kept in flagged.items() if dup.startswith("base-")]
    exact_found = sum(dup in result.exact for dup in corpus.exact)
    near_found = sum(dup in result.near for dup in corpus.near)
    return _Score(
        exact_recall=exact_found / len(corpus.exact),
        near_recall=near_found / len(corpus.near),
        false_positives=false_positives,
    )


@pytest.fixture(scope="module")
def corpus() -> _Corpus:
    built = _build_corpus(seed=20240601)
    bases = [text for item_id, text in built.items if item_id.startswith("base-")]
    # The bases really are distinct, even after normalisation.
    assert len({exact_key(text) for text in bases}) == len(bases)
    return built


# --- the labelled corpus: quality --------------------------------------------------------


def test_corpus_has_the_intended_shape(corpus: _Corpus) -> None:
    lengths = [len(text.split()) for item_id, text in corpus.items if item_id.startswith("base")]
    assert len(lengths) == 300
    assert min(lengths) >= 80
    assert max(lengths) <= 340
    assert len(corpus.items) == 400


def test_finds_planted_duplicates_without_flagging_look_alikes(corpus: _Corpus) -> None:
    score = _score(corpus, find_duplicates(corpus.items))
    assert score.exact_recall == 1.0
    assert score.near_recall >= 0.95
    assert score.false_positives == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quality_holds_for_other_corpora(seed: int) -> None:
    corpus = _build_corpus(seed=seed)
    score = _score(corpus, find_duplicates(corpus.items))
    assert score.exact_recall == 1.0
    assert score.near_recall >= 0.95
    assert score.false_positives == []


def test_exact_duplicates_map_to_their_first_occurrence(corpus: _Corpus) -> None:
    result = find_duplicates(corpus.items)
    texts = dict(corpus.items)
    for dup, first in result.exact.items():
        assert exact_key(texts[dup]) == exact_key(texts[first])
        assert dup in corpus.exact


def test_near_duplicates_map_to_kept_items_with_similarity(corpus: _Corpus) -> None:
    result = find_duplicates(corpus.items)
    assert result.near.keys() == result.similarity.keys()
    assert all(0.8 <= sim <= 1.0 for sim in result.similarity.values())
    flagged = result.duplicates
    assert not set(flagged.values()) & set(flagged)  # every value is a kept item
    assert not set(result.near) & set(result.exact)


def test_is_deterministic(corpus: _Corpus) -> None:
    assert find_duplicates(corpus.items) == find_duplicates(iter(corpus.items))


# --- normalize_text and exact_key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("   \n\t ", ""),
        ("Hello,   World!", "hello world"),
        ("ＦＵＬＬ ｗｉｄｔｈ", "full width"),  # NFKC
        ("Straße", "strasse"),  # casefold, not lower
        ("Don’t “quote” me", "don't quote me"),  # typographic quotes
        ("(well...) -- maybe?", "well maybe"),
        ("Order #A-1234 at 10:30", "order a-1234 at 10:30"),
        ("It costs 3.50 (-5%).", "it costs 3.50 -5%"),
        ("e-mail me at a@b.com", "e-mail me at a@b.com"),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize("marker", ["é", "🙂"])
def test_ascii_fast_path_agrees_with_the_unicode_path(corpus: _Corpus, marker: str) -> None:
    # ASCII texts take a shortcut; a non-ASCII (or astral) word sends the same text down the
    # general path, which must tokenise everything else identically.
    for _, text in corpus.items[:100]:
        tokens = normalized_tokens(text)
        assert tokens == normalize_text(text).split()
        assert normalized_tokens(f"{text}\n{marker}") == [*tokens, marker]


@pytest.mark.parametrize("space", ["\t", "\r\n", "\x0b", "\x0c", "\x1c", "\u00a0", "\u3000"])
def test_every_whitespace_separates_words(space: str) -> None:
    assert normalized_tokens(f"Hello,{space}world!{space}(-5)") == ["hello", "world", "-5"]


def test_exact_key_is_tagged_and_ignores_cosmetics() -> None:
    key = exact_key("Where is order A-1234?")
    assert key.startswith("sha256:")
    assert len(key) == len("sha256:") + 64
    assert key == exact_key("  WHERE is   order a-1234 ")
    assert key != exact_key("Where is order A-1235?")
    # Pinned: stored keys must stay comparable across releases.
    assert exact_key("") == ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


# --- find_duplicates: edge cases and semantics ---------------------------------------------


def _dialogue(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    vocabulary = [f"w{n}" for n in range(2000)]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def test_empty_input() -> None:
    result = find_duplicates([])
    assert result == DedupResult(exact={}, near={}, similarity={})
    assert result.duplicates == {}


def test_single_item() -> None:
    assert find_duplicates([("only", "just one dialogue")]).duplicates == {}


def test_all_identical() -> None:
    items = [(f"id{n}", "Same  TEXT." if n % 2 else "same text") for n in range(50)]
    result = find_duplicates(items)
    assert result.exact == {f"id{n}": "id0" for n in range(1, 50)}
    assert result.near == {}


def test_empty_and_punctuation_only_texts_are_exact_duplicates_of_each_other() -> None:
    result = find_duplicates([("a", ""), ("b", "hello there"), ("c", " ?! "), ("d", "\n")])
    assert result.exact == {"c": "a", "d": "a"}
    assert result.near == {}


def test_short_texts_are_compared() -> None:
    result = find_duplicates([("a", "yes"), ("b", "no"), ("c", "maybe")])
    assert result.duplicates == {}


def test_input_order_decides_what_is_kept() -> None:
    base = _dialogue(1).split()
    edited = " ".join([*base[:60], "changed", *base[61:]])
    assert find_duplicates([("x", edited), ("y", " ".join(base))]).near == {"y": "x"}
    assert find_duplicates([("y", " ".join(base)), ("x", edited)]).near == {"x": "y"}


def test_near_duplicates_cluster_on_the_earliest_kept_item() -> None:
    words = _dialogue(2, words=200).split()
    items = [("first", " ".join(words))]
    for n in range(1, 6):
        edited = list(words)
        edited[n * 30] = "edited"
        items.append((f"copy{n}", " ".join(edited)))
    items.append(("other", _dialogue(3, words=200)))
    result = find_duplicates(items)
    assert result.near == {f"copy{n}": "first" for n in range(1, 6)}
    assert all(sim >= 0.8 for sim in result.similarity.values())


def test_exact_copy_of_a_near_duplicate_resolves_to_the_kept_item() -> None:
    words = _dialogue(4).split()
    near = " ".join([*words[:50], *words[51:]])
    result = find_duplicates([("kept", " ".join(words)), ("near", near), ("copy", near.upper())])
    assert result.near == {"near": "kept"}
    assert result.exact == {"copy": "near"}
    assert result.duplicates == {"near": "kept", "copy": "kept"}


def test_unrelated_texts_are_not_duplicates() -> None:
    items = [(str(n), _dialogue(100 + n)) for n in range(200)]
    assert find_duplicates(items).duplicates == {}


def test_threshold_one_needs_identical_shingle_sets() -> None:
    cycle = "alpha beta gamma delta"
    words = _dialogue(5).split()
    items = [
        ("a", f"{cycle} {cycle}"),
        ("b", f"{cycle} {cycle} {cycle}"),  # the same bigram set: Jaccard exactly 1
        ("c", " ".join(words)),
        ("d", " ".join(w if n % 12 else "edit" for n, w in enumerate(words))),
    ]
    result = find_duplicates(items, threshold=1.0)
    assert result.near == {"b": "a"}
    assert result.similarity == {"b": 1.0}


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": 1.5}, {"num_perm": 0}, {"bands": 0}, {"bands": 129}],
)
def test_rejects_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"threshold|num_perm|bands"):
        find_duplicates([("a", "text")], **kwargs)


def test_rejects_repeated_ids() -> None:
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        find_duplicates([("a", "one"), ("a", "two")])


def test_explicit_bands() -> None:
    words = _dialogue(6).split()
    edited = " ".join([*words[:10], "x", *words[11:]])
    result = find_duplicates([("a", " ".join(words)), ("b", edited)], num_perm=64, bands=8)
    assert result.near == {"b": "a"}


def _stream(count: int) -> Iterator[tuple[str, str]]:
    for n in range(count):
        yield str(n), _dialogue(n % 40, words=80)


def test_consumes_a_generator_once() -> None:
    result = find_duplicates(_stream(120))
    assert len(result.exact) == 80
    assert result.near == {}


# --- find_duplicates: streaming (reread) ----------------------------------------------------


class _Reader:
    """A store's part in dedup, over a list: reads items again by id, counting what it was asked."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.texts = dict(items)
        self.asked: list[list[str]] = []

    def __call__(self, ids: Sequence[str]) -> Iterator[tuple[str, str]]:
        self.asked.append(list(ids))
        for item_id in reversed(ids):  # any order will do
            yield item_id, self.texts[item_id]


@pytest.mark.parametrize("seed", [20240601, 1, 2])
def test_reread_finds_what_the_in_memory_path_finds(seed: int) -> None:
    corpus = _build_corpus(seed=seed)
    reader = _Reader(corpus.items)
    streamed = find_duplicates(iter(corpus.items), reread=reader)
    assert streamed == find_duplicates(corpus.items)
    # One reread, of the candidate items only: the near-duplicates, the items they duplicate
    # and the look-alikes whose one-byte signatures could not rule them out.
    (asked,) = reader.asked
    assert set(streamed.near) | set(streamed.near.values()) <= set(asked)
    assert len(asked) < len(corpus.items) / 2


def test_bounded_chunks_and_word_cache_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = _build_corpus(seed=3)
    expected = find_duplicates(corpus.items)
    # Many small signature blocks (gathered across block edges) and a word cache that starts
    # over every few words: memory bounds, not results.
    monkeypatch.setattr(_dedup, "_HASH_CHUNK_TOKENS", 500)
    monkeypatch.setattr(_dedup, "_WORD_CACHE", 16)
    assert find_duplicates(corpus.items) == expected
    monkeypatch.setattr(_dedup, "_bitwise_count", None)  # numpy < 2 counts equal rows as booleans
    assert find_duplicates(iter(corpus.items), reread=_Reader(corpus.items)) == expected


def _near_pair() -> list[tuple[str, str]]:
    words = _dialogue(7, words=150).split()
    return [("a", " ".join(words)), ("b", " ".join(["edit", *words[1:]])), ("c", _dialogue(8))]


@pytest.mark.parametrize(
    ("reread", "message"),
    [
        (lambda ids: [(i, "other words entirely") for i in ids], "'a' changed between"),
        (lambda ids: [(i, dict(_near_pair())[i]) for i in ids[1:]], "did not return 'a'"),
        (lambda ids: [("c", _dialogue(8))], "returned 'c', which was not asked for"),
        (
            lambda ids: [(ids[0], dict(_near_pair())[ids[0]])] * 2,
            "returned 'a', which was not asked for or came twice",
        ),
    ],
)
def test_reread_must_return_the_items_asked_for(
    reread: Callable[[Sequence[str]], list[tuple[str, str]]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        find_duplicates(_near_pair(), reread=reread)


def test_reread_is_not_called_without_candidates() -> None:
    calls: list[Sequence[str]] = []
    items = [("a", _dialogue(1)), ("b", _dialogue(2)), ("c", "A short one.")]
    result = find_duplicates(items, reread=lambda ids: calls.append(ids) or [])
    assert result.duplicates == {} and calls == []
