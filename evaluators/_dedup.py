"""Exact and near-duplicate detection for dialogue corpora.

Two passes over a stream of ``(id, text)`` items:

1. **Exact**: a tagged SHA-256 of the normalised text (:func:`normalize_text`), so copies that
   differ only in case, whitespace, Unicode presentation or cosmetic punctuation collapse.
2. **Near**: MinHash signatures of word bigrams (bigrams holding a digit weigh more, see
   ``_FACT_WEIGHT``), banded into LSH buckets; every candidate pair is verified on its
   signatures (estimated Jaccard ≥ threshold) before it counts.

Memory is a few hundred bytes per item, never the texts: text is consumed once, in bounded
chunks, and per item only a 16-byte digest, the LSH band keys (8 bytes per band) and a
signature are kept. A caller that can read items again by id (a store) passes ``reread``:
then the signature kept is one byte per permutation, enough to reject almost every false
candidate, and the few candidates left are re-read to verify on their full signatures.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "DedupResult",
    "Reread",
    "exact_key",
    "find_duplicates",
    "normalize_text",
    "normalized_tokens",
]

Reread = Callable[[Sequence[str]], Iterable[tuple[str, str]]]
"""Reads items again by id: given ids, yields their ``(id, text)``, each once, in any order."""

_U64 = npt.NDArray[np.uint64]
_I64 = npt.NDArray[np.int64]

# Shingles are word bigrams; a bigram holding a digit counts _FACT_WEIGHT times.
#
# A substitution flips about k of a text's ~n word k-shingles, so texts differing in a fraction
# f of their word positions have Jaccard ≈ (1 - k·f) / (1 + k·f). Near-duplicates ("3-6 words
# changed in 100-300", f ≈ 1-6 %) must stay above the default 0.8 and distinct look-alikes
# (same template, other order ids / names / dates / products) below it. Measured true
# Jaccard on the labelled corpus of tests/test_dedup.py (6 seeds; worst planted near-dup vs
# most similar pair of distinct dialogues):
#   word bigrams              near ≥ 0.80   look-alikes ≤ 0.84   overlap: false positives
#   word trigrams             near ≥ 0.71   look-alikes ≤ 0.74   overlap, near-dups lost
#   5-char shingles           near ≥ 0.82   look-alikes ≤ 0.85   overlap, ~6x the shingles
#   bigrams, digits count 3×  near ≥ 0.79   look-alikes ≤ 0.72
#   bigrams, digits count 4×  near ≥ 0.77   look-alikes ≤ 0.68   (3rd-worst near-dup ≥ 0.83)
# The overlap comes from look-alikes that share a template's wording word for word: their
# only differences are the facts, and in a long dialogue facts are a few percent of the
# words, like a handful of edits. Facts are what make a dialogue distinct, and the ones with
# digits (order ids, dates, amounts, flight numbers, versions) are cheap to recognise, so
# their bigrams weigh more. Edits rarely hit them, so near-duplicates barely move.
# Word rather than char shingles also keep the permutation kernel, which is linear in the
# shingle count, ~6x cheaper.
_SHINGLE_WORDS = 2
_FACT_WEIGHT = 4

# Seed of the permutation family. Fixed so signatures (and therefore results) are stable
# across runs, machines and processes.
_PERM_SEED = 0x5EED_D0C5

# Shingles per permutation batch: 128 permutations × 8192 shingles × 8 bytes = 8 MiB, which
# stays in cache; measured ~4x faster than 64 MiB batches.
_BATCH_SHINGLES = 8192
_BATCH_ELEMENTS = 128 * _BATCH_SHINGLES

# Tokens collected before they are hashed into signatures: bounds the token lists held.
_HASH_CHUNK_TOKENS = 16 * _BATCH_SHINGLES

# Candidate pairs verified per numpy call (two gathered uint32 rows per pair).
_VERIFY_CHUNK = 16384

# Bytes of the SHA-256 kept per item for exact matching: 128 bits, so a chance collision
# among even 10**12 texts has probability below 10**-14.
_DIGEST_BYTES = 16

# Distinct words whose hashes are cached; beyond that the cache starts over. Corpora full of
# ids and amounts have about as many distinct words as texts, so an unbounded cache would
# grow with the corpus; frequent words are back in the cache within a chunk.
_WORD_CACHE = 1 << 18

# Each bucket member is paired with the bucket's first member and its _WINDOW predecessors
# (input order). Buckets crowded with look-alikes then cost O(window) per member instead of
# O(bucket size), which keeps candidate generation linear in the corpus size.
_WINDOW = 8

# LSH banding must pass a pair at exactly the threshold with at least this probability; the
# most selective (rows per band) layout that does is chosen, so look-alikes rarely collide.
_MIN_CANDIDATE_PROBABILITY = 0.98

_MASK32 = np.uint64(0xFFFF_FFFF)
_SHIFT32 = np.uint64(32)

# Typographic variants LLMs emit; folded to ASCII before punctuation is judged, so "don’t"
# and "don't" normalise alike. NFKC leaves these untouched.
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": " ",  # an em dash separates words; a hyphen joins them
        "\u2015": " ",
        "\u2212": "-",
    }
)

# Punctuation that carries meaning even at a token's edge: "50%" is not "50".
_MEANINGFUL_PUNCTUATION = frozenset("%")


def _char_class(points: Sequence[int]) -> str:
    """A regex character class of code points, written as ranges (re matches ranges fast)."""
    ranges: list[str] = []
    start = prev = points[0]
    for cp in [*points[1:], -1]:
        if cp != prev + 1:
            last = "-" + re.escape(chr(prev)) if prev > start else ""
            ranges.append(re.escape(chr(start)) + last)
            start = cp
        prev = cp
    return "[" + "".join(ranges) + "]"


@functools.cache
def _punctuation_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Regexes for marks after a space, for runs of marks, and for both with astral marks.

    ``re`` has no Unicode category classes, so the class is built once from the Unicode
    database (~0.3 s, on first use rather than at import). Only the Basic Multilingual Plane
    goes into the fast patterns: re matches a class reaching above U+FFFF by scanning a range
    list, measured ~5x slower, so the ~200 astral marks (historic scripts) are only looked
    for in texts that contain astral characters at all (emoji do).
    """
    points = [
        cp
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)).startswith("P") and chr(cp) not in _MEANINGFUL_PUNCTUATION
    ]
    bmp = _char_class([cp for cp in points if cp <= 0xFFFF])
    every = _char_class(points)
    return (
        re.compile(f" {bmp}+"),
        re.compile(f"{bmp}{{2,}}"),
        re.compile(f" {every}+|{every}+(?= )|{every}{{2,}}"),
    )


# What str.split() treats as whitespace among ASCII characters, apart from the space itself.
_ASCII_WHITESPACE = ("\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _keep_minus(match: re.Match[str]) -> str:
    """Replacement for stripped marks that keeps a minus sign before a number ("-5")."""
    end = match.end()
    if match.group().endswith("-") and end < len(match.string) and match.string[end].isdigit():
        return " -"
    return " "


def normalize_text(text: str) -> str:
    """Normalise text for duplicate detection.

    Applies Unicode NFKC, folds typographic quotes and dashes to ASCII, casefolds, removes
    punctuation that does not change meaning and collapses whitespace to single spaces.
    Punctuation inside a token (``3.5``, ``10:30``, ``A-1234``, ``don't``), a minus sign
    before a number and ``%`` are kept, because they change the fact being stated; runs of
    marks inside a token (``a--b``, ``wait...what``) become a space.

    Args:
        text: Any text.

    Returns:
        The normalised text; ``""`` for text without words.

    Example:
        >>> normalize_text("  Hello,   WORLD!  Order #A-12 costs 3.50 (-5%)…")
        'hello world order a-12 costs 3.50 -5%'
    """
    return " ".join(normalized_tokens(text))


def normalized_tokens(text: str) -> list[str]:
    """Return the words of :func:`normalize_text`: ``normalize_text(text).split()``, faster.

    Metrics that count words (diversity, lengths) use this so they agree with dedup on what
    a word is, without paying for a join and a split per text.

    Args:
        text: Any text.

    Returns:
        The normalised words; empty for text without words.

    Example:
        >>> normalized_tokens("Hello,  WORLD!")
        ['hello', 'world']
    """
    # Every token edge becomes a literal space: "a space, then marks" has a literal prefix
    # that re finds with a fast string search, and marks at the end of a token are the same
    # pattern run over the reversed text. One pass with lookarounds or a callback per mark
    # measured 3x slower, and this runs on every text of the corpus.
    folded = unicodedata.normalize("NFKC", text)
    after_space, run, astral = _punctuation_patterns()
    if folded.isascii():
        # Most texts: str.replace of the few ASCII whitespace characters is ~10x cheaper than
        # split and join, and extra spaces are harmless until the final split.
        padded = folded.lower()
        for space in _ASCII_WHITESPACE:
            if space in padded:
                padded = padded.replace(space, " ")
        padded = f" {padded} "
    else:
        padded = " " + " ".join(folded.translate(_TYPOGRAPHIC).casefold().split()) + " "
        if _ASTRAL.search(padded):
            return astral.sub(_keep_minus, padded).split()
    padded = after_space.sub(_keep_minus, padded)
    padded = after_space.sub(" ", padded[::-1])[::-1]
    return run.sub(" ", padded).split()


def _digest(normalized: str) -> bytes:
    return hashlib.sha256(normalized.encode("utf-8")).digest()


def exact_key(text: str) -> str:
    """Return the exact-duplicate key of a text: a tagged SHA-256 of its normalised form.

    The algorithm tag keeps stored keys interpretable if the hash ever changes.

    Args:
        text: Any text.

    Returns:
        ``"sha256:"`` followed by 64 hex digits.

    Example:
        >>> exact_key("Hello,  world") == exact_key("hello world!")
        True
    """
    return "sha256:" + _digest(normalize_text(text)).hex()


@dataclass(frozen=True, slots=True)
class DedupResult:
    """Duplicates found in a corpus, keyed by item id.

    Attributes:
        exact: Exact duplicate id → id of its first occurrence (identical normalised text).
        near: Near-duplicate id → id of the kept item it duplicates. Values are always kept
            items: the earliest kept item, in input order, whose estimated Jaccard with the
            duplicate reaches the threshold.
        similarity: Near-duplicate id → estimated Jaccard with its ``near`` representative.
    """

    exact: dict[str, str]
    near: dict[str, str]
    similarity: dict[str, float]

    @property
    def duplicates(self) -> dict[str, str]:
        """Every duplicate id → the kept id it should be dropped in favour of.

        The union of ``exact`` and ``near``, flattened: an exact copy of an item that is itself
        a near-duplicate maps to that item's kept representative, so no value is also a key.
        """
        merged = dict(self.near)
        for dup, first in self.exact.items():
            merged[dup] = self.near.get(first, first)
        return merged


class _WordHashes(dict[str, int]):
    """Word → stable 64-bit hash, computed once per distinct word (up to ``_WORD_CACHE`` words).

    blake2b rather than ``hash()``: str hashes are salted per process (PYTHONHASHSEED). The
    lowest bit is replaced by "the word contains a digit", so the fact flag travels with the
    hash through the vectorised shingling at no extra cost.
    """

    def __missing__(self, word: str) -> int:
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest())
        value = (value & ~1) | any(ch.isdigit() for ch in word)
        if len(self) >= _WORD_CACHE:
            self.clear()
        self[word] = value
        return value

    def hashes(self, docs: Iterable[Sequence[str]], total: int) -> _U64:
        """The hashes of every word of ``docs``, concatenated; ``total`` is their word count."""
        return np.fromiter(map(self.__getitem__, chain.from_iterable(docs)), dtype=np.uint64, count=total)


# Stand-in for missing words in texts shorter than one shingle, so they still get a signature.
_PAD_WORD = "\x00"


def _mix64(x: _U64) -> _U64:
    """Apply the splitmix64 finaliser in place and return ``x``.

    Turns a weak combination of word hashes into uniform 64-bit values; uint64 arithmetic
    wraps, which is what the mixer expects.
    """
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class _MinHasher:
    """MinHash with ``num_perm`` universal hash functions over 32-bit shingle hashes.

    Permutation ``p`` is ``h_p(x) = ((a_p·x + b_p) mod 2**64) >> 32`` for 32-bit ``x`` and
    random 64-bit ``a_p`` (odd) and ``b_p``: Dietzfelbinger's multiply-add-shift family, which
    is strongly universal like ``(a·x + b) mod p`` but needs no division: numpy's uint64
    arithmetic wraps mod 2**64 for free, and the kernel measured ~4x faster than ``% prime``.
    The shift is applied after the minimum (shifting is monotone, so it commutes with min),
    which saves a pass over every shingle × permutation.
    """

    def __init__(self, num_perm: int) -> None:
        rng = np.random.default_rng(_PERM_SEED)
        top = np.iinfo(np.uint64).max
        self.num_perm = num_perm
        self._a = (rng.integers(0, top, num_perm, dtype=np.uint64, endpoint=True)) | np.uint64(1)
        self._b = rng.integers(0, top, num_perm, dtype=np.uint64, endpoint=True)
        self._words = _WordHashes()

    def signatures(self, docs: Sequence[Sequence[str]]) -> npt.NDArray[np.uint32]:
        """Signatures of non-empty token lists, shape ``(len(docs), num_perm)``."""
        k = _SHINGLE_WORDS
        padded = [d if len(d) >= k else [*d, *[_PAD_WORD] * (k - len(d))] for d in docs]
        lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
        total = int(lengths.sum())
        words = self._words.hashes(padded, total)
        # Shingle starting at token p: fold in the next k-1 word hashes. Windows that run into
        # the next document are dropped via the per-token document index.
        end = total - k + 1
        shingles = words[:end].copy()
        facts = words[:end] & np.uint64(1)
        for offset in range(1, k):
            shingles *= np.uint64(0x9E3779B97F4A7C15)
            shingles += words[offset : end + offset]
            facts |= words[offset : end + offset] & np.uint64(1)
        doc_of_token = np.repeat(np.arange(len(padded)), lengths)
        inside = doc_of_token[:end] == doc_of_token[k - 1 :]
        shingles, facts, doc = shingles[inside], facts[inside], doc_of_token[:end][inside]
        # Weighted Jaccard by replication: a fact shingle enters as _FACT_WEIGHT distinct
        # salted copies. np.repeat keeps the copies next to their shingle, so every document's
        # shingles stay contiguous, which the reduceat kernel needs.
        copies = np.where(facts == 1, _FACT_WEIGHT, 1)
        first_copy = np.cumsum(copies) - copies
        copy_number = np.arange(int(copies.sum()), dtype=np.uint64)
        copy_number -= np.repeat(first_copy, copies).astype(np.uint64)
        shingles = np.repeat(shingles, copies)
        shingles += copy_number * np.uint64(0xD6E8FEB86659FD93)
        counts = np.bincount(doc, weights=copies, minlength=len(padded)).astype(np.int64)
        shingles = _mix64(shingles)
        # Multiply-add-shift wants 32-bit keys; fold the mixed 64 bits into the low 32.
        shingles = (shingles >> _SHIFT32) ^ (shingles & _MASK32)
        return self._minhash(shingles, counts)

    def _minhash(self, shingles: _U64, counts: _I64) -> npt.NDArray[np.uint32]:
        out = np.empty((len(counts), self.num_perm), dtype=np.uint32)
        ends = np.cumsum(counts)
        doc = 0
        while doc < len(counts):
            # Group whole documents into a batch of about _BATCH_SHINGLES shingles.
            start = int(ends[doc - 1]) if doc else 0
            last = int(np.searchsorted(ends, start + _BATCH_SHINGLES, side="left"))
            last = min(max(last, doc), len(counts) - 1)
            stop = int(ends[last])
            x = shingles[start:stop]
            offsets = (np.concatenate(([start], ends[doc:last])) - start).astype(np.intp)
            out[doc : last + 1] = self._batch(x, offsets).T
            doc = last + 1
        return out

    def _batch(self, x: _U64, offsets: npt.NDArray[np.intp]) -> npt.NDArray[np.uint32]:
        # A single huge document would make a (num_perm × shingles) buffer large, so the
        # permutations are processed in blocks that keep the buffer near _BATCH_ELEMENTS.
        block = max(1, min(self.num_perm, _BATCH_ELEMENTS // max(len(x), 1)))
        result = np.empty((self.num_perm, len(offsets)), dtype=np.uint32)
        buf = np.empty((block, len(x)), dtype=np.uint64)
        for lo in range(0, self.num_perm, block):
            hi = min(lo + block, self.num_perm)
            view = buf[: hi - lo]
            np.multiply(self._a[lo:hi, None], x[None, :], out=view)
            view += self._b[lo:hi, None]
            mins = np.minimum.reduceat(view, offsets, axis=1)
            result[lo:hi] = mins >> _SHIFT32
        return result


def _band_layout(threshold: float, num_perm: int, bands: int | None) -> tuple[int, int]:
    """Return ``(bands, rows)`` for LSH.

    A pair with Jaccard ``s`` becomes a candidate with probability ``1 - (1 - s**rows)**bands``.
    Verification removes false candidates, so missing a true pair costs more than checking a
    false one: choose the most selective layout (most rows per band) that still passes a pair
    at exactly the threshold with probability ``_MIN_CANDIDATE_PROBABILITY``.
    """
    if bands is not None:
        if not 1 <= bands <= num_perm:
            raise ValueError(f"bands must be between 1 and num_perm ({num_perm}), got {bands}")
        return bands, num_perm // bands
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        b = num_perm // rows
        if 1 - (1 - threshold**rows) ** b >= _MIN_CANDIDATE_PROBABILITY:
            best = (b, rows)
    return best


def _band_keys(signatures: npt.NDArray[np.uint32], bands: int, rows: int) -> _U64:
    """One 64-bit key per (band, document): a mixed combination of the band's rows."""
    keys = np.empty((bands, len(signatures)), dtype=np.uint64)
    for band in range(bands):
        block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        # Salting with the band number keeps equal rows in different bands apart.
        key = np.full(len(signatures), band, dtype=np.uint64)
        for col in range(rows):
            key *= np.uint64(0x9E3779B97F4A7C15)
            key += block[:, col]
        keys[band] = _mix64(key)
    return keys


def _candidate_pairs(band_keys: Iterable[_U64], n: int) -> tuple[_I64, _I64]:
    """Pairs ``(i, j)``, ``i < j``, that share a bucket in some band (deduplicated).

    ``band_keys`` yields, band after band, the ``n`` items' keys; one band is held at a time.
    Within a bucket (members in input order), each member is paired with the bucket's first
    member and its ``_WINDOW`` predecessors: linear in the corpus size however crowded a
    bucket gets.
    """
    firsts: list[_I64] = []
    seconds: list[_I64] = []
    positions = np.arange(n, dtype=np.int64)
    for keys in band_keys:
        order = np.argsort(keys, kind="stable").astype(np.int64)
        sorted_keys = keys[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group_start = np.maximum.accumulate(np.where(starts, positions, 0))
        member = ~starts
        firsts.append(order[group_start[member]])
        seconds.append(order[member])
        for back in range(1, _WINDOW + 1):
            pos = positions[back:]
            same = group_start[pos] <= pos - back
            firsts.append(order[pos[same] - back])
            seconds.append(order[pos[same]])
    codes = _sorted_unique(np.concatenate(firsts) * n + np.concatenate(seconds))
    return codes // n, codes % n


_Codes = TypeVar("_Codes", bound=npt.NDArray[np.integer[Any]])


def _sorted_unique(codes: _Codes) -> _Codes:
    """The distinct values of ``codes``, ascending; ``codes`` itself is sorted in place.

    Sorting rather than ``np.unique``: numpy's hash-based np.unique is far slower on
    mostly-distinct values.
    """
    codes.sort()
    keep = np.ones(len(codes), dtype=bool)
    keep[1:] = codes[1:] != codes[:-1]
    return cast(_Codes, codes[keep])


_Signatures = npt.NDArray[np.uint32] | npt.NDArray[np.uint8]


def _count_equal(left: _Signatures, right: _Signatures) -> _I64:
    """Equal entries per row of two signature matrices.

    The boolean matrix is counted eight entries at a time, as the bits of 64-bit words: twice
    as fast as ``count_nonzero(axis=1)``, and verification compares tens of millions of pairs
    at 1M items.
    """
    equal = left == right
    counts: _I64
    if _bitwise_count is None or equal.shape[1] % 8:
        counts = np.count_nonzero(equal, axis=1).astype(np.int64)
    else:
        counts = _bitwise_count(equal.view(np.uint64)).sum(axis=1, dtype=np.int64)
    return counts


# numpy >= 2.0; on older numpy, _count_equal counts booleans instead.
_bitwise_count = getattr(np, "bitwise_count", None)


def _verify(
    signatures: _Signatures, first: _I64, second: _I64, threshold: float
) -> tuple[_I64, _I64, npt.NDArray[np.float64]]:
    """Keep the pairs whose estimated Jaccard (share of equal signature rows) ≥ threshold."""
    num_perm = signatures.shape[1]
    # Compare integer counts, not floats, so the cut-off does not depend on rounding.
    need = int(np.ceil(threshold * num_perm - 1e-9))
    kept_first: list[_I64] = []
    kept_second: list[_I64] = []
    kept_sim: list[npt.NDArray[np.float64]] = []
    for lo in range(0, len(first), _VERIFY_CHUNK):
        a = first[lo : lo + _VERIFY_CHUNK]
        b = second[lo : lo + _VERIFY_CHUNK]
        equal = _count_equal(signatures[a], signatures[b])
        ok = equal >= need
        kept_first.append(a[ok])
        kept_second.append(b[ok])
        kept_sim.append(equal[ok] / num_perm)
    if not kept_first:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64)
    return np.concatenate(kept_first), np.concatenate(kept_second), np.concatenate(kept_sim)


def _cluster(
    signatures: _Signatures,
    first: _I64,
    second: _I64,
    sims: npt.NDArray[np.float64],
    threshold: float,
) -> Iterator[tuple[int, int, float]]:
    """Assign near-duplicates to kept representatives, greedily in input order.

    Yields ``(duplicate, representative, similarity)``. An item is a duplicate of the earliest
    kept item it is verified against. If its verified neighbours were all dropped already,
    their representatives are checked directly, so a chain a ~ b ~ c never maps c to a without
    a verified estimate ≥ threshold between c and a.
    """
    num_perm = signatures.shape[1]
    need = int(np.ceil(threshold * num_perm - 1e-9))
    order = np.lexsort((first, second))
    first, second, sims = first[order], second[order], sims[order]
    representative: dict[int, int] = {}
    bounds = np.flatnonzero(np.diff(second)) + 1
    for lo, hi in zip(chain((0,), bounds.tolist()), chain(bounds.tolist(), (len(second),)), strict=True):
        if lo == hi:
            continue
        item = int(second[lo])
        best: tuple[int, float] | None = None
        for neighbour, sim in zip(first[lo:hi].tolist(), sims[lo:hi].tolist(), strict=True):
            rep = representative.get(neighbour, neighbour)
            if best is not None and rep >= best[0]:
                continue
            if rep != neighbour:
                equal = int(np.count_nonzero(signatures[rep] == signatures[item]))
                if equal < need:
                    continue
                sim = equal / num_perm
            best = (rep, sim)
        if best is not None:
            representative[item] = best[0]
            yield item, best[0], best[1]


@dataclass(slots=True)
class _FirstRead:
    """What one read of the corpus keeps per item: never its text.

    Attributes:
        ids: Item ids, in input order.
        digests: ``_DIGEST_BYTES`` of the exact key per item, concatenated.
        worded: One byte per item: 1 if its text has words (and so a signature).
        keys: LSH band keys of the worded items, one ``(bands, chunk)`` block per hashed chunk.
        signatures: Their MinHash signatures, one ``(chunk, num_perm)`` block per chunk: full
            ``uint32`` rows, or only each row's low byte when the caller can re-read items.
    """

    ids: list[str] = field(default_factory=list)
    digests: bytearray = field(default_factory=bytearray)
    worded: bytearray = field(default_factory=bytearray)
    keys: list[_U64] = field(default_factory=list)
    signatures: list[_Signatures] = field(default_factory=list)

    def digest(self, position: int) -> bytes:
        return bytes(self.digests[position * _DIGEST_BYTES : (position + 1) * _DIGEST_BYTES])


def _item_digest(tokens: Sequence[str]) -> bytes:
    """What dedup keeps of an item's exact key: the first ``_DIGEST_BYTES`` of its digest."""
    return _digest(" ".join(tokens))[:_DIGEST_BYTES]


def _read(
    items: Iterable[tuple[str, str]], hasher: _MinHasher, bands: int, rows: int, *, low_bytes: bool
) -> _FirstRead:
    """Consume ``items`` once, keeping per item what dedup needs (see :class:`_FirstRead`)."""
    read = _FirstRead()
    seen: set[str] = set()
    pending: list[list[str]] = []
    pending_tokens = 0

    def flush() -> None:
        signatures = hasher.signatures(pending)
        read.keys.append(_band_keys(signatures, bands, rows))
        read.signatures.append(signatures.astype(np.uint8) if low_bytes else signatures)
        pending.clear()

    for item_id, text in items:
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r}: ids must be unique")
        seen.add(item_id)
        read.ids.append(item_id)
        tokens = normalized_tokens(text)
        read.digests += _item_digest(tokens)
        read.worded.append(1 if tokens else 0)
        if not tokens:
            continue  # no words, no shingles: only exact matching applies
        pending.append(tokens)
        pending_tokens += len(tokens)
        # Hash in chunks so only signatures, never token lists, accumulate.
        if pending_tokens >= _HASH_CHUNK_TOKENS:
            flush()
            pending_tokens = 0
    if pending:
        flush()
    return read


def _first_occurrences(read: _FirstRead) -> _I64:
    """Per item, the position of the first item with its digest (its own if none is earlier).

    A stable sort of the digests, not a dict of them: 16 bytes per item instead of a Python
    object per item.
    """
    n = len(read.ids)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    halves = np.frombuffer(read.digests, dtype=np.uint64).reshape(n, 2)
    order = np.lexsort((halves[:, 1], halves[:, 0]))  # stable: equal digests stay in input order
    ordered = halves[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    first = np.empty(n, dtype=np.int64)
    first[order] = order[group_start]
    return first


def _gather(blocks: Sequence[_Signatures], rows: _I64, width: int) -> _Signatures:
    """Rows ``rows`` (ascending) of the blocks stacked, without stacking them all."""
    dtype = blocks[0].dtype if blocks else np.uint32
    out: _Signatures = np.empty((len(rows), width), dtype=dtype)
    lo = start = 0
    for block in blocks:
        end = start + len(block)
        hi = int(np.searchsorted(rows, end, side="left"))
        out[lo:hi] = block[rows[lo:hi] - start]
        lo, start = hi, end
    return out


def _reread_signatures(
    reread: Reread, hasher: _MinHasher, ids: list[str], digests: list[bytes]
) -> npt.NDArray[np.uint32]:
    """Full signatures of ``ids``, read again through ``reread``, in the order of ``ids``.

    Each text must normalise to the digest the first read saw: a corpus that changed between
    the reads would otherwise be verified on other texts than the ones bucketed.
    """
    slot = {item_id: k for k, item_id in enumerate(ids)}
    out = np.empty((len(ids), hasher.num_perm), dtype=np.uint32)
    done = np.zeros(len(ids), dtype=bool)
    pending: list[list[str]] = []
    slots: list[int] = []
    pending_tokens = 0
    for item_id, text in reread(ids):
        k = slot.get(item_id)
        if k is None or done[k]:
            raise ValueError(f"reread returned {item_id!r}, which was not asked for or came twice")
        done[k] = True
        tokens = normalized_tokens(text)
        if _item_digest(tokens) != digests[k]:
            raise ValueError(f"item {item_id!r} changed between the first read and the reread")
        pending.append(tokens)
        slots.append(k)
        pending_tokens += len(tokens)
        if pending_tokens >= _HASH_CHUNK_TOKENS:
            out[slots] = hasher.signatures(pending)
            pending, slots, pending_tokens = [], [], 0
    if pending:
        out[slots] = hasher.signatures(pending)
    if not done.all():
        missing = ids[int(np.flatnonzero(~done)[0])]
        raise ValueError(f"reread did not return {missing!r}")
    return out


def _renumber(members: _I64, *pairs: _I64) -> list[_I64]:
    """Indices into ``members`` (ascending) of the values in ``pairs``: order is preserved."""
    return [np.searchsorted(members, side).astype(np.int64) for side in pairs]


def find_duplicates(
    items: Iterable[tuple[str, str]],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    reread: Reread | None = None,
) -> DedupResult:
    """Find exact and near-duplicate texts in a corpus.

    Input order decides what is kept: the first occurrence of an exact duplicate, and for near
    duplicates the earliest kept item they match. Exact duplicates are excluded from near
    detection. Near detection uses MinHash over the word bigrams of the normalised text, with
    LSH banding; a candidate pair counts only if its estimated Jaccard reaches ``threshold``.
    Bigrams holding a digit count four times (a weighted Jaccard): order ids, dates and
    amounts are what tell two templated dialogues apart, so two dialogues that differ only
    in such facts stay distinct, while a few edited words still leave a near-duplicate.

    ``items`` is consumed once, in bounded chunks, and texts are never kept: time is linear in
    the corpus size (plus a sort of 8-byte keys per band) and memory per item is the id, a
    16-byte digest, 8 bytes per LSH band and a signature of ``4 × num_perm`` bytes, or of
    ``num_perm`` bytes with ``reread`` (~290 bytes per item at the defaults, text of any
    length). With ``reread``, candidate pairs are first screened on the low byte of each
    signature row (rows that are equal have equal low bytes, so this rejects only pairs that
    would fail anyway), and the items of the pairs left are read again to verify on full
    signatures: the result is the same as without ``reread``.

    Args:
        items: ``(id, text)`` pairs; ids must be unique.
        threshold: Estimated (weighted) Jaccard similarity of word bigrams at or above which
            two texts are near-duplicates. Between 0 (exclusive) and 1 (inclusive). Editing a
            fraction f of the words gives about (1 - 2f) / (1 + 2f): at 0.8, 3-6 edits in 200
            words (0.89-0.94) are found, 6 in 100 words (0.79) is the limit, and texts that
            differ in 10 % of their words (0.67) are distinct.
        num_perm: MinHash permutations; more is slower but estimates more precisely
            (standard error ``sqrt(J·(1-J)/num_perm)``, ±0.035 at J = 0.8 with 128).
        bands: LSH bands. ``None`` picks the most selective banding that still makes a pair
            at exactly ``threshold`` a candidate with probability ≥ 0.98.
        reread: Reads items again by id (see :data:`Reread`), for corpora too large to keep
            full signatures of; a store passes a query. It is called once, after ``items`` is
            consumed, with the ids of the items of candidate pairs (in the bench corpus, the
            near-duplicates and ~10 % of the rest), and must return exactly those items with
            the texts ``items`` gave.

    Returns:
        The duplicates found; see :class:`DedupResult`.

    Raises:
        ValueError: On an invalid parameter, a repeated id, or a ``reread`` that returns other
            ids or other texts than asked for.

    Example:
        >>> result = find_duplicates([("a", "Hi there!"), ("b", "hi   THERE")])
        >>> result.exact
        {'b': 'a'}
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be at least 1, got {num_perm}")
    band_count, rows = _band_layout(threshold, num_perm, bands)

    hasher = _MinHasher(num_perm)
    read = _read(items, hasher, band_count, rows, low_bytes=reread is not None)
    ids = read.ids
    positions = np.arange(len(ids), dtype=np.int64)
    first = _first_occurrences(read)
    exact = {ids[dup]: ids[first[dup]] for dup in np.flatnonzero(first != positions).tolist()}
    worded = np.frombuffer(read.worded, dtype=np.bool_)
    # Near detection runs on the worded first occurrences; near index k is item near_items[k],
    # whose signature is row near_rows[k] of the blocks (only worded items have one).
    near_items = np.flatnonzero(worded & (first == positions))
    near_rows = (np.cumsum(worded, dtype=np.int64) - 1)[near_items]
    del first, positions

    near: dict[str, str] = {}
    similarity: dict[str, float] = {}
    if len(near_items) > 1:

        def band_keys() -> Iterator[_U64]:
            for band in range(band_count):
                yield np.concatenate([block[band] for block in read.keys])[near_rows]

        first_idx, second_idx = _candidate_pairs(band_keys(), len(near_items))
        read.keys.clear()
        # From here on, signatures are only needed for the items of candidate pairs.
        members = np.unique(np.concatenate((first_idx, second_idx)))
        signatures = _gather(read.signatures, near_rows[members], num_perm)
        read.signatures.clear()
        first_idx, second_idx = _renumber(members, first_idx, second_idx)
        if reread is not None:
            first_idx, second_idx, _ = _verify(signatures, first_idx, second_idx, threshold)
            kept = np.unique(np.concatenate((first_idx, second_idx)))
            members = members[kept]
            first_idx, second_idx = _renumber(kept, first_idx, second_idx)
            wanted = near_items[members].tolist()
            signatures = (
                _reread_signatures(reread, hasher, [ids[p] for p in wanted], [read.digest(p) for p in wanted])
                if wanted
                else np.empty((0, num_perm), dtype=np.uint32)
            )
        first_idx, second_idx, sims = _verify(signatures, first_idx, second_idx, threshold)
        for dup, rep, sim in _cluster(signatures, first_idx, second_idx, sims, threshold):
            duplicate = ids[near_items[members[dup]]]
            near[duplicate] = ids[near_items[members[rep]]]
            similarity[duplicate] = sim
    return DedupResult(exact=exact, near=near, similarity=similarity)
