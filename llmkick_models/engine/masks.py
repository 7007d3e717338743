"""Which weights to prune, given a score per weight: unstructured (per matrix or per row) and N:M.

All selections are by rank with a stable sort, so exactly the requested count is pruned even when scores
tie (dequantized GGUF weights tie a lot; a ``score <= threshold`` rule would prune more than asked).
Masks are True where a weight is pruned.
"""

from __future__ import annotations

import torch

from llmkick_models.engine.spec import NMPattern


def lowest_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` lowest entries along the last dimension (ties: lower index first).

    The same selection as the first ``count`` of a stable sort, found without sorting (a full sort of
    every row was most of Wanda's compression time): the count-th lowest value ``kth`` by ``topk``; every
    entry below it is pruned, and of the entries equal to it the first ones in index order, as many as
    the count still needs.
    """
    if count <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if count >= scores.shape[-1]:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = torch.topk(scores, count, dim=-1, largest=False, sorted=False).values.amax(dim=-1, keepdim=True)
    mask = scores <= kth
    surplus = mask.sum(dim=-1, keepdim=True) - count
    if not bool(surplus.any()):
        return mask  # no ties at the threshold beyond the count: the common case with real weights
    equal = scores == kth
    keep_equal = equal.sum(dim=-1, keepdim=True) - surplus
    return (scores < kth) | (equal & (equal.cumsum(dim=-1) <= keep_equal))


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Prune ``int(sparsity * n)`` lowest scores of the whole matrix, or of each row when ``per_row``."""
    if per_row:
        return lowest_mask(scores, int(scores.shape[-1] * sparsity))
    flat = scores.reshape(1, -1)
    return lowest_mask(flat, int(flat.shape[-1] * sparsity)).reshape(scores.shape)


def nm_mask(scores: torch.Tensor, pattern: NMPattern) -> torch.Tensor:
    """In every group of M consecutive columns of each row, prune the N lowest scores."""
    rows, cols = scores.shape
    if cols % pattern.group:
        raise ValueError(f"{cols} input columns are not a multiple of the N:M group size {pattern.group}")
    grouped = scores.reshape(rows, cols // pattern.group, pattern.group)
    return lowest_mask(grouped, pattern.pruned).reshape(rows, cols)


def pruning_mask(
    scores: torch.Tensor, sparsity: float, pattern: NMPattern | None, per_row: bool
) -> torch.Tensor:
    """N:M mask when a pattern is given, else the unstructured mask at ``sparsity``."""
    if pattern is not None:
        return nm_mask(scores, pattern)
    return unstructured_mask(scores, sparsity, per_row)


def count_nm_violations(weight: torch.Tensor, pattern: NMPattern) -> int:
    """Number of M-groups holding fewer than N zeros (0 means the pattern holds exactly)."""
    rows, cols = weight.shape
    zeros = (weight.reshape(rows, cols // pattern.group, pattern.group) == 0).sum(dim=-1)
    return int((zeros < pattern.pruned).sum())
