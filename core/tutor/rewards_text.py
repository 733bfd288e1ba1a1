"""Text helpers for the GRPO rewards: content words with a light stem, and TF-IDF cosine in numpy.

Rewards run on every training step over untrusted completions, so everything
here is total: any string (empty, huge, any script) gives a result, never an error.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


# --- content words ----------------------------------------------------------------------

# English function words plus the mark-scheme vocabulary that never carries a mark
# ("accept", "allow", "ecf"...), so they neither help nor hurt a point's coverage.
STOP_WORDS = frozenset([
    "a", "about", "above", "after", "again", "against", "all", "also", "an", "and", "any", "are", "as", "at", "be", "because", "been",
    "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "done", "down",
    "during", "each", "either", "else", "etc", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here",
    "hers", "him", "his", "how", "if", "in", "into", "is", "it", "its", "itself", "just", "may", "me", "might", "more", "most",
    "must", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "one", "only", "or", "other", "our", "out", "over", "own",
    "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "upon", "very", "was", "we", "were", "what", "when", "where", "whether",
    "which", "while", "who", "whom", "why", "will", "with", "would", "yet", "you", "your", "accept", "accepted", "allow", "allowed",
    "ignore", "ecf", "owtte", "eg", "ie"
])

_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any script; digits are read as numbers instead
# One pass, longest suffix first; a stem keeps at least 3 letters. Crude but symmetric:
# completion and mark point go through the same function, so "accelerates",
# "accelerated", "accelerating" and "acceleration" all meet at "acceler".
_SUFFIXES = sorted([
    "ational", "ations", "ation", "ators", "ator", "atings", "ating", "ated", "ates", "ate", "ements", "ement", "ments", "ment",
    "ness", "ities", "ity", "ingly", "ings", "ing", "edly", "ed", "ies", "ied", "ier", "iest", "ly", "ions", "ion", "ances", "ance",
    "ences", "ence", "ors", "or", "ers", "er", "est", "es", "s", "e", "y", "al", "ally", "ive", "ives", "ous", "ical", "ic"
], key=len, reverse=True)


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        # "speed" is not "spe" + "ed": skip -ed after an e, or speed/speeds would part.
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "ed" and word.endswith("eed")):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stems of the words that carry meaning: lower case, 2+ letters, stop words dropped."""
    return {stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOP_WORDS}


# --- TF-IDF -------------------------------------------------------------------------------

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def term_counts(text: str) -> dict[str, int]:
    """Word unigram and bigram counts of a text. Read-only: short texts (bank questions,
    which recur every step) come from a cache, which huge garbage must not fill."""
    return _cached_counts(text) if len(text) <= 20_000 else _counts(text)


@lru_cache(maxsize=8192)
def _cached_counts(text: str) -> dict[str, int]:
    return _counts(text)


def _counts(text: str) -> dict[str, int]:
    tokens = _TOKEN.findall(text.lower())
    return dict(Counter(tokens + [f"{a} {b}" for a, b in pairwise(tokens)]))


def tfidf_cosine(queries: list[str], corpus: list[str], fit: list[str]) -> "np.ndarray":
    """Cosine similarity (len(queries) x len(corpus)) of TF-IDF vectors fitted on `fit`.

    Smooth idf, ln((1 + n) / (1 + df)) + 1, and sublinear tf, 1 + ln(tf), as
    scikit-learn's TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True). Every
    query and corpus text must be among `fit`. Only the queries' terms can
    contribute to a dot product, so the corpus is kept sparse over those columns:
    memory grows with the texts, not with bank size times vocabulary.
    """
    import numpy as np  # here, not at the top: plugins load for `tutor --help`, which stays light

    df: Counter[str] = Counter()
    for text in fit:
        df.update(term_counts(text).keys())
    n = len(fit)

    def weights(text: str) -> dict[str, float]:
        w = {t: (1 + math.log(c)) * (math.log((1 + n) / (1 + df[t])) + 1) for t, c in term_counts(text).items()}
        norm = math.sqrt(sum(v * v for v in w.values())) or 1.0
        return {t: v / norm for t, v in w.items()}

    query_weights = [weights(q) for q in queries]
    column = {t: i for i, t in enumerate({t for w in query_weights for t in w})}
    dense = np.zeros((len(queries), len(column)))
    for i, w in enumerate(query_weights):
        for t, v in w.items():
            dense[i, column[t]] = v
    rows, cols, vals = [], [], []
    for j, text in enumerate(corpus):
        for t, v in weights(text).items():
            if t in column:
                rows.append(j)
                cols.append(column[t])
                vals.append(v)
    rows_a, cols_a, vals_a = np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp), np.array(vals)
    sims = np.zeros((len(queries), len(corpus)))
    for i in range(len(queries)):
        sims[i] = np.bincount(rows_a, weights=dense[i, cols_a] * vals_a, minlength=len(corpus))
    return np.clip(sims, 0.0, 1.0)
