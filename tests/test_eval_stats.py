"""The eval statistics on hand-made cases with known answers: published Wilson intervals, exact McNemar p values, bootstraps."""

import pytest
from tutor.eval.stats import bootstrap_mean, bootstrap_ratio, mcnemar, paired_bootstrap, verdict, wilson


@pytest.mark.parametrize("successes, n, lo, hi", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # the 0/10, 5/10, 10/10 intervals quoted in textbooks and statistics packages (e.g. statsmodels' proportion_confint)
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
])
def test_wilson_matches_published_intervals(successes, n, lo, hi):
    assert wilson(successes, n) == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_of_nothing_is_the_whole_range():
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("only_a, only_b, p", [
    (0, 5, 2 / 32),  # every discordant item went one way: 2 * 0.5**5
    (1, 6, 2 * (1 + 7) / 128),
    (10, 2, 2 * (1 + 12 + 66) / 4096),
    (3, 3, 1.0),  # balanced: the two-sided sum passes 1 and is capped
    (0, 0, 1.0),  # no discordant item: nothing to tell the models apart
])
def test_mcnemar_exact_p(only_a, only_b, p):
    both_right, both_wrong = 4, 3  # concordant items must not change p
    a = [True] * only_a + [False] * only_b + [True] * both_right + [False] * both_wrong
    b = [False] * only_a + [True] * only_b + [True] * both_right + [False] * both_wrong
    assert mcnemar(a, b) == pytest.approx(p)
    assert mcnemar(b, a) == pytest.approx(p)  # two-sided: symmetric in the models


def test_bootstrap_of_a_constant_is_a_zero_width_interval():
    assert bootstrap_mean([0.25] * 9, iters=200) == pytest.approx((0.25, 0.25))
    # three items with the same loss per token, whatever their lengths
    assert bootstrap_ratio([2.0, 8.0, 30.0], [1, 4, 15], iters=200) == pytest.approx((2.0, 2.0))


def test_bootstrap_mean_brackets_the_mean_and_is_reproducible():
    values = [0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 0.0]
    lo, hi = bootstrap_mean(values, iters=500, seed=3)
    assert 0.0 <= lo < sum(values) / len(values) < hi <= 1.0
    assert bootstrap_mean(values, iters=500, seed=3) == (lo, hi)


def test_bootstrap_ratio_weighs_items_by_tokens():
    # a 1-token item with loss 10 and a 99-token item with loss 1 per token: the pooled loss is 1.09, far from the items' mean 5.5
    lo, hi = bootstrap_ratio([10.0, 99.0], [1, 99], iters=500)
    assert 1.0 <= lo <= 109 / 100 <= hi <= 10.0


def test_identical_models_differ_by_nothing():
    scores = [0.2, 0.5, 1.0, 0.0, 0.75]
    assert paired_bootstrap(scores, scores, iters=200) == (0.0, 0.0, 0.0, 1.0)


def test_a_clear_difference_is_better_and_its_reverse_worse():
    base = [0.1, 0.2, 0.0, 0.3, 0.25, 0.1, 0.2, 0.15, 0.05, 0.3, 0.2, 0.1]
    tuned = [x + 0.5 + 0.05 * (i % 3) for i, x in enumerate(base)]
    delta, lo, hi, p = paired_bootstrap(base, tuned, iters=500)
    assert delta == pytest.approx(0.55, abs=1e-9)
    assert 0.5 <= lo < delta < hi <= 0.6
    assert p < 0.01
    assert verdict(delta, p) == "better"
    delta, _, _, p = paired_bootstrap(tuned, base, iters=500)
    assert verdict(delta, p) == "worse"


def test_seven_noisy_items_show_no_significant_difference():
    base = [0.5, 0.2, 0.9, 0.4, 0.6, 0.3, 0.7]
    tuned = [0.6, 0.1, 0.8, 0.6, 0.5, 0.4, 0.6]
    delta, lo, hi, p = paired_bootstrap(base, tuned, iters=500)
    assert lo < 0 < hi
    assert p > 0.5
    assert verdict(delta, p) == "no significant difference"


def test_three_items_that_all_improved_are_not_significant():
    # The percentile bootstrap's interval excludes 0 here; the sign-flip p (2 of 8 sign patterns are as extreme) does not.
    delta, lo, hi, p = paired_bootstrap([0.0, 0.0, 0.0], [0.4, 0.5, 0.6], iters=2000)
    assert lo > 0
    assert p == pytest.approx(0.25, abs=0.03)
    assert verdict(delta, p) == "no significant difference"


def test_weights_make_the_paired_difference_token_weighted():
    # per-token losses of two items, 1 and 3 tokens long: the pooled difference is (1 * -1 + 3 * -3) / 4 = -2.5
    delta, lo, hi, _ = paired_bootstrap([2.0, 5.0], [1.0, 2.0], iters=300, weights=[1, 3])
    assert delta == pytest.approx(-2.5)
    assert -3.0 <= lo <= delta <= hi <= -1.0


def test_loss_is_better_when_lower():
    assert verdict(-0.3, 0.01, higher_is_better=False) == "better"
    assert verdict(0.3, 0.01, higher_is_better=False) == "worse"
    assert verdict(-0.3, 0.2, higher_is_better=False) == "no significant difference"
    assert verdict(0.0, 0.0) == "no significant difference"
