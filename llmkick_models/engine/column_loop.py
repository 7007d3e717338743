"""The optimal-brain-surgeon column loop that SparseGPT and GPTQ share.

With U the upper Cholesky factor of the damped inverse Hessian (``hessian.damped_inverse_cholesky``), the
columns of W are visited left to right in blocks of ``blocksize``.  At column j a method-specific step
(``ColumnStep``) decides what the column becomes, ŵ (pruned: masked, and/or quantized), and the loop

    err_j = (w_j − ŵ_j) / U_jj,        W[:, j+1:] −= err_j · U[j, j+1:]

so the columns not yet visited absorb the error.  Inside a block the update is applied at once to the
column's inner window of ``INNER_BLOCK`` columns and, when the loop leaves the window, to the rest of the
block in one product (``LazyColumnBlock``); when a block is done its errors reach every later column in
one product (the reference's lazy batch update).  The same sums as updating every later column at each
column, in another order: a column's weights are final when the loop reaches it.

Matrices that read the same input may be stacked by rows (``row_blocks``): rows are independent in the
update, and every product runs matrix by matrix, so each comes out bit for bit as it would alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from llmkick_models.engine.input_statistics import quadratic_form_rows
from llmkick_models.engine.spec import NMPattern

#: Columns per inner window of the two-level lazy update inside a column block (see ``LazyColumnBlock``).
INNER_BLOCK = 16


def inner_block(pattern: NMPattern | None, blocksize: int) -> int:
    """The inner window for a column loop: ``INNER_BLOCK`` columns, a multiple of the N:M group size so
    that no group straddles two windows (a group's mask is chosen on current weights)."""
    if pattern is None:
        return INNER_BLOCK
    return min(blocksize, max(1, INNER_BLOCK // pattern.group) * pattern.group)


def row_blocks(splits: Sequence[int]) -> list[slice]:
    """Row ranges of matrices stacked on top of each other, ``splits`` being their row counts."""
    blocks, start = [], 0
    for rows in splits:
        blocks.append(slice(start, start + rows))
        start += rows
    return blocks


class LazyColumnBlock:
    """Columns [i1, i2) of W in the column loop, with a two-level lazy update.

    The block is held transposed, so that the per-column work reads and writes contiguous rows: ``WT``
    (its weights as updated so far), ``QT`` (what each visited column became) and ``ErrT`` (the scaled
    errors), with ``w[i]``, ``q[i]``, ``err[i]`` the rows of column i.  Column i's update is applied at
    once only to the columns of its inner window [``start``, ``end``) (``spread``); the window's errors
    reach the rest of the block in one product when the loop leaves it (``flush``).  ``W`` itself is left
    as it was at the block's start until ``finish``.  The products run matrix by matrix over ``blocks``.
    """

    def __init__(
        self, W: torch.Tensor, Hinv: torch.Tensor, i1: int, i2: int, blocks: list[slice], inner: int
    ) -> None:
        self.W, self.Hinv, self.i1, self.i2 = W, Hinv, i1, i2
        self.WT = W[:, i1:i2].t().contiguous()
        self.QT = torch.empty_like(self.WT)
        self.ErrT = torch.zeros_like(self.WT)
        self.w, self.q, self.err = self.WT.unbind(0), self.QT.unbind(0), self.ErrT.unbind(0)
        self.Hinv1 = Hinv[i1:i2, i1:i2]
        self.d = self.Hinv1.diagonal().unbind(0)  # 0-dim tensors: dividing by one beats a float
        self.blocks = blocks
        self.count = i2 - i1
        self.inner = max(1, inner)
        self.start = 0  # first column whose error has not yet reached the columns past the window
        self.end = min(self.inner, self.count)  # the window is [start, end)

    def flush(self, i: int) -> None:
        """Bring every column from ``i`` on up to date (columns before ``i`` are done) and open a new window
        at ``i``."""
        k1, k2 = self.start, self.end
        if i > k1 and k2 < self.count:
            spread = self.Hinv1[k1:i, k2:].t()
            for rows in self.blocks:
                self.WT[k2:, rows].addmm_(spread, self.ErrT[k1:i, rows], alpha=-1.0)
        self.start, self.end = i, min(i + self.inner, self.count)

    def need(self, i: int, stop: int) -> None:
        """Before column ``i``: columns [i, stop) (block positions) will be read; bring them up to date."""
        if i == self.end or stop > self.end:
            self.flush(i)

    def spread(self, i: int) -> None:
        """After column ``i`` (its error in ``err[i]``): the update of the rest of its window."""
        if i + 1 < self.end:
            self.WT[i + 1 : self.end].addr_(self.Hinv1[i, i + 1 : self.end], self.err[i], alpha=-1.0)

    def columns_now(self, start: int, stop: int) -> torch.Tensor:
        """A copy of W's columns [start, stop) (absolute positions, ``start`` the column about to be visited)
        as the updates so far have made them; call ``need`` for the block's part first.  Columns past the
        block have not yet received this block's lazy update, so it is applied here on the fly (the errors
        of columns not yet visited are 0)."""
        # A copy: callers mask it in place, which must not zero weights not yet visited (they would be
        # dropped without their update, and the error accounting ΔW = Err·U would no longer hold).
        inside = self.WT.t()[:, start - self.i1 : min(stop, self.i2) - self.i1].clone()
        if stop <= self.i2:
            return inside
        outside = self.W[:, self.i2 : stop] - self.ErrT.t() @ self.Hinv[self.i1 : self.i2, self.i2 : stop]
        return torch.cat([inside, outside], dim=1)

    def finish(self) -> torch.Tensor:
        """After the block's last column: write the block's ŵ into W and let its errors reach every later
        column (one product per stacked matrix).  Returns the squared errors per row, Σ_j err_j²."""
        self.W[:, self.i1 : self.i2] = self.QT.t()
        Err1 = self.ErrT.t().contiguous()
        for rows in self.blocks:
            self.W[rows, self.i2 :].addmm_(Err1[rows], self.Hinv[self.i1 : self.i2, self.i2 :], alpha=-1.0)
        return Err1.square().sum(dim=1)


class ColumnStep(Protocol):
    """The part of the column loop that differs between methods: what each column becomes."""

    def begin_block(self, block: LazyColumnBlock) -> None:
        """Before the block's first column (e.g. choose the block's mask, or find its groups' grids)."""

    def column(self, block: LazyColumnBlock, i: int) -> None:
        """Write ŵ, what column ``i`` of the block becomes, into ``block.q[i]``; its weights as updated by
        every column before it are ``block.w[i]`` (left as they are)."""


def obs_column_loop(
    W: torch.Tensor, Hinv: torch.Tensor, step: ColumnStep, blocksize: int, blocks: list[slice], inner: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the column loop on W (rows, columns) with ``Hinv`` = U; W becomes Ŵ in place.

    ``blocks``: the row ranges of stacked matrices (``row_blocks``); ``inner``: the inner window
    (``inner_block``).  Returns (Ŵ, Σ_j err_j² per row): the latter gives the reconstruction error at no
    extra product with H (``errors_from_column_loop``).
    """
    err_sq = torch.zeros(W.shape[0], dtype=torch.float32, device=W.device)
    for i1 in range(0, W.shape[1], blocksize):
        block = LazyColumnBlock(W, Hinv, i1, min(i1 + blocksize, W.shape[1]), blocks, inner)
        step.begin_block(block)
        for i in range(block.count):
            if i == block.end:
                block.flush(i)  # the window's errors reach the rest of the block
            step.column(block, i)  # q = what the column becomes
            torch.sub(block.w[i], block.q[i], out=block.err[i]).div_(block.d[i])  # err = (w − q) / U_ii
            block.spread(i)  # W[:, i+1:] −= err · U[i, i+1:], inside the window
        err_sq += block.finish()  # Ŵ into W; every later column gets the block's errors
    return W, err_sq


def order_by_activity(W: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Act-order: W's columns and H's rows and columns by descending H_jj, the most active inputs first
    (while the most columns are left to absorb their error).  Returns (W, H, perm); undo with
    ``original_order``."""
    perm = torch.argsort(H.diagonal(), descending=True, stable=True)
    return W[:, perm], H[perm][:, perm], perm


def original_order(W: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The columns of W, which are in the order ``perm`` (``order_by_activity``), put back in place."""
    return W[:, torch.argsort(perm)]


def errors_from_column_loop(
    W: torch.Tensor,
    W_hat: torch.Tensor,
    H: torch.Tensor,
    err_sq: torch.Tensor,
    damping: float,
    blocks: list[slice],
) -> list[float]:
    """Relative reconstruction errors tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) of stacked matrices (row ranges ``blocks``)
    after the column loop, without a second product with H for the numerator.

    In the loop W − Ŵ = Err·U, U being the upper Cholesky factor of (H + λI)⁻¹ and row i of Err the
    scaled errors of row i, so tr(ΔW (H + λI) ΔWᵀ) = ‖Err‖² and tr(ΔW H ΔWᵀ) = ‖Err‖² − λ‖ΔW‖².
    ``err_sq`` holds ‖Err‖² per row, ``damping`` is λ.  Where the damping term is not small against
    ‖Err‖² (heavy damping after a failed factorisation), the subtraction would lose digits, so that
    matrix's numerator is computed directly.  W (dead inputs zeroed) and H (dead diagonal set) are the
    loop's; they give the same quadratic forms as the original W and H.
    """
    kept_rows = quadratic_form_rows(W, H)
    delta = W - W_hat
    delta_sq = delta.square().sum(dim=1)
    errors = []
    for rows in blocks:
        loop_energy = err_sq[rows].sum()
        damped = damping * delta_sq[rows].sum()
        if damped <= 0.5 * loop_energy:
            lost = loop_energy - damped
        else:
            lost = torch.dot((delta[rows] @ H).flatten(), delta[rows].flatten())
        kept = kept_rows[rows].sum()
        value = float(lost.clamp_min(0) / kept) if kept > 0 else 0.0
        errors.append(value if math.isfinite(value) else float("nan"))
    return errors
