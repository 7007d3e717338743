"""How many documents would decide an ``inconclusive`` comparison: a power calculation at the observed effect.

A comparison is ``inconclusive`` when the interval of the change from dense straddles LLM-KICK's limit ``L``
(-5% of dense for a higher-is-better metric, +5% otherwise).  Taking the observed change as the true one,
the report gives the number of documents ``n`` at which the interval would lie wholly on the observed side
of ``L`` (a decided verdict) with probability ``POWER``: at ``n``, the bound of the interval nearest ``L``
must clear ``L`` by ``z_power`` standard errors of that bound.

* 0/1 metrics: the bound is the report's own exact interval (:func:`paired_stats.binary_difference_interval`)
  computed from the counts expected at ``n`` — discordant ``D = r n``, losses ``l = pi D`` at the observed
  discordant rate ``r`` and loss share ``pi`` — relative to dense's accuracy; its standard error by the
  delta method, from central differences of one standard deviation of ``D`` and of ``l`` (the bound moves
  more than the difference ``r (1 - 2 pi)`` itself when there are few discordant documents).  The smallest
  such ``n`` is found by doubling and bisection, to 1%.
* other metrics (bootstrap intervals): the per-document standard deviation of the relative change is read
  off the interval, ``sigma = sqrt(n_obs) (hi - lo) / (2 z_{1-alpha/2})``, and
  ``n = ((z_{1-alpha/2} + z_power) sigma / |relative - L|)^2``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from llmkick_models.workflow.paired_stats import (
    CONFIDENCE,
    INCONCLUSIVE,
    MATCHING,
    MATCHING_TOLERANCE,
    NO_VERDICT,
    NOT_MATCHING,
    Comparison,
    binary_difference_interval,
)

POWER = 0.8
#: Beyond this many documents the search stops: no LLM-KICK benchmark comes near it.
MAX_DOCUMENTS = 1_000_000

DECIDING_NOTE = (
    f"Documents to decide: for an inconclusive comparison, the documents at which the observed change would"
    f" give the verdict shown with {POWER:.0%} probability (a power calculation, README: *How many documents"
    f" would decide it*)."
)


@dataclass(frozen=True)
class DecidingSize:
    """The documents at which the observed change would give ``verdict`` with probability ``power``."""

    documents: int | None  # None: no number of documents up to MAX_DOCUMENTS would (``reason`` says why)
    verdict: str | None
    power: float
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``reason`` only when there is no number)."""
        out = asdict(self)
        if self.reason is None:
            del out["reason"]
        return out


def _limit(higher_is_better: bool, tolerance: float) -> float:
    return -tolerance if higher_is_better else tolerance


def _side(relative: float, higher_is_better: bool, tolerance: float) -> str:
    """The verdict the observed change would read once the interval excludes the limit."""
    worse = relative < _limit(True, tolerance) if higher_is_better else relative > _limit(False, tolerance)
    return NOT_MATCHING if worse else MATCHING


def _on_the_limit(power: float) -> DecidingSize:
    return DecidingSize(None, None, power, "the observed change is on the 5% limit: no number of documents")


def documents_to_decide_mean(
    relative: float,
    relative_sd: float,
    higher_is_better: bool = True,
    *,
    tolerance: float = MATCHING_TOLERANCE,
    confidence: float = CONFIDENCE,
    power: float = POWER,
) -> DecidingSize:
    """Documents for a mean with a per-document relative change of mean ``relative``, deviation
    ``relative_sd`` (see the module doc)."""
    gap = abs(relative - _limit(higher_is_better, tolerance))
    if gap == 0:
        return _on_the_limit(power)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2) + NormalDist().inv_cdf(power)
    documents = max(1, math.ceil((z * relative_sd / gap) ** 2))
    verdict = _side(relative, higher_is_better, tolerance)
    if documents > MAX_DOCUMENTS:
        return DecidingSize(None, verdict, power, f"more than {MAX_DOCUMENTS} documents")
    return DecidingSize(documents, verdict, power)


@functools.lru_cache(maxsize=1024)  # the report asks for each comparison twice (report.md, report.json)
def documents_to_decide_binary(
    dense: float,
    discordant_rate: float,
    loss_share: float,
    higher_is_better: bool = True,
    *,
    tolerance: float = MATCHING_TOLERANCE,
    confidence: float = CONFIDENCE,
    power: float = POWER,
    start: int = 1,
) -> DecidingSize:
    """Documents for a 0/1 metric: dense accuracy ``dense``, a share ``discordant_rate`` of documents with
    one model right, ``loss_share`` of them dense's (see the module doc); the search starts at ``start``."""
    if not dense > 0:
        raise ValueError(f"documents_to_decide_binary: dense accuracy must be > 0, got {dense}")
    difference = discordant_rate * (1 - 2 * loss_share)
    relative, limit = difference / dense, _limit(higher_is_better, tolerance)
    if relative == limit:
        return _on_the_limit(power)
    z_power = NormalDist().inv_cdf(power)

    def decides(n: int) -> bool:
        bound = _BinaryBound(n, discordant_rate, loss_share, 1 - confidence, upper=relative < limit)
        spread = z_power * bound.standard_error() / dense
        near = bound.at(bound.discordant, bound.losses) / dense
        return near + spread <= limit if relative < limit else near - spread >= limit

    return _smallest(decides, max(1, start), _side(relative, higher_is_better, tolerance), power)


@dataclass(frozen=True)
class _BinaryBound:
    """The bound of the report's exact interval nearest the limit, at ``n`` documents and around the counts
    expected there."""

    n: int
    rate: float
    share: float
    alpha: float
    upper: bool

    @property
    def discordant(self) -> int:
        return round(self.rate * self.n)

    @property
    def losses(self) -> int:
        return round(self.share * self.discordant)

    def at(self, discordant: int, losses: int) -> float:
        """The bound from ``discordant`` documents, ``losses`` of them dense's (clipped to what can be)."""
        discordant = min(self.n, max(0, discordant))
        losses = min(discordant, max(0, losses))
        interval = binary_difference_interval(discordant - losses, losses, self.n, self.alpha)
        return interval[1] if self.upper else interval[0]

    def _slope(self, low: tuple[int, int], high: tuple[int, int], step: float) -> float:
        moved = high[0] - low[0] or high[1] - low[1]
        return (self.at(*high) - self.at(*low)) / moved * step if moved else 0.0

    def standard_error(self) -> float:
        """The bound's standard error by the delta method: central differences of one standard deviation of
        the discordant count (the loss share held) and of the losses among them."""
        d, losses = self.discordant, self.losses
        sd_d, sd_l = (
            math.sqrt(self.n * self.rate * (1 - self.rate)),
            math.sqrt(d * self.share * (1 - self.share)),
        )
        low_d, high_d = round(d - sd_d), round(d + sd_d)
        by_rate = self._slope((low_d, round(self.share * low_d)), (high_d, round(self.share * high_d)), sd_d)
        by_share = self._slope((d, round(losses - sd_l)), (d, round(losses + sd_l)), sd_l)
        return math.hypot(by_rate, by_share)


def _smallest(decides: Callable[[int], bool], start: int, verdict: str, power: float) -> DecidingSize:
    """The smallest ``n >= start`` (to 1%) with ``decides(n)``, by doubling then bisection."""
    low, high = start - 1, start
    while not decides(high):
        if high >= MAX_DOCUMENTS:
            return DecidingSize(None, verdict, power, f"more than {MAX_DOCUMENTS} documents")
        low, high = high, min(MAX_DOCUMENTS, 2 * high)
    while high - low > max(1, high // 100):
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle, high)
    return DecidingSize(high, verdict, power)


def deciding_size(result: Comparison, *, power: float = POWER) -> DecidingSize | None:
    """For an ``inconclusive`` comparison, the documents that would decide it (None for any other verdict)."""
    if result.verdict != INCONCLUSIVE or result.relative is None or result.relative_ci is None:
        return None
    if result.gains is not None and result.losses is not None:
        discordant = result.gains + result.losses
        return documents_to_decide_binary(
            result.dense, discordant / result.n, result.losses / discordant if discordant else 0.5,
            result.higher_is_better, power=power, start=result.n,
        )  # fmt: skip
    z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)
    sd = math.sqrt(result.n) * (result.relative_ci[1] - result.relative_ci[0]) / (2 * z)
    return documents_to_decide_mean(result.relative, sd, result.higher_is_better, power=power)


def deciding_cell(result: Any) -> str:
    """The report.md cell: ``~1,240 → not matching`` for an inconclusive comparison, else ``–``."""
    found = deciding_size(result) if isinstance(result, Comparison) else None
    if found is None:
        return "–"
    if found.documents is None:
        return str(found.reason)
    return f"~{found.documents:,} → {found.verdict}"


def comparison_json(result: Comparison | str) -> dict[str, Any]:
    """report.json's entry of a comparison (``to_decide`` beside an inconclusive one), or of why there is
    none."""
    if not isinstance(result, Comparison):
        return {"verdict": NO_VERDICT, "reason": result}
    decide = deciding_size(result)
    return result.as_dict() | ({"to_decide": decide.as_dict()} if decide is not None else {})
