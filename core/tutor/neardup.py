"""Near-duplicate questions, found in sub-quadratic time with MinHash and LSH banding.

Comparing every pair of a 100k-question bank is 5 billion comparisons. Instead
each question gets a 96-number MinHash signature over its word pairs (which
survive a changed number or an inserted word better than longer shingles on
texts as short as questions). The signature is cut into bands; questions that
agree on a whole band share a bucket, and only bucket-mates are compared
exactly. The band width is chosen from the threshold, so pairs well below it
almost never meet: work grows with the number of questions plus the number of
genuinely similar pairs.
"""

from __future__ import annotations

import re
import zlib
from array import array
from dataclasses import dataclass

import numpy as np

HASHES = 96
# One seed per hash function, fixed: signatures must agree across runs and machines.
_SEEDS = np.random.default_rng(20261122).integers(0, 1 << 63, HASHES, dtype=np.uint64)
# A band value shared by this many questions is boilerplate, like a stop word:
# it stops collecting members, so one common phrase cannot make the work
# quadratic. A real near duplicate agrees on several bands and is still found.
BUCKET_CAP = 64
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
# (bands, rows) with bands * rows == HASHES; a pair of similarity s meets in
# some band with probability 1 - (1 - s^rows)^bands, which rises steeply around
# (1/bands)^(1/rows).
_LAYOUTS = [(4, 24), (8, 12), (12, 8), (24, 4), (48, 2)]


def shingles(text: str) -> array:
    """The hashed word pairs of a text (lowercase, punctuation dropped), distinct and compact."""
    words = _WORD.findall(text.lower())
    # crc32, not hash(): the same text must give the same shingles in every process.
    return array("I", {zlib.crc32(" ".join(words[i : i + 2]).encode()) for i in range(max(1, len(words) - 1))})


def signature(hashes: array) -> np.ndarray:
    """MinHash: for each of HASHES seeded hash functions, the smallest value over the shingles.

    Each function is splitmix64's finaliser of (shingle xor seed), which mixes
    every input bit into every output bit. A linear (a*h + b) mod p on 32-bit
    inputs did not: its order followed h's own, so one new shingle with a small
    hash moved a third of the minima at once, and a pair with Jaccard 0.97 could
    agree on 70% of its signature and be missed (tests/test_collect.py pins this).
    """
    if not hashes:
        return np.zeros(HASHES, dtype=np.uint64)
    x = np.frombuffer(hashes, dtype=np.uint32).astype(np.uint64)[:, None] ^ _SEEDS
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)  # multiplication wraps at 2^64, as the finaliser intends
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x.min(axis=0)


def jaccard(a: array, b: array) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def layout(threshold: float) -> tuple[int, int]:
    """The banding whose steep part sits just below the threshold (high recall at it)."""
    fitting = [(b, r) for b, r in _LAYOUTS if (1 / b) ** (1 / r) <= threshold - 0.05]
    return max(fitting, key=lambda br: (1 / br[0]) ** (1 / br[1])) if fitting else _LAYOUTS[-1]


@dataclass(frozen=True)
class NearDuplicate:
    new_id: str
    old_id: str
    similarity: float


class NearDuplicateIndex:
    """Add questions one by one; each add returns the earlier questions it nearly duplicates."""

    def __init__(self, threshold: float = 0.8):
        self.threshold = threshold
        self.bands, self.rows = layout(threshold)
        # Per band: hash of the band's values -> one question index, or a list once shared.
        # (Most buckets hold one question; an int costs far less than a list.)
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._ids: list[str] = []
        self._shingles: list[array] = []
        self._signatures = np.empty((1024, HASHES), dtype=np.uint32)  # low 32 bits suffice to compare

    def add(self, question_id: str, text: str) -> list[NearDuplicate]:
        hashes = shingles(text)
        sig = signature(hashes)
        index = len(self._ids)
        candidates: set[int] = set()
        for band, buckets in enumerate(self._buckets):
            key = hash(sig[band * self.rows : (band + 1) * self.rows].tobytes())  # a false match is weeded out below
            members = buckets.get(key)
            if members is None:
                buckets[key] = index
            elif isinstance(members, int):
                candidates.add(members)
                buckets[key] = [members, index]
            else:
                candidates.update(members)
                if len(members) < BUCKET_CAP:
                    members.append(index)
        self._ids.append(question_id)
        self._shingles.append(hashes)
        if index == len(self._signatures):
            self._signatures = np.concatenate([self._signatures, np.empty_like(self._signatures)])
        self._signatures[index] = sig  # numpy keeps the low 32 bits
        if not candidates:
            return []
        # Bucket-mates that share a phrase but little else are common in exam
        # banks ("which of the following"); the signatures estimate similarity
        # for all of them in one step, and only likely pairs are compared exactly.
        others = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        estimate = (self._signatures[others] == sig.astype(np.uint32)).mean(axis=1)
        likely = others[estimate >= self.threshold - 0.15]
        found = [NearDuplicate(question_id, self._ids[o], round(s, 3))
                 for o in likely.tolist() if (s := jaccard(hashes, self._shingles[o])) >= self.threshold]
        return sorted(found, key=lambda d: -d.similarity)
