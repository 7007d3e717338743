"""The power calculation behind "how many documents would decide it", checked by simulation: paired samples
drawn with a known effect at the predicted number of documents get a decided verdict in at least the stated
share of draws, and at half that number clearly less often (a formula off by 2x fails one of the two)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import write_point, write_sweep

from llmkick_models.workflow.deciding_size import (
    POWER,
    deciding_cell,
    deciding_size,
    documents_to_decide_binary,
    documents_to_decide_mean,
)
from llmkick_models.workflow.paired_stats import INCONCLUSIVE, MATCHING, NOT_MATCHING, compare_means
from llmkick_models.workflow.sweep_plan import SweepPoint
from llmkick_models.workflow.sweep_report import write_report

DRAWS = 250
#: Simulation noise of a share near 0.8 over DRAWS draws is ~0.025: 2 standard errors below the power.
SLACK = 0.05
#: At half the predicted documents a right formula decides about half the time; a formula that asks for
#: twice too many documents would decide ~80% of the time there.
HALF_AT_MOST = 0.6


def _decided_share(draw: object, draws: int = DRAWS) -> float:
    return sum(compare_means(*draw()).verdict != INCONCLUSIVE for _ in range(draws)) / draws  # type: ignore[operator]


def _binary_draw(rng: np.random.Generator, n: int, dense: float, rate: float, share: float) -> object:
    p_loss, p_gain = rate * share, rate * (1 - share)
    probabilities = [dense - p_loss, p_loss, p_gain, 1 - dense - p_gain]  # both, loss, gain, neither

    def draw() -> tuple[list[int], list[int]]:
        both, loss, gain, neither = rng.multinomial(n, probabilities)
        return [1] * (both + loss) + [0] * (gain + neither), [1] * both + [0] * loss + [1] * gain + [
            0
        ] * neither

    return draw


@pytest.mark.parametrize(
    ("dense", "rate", "share", "verdict"),
    [(0.6, 0.5, 0.7, NOT_MATCHING), (0.8, 0.02, 0.3, MATCHING), (0.8, 0.04, 0.5, MATCHING)],
)
def test_binary_prediction_decides_by_simulation(
    dense: float, rate: float, share: float, verdict: str
) -> None:
    found = documents_to_decide_binary(dense, rate, share)
    assert found.verdict == verdict and found.power == POWER and found.documents is not None
    rng = np.random.default_rng(0)
    assert _decided_share(_binary_draw(rng, found.documents, dense, rate, share)) >= POWER - SLACK
    assert _decided_share(_binary_draw(rng, found.documents // 2, dense, rate, share)) <= HALF_AT_MOST


@pytest.mark.parametrize(("relative", "sd", "verdict"), [(-0.12, 0.4, NOT_MATCHING), (-0.02, 0.2, MATCHING)])
def test_mean_prediction_decides_by_simulation(relative: float, sd: float, verdict: str) -> None:
    found = documents_to_decide_mean(relative, sd)
    assert found.verdict == verdict and found.documents is not None
    rng = np.random.default_rng(1)

    def at(n: int) -> object:
        def draw() -> tuple[object, object]:
            dense = rng.normal(6.0, 1.0, n)  # judge-like scores; the change is relative to dense's mean 6
            return dense, dense + rng.normal(6.0 * relative, 6.0 * sd, n)

        return draw

    assert _decided_share(at(found.documents), 150) >= POWER - SLACK
    assert _decided_share(at(found.documents // 2), 150) <= HALF_AT_MOST


def test_an_inconclusive_comparison_gets_the_documents_from_its_own_rates() -> None:
    # 300 questions, dense 120 right; 30 lost, 15 gained: -12.5% [..] straddles -5%.
    dense = [1] * 90 + [1] * 30 + [0] * 15 + [0] * 165
    point = [1] * 90 + [0] * 30 + [1] * 15 + [0] * 165
    result = compare_means(dense, point)
    assert result.verdict == INCONCLUSIVE
    found = deciding_size(result)
    expected = documents_to_decide_binary(0.4, 45 / 300, 30 / 45, start=300)
    assert found == expected and found.verdict == NOT_MATCHING and found.documents > 300
    assert deciding_cell(result) == f"~{found.documents:,} → not matching"
    decided = compare_means([1] * 100 + [0] * 100, [0] * 200)
    assert (
        decided.verdict == NOT_MATCHING and deciding_size(decided) is None and deciding_cell(decided) == "–"
    )


def test_a_change_on_the_limit_has_no_number() -> None:
    found = documents_to_decide_mean(-0.05, 0.3)
    assert found.documents is None and "on the 5% limit" in str(found.reason)
    assert documents_to_decide_mean(-0.0501, 0.3).reason == "more than 1000000 documents"


def test_the_report_says_how_many_documents_would_decide(tmp_path: Path) -> None:
    points = [SweepPoint(), SweepPoint("magnitude", 0.2), SweepPoint("magnitude", 0.5)]
    write_sweep(tmp_path, points, "qa")
    dense = [1] * 120 + [0] * 180
    inconclusive = [1] * 90 + [0] * 30 + [1] * 15 + [0] * 165  # 30 lost, 15 gained, as above
    for point, values in zip(points, [dense, inconclusive, [0] * 300], strict=True):
        write_point(tmp_path, point.point_id, {"qa": {"acc": values}})
    report, _ = write_report(tmp_path)
    expected = documents_to_decide_binary(0.4, 45 / 300, 30 / 45, start=300)
    row = next(line for line in report.read_text().splitlines() if line.startswith("| magnitude-s0.2 | 300"))
    assert row.endswith(f"| inconclusive | ~{expected.documents:,} → not matching |")
    assert "| not matching | – |" in report.read_text() and "80% power" in report.read_text()
    compared = {
        p["id"]: p.get("comparisons", {})
        for p in json.loads((tmp_path / "report.json").read_text())["points"]
    }
    assert compared["magnitude-s0.2"]["qa"]["acc"]["to_decide"] == {
        "documents": expected.documents, "verdict": NOT_MATCHING, "power": POWER,
    }  # fmt: skip
    assert "to_decide" not in compared["magnitude-s0.5"]["qa"]["acc"]
