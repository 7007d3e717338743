"""Paired statistics behind the report's verdicts, on constructed samples."""

from __future__ import annotations

import math

import pytest

from llmkick_models.workflow.paired_stats import (
    INCONCLUSIVE,
    MATCHING,
    NO_VERDICT,
    NOT_MATCHING,
    binom_cdf,
    clopper_pearson,
    compare_means,
    compare_ratios,
    mcnemar_exact,
)


def _binary(n: int, both: int, losses: int, gains: int) -> tuple[list[int], list[int]]:
    """Dense/point 0-1 scores: ``both`` right in both, ``losses`` only dense, ``gains`` only the point."""
    dense = [1] * both + [1] * losses + [0] * gains
    point = [1] * both + [0] * losses + [1] * gains
    rest = n - len(dense)
    return dense + [0] * rest, point + [0] * rest


def test_binomial_helpers_match_closed_forms() -> None:
    assert binom_cdf(0, 10, 0.5) == pytest.approx(0.5**10)
    assert binom_cdf(3, 10, 0.3) == pytest.approx(
        sum(math.comb(10, k) * 0.3**k * 0.7 ** (10 - k) for k in range(4))
    )
    assert clopper_pearson(0, 10, 0.025) == (0.0, pytest.approx(1 - 0.025**0.1, abs=1e-9))
    assert clopper_pearson(10, 10, 0.025) == (pytest.approx(0.025**0.1, abs=1e-9), 1.0)
    assert mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_a_significant_drop_is_not_matching() -> None:
    dense, point = _binary(400, both=50, losses=50, gains=0)  # 25% -> 12.5%
    result = compare_means(dense, point)
    assert result.verdict == NOT_MATCHING
    assert result.relative == pytest.approx(-0.5) and result.difference == pytest.approx(-0.125)
    assert result.relative_ci[1] < -0.05 and result.relative_ci[0] <= -0.5 <= result.relative_ci[1]
    assert result.losses == 50 and result.gains == 0 and result.mcnemar_p < 1e-12


def test_a_realistic_knowledge_drop_separates_from_noise() -> None:
    # 300 questions, dense 56 right, 28 lost and 5 gained (-41%): clearly beyond 5% even with exact bounds.
    dense, point = _binary(300, both=28, losses=28, gains=5)
    result = compare_means(dense, point)
    assert result.verdict == NOT_MATCHING and result.relative_ci[1] < -0.1 and result.mcnemar_p < 1e-4
    # The same share of discordant answers on 18 discordant documents only: significant (McNemar), but the
    # interval still reaches within 5% of dense, so no verdict beyond "inconclusive".
    dense, point = _binary(300, both=14, losses=15, gains=3)
    result = compare_means(dense, point)
    assert result.mcnemar_p < 0.01 and result.verdict == INCONCLUSIVE


def test_a_small_drop_on_few_documents_is_inconclusive() -> None:
    dense, point = _binary(400, both=97, losses=3, gains=1)  # -2%: cannot tell from 5% with 400 questions
    result = compare_means(dense, point)
    assert result.verdict == INCONCLUSIVE
    assert result.relative_ci[0] < -0.05 < result.relative_ci[1]
    assert result.mcnemar_p == pytest.approx(0.625)


def test_ties_match_with_many_documents_but_not_with_four() -> None:
    dense, point = _binary(2000, both=1000, losses=0, gains=0)
    result = compare_means(dense, point)
    assert result.difference == 0 and result.mcnemar_p == 1.0
    assert result.verdict == MATCHING and result.relative_ci[0] > -0.05
    # Four documents: even a complete drop, or no change at all, says nothing about a 5% margin.
    assert compare_means([1, 1, 1, 1], [0, 0, 0, 0]).verdict == INCONCLUSIVE
    assert compare_means([1, 0, 1, 0], [1, 0, 1, 0]).verdict == INCONCLUSIVE


def test_dense_score_zero_gives_no_verdict() -> None:
    result = compare_means([0] * 50, [1] + [0] * 49)
    assert result.verdict == NO_VERDICT and result.relative is None


def test_continuous_scores_use_a_seeded_paired_bootstrap() -> None:
    dense = [0.5 + 0.01 * (i % 7) for i in range(300)]
    point = [d - 0.2 for d in dense]  # a constant 37% drop: every resample agrees
    first, second = compare_means(dense, point), compare_means(dense, point)
    assert first == second and "bootstrap" in first.method and first.mcnemar_p is None
    assert first.verdict == NOT_MATCHING
    assert first.difference_ci == (pytest.approx(-0.2), pytest.approx(-0.2))
    noisy = [d + (0.3 if i % 2 else -0.3) for i, d in enumerate(dense)]  # mean unchanged, big noise
    assert compare_means(dense, noisy).verdict == INCONCLUSIVE


def test_perplexity_is_compared_as_a_corpus_ratio() -> None:
    dense = [(-100.0 - i, 50.0) for i in range(40)]
    point = [(ll * 1.05, words) for ll, words in dense]  # log-likelihood 5% worse
    result = compare_ratios("word_perplexity", dense, point)
    total_ll, total_words = sum(ll for ll, _ in dense), 50.0 * 40
    assert result.dense == pytest.approx(math.exp(-total_ll / total_words))
    assert result.point == pytest.approx(math.exp(-1.05 * total_ll / total_words))
    assert result.relative == pytest.approx(result.point / result.dense - 1)
    assert result.relative > 0.05 and result.verdict == NOT_MATCHING  # lower is better
    same = compare_ratios("word_perplexity", dense, dense)
    assert same.relative == 0 and same.verdict == MATCHING


def test_too_few_documents_for_a_bootstrap_give_no_interval_and_no_verdict() -> None:
    # 3 perplexity windows 17% worse: a bootstrap over 3 documents would give a tight, untrustworthy interval
    dense = [(-1000.0 - 10 * i, 200.0) for i in range(3)]
    point = [(ll * 1.05, tokens) for ll, tokens in dense]
    result = compare_ratios("token_perplexity", dense, point)
    assert result.verdict == NO_VERDICT and result.relative_ci is None and result.difference_ci is None
    assert result.relative == pytest.approx(result.point / result.dense - 1)  # the estimate is still given
    assert result.relative > 0.05
    assert "3 documents" in result.method
    means = compare_means([0.5, 0.6, 0.7], [0.1, 0.2, 0.3])  # judge-like scores, n = 3
    assert means.verdict == NO_VERDICT and means.relative == pytest.approx(-0.4 / 0.6)
    assert compare_ratios("token_perplexity", dense * 4, point * 4).verdict == NOT_MATCHING  # 12 windows
    # 0/1 scores keep their exact interval at any n (4 documents: wide, inconclusive)
    assert compare_means([1, 1, 0, 1], [0, 1, 0, 1]).verdict == INCONCLUSIVE


def test_unpaired_input_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compare_means([1, 0], [1])
    with pytest.raises(ValueError, match="zero documents"):
        compare_means([], [])


def test_binom_cdf_far_from_the_mode_is_the_full_sum() -> None:
    """The sum skips terms too small to count; far tails, the mode and beyond agree with the full sum."""

    def full(k: int, n: int, p: float) -> float:
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                + (n - i) * math.log1p(-p) for i in range(k + 1)]  # fmt: skip
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    for k, n, p in [(5_400, 20_000, 0.3), (6_000, 20_000, 0.3), (6_400, 20_000, 0.3), (3, 20_000, 0.001),
                    (40, 20_000, 0.001), (19_990, 20_000, 0.9995)]:  # fmt: skip
        assert binom_cdf(k, n, p) == pytest.approx(full(k, n, p), rel=1e-9, abs=1e-300)
