"""Masks prune exactly the requested count, by rank, even when scores tie."""

from __future__ import annotations

import pytest
import torch

from llmkick_models.engine.masks import (
    count_nm_violations,
    lowest_mask,
    nm_mask,
    pruning_mask,
    unstructured_mask,
)
from llmkick_models.engine.spec import NMPattern


def test_unstructured_exact_count_with_ties() -> None:
    scores = torch.ones(6, 10)  # every score ties: a threshold rule would prune all 60
    mask = unstructured_mask(scores, 0.5, per_row=False)
    assert int(mask.sum()) == 30


def test_unstructured_per_matrix_picks_lowest() -> None:
    scores = torch.arange(20.0).reshape(4, 5)
    mask = unstructured_mask(scores, 0.25, per_row=False)
    assert mask.flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_unstructured_per_row_prunes_each_row_equally() -> None:
    torch.manual_seed(0)
    scores = torch.rand(7, 12)
    mask = unstructured_mask(scores, 0.5, per_row=True)
    assert mask.sum(dim=1).tolist() == [6] * 7
    for row in range(7):
        assert scores[row][mask[row]].max() <= scores[row][~mask[row]].min()


@pytest.mark.parametrize("pattern", [NMPattern(2, 4), NMPattern(4, 8), NMPattern(1, 2), NMPattern(1, 4)])
def test_nm_mask_exact_in_every_group(pattern: NMPattern) -> None:
    torch.manual_seed(1)
    scores = torch.rand(5, 16)
    mask = nm_mask(scores, pattern)
    groups = mask.reshape(5, -1, pattern.group)
    assert (groups.sum(dim=-1) == pattern.pruned).all()
    grouped_scores = scores.reshape(5, -1, pattern.group)
    assert (
        grouped_scores.masked_fill(~groups, -1).amax(-1) <= grouped_scores.masked_fill(groups, 2).amin(-1)
    ).all()


def test_nm_mask_rejects_ragged_width() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        nm_mask(torch.rand(2, 10), NMPattern(2, 4))


def test_pruning_mask_dispatch_and_zero_sparsity() -> None:
    scores = torch.rand(4, 8)
    assert not pruning_mask(scores, 0.0, None, per_row=False).any()
    assert int(pruning_mask(scores, 0.0, NMPattern(2, 4), per_row=False).sum()) == 16


def test_count_nm_violations() -> None:
    weight = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]])
    assert count_nm_violations(weight, NMPattern(2, 4)) == 1
    assert count_nm_violations(weight, NMPattern(1, 4)) == 0


@pytest.mark.parametrize("shape", [(7, 12), (1, 96), (5, 6, 4), (3, 1)])
def test_lowest_mask_is_the_stable_sort_selection(shape: tuple[int, ...]) -> None:
    """The sort-free selection prunes exactly what a stable sort's first ``count`` would, ties included."""
    generator = torch.Generator().manual_seed(sum(shape))
    for scores in (
        torch.randn(shape, generator=generator),
        torch.randint(0, 3, shape, generator=generator).float(),  # many ties at the threshold
        torch.zeros(shape),
    ):
        for count in range(shape[-1] + 1):
            expected = torch.zeros_like(scores, dtype=torch.bool)
            expected.scatter_(-1, torch.sort(scores, dim=-1, stable=True).indices[..., :count], True)
            assert torch.equal(lowest_mask(scores, count), expected), (scores, count)
