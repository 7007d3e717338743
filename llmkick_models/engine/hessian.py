"""Input statistics of one linear layer and the Hessian algebra shared by SparseGPT and GPTQ.

For a linear layer y = W x and the layer-wise objective ‖WX − ŴX‖², the Hessian with respect to each row
of W is H = (2/n) Σ x xᵀ over the n calibration tokens.  This module

* accumulates H (fp32, as a running average so its scale never grows with n) and the running mean of
  squared input features that Wanda needs,
* handles dead inputs (a feature that is zero on every token: H_jj = 0),
* computes the upper Cholesky factor of the damped inverse (one Cholesky and a triangular inverse),
  retrying with more dampening and a warning when the factorisation fails; it never falls back to
  the identity (that would silently turn SparseGPT into magnitude pruning and GPTQ into round-to-nearest),
* measures the relative reconstruction error ‖WX − ŴX‖² / ‖WX‖² from H alone: with H ∝ X Xᵀ,
  ‖ΔW X‖²_F = tr(ΔW H ΔWᵀ) up to the same factor, so no activations need to be kept.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import torch

from llmkick_models.engine.spec import NMPattern


class HessianError(RuntimeError):
    """The Hessian cannot be factorised: not finite, or not positive definite at any tried dampening."""


class HessianDampingWarning(UserWarning):
    """The Cholesky factorisation failed at the requested dampening and was retried with more."""


class InputStatistics:
    """Running statistics of the inputs x ∈ R^columns of one linear layer over the calibration tokens.

    ``feature_sq_mean[j]`` = mean over all tokens of x_j² (Wanda's ‖X_j‖²/n); kept only with
    ``feature_norms`` (the Hessian methods never read it).
    ``hessian`` = (2/m) Σ x xᵀ over every ``hessian_stride``-th token (m of them).  Stride 1 accumulates
    the exact Hessian that SparseGPT/GPTQ need, as a running average.  A larger stride only serves to
    measure reconstruction errors: while fewer than ``columns`` tokens are sampled they are kept
    themselves (``samples``) and the error is computed from them directly (cheaper than a Gram matrix;
    ``hessian`` is formed from them on demand); beyond that they are folded into a running Gram matrix
    as with stride 1, so memory stays bounded.  Token positions are counted globally, so the subsample is
    spread evenly over all batches.
    """

    def __init__(
        self, columns: int, device: torch.device, hessian_stride: int = 1, feature_norms: bool = True
    ) -> None:
        if hessian_stride < 1:
            raise ValueError(f"hessian_stride must be >= 1, got {hessian_stride}")
        self.columns = columns
        self.hessian_stride = hessian_stride
        self.tokens = 0
        self.hessian_tokens = 0
        self.device = torch.device(device)
        self._feature_sq_mean: torch.Tensor | None = None
        if feature_norms:
            self._feature_sq_mean = torch.zeros(columns, dtype=torch.float32, device=device)
        self._hessian: torch.Tensor | None = None
        if hessian_stride == 1:
            self._hessian = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self._lower_stale = False  # the Gram's blocks below the diagonal await their mirror from above
        #: Subsampled tokens, while there are fewer of them than columns (then they are cheaper to keep
        #: and to evaluate than a Gram matrix); None once folded into the running Gram matrix.
        self._samples: list[torch.Tensor] | None = None if hessian_stride == 1 else []

    def add(self, inputs: torch.Tensor) -> None:
        """Fold a batch of layer inputs (any leading shape, last dimension = columns) into the statistics."""
        X = inputs.detach().reshape(-1, self.columns)
        if X.device != self.device:
            X = X.to(self.device)
        X = X.float()
        n = X.shape[0]
        if n == 0:
            return
        # Running means: rescale the old mean by old/new count, add the new sum / new count.  Both terms
        # stay O(1), so fp32 keeps full relative precision however many tokens are seen.
        total = self.tokens + n
        if self._feature_sq_mean is not None:
            sum_of_squares = torch.linalg.vector_norm(X, dim=0).square_()  # no tokens x columns temporary
            self._feature_sq_mean.mul_(self.tokens / total).add_(sum_of_squares, alpha=1.0 / total)
        first = (-self.tokens) % self.hessian_stride  # next globally-strided position inside this batch
        self.tokens = total
        sampled = X[first :: self.hessian_stride]
        m = sampled.shape[0]
        if not m:
            return
        hessian_total = self.hessian_tokens + m
        if self._samples is not None and hessian_total < self.columns:
            self._samples.append(sampled.clone())  # a copy: the view would keep the whole batch alive
            self._hessian = None  # formed again from the samples on demand
            self.hessian_tokens = hessian_total
            return
        if self._samples is not None:  # too many samples to keep: continue with their Gram matrix
            self._hessian = self.hessian.clone()
            self._samples = None
        assert self._hessian is not None
        self._hessian.mul_(self.hessian_tokens / hessian_total)
        _add_gram_upper(self._hessian, sampled, 2.0 / hessian_total)
        self._lower_stale = True
        self.hessian_tokens = hessian_total

    @property
    def hessian(self) -> torch.Tensor:
        """(2/m) Σ x xᵀ over the tokens counted in ``hessian_tokens``."""
        if self._hessian is None:
            X = self.samples
            self._hessian = X.t() @ X * (2.0 / max(X.shape[0], 1))
        elif self._lower_stale:
            edges = _gram_edges(self.columns)
            for start, stop in itertools.pairwise(edges[1:]):
                self._hessian[start:stop, :start] = self._hessian[:start, start:stop].t()
            self._lower_stale = False
        return self._hessian

    @property
    def feature_sq_mean(self) -> torch.Tensor:
        """Mean over all tokens of x_j² per input feature j (only when kept: ``feature_norms``)."""
        if self._feature_sq_mean is None:
            raise ValueError("these statistics were accumulated without feature norms (feature_norms=False)")
        return self._feature_sq_mean

    @property
    def samples(self) -> torch.Tensor:
        """The subsampled tokens (m × columns); kept only with ``hessian_stride`` > 1 and m < columns."""
        if self._samples is None:
            raise ValueError("these statistics keep a Hessian, not the tokens")
        if len(self._samples) != 1:
            joined = torch.cat(self._samples) if self._samples else torch.zeros(0, self.columns)
            self._samples = [joined.to(self.device)]
        return self._samples[0]

    @property
    def hessian_is_exact(self) -> bool:
        """True when H was accumulated over every token (stride 1)."""
        return self.hessian_stride == 1

    def relative_error(self, W: torch.Tensor, W_hat: torch.Tensor) -> float:
        """‖WX − ŴX‖² / ‖WX‖² over the tokens behind these statistics: from the exact Hessian, or from
        the kept token subsample directly while it has fewer tokens than columns (else via its Gram)."""
        if self._samples is None:
            return relative_reconstruction_error(W, W_hat, self.hessian)
        X = self.samples.to(W.device)
        W = W.float()
        kept = (W @ X.t()).square().sum()
        if not kept > 0:
            return 0.0
        value = float(((W - W_hat.float()) @ X.t()).square().sum() / kept)
        return value if math.isfinite(value) else float("nan")


#: From this many columns on, a Gram update skips the blocks below its diagonal (the mirrors of those
#: above, copied when the Hessian is read): with k row slabs, (k + 1) / 2k of the work.
GRAM_SPLIT_MIN_COLUMNS = 256
#: Slab height of the split Gram update (at most ``GRAM_MAX_SLABS`` slabs): thinner slabs skip more of the
#: lower triangle, but below about a hundred rows the products lose more speed than they save work
#: (measured on SmolLM2's 576 and 1536 columns: 6 and 8 slabs, 0.63 and 0.58 of one full product).
GRAM_SLAB_ROWS = 96
GRAM_MAX_SLABS = 8


def _gram_edges(columns: int) -> list[int]:
    """Row slab boundaries of the split Gram update ([0, columns] = one full product).  An even number of
    slabs, so that columns // 2 is a boundary: the lower-left quarter is then all mirrored blocks."""
    if columns < GRAM_SPLIT_MIN_COLUMNS:
        return [0, columns]
    slabs = 2 * max(1, min(GRAM_MAX_SLABS, columns // GRAM_SLAB_ROWS) // 2)
    return [columns * k // slabs for k in range(slabs + 1)]


def _add_gram_upper(H: torch.Tensor, X: torch.Tensor, alpha: float) -> None:
    """H += alpha · XᵀX on the row slabs from their diagonal block rightwards; the blocks left of each
    slab's diagonal block are left stale (see ``InputStatistics.hessian``)."""
    edges = _gram_edges(H.shape[0])
    for start, stop in itertools.pairwise(edges):
        H[start:stop, start:].addmm_(X[:, start:stop].t(), X[:, start:], alpha=alpha)


def zero_dead_inputs(H: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dead inputs (H_jj = 0: feature j never fired) get H_jj = 1 and weight column 0.

    Their weights cannot influence the calibration outputs, so they are pruned for free; the unit
    diagonal keeps H invertible without coupling them to any other column.  ``W`` is changed in place;
    ``H`` is left as it is and a changed copy returned when there are dead inputs.  Returns (H, dead mask).
    """
    dead = H.diagonal() == 0
    if dead.any():
        H = H.clone()
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
    return H, dead


#: LAPACK's Cholesky runs at half speed on matrices whose rows are a multiple of 1 KiB long (cache-set
#: aliasing; MKL on one CPU thread: 1536 columns 30 ms, 1540 columns 15 ms; 1024 and 512 alike, while
#: 576, 640 and 960 are fast).  Such a matrix is factored as the leading block of one ``CHOLESKY_PAD``
#: columns larger, padded with an identity block; the factor is the same.
CHOLESKY_ALIASING_COLUMNS = 256
CHOLESKY_PAD = 4


def lower_triangular_inverse(L: torch.Tensor, base: int = 64) -> torch.Tensor:
    """L⁻¹ of an invertible lower triangular L, by halving: [[A, 0], [C, B]]⁻¹ = [[A⁻¹, 0], [−B⁻¹CA⁻¹, B⁻¹]].

    Diagonal blocks of at most ``base`` rows come from a triangular solve against the identity; everything
    else is matmuls.  torch has no triangular inverse, and one solve against the full identity costs
    more (a 1536-column factor: 26 ms this way, 56 ms as one solve, on one CPU thread).
    """
    inverse = torch.zeros_like(L)

    def invert(lo: int, hi: int) -> None:
        if hi - lo <= base:
            eye = torch.eye(hi - lo, dtype=L.dtype, device=L.device)
            inverse[lo:hi, lo:hi] = torch.linalg.solve_triangular(L[lo:hi, lo:hi], eye, upper=False)
            return
        mid = (lo + hi) // 2
        invert(lo, mid)
        invert(mid, hi)
        inverse[mid:hi, lo:mid] = -(inverse[mid:hi, mid:hi] @ (L[mid:hi, lo:mid] @ inverse[lo:mid, lo:mid]))

    invert(0, L.shape[0])
    return inverse


def damped_inverse_cholesky(
    H: torch.Tensor, percdamp: float, layer_name: str, max_attempts: int = 6
) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + λI)⁻¹ with λ = damp · mean(diag H); returns (Hinv, damp used).

    ``Hinv`` is upper triangular with (H + λI)⁻¹ = Hinvᵀ Hinv; its diagonal and rows are what the OBS/GPTQ
    column loops read.  It is the factor the reference implementations compute as Cholesky → inverse →
    Cholesky, here from one Cholesky and one triangular inverse (about half the work): with J the
    reversal of the columns and L the lower Cholesky factor of J(H + λI)J, (H + λI)⁻¹ = J L⁻ᵀ L⁻¹ J =
    UᵀU for U = J L⁻¹ J, which is upper triangular with a positive diagonal, hence the unique factor.
    If the factorisation fails (H not positive definite in floating point, e.g. from a rank-deficient
    calibration set with little dampening), the dampening is multiplied by 10 (at least 1e-4) and a
    ``HessianDampingWarning`` names the layer and both values.  After ``max_attempts`` a
    ``HessianError`` is raised: there is no identity fallback.
    """
    # One sum instead of a boolean map: non-finite entries make it non-finite (an overflowing sum of
    # finite entries is confirmed entry by entry).
    if not torch.isfinite(H.sum()) and not torch.isfinite(H).all():
        raise HessianError(
            f"{layer_name}: the Hessian holds NaN or inf (overflowing activations?); more dampening "
            f"cannot fix that — try dtype=float32 or bfloat16 for the calibration forward"
        )
    mean_diagonal = H.diagonal().mean()
    damp = percdamp
    columns = H.shape[0]
    pad = CHOLESKY_PAD if columns % CHOLESKY_ALIASING_COLUMNS == 0 else 0
    for attempt in range(1, max_attempts + 1):
        # J H J + λI in the leading block of a block-diagonal matrix [[·, 0], [0, I]], whose factor is
        # [[L, 0], [0, I]]: see CHOLESKY_ALIASING_COLUMNS.
        padded = torch.zeros(columns + pad, columns + pad, dtype=H.dtype, device=H.device)
        reversed_damped = padded[:columns, :columns]
        reversed_damped.copy_(H.flip((0, 1)))  # J H J: its diagonal is H's, reversed, so damped alike
        padded.diagonal().add_(damp * mean_diagonal)
        padded.diagonal()[columns:] = 1.0
        L, info = torch.linalg.cholesky_ex(padded)
        if int(info) == 0:
            Hinv = lower_triangular_inverse(L[:columns, :columns]).flip((0, 1))
            if torch.isfinite(Hinv.sum()) or torch.isfinite(Hinv).all():
                return Hinv, damp
        if attempt == max_attempts:
            break
        retry = max(damp * 10.0, 1e-4)
        warnings.warn(
            f"{layer_name}: Cholesky of the damped Hessian failed with percdamp={damp:g} "
            f"(H is not positive definite: rank-deficient or too little calibration data?); "
            f"retrying with percdamp={retry:g}",
            HessianDampingWarning,
            stacklevel=2,
        )
        damp = retry
    raise HessianError(
        f"{layer_name}: the Hessian is not positive definite even with percdamp={damp:g} after "
        f"{max_attempts} attempts; use more calibration data (nsamples=, seqlen=) or a larger percdamp="
    )


def relative_reconstruction_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """‖WX − ŴX‖² / ‖WX‖² over the tokens behind ``H`` (∝ X Xᵀ), computed as tr(ΔW H ΔWᵀ) / tr(W H Wᵀ).

    ``W`` and ``W_hat`` are (out, in); H is (in, in).  Returns 0 for an all-zero ``W X`` (nothing to lose).
    """
    W = W.float()
    delta = W - W_hat.float()
    lost = torch.dot((delta @ H).flatten(), delta.flatten())
    kept = torch.dot((W @ H).flatten(), W.flatten())
    if not kept > 0:
        return 0.0
    # Round-off can make a numerically zero quadratic form slightly negative.
    value = float(lost.clamp_min(0) / kept)
    return value if math.isfinite(value) else float("nan")


def updated_columns(
    W: torch.Tensor,
    W1: torch.Tensor,
    Err1: torch.Tensor,
    Hinv: torch.Tensor,
    i1: int,
    start: int,
    stop: int,
) -> torch.Tensor:
    """Columns [start, stop) of W as the OBS updates so far have made them, inside the block loop.

    The current block (starting at ``i1``) lives in ``W1`` with its in-block updates applied; columns past
    the block have not yet received this block's lazy update, so it is applied here on the fly
    (Err1's not-yet-visited columns are 0).  SparseGPT's joint quantization finds its group grids on
    these columns.  Returns a new tensor.
    """
    i2 = i1 + W1.shape[1]
    # A copy: callers mask the segment in place, which must not zero W1's not-yet-visited weights (that
    # would drop them without an OBS update, and the error accounting ΔW = Err·U would no longer hold).
    inside = W1[:, start - i1 : min(stop, i2) - i1].clone()
    if stop <= i2:
        return inside
    outside = W[:, i2:stop] - Err1 @ Hinv[i1:i2, i2:stop]
    return torch.cat([inside, outside], dim=1)


#: Columns per inner window of the two-level lazy update inside a column block (see ``LazyColumnBlock``).
INNER_BLOCK = 16


def inner_block(pattern: NMPattern | None, blocksize: int) -> int:
    """The inner window for a column loop: ``INNER_BLOCK`` columns, a multiple of the N:M group size so
    that no group straddles two windows (a group's mask is chosen on current weights)."""
    if pattern is None:
        return INNER_BLOCK
    return min(blocksize, max(1, INNER_BLOCK // pattern.group) * pattern.group)


class LazyColumnBlock:
    """One ``blocksize`` block of columns [i1, i2) of an OBS/GPTQ column loop, with a two-level lazy update.

    The block is held transposed (``WT``: columns × rows; ``ErrT`` alike), so that the per-column work
    reads and writes contiguous rows.  Column i's error update is applied at once only to the columns of
    its inner window of ``inner`` columns; the window's errors reach the rest of the block in one matmul
    when the loop leaves the window (``flush``).  The same sums as updating every later column at each
    column, in another order: a column's weights are final when the loop reaches it, as in the reference.
    The products run matrix by matrix over ``blocks`` (stacked matrices), so each matrix's numbers are
    those of the matrix alone.
    """

    def __init__(
        self, W: torch.Tensor, Hinv: torch.Tensor, i1: int, i2: int, blocks: list[slice], inner: int
    ) -> None:
        self.WT = W[:, i1:i2].t().contiguous()
        self.ErrT = torch.zeros_like(self.WT)
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
        """After column ``i`` (its error in ``ErrT[i]``): the OBS update of the rest of its window."""
        if i + 1 < self.end:
            self.WT[i + 1 : self.end].addr_(self.Hinv1[i, i + 1 : self.end], self.ErrT[i], alpha=-1.0)

    def errors(self) -> torch.Tensor:
        """The block's scaled errors as (rows, columns), contiguous (for the lazy update of later blocks)."""
        return self.ErrT.t().contiguous()


def row_blocks(splits: Sequence[int]) -> list[slice]:
    """Row ranges of matrices stacked on top of each other, ``splits`` being their row counts."""
    blocks, start = [], 0
    for rows in splits:
        blocks.append(slice(start, start + rows))
        start += rows
    return blocks


def quadratic_form_rows(W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """w H wᵀ for every row w of W, H symmetric: per row slab of H (as the Gram update), its diagonal block
    once and the blocks right of it twice, so the products skip H's lower triangle (about 0.6 of W @ H)."""
    kept = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
    columns = H.shape[0]
    for start, stop in itertools.pairwise(_gram_edges(columns)):
        product = W[:, start:stop] @ H[start:stop, start:]
        kept += (product[:, : stop - start] * W[:, start:stop]).sum(dim=1)
        if stop < columns:
            kept += 2.0 * (product[:, stop - start :] * W[:, stop:]).sum(dim=1)
    return kept


def errors_from_column_loop(
    W: torch.Tensor,
    W_hat: torch.Tensor,
    H: torch.Tensor,
    err_sq: torch.Tensor,
    damping: float,
    splits: Sequence[int],
) -> list[float]:
    """Relative reconstruction errors tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) of stacked matrices (row counts ``splits``)
    after an OBS/GPTQ column loop, without a second product with H for the numerator.

    In those loops W − Ŵ = Err·U, U being the upper Cholesky factor of (H + λI)⁻¹ and row i of Err the
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
    for rows in row_blocks(splits):
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
