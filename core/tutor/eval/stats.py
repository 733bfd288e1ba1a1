"""The statistics of an evaluation: 95% intervals for each model, paired tests between two models, and the verdict.

Test sets are small (the physics test split has 7 questions), so every number
the report prints comes with its interval, and base vs tuned is compared on
the same items, pair by pair:
  - proportions (MCQ accuracy...) get the Wilson interval, which stays inside
    [0, 1] and keeps its coverage at 0/n and n/n where the textbook
    p +- 1.96 se collapses to a zero-width interval;
  - means of partial marks get a percentile bootstrap over items;
  - paired 0/1 outcomes get McNemar's exact test, paired partial marks the
    paired bootstrap's interval with a sign-flip permutation p.
Pure Python and numpy; the bootstraps take a seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ALPHA = 0.05
ITERS = 2000  # bootstrap resamples: the 2.5% and 97.5% percentiles then rest on 50 resamples each


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when there is nothing to estimate from."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    spread = z * z / n
    centre = (p + spread / 2) / (1 + spread)
    half = z * math.sqrt(p * (1 - p) / n + spread / (4 * n)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(values: Sequence[float], iters: int = ITERS, seed: int = 0) -> tuple[float, float]:
    """The percentile 95% interval of the mean, resampling items with replacement."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(values), size=(iters, len(values)))
    return _percentiles(values[picks].mean(axis=1))


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], iters: int = ITERS,
                    seed: int = 0) -> tuple[float, float]:
    """The percentile 95% interval of sum(numerators) / sum(denominators), resampling items.

    The test loss is token-weighted (summed NLL over summed tokens): a long
    answer weighs more than a short one, so items are resampled whole, with
    their token counts, rather than averaging per-item losses.
    """
    import numpy as np

    numerators, denominators = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(numerators), size=(iters, len(numerators)))
    return _percentiles(numerators[picks].sum(axis=1) / denominators[picks].sum(axis=1))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """McNemar's exact two-sided p for paired 0/1 outcomes: a binomial test on the items where the two differ.

    Items both models get right (or both wrong) say nothing about which is
    better; under "no difference" each discordant item is a fair coin.
    """
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], iters: int = ITERS, seed: int = 0,
                     weights: Sequence[float] | None = None) -> tuple[float, float, float, float]:
    """(delta, lo, hi, p) for mean(b) - mean(a) over paired items: a percentile bootstrap interval and a two-sided p.

    The p comes from a sign-flip permutation test on the same differences:
    under "no difference" each item's difference is as likely negative as
    positive. A percentile bootstrap of 3 items that all improved is the
    zero-width-ish [min, max] and would call it significant; the sign flips
    give 2/8 = 0.25, the honest answer. `weights` (e.g. token counts) make
    both a weighted mean.
    """
    import numpy as np

    differences = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    weights = np.ones_like(differences) if weights is None else np.asarray(weights, dtype=float)
    delta = float(np.average(differences, weights=weights))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(iters, len(differences)))
    lo, hi = _percentiles((differences[picks] * weights[picks]).sum(axis=1) / weights[picks].sum(axis=1))
    signs = rng.choice([-1.0, 1.0], size=(iters, len(differences)))
    flipped = (signs * differences * weights).sum(axis=1) / weights.sum()
    # Counting the observed split among the permutations keeps p above 0: with 2000 flips nothing is rarer than 1/2001.
    extreme = np.count_nonzero(np.abs(flipped) >= abs(delta) - 1e-12)
    return delta, lo, hi, min(1.0, (int(extreme) + 1) / (iters + 1))


def verdict(delta: float, p: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """'better', 'worse' or 'no significant difference' for the second model of a pair (loss: lower is better)."""
    if p >= alpha or delta == 0:
        return "no significant difference"
    return "better" if (delta > 0) == higher_is_better else "worse"


def _percentiles(estimates) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.percentile(estimates, [2.5, 97.5])
    return float(lo), float(hi)
