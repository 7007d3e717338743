"""Paired comparison of a compressed point with the dense model on the same documents.

LLM-KICK calls a compressed model "matching" when its score is within 5% of the dense model's.  A score
measured on a few hundred questions carries sampling error, so the verdict here is taken on a 95%
confidence interval of the relative change, never on the point estimate alone:

* ``matching`` - the whole interval lies on the good side of the 5% limit;
* ``not matching`` - the whole interval lies beyond it;
* ``inconclusive`` - the interval straddles the limit (more documents are needed to tell).

Intervals (all two-sided 95%):

* per-document 0/1 metrics (accuracy, exact match): exact and conservative.  Of the ``n`` documents, ``D``
  are discordant (only one of the two models is right) and ``l`` of those are losses (only dense is right);
  the difference of the two accuracies is ``r (1 - 2 pi)`` with ``r`` the discordant rate and ``pi`` the
  loss share of discordant documents.  Clopper-Pearson bounds on ``r`` (D of n) and on ``pi`` (l of D), each
  at 97.5% (Bonferroni), bound the difference with coverage >= 95%, whatever the true rates.  McNemar's exact
  test on the discordant pairs gives the p-value.  With few documents the interval is wide, as it should
  be: 4 documents can never show a 5% change, nor can 400 documents with no discordant answer rule out one
  of 1% of them.
* other per-document means (F1, judge scores): paired bootstrap of the mean difference (fixed seed).
* corpus-level ratios (perplexity, bits per byte: sum of log-likelihoods over sum of words/bytes):
  paired bootstrap over documents of the ratio of the two aggregates.

A bootstrap needs documents to resample: with fewer than ``MIN_BOOTSTRAP_DOCUMENTS`` (3 perplexity windows,
say) its interval is far too narrow to trust, so none is given and the verdict is ``no verdict`` — the
point estimate is still reported.

The relative change is the difference over dense's score on the same documents (the paper's reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MATCHING_TOLERANCE = 0.05
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_BOOTSTRAP_DOCUMENTS = 10

MATCHING, NOT_MATCHING, INCONCLUSIVE, NO_VERDICT = "matching", "not matching", "inconclusive", "no verdict"


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact to float precision for any n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # Terms more than 15 standard deviations (+50) from the mode are below e^-100 of the largest one and
    # cannot change the float sum: skipping them keeps the exact bounds fast on 100,000 documents.
    mode, width = int(n * p), int(15 * math.sqrt(n * p * (1 - p))) + 50
    if k >= mode + width:
        return 1.0
    logs = [_log_binom_pmf(i, n, p) for i in range(max(0, min(k, mode) - width), k + 1)]
    top = max(logs)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _bisect(f: Any, lo: float, hi: float) -> float:
    """Root of the increasing-or-decreasing ``f`` on [lo, hi] (sign change assumed), to 1e-12."""
    f_lo = f(lo)
    for _ in range(200):
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha_each_side: float) -> tuple[float, float]:
    """Exact binomial bounds for ``k`` successes in ``n``: each side holds with probability 1 - alpha."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    lower = 0.0 if k == 0 else _bisect(lambda p: (1 - binom_cdf(k - 1, n, p)) - alpha_each_side, 0.0, 1.0)
    upper = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p) - alpha_each_side, 0.0, 1.0)
    return lower, upper


def mcnemar_exact(gains: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs are Binomial(gains + losses, 1/2) under H0."""
    discordant = gains + losses
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf(min(gains, losses), discordant, 0.5))


@dataclass
class Comparison:
    """A compressed point against dense on the same ``n`` documents."""

    n: int
    dense: float
    point: float
    difference: float
    difference_ci: tuple[float, float] | None
    relative: float | None
    relative_ci: tuple[float, float] | None
    method: str
    verdict: str
    higher_is_better: bool
    mcnemar_p: float | None = None
    gains: int | None = None
    losses: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["difference_ci"] = list(self.difference_ci) if self.difference_ci is not None else None
        out["relative_ci"] = list(self.relative_ci) if self.relative_ci is not None else None
        return out


def verdict(relative_ci: tuple[float, float] | None, higher_is_better: bool, tolerance: float) -> str:
    """LLM-KICK's matching, decided on the whole interval of the relative change (see module doc)."""
    if relative_ci is None:
        return NO_VERDICT
    lo, hi = relative_ci
    if higher_is_better:  # matching = at least (1 - tolerance) x dense
        return MATCHING if lo >= -tolerance else NOT_MATCHING if hi < -tolerance else INCONCLUSIVE
    return MATCHING if hi <= tolerance else NOT_MATCHING if lo > tolerance else INCONCLUSIVE


def binary_difference_interval(gains: int, losses: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` bounds on (point accuracy - dense accuracy) = r (1 - 2 pi), over the
    Bonferroni box of exact bounds on r and pi."""
    discordant = gains + losses
    rate_lo, rate_hi = clopper_pearson(discordant, n, alpha / 4)
    # With no discordant document the loss share is unknown: anything in [0, 1].
    share_lo, share_hi = clopper_pearson(losses, discordant, alpha / 4) if discordant else (0.0, 1.0)
    corners = [r * (1 - 2 * share) for r in (rate_lo, rate_hi) for share in (share_lo, share_hi)]
    return min(corners), max(corners)


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def _bootstrap_indices(n: int, resamples: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, 250):  # bounded memory for large n
        yield rng.integers(0, n, size=(min(250, resamples - start), n))


def _too_few(n: int) -> str:
    return f"no interval: {n} documents, a bootstrap needs {MIN_BOOTSTRAP_DOCUMENTS}"


def _percentiles(samples: Any, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def _paired_arrays(dense: Sequence[Any], point: Sequence[Any]) -> tuple[Any, Any]:
    """``dense`` and ``point`` as float arrays, refused unless they pair one-to-one and are not empty."""
    if len(dense) != len(point):
        raise ValueError(f"paired samples differ in length: dense {len(dense)}, point {len(point)}")
    if len(dense) == 0:
        raise ValueError("paired comparison of zero documents")
    return np.asarray(dense, dtype=float), np.asarray(point, dtype=float)


def compare_means(
    dense: Sequence[float],
    point: Sequence[float],
    higher_is_better: bool = True,
    *,
    tolerance: float = MATCHING_TOLERANCE,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """Compare per-document scores whose task score is their mean (``dense[i]``, ``point[i]``: document i)."""
    a, b = _paired_arrays(dense, point)
    n = len(a)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    difference = mean_b - mean_a
    gains = losses = p_value = None
    if _is_binary(dense) and _is_binary(point):
        gains, losses = int(((a == 0) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())
        difference_ci = binary_difference_interval(gains, losses, n, 1 - confidence)
        p_value = mcnemar_exact(gains, losses)
        method = "exact (Clopper-Pearson on discordant rate and loss share, Bonferroni); McNemar exact test"
    elif n < MIN_BOOTSTRAP_DOCUMENTS:
        difference_ci, method = None, _too_few(n)
    else:
        d = b - a
        means = np.concatenate([d[idx].mean(axis=1) for idx in _bootstrap_indices(n, resamples, seed)])
        difference_ci = _percentiles(means, confidence)
        method = f"paired bootstrap ({resamples} resamples, seed {seed})"
    if mean_a > 0:
        relative: float | None = difference / mean_a
        relative_ci: tuple[float, float] | None = (
            (difference_ci[0] / mean_a, difference_ci[1] / mean_a) if difference_ci is not None else None
        )
    else:  # relative to a dense score of 0 is undefined: no verdict, whatever the point scores
        relative = relative_ci = None
    return Comparison(
        n=n, dense=mean_a, point=mean_b, difference=difference, difference_ci=difference_ci,
        relative=relative, relative_ci=relative_ci, method=method,
        verdict=verdict(relative_ci, higher_is_better, tolerance), higher_is_better=higher_is_better,
        mcnemar_p=p_value, gains=gains, losses=losses,
    )  # fmt: skip


def ratio_aggregate(kind: str, numerators: Any, denominators: Any) -> Any:
    """lm-eval's corpus-level aggregates of per-document ``(log-likelihood, weight)`` pairs."""
    mean_ll = np.asarray(numerators).sum(axis=-1) / np.asarray(denominators).sum(axis=-1)
    if kind in ("token_perplexity", "word_perplexity", "byte_perplexity", "perplexity"):
        return np.exp(-mean_ll)
    if kind == "bits_per_byte":
        return -mean_ll / math.log(2)
    raise ValueError(f"unknown corpus-level metric {kind!r}")


def compare_ratios(
    kind: str,
    dense: Sequence[tuple[float, float]],
    point: Sequence[tuple[float, float]],
    higher_is_better: bool = False,
    *,
    tolerance: float = MATCHING_TOLERANCE,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """Compare a corpus-level metric (perplexity, bits per byte) from per-document (ll, weight) pairs."""
    a, b = _paired_arrays(dense, point)
    n = len(a)
    value_a = float(ratio_aggregate(kind, a[:, 0], a[:, 1]))
    value_b = float(ratio_aggregate(kind, b[:, 0], b[:, 1]))
    if n < MIN_BOOTSTRAP_DOCUMENTS:
        return Comparison(
            n=n, dense=value_a, point=value_b, difference=value_b - value_a, difference_ci=None,
            relative=value_b / value_a - 1, relative_ci=None, method=_too_few(n), verdict=NO_VERDICT,
            higher_is_better=higher_is_better,
        )  # fmt: skip
    differences, ratios = [], []
    for idx in _bootstrap_indices(n, resamples, seed):
        boot_a = ratio_aggregate(kind, a[idx, 0], a[idx, 1])
        boot_b = ratio_aggregate(kind, b[idx, 0], b[idx, 1])
        differences.append(boot_b - boot_a)
        ratios.append(boot_b / boot_a - 1)
    relative_ci = _percentiles(np.concatenate(ratios), confidence)
    return Comparison(
        n=n, dense=value_a, point=value_b, difference=value_b - value_a,
        difference_ci=_percentiles(np.concatenate(differences), confidence),
        relative=value_b / value_a - 1, relative_ci=relative_ci,
        method=f"paired bootstrap over documents ({resamples} resamples, seed {seed})",
        verdict=verdict(relative_ci, higher_is_better, tolerance), higher_is_better=higher_is_better,
    )  # fmt: skip
