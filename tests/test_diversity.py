"""Diversity metrics: distinct-n, self-BLEU and length statistics."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from dramaturg.evaluators import _diversity
from dramaturg.evaluators._dedup import normalize_text
from dramaturg.evaluators._diversity import (
    DistinctCounter,
    LengthStats,
    distinct_n,
    distinct_ns,
    length_stats,
    self_bleu,
    self_bleu_of_sample,
    self_bleu_positions,
)

# --- distinct-n ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, 4 / 6),  # the cat sat the cat ran: 4 unique of 6
        (2, 3 / 4),  # "the cat" twice, "cat sat", "cat ran"
        (3, 2 / 2),
        (4, 0.0),  # no text has four words
    ],
)
def test_distinct_n_hand_computed(n: int, expected: float) -> None:
    assert distinct_n(["the cat sat", "the cat ran"], n) == expected


def test_distinct_n_normalises_before_counting() -> None:
    assert distinct_n(["Hello, world!", "hello   WORLD"], 1) == 0.5


def test_ngrams_never_span_two_texts() -> None:
    # Across the boundary "b c" would be a third bigram.
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["a", "a"], 2) == 0.0
    assert distinct_n(["a b", "a b"], 2) == 0.5


@pytest.mark.parametrize("texts", [[], [""], ["  ", "?!"]])
def test_distinct_n_without_ngrams_is_zero(texts: list[str]) -> None:
    assert distinct_n(texts, 1) == 0.0


def test_distinct_n_rejects_order_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        distinct_n(["a b"], 0)


def _reference_distinct(texts: Sequence[str], n: int) -> float:
    grams = [
        tuple(words[i : i + n])
        for words in (normalize_text(t).split() for t in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def test_distinct_ns_matches_a_reference_including_wide_codes() -> None:
    rng = random.Random(3)
    # Long orders fold many word hashes into one 64-bit code; repeats must still collide.
    vocabulary = [f"w{i}" for i in range(3000)] + ["the"] * 3000
    texts = [" ".join(rng.choices(vocabulary, k=rng.randrange(0, 40))) for _ in range(300)]
    texts += texts[:50]  # repeated n-grams of every order
    orders = (1, 2, 3, 5, 6, 8)
    result = distinct_ns(texts, orders)
    for n in orders:
        assert result[n] == pytest.approx(_reference_distinct(texts, n), abs=1e-12)
        assert distinct_n(texts, n) == result[n]


def _texts(count: int, seed: int, words: int = 3000) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(words)] + ["the"] * 500
    return [" ".join(rng.choices(vocabulary, k=rng.randrange(0, 30))) for _ in range(count)]


def test_counter_in_batches_and_parts_matches_the_whole() -> None:
    texts = _texts(600, seed=5)
    texts += texts[:100]
    expected = distinct_ns(texts, (1, 2, 3))
    batched = DistinctCounter((1, 2, 3))
    for start in range(0, len(texts), 37):
        batched.add(texts[start : start + 37])
    assert batched.ratios() == expected
    # Disjoint parts combine into the whole: shared n-grams count once.
    first, second = DistinctCounter((1, 2, 3)), DistinctCounter((1, 2, 3))
    first.add(texts[:350])
    second.add(iter(texts[350:]))
    first.update(second)
    assert first.ratios() == expected
    assert first.texts == len(texts) and first.exact


def test_counter_switches_to_a_sketch_past_its_exact_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts(3000, seed=6, words=20_000)
    exact = DistinctCounter((1, 2))
    exact.add(texts)
    expected = exact.ratios()
    monkeypatch.setattr(_diversity, "_EXACT_LIMIT", 2000)
    monkeypatch.setattr(_diversity, "_MERGE_MIN", 500)
    sketched = DistinctCounter((1, 2))
    sketched.add(texts)
    assert not sketched.exact
    for n in (1, 2):
        assert sketched.ratios()[n] == pytest.approx(expected[n], rel=0.01)
    # Unions of a sketch and an exact set, either way round, estimate the union.
    halves = [DistinctCounter((1, 2)), DistinctCounter((1, 2))]
    halves[0].add(texts[:2900])
    halves[1].add(texts[2900:])
    assert not halves[0].exact and halves[1].exact
    small_first = DistinctCounter((1, 2))
    small_first.update(halves[1])
    small_first.update(halves[0])
    halves[0].update(halves[1])
    for counter in (halves[0], small_first):
        for n in (1, 2):
            assert counter.ratios()[n] == pytest.approx(expected[n], rel=0.01)
    # A set that crosses the limit only when counted (its last batches still pending).
    monkeypatch.setattr(_diversity, "_MERGE_MIN", 10**9)
    late = DistinctCounter((1, 2))
    late.add(texts)
    for n in (1, 2):
        assert late.ratios()[n] == pytest.approx(expected[n], rel=0.01)
    assert not late.exact


def test_sketch_estimates_large_counts_within_its_error() -> None:
    # 2M distinct hashes: the relative standard error is 0.2 %, so 1 % is five of them.
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2**64 - 1, 2_000_000, dtype=np.uint64, endpoint=True)
    registers = np.zeros(1 << _diversity._HLL_BITS, dtype=np.uint8)
    _diversity._hll_add(registers, codes)
    _diversity._hll_add(registers, codes[:500_000])  # repeats change nothing
    assert _diversity._hll_estimate(registers) == pytest.approx(2_000_000, rel=0.01)


def test_counter_rejects_mismatched_orders() -> None:
    with pytest.raises(ValueError, match="orders differ"):
        DistinctCounter((1, 2)).update(DistinctCounter((1, 3)))
    with pytest.raises(ValueError, match="at least 1"):
        DistinctCounter((0,))


# --- self-BLEU ----------------------------------------------------------------------------


def test_self_bleu_hand_computed() -> None:
    # Each text against the other: p1 = 3/4, p2 = (2+1)/(3+1), p3 = (1+1)/(2+1),
    # p4 = (0+1)/(1+1) with add-one smoothing above unigrams; equal lengths, so no penalty.
    expected = (0.75 * 0.75 * (2 / 3) * 0.5) ** 0.25
    assert self_bleu(["a b c d", "A b c e."]) == pytest.approx(expected)


def test_self_bleu_of_identical_texts_is_one() -> None:
    assert self_bleu(["the cat sat on the mat"] * 5) == pytest.approx(1.0)


def test_self_bleu_applies_the_brevity_penalty() -> None:
    # The short text matches perfectly but is half the length of its reference.
    short, long = "a b c d", "a b c d e f g h"
    score = self_bleu([short, long], max_n=1)
    long_score = 4 / 8  # half its unigrams appear in the short reference; longer: no penalty
    short_score = 1.0 * math.exp(1 - 8 / 4)
    assert score == pytest.approx((short_score + long_score) / 2)


def _corpus(seed: int, size: int, repetitive: bool) -> list[str]:
    rng = random.Random(seed)
    openings = ["i need help with my order", "my order has not arrived yet"]
    words = [f"word{i}" for i in range(5000)]
    texts = []
    for _ in range(size):
        if repetitive:
            tail = " ".join(rng.choices(words[:20], k=5))
            texts.append(f"{rng.choice(openings)} and the tracking says {tail}")
        else:
            texts.append(" ".join(rng.choices(words, k=15)))
    return texts


def test_self_bleu_is_higher_for_a_repetitive_corpus() -> None:
    repetitive = self_bleu(_corpus(1, 300, repetitive=True))
    varied = self_bleu(_corpus(1, 300, repetitive=False))
    assert repetitive > 0.5
    assert varied < 0.2
    assert repetitive > varied


def test_self_bleu_is_deterministic_by_seed_and_leaves_global_random_alone() -> None:
    texts = _corpus(2, 1000, repetitive=True)
    state = random.getstate()
    first = self_bleu(texts, sample=50, seed=11)
    assert random.getstate() == state
    assert self_bleu(texts, sample=50, seed=11) == first
    assert self_bleu(texts, sample=50, seed=12) != first


def _reference_self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Direct O(k²) definition: every text against every other text's n-gram counts."""
    tokens = [normalize_text(t).split() for t in texts]

    def grams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
        return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))

    scores = []
    for i, hyp in enumerate(tokens):
        refs = [r for j, r in enumerate(tokens) if j != i]
        orders = min(max_n, len(hyp))
        if orders == 0:
            scores.append(0.0)
            continue
        logs = []
        for n in range(1, orders + 1):
            hyp_counts = grams(hyp, n)
            ref_counts = [grams(r, n) for r in refs]
            clipped = sum(min(c, max(rc[g] for rc in ref_counts)) for g, c in hyp_counts.items())
            total = len(hyp) - n + 1
            logs.append(
                (math.log(clipped / total) if clipped else -math.inf)
                if n == 1
                else math.log((clipped + 1) / (total + 1))
            )
        if logs[0] == -math.inf:
            scores.append(0.0)
            continue
        ref_len = min((len(r) for r in refs), key=lambda m: (abs(m - len(hyp)), m))
        brevity = 1.0 if len(hyp) > ref_len else math.exp(1 - ref_len / len(hyp))
        scores.append(brevity * math.exp(sum(logs) / orders))
    return sum(scores) / len(scores)


def test_self_bleu_matches_the_direct_definition() -> None:
    rng = random.Random(5)
    words = ["a", "b", "c", "d", "e", "f", "g"]
    texts = [" ".join(rng.choices(words, k=rng.randrange(0, 12))) for _ in range(40)]
    assert self_bleu(texts, sample=40) == pytest.approx(_reference_self_bleu(texts))


@pytest.mark.parametrize("texts", [[], ["only one"]])
def test_self_bleu_needs_two_texts(texts: list[str]) -> None:
    assert self_bleu(texts) == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [({"sample": 1}, "sample"), ({"max_n": 0}, "max_n")])
def test_self_bleu_rejects_invalid_parameters(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        self_bleu(["a", "b"], **kwargs)


def test_self_bleu_is_its_sample_scored() -> None:
    texts = _corpus(3, 120, repetitive=False)
    positions = self_bleu_positions(len(texts), sample=30, seed=4)
    assert len(positions) == 30 and positions == sorted(positions)
    sample = [texts[i] for i in positions]
    assert self_bleu_of_sample(sample) == self_bleu(texts, sample=30, seed=4)
    assert self_bleu_positions(1) == [] and self_bleu_of_sample(["one"]) == 0.0


# --- length statistics ------------------------------------------------------------------------


def test_length_stats() -> None:
    assert length_stats([4, 1, 3, 2]) == LengthStats(
        count=4, mean=2.5, p50=2.5, p90=pytest.approx(3.7), min=1.0, max=4.0
    )


def test_length_stats_streams_an_iterable() -> None:
    def lengths() -> Iterator[int]:
        yield from (4, 1, 3, 2)

    assert length_stats(lengths()) == length_stats([4, 1, 3, 2])
    assert length_stats(np.array([4, 1, 3, 2])) == length_stats([4, 1, 3, 2])


def test_length_stats_of_one_value() -> None:
    assert length_stats([7]) == LengthStats(count=1, mean=7.0, p50=7.0, p90=7.0, min=7.0, max=7.0)


def test_length_stats_of_nothing_is_zero() -> None:
    assert length_stats([]) == LengthStats(count=0, mean=0.0, p50=0.0, p90=0.0, min=0.0, max=0.0)


def test_length_stats_is_frozen() -> None:
    stats = length_stats([1.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.count = 2
