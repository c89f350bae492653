"""Corpus diversity metrics: distinct-n, self-BLEU and length statistics.

All text metrics work on the words of :func:`~dramaturg.evaluators._dedup.normalize_text`,
so case, whitespace and cosmetic punctuation never count as diversity.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt

from ._dedup import normalized_tokens

__all__ = ["LengthStats", "distinct_n", "distinct_ns", "length_stats", "self_bleu"]

_I64 = npt.NDArray[np.int64]

# Texts tokenised per numpy conversion: bounds the token lists held as Python strings.
_TOKEN_CHUNK = 2048


class _Vocabulary(dict[str, int]):
    """Token → dense id, assigned on first sight."""

    def __missing__(self, token: str) -> int:
        value = len(self)
        self[token] = value
        return value


def _token_ids(texts: Iterable[str]) -> tuple[_I64, _I64, int]:
    """All tokens as dense ids (concatenated), tokens per text, and the vocabulary size."""
    vocabulary = _Vocabulary()
    id_chunks: list[_I64] = []
    lengths: list[int] = []
    chunk: list[list[str]] = []

    def flush() -> None:
        total = sum(map(len, chunk))
        tokens = chain.from_iterable(chunk)
        id_chunks.append(np.fromiter(map(vocabulary.__getitem__, tokens), np.int64, total))
        chunk.clear()

    for text in texts:
        tokens = normalized_tokens(text)
        lengths.append(len(tokens))
        chunk.append(tokens)
        if len(chunk) >= _TOKEN_CHUNK:
            flush()
    if chunk:
        flush()
    ids = np.concatenate(id_chunks) if id_chunks else np.empty(0, dtype=np.int64)
    return ids, np.asarray(lengths, dtype=np.int64), len(vocabulary)


def _count_distinct(ids: _I64, lengths: _I64, vocabulary: int, n: int) -> tuple[int, int]:
    """(distinct n-grams, total n-grams), never counting windows across two texts.

    n-grams become int64 codes so numpy can count them; a Python set of 20M tuples would
    need gigabytes. Codes are exact, not hashes: ids are packed into one int64 while they
    fit; beyond that, k-grams are renumbered densely before each next token is added.
    """
    total = len(ids)
    starts = total - n + 1
    if starts <= 0:
        return 0, 0
    width = max(1, (vocabulary - 1).bit_length())
    codes = ids[:starts].copy()
    if n * width <= 63:
        for k in range(1, n):
            codes <<= np.int64(width)
            codes |= ids[k : starts + k]
    else:
        codes = ids
        for k in range(1, n):
            # codes[p] numbers the k-gram at p densely (< total), so code · vocabulary + id
            # fits an int64 for any corpus below ~3 billion tokens.
            codes = _dense_ranks(codes[: total - k] * np.int64(vocabulary) + ids[k:])
        codes = codes[:starts]
    # The window at p crosses out of its text t when end_t - n < p < end_t. A boolean mask
    # rather than a per-token text index: 1 byte per token instead of 8.
    inside = np.ones(starts, dtype=bool)
    ends = np.cumsum(lengths)
    for back in range(1, n):
        crossing = (ends - back)[lengths >= back]
        inside[crossing[crossing < starts]] = False
    valid = codes[inside]
    valid.sort()
    return int(np.count_nonzero(valid[1:] != valid[:-1])) + min(len(valid), 1), len(valid)


def _dense_ranks(values: _I64) -> _I64:
    """Replace each value by the rank of its value among the distinct values.

    Sort-based: numpy's hash-based ``np.unique`` measured ~80x slower than a sort when
    nearly every value is distinct, which is the common case for 3-grams.
    """
    order = np.argsort(values)
    ordered = values[order]
    ranks = np.empty(len(values), dtype=np.int64)
    if len(values):
        ranks[order] = np.concatenate(([0], np.cumsum(ordered[1:] != ordered[:-1])))
    return ranks


def distinct_ns(texts: Sequence[str], ns: Iterable[int]) -> dict[int, float]:
    """Distinct-n for several n, tokenising the corpus once.

    Args:
        texts: The corpus.
        ns: The n-gram orders, each at least 1.

    Returns:
        ``{n: distinct-n}``; see :func:`distinct_n`.

    Raises:
        ValueError: If an order is below 1.

    Example:
        >>> distinct_ns(["a b a b"], [1, 2])
        {1: 0.5, 2: 0.6666666666666666}
    """
    orders = sorted(set(ns))
    if orders and orders[0] < 1:
        raise ValueError(f"n-gram orders must be at least 1, got {orders[0]}")
    ids, lengths, vocabulary = _token_ids(texts)
    result: dict[int, float] = {}
    for n in orders:
        distinct, total = _count_distinct(ids, lengths, vocabulary, n)
        result[n] = distinct / total if total else 0.0
    return result


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams divided by total n-grams, over the whole corpus.

    Tokens are the words of the normalised texts (:func:`normalize_text`); n-grams never span
    two texts. Higher is more diverse; 1.0 means no n-gram repeats anywhere.

    Args:
        texts: The corpus.
        n: The n-gram order, at least 1.

    Returns:
        The ratio, or 0.0 if the corpus has no n-grams.

    Raises:
        ValueError: If ``n`` is below 1.

    Example:
        >>> distinct_n(["the cat", "The cat!"], 1)
        0.5
    """
    return distinct_ns(texts, (n,))[n]


def _ngram_counts(tokens: Sequence[str], max_n: int) -> list[Counter[tuple[str, ...]]]:
    return [Counter(zip(*(tokens[k:] for k in range(order)), strict=False)) for order in range(1, max_n + 1)]


def _closest_length(hypothesis: int, references: Iterable[int]) -> int:
    # BLEU's effective reference length: the closest one, the shorter on a tie.
    return min(references, key=lambda length: (abs(length - hypothesis), length))


def self_bleu(texts: Sequence[str], *, sample: int = 200, seed: int = 0, max_n: int = 4) -> float:
    """Self-BLEU: mean BLEU of each sampled text against all other sampled texts.

    Higher means the texts repeat each other's phrasing (less diverse). Each text is scored
    against the rest of the sample as references (clipped n-gram precision up to ``max_n``,
    geometric mean, brevity penalty against the closest reference length). Orders above 1
    use add-one smoothing (Lin & Och, 2004) so one missing 4-gram does not zero a score;
    texts shorter than ``max_n`` tokens use the orders they have.

    Cost is linear in the sampled tokens: each sampled text's n-grams are counted once and,
    per n-gram, the two highest counts across the sample are kept, which is enough to know
    the highest count among the *other* texts.

    Args:
        texts: The corpus.
        sample: How many texts to sample (without replacement); at least 2.
        seed: Seed of the sampling ``random.Random``; the same seed samples the same texts.
        max_n: Highest n-gram order, at least 1.

    Returns:
        Self-BLEU in [0, 1]; 0.0 for fewer than two texts.

    Raises:
        ValueError: If ``sample`` is below 2 or ``max_n`` below 1.

    Example:
        >>> self_bleu(["the cat sat on the mat"] * 3)
        1.0
    """
    if sample < 2:
        raise ValueError(f"sample must be at least 2, got {sample}")
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n}")
    if len(texts) < 2:
        return 0.0
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(texts)), min(sample, len(texts))))
    tokens = [normalized_tokens(texts[i]) for i in chosen]
    counts = [_ngram_counts(t, max_n) for t in tokens]

    # Per order and n-gram: (highest count, index of its text, second-highest count).
    top: list[dict[tuple[str, ...], tuple[int, int, int]]] = [{} for _ in range(max_n)]
    for index, per_order in enumerate(counts):
        for order_top, order_counts in zip(top, per_order, strict=True):
            for gram, count in order_counts.items():
                best, owner, second = order_top.get(gram, (0, -1, 0))
                if count > best:
                    order_top[gram] = (count, index, best)
                elif count > second:
                    order_top[gram] = (best, owner, count)

    lengths = [len(t) for t in tokens]
    scores: list[float] = []
    for index, per_order in enumerate(counts):
        length = lengths[index]
        orders = min(max_n, length)
        if orders == 0:
            scores.append(0.0)
            continue
        log_precision = 0.0
        for order in range(orders):
            clipped = 0
            for gram, count in per_order[order].items():
                best, owner, second = top[order][gram]
                clipped += min(count, second if owner == index else best)
            total = length - order
            if order == 0:
                if clipped == 0:
                    log_precision = -math.inf
                    break
                log_precision += math.log(clipped / total)
            else:
                log_precision += math.log((clipped + 1) / (total + 1))
        if log_precision == -math.inf:
            scores.append(0.0)
            continue
        others = chain(lengths[:index], lengths[index + 1 :])
        reference = _closest_length(length, others)
        brevity = 1.0 if length > reference else math.exp(1 - reference / length)
        scores.append(brevity * math.exp(log_precision / orders))
    return math.fsum(scores) / len(scores)


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Summary of a list of lengths (words, turns, tokens...).

    Percentiles interpolate linearly between the closest values. For no values, ``count``
    is 0 and every other field is 0.0.
    """

    count: int
    mean: float
    p50: float
    p90: float
    min: float
    max: float


def length_stats(values: Sequence[float]) -> LengthStats:
    """Summarise lengths: count, mean, median, 90th percentile, min and max.

    Args:
        values: Lengths, in any unit.

    Returns:
        The summary; all zeros for no values.

    Example:
        >>> length_stats([1, 2, 3, 4])
        LengthStats(count=4, mean=2.5, p50=2.5, p90=3.7, min=1.0, max=4.0)
    """
    if len(values) == 0:
        return LengthStats(count=0, mean=0.0, p50=0.0, p90=0.0, min=0.0, max=0.0)
    array = np.asarray(values, dtype=np.float64)
    p50, p90 = np.percentile(array, [50, 90])
    return LengthStats(
        count=len(array),
        mean=float(array.mean()),
        p50=float(p50),
        p90=float(p90),
        min=float(array.min()),
        max=float(array.max()),
    )
