"""Input statistics of one linear layer, and the reconstruction error measured from them.

For a linear layer y = W x and the layer-wise objective ‖WX − ŴX‖², the Hessian with respect to each row
of W is H = (2/n) Σ x xᵀ over the n calibration tokens.  This module accumulates H (fp32, as a running
average so its scale never grows with n, on the row slabs of its upper triangle), the running means of
squared input features (Wanda) and of |x_j| (AWQ), and measures the relative reconstruction error
‖WX − ŴX‖² / ‖WX‖² from H alone: with H ∝ X Xᵀ, ‖ΔW X‖²_F = tr(ΔW H ΔWᵀ) up to the same factor, so no
activations need to be kept.  Damping and factoring H is ``hessian``'s business.
"""

from __future__ import annotations

import itertools
import math

import torch


class InputStatistics:
    """Running statistics of the inputs x ∈ R^columns of one linear layer over the calibration tokens.

    ``feature_sq_mean[j]`` = mean over all tokens of x_j² (Wanda's ‖X_j‖²/n); kept only with
    ``feature_norms`` (the Hessian methods never read it).
    ``feature_abs_mean[j]`` = mean over all tokens of |x_j| (AWQ's activation magnitude); kept only with
    ``feature_abs_means``.
    ``hessian`` = (2/m) Σ x xᵀ over every ``hessian_stride``-th token (m of them).  Stride 1 accumulates
    the exact Hessian that SparseGPT/GPTQ need, as a running average.  A larger stride only serves to
    measure reconstruction errors: while fewer than ``columns`` tokens are sampled they are kept
    themselves (``samples``) and the error is computed from them directly (cheaper than a Gram matrix;
    ``hessian`` is formed from them on demand); beyond that they are folded into a running Gram matrix
    as with stride 1, so memory stays bounded.  Token positions are counted globally, so the subsample is
    spread evenly over all batches.
    """

    def __init__(
        self,
        columns: int,
        device: torch.device,
        hessian_stride: int = 1,
        feature_norms: bool = True,
        feature_abs_means: bool = False,
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
        self._feature_abs_mean: torch.Tensor | None = None
        if feature_abs_means:
            self._feature_abs_mean = torch.zeros(columns, dtype=torch.float32, device=device)
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
        if self._feature_abs_mean is not None:
            sum_of_magnitudes = torch.linalg.vector_norm(X, ord=1, dim=0)
            self._feature_abs_mean.mul_(self.tokens / total).add_(sum_of_magnitudes, alpha=1.0 / total)
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
        return _kept(self._feature_sq_mean, "feature norms", "feature_norms")

    @property
    def feature_abs_mean(self) -> torch.Tensor:
        """Mean over all tokens of |x_j| per input feature j (only when kept: ``feature_abs_means``)."""
        return _kept(self._feature_abs_mean, "feature magnitudes", "feature_abs_means")

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


def _kept(statistic: torch.Tensor | None, what: str, flag: str) -> torch.Tensor:
    """``statistic``, refused when it was not accumulated (the method did not ask for it)."""
    if statistic is None:
        raise ValueError(
            f"these statistics were accumulated without {what} ({flag}=False); a method that reads them "
            f"says so in its needs(): Needs({flag}=True)"
        )
    return statistic


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
