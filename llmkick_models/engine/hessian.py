"""Input statistics of one linear layer and the Hessian algebra shared by SparseGPT and GPTQ.

For a linear layer y = W x and the layer-wise objective ‖WX − ŴX‖², the Hessian with respect to each row
of W is H = (2/n) Σ x xᵀ over the n calibration tokens.  This module

* accumulates H (fp32, as a running average so its scale never grows with n) and the running mean of
  squared input features that Wanda needs,
* handles dead inputs (a feature that is zero on every token: H_jj = 0),
* computes the upper Cholesky factor of the damped inverse, retrying with more dampening and a warning
  when the factorisation fails; it never falls back to the identity (that would silently turn SparseGPT
  into magnitude pruning and GPTQ into round-to-nearest),
* measures the relative reconstruction error ‖WX − ŴX‖² / ‖WX‖² from H alone: with H ∝ X Xᵀ,
  ‖ΔW X‖²_F = tr(ΔW H ΔWᵀ) up to the same factor, so no activations need to be kept.
"""

from __future__ import annotations

import math
import warnings

import torch


class HessianError(RuntimeError):
    """The Hessian cannot be factorised: not finite, or not positive definite at any tried dampening."""


class HessianDampingWarning(UserWarning):
    """The Cholesky factorisation failed at the requested dampening and was retried with more."""


class InputStatistics:
    """Running statistics of the inputs x ∈ R^columns of one linear layer over the calibration tokens.

    ``feature_sq_mean[j]`` = mean over all tokens of x_j² (Wanda's ‖X_j‖²/n).
    ``hessian`` = (2/m) Σ x xᵀ over every ``hessian_stride``-th token (m of them); stride 1 gives the
    exact Hessian that SparseGPT/GPTQ need, a larger stride a cheaper estimate that is only used to
    measure reconstruction errors.  Token positions are counted globally, so the subsample is spread
    evenly over all batches.
    """

    def __init__(self, columns: int, device: torch.device, hessian_stride: int = 1) -> None:
        if hessian_stride < 1:
            raise ValueError(f"hessian_stride must be >= 1, got {hessian_stride}")
        self.columns = columns
        self.hessian_stride = hessian_stride
        self.tokens = 0
        self.hessian_tokens = 0
        self.feature_sq_mean = torch.zeros(columns, dtype=torch.float32, device=device)
        self.hessian = torch.zeros(columns, columns, dtype=torch.float32, device=device)

    def add(self, inputs: torch.Tensor) -> None:
        """Fold a batch of layer inputs (any leading shape, last dimension = columns) into the statistics."""
        X = inputs.detach().reshape(-1, self.columns)
        if X.device != self.hessian.device:
            X = X.to(self.hessian.device)
        X = X.float()
        n = X.shape[0]
        if n == 0:
            return
        # Running means: rescale the old mean by old/new count, add the new sum / new count.  Both terms
        # stay O(1), so fp32 keeps full relative precision however many tokens are seen.
        total = self.tokens + n
        sum_of_squares = torch.linalg.vector_norm(X, dim=0).square_()  # no tokens x columns temporary
        self.feature_sq_mean.mul_(self.tokens / total).add_(sum_of_squares, alpha=1.0 / total)
        first = (-self.tokens) % self.hessian_stride  # next globally-strided position inside this batch
        self.tokens = total
        sampled = X[first :: self.hessian_stride]
        m = sampled.shape[0]
        if m:
            hessian_total = self.hessian_tokens + m
            self.hessian.mul_(self.hessian_tokens / hessian_total)
            self.hessian.addmm_(sampled.t(), sampled, alpha=2.0 / hessian_total)
            self.hessian_tokens = hessian_total

    @property
    def hessian_is_exact(self) -> bool:
        """True when H was accumulated over every token (stride 1)."""
        return self.hessian_stride == 1


def zero_dead_inputs(H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Dead inputs (H_jj = 0: feature j never fired) get H_jj = 1 and weight column 0, in place.

    Their weights cannot influence the calibration outputs, so they are pruned for free; the unit
    diagonal keeps H invertible without coupling them to any other column.  Returns the dead mask.
    """
    dead = H.diagonal() == 0
    if dead.any():
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
    return dead


def damped_inverse_cholesky(
    H: torch.Tensor, percdamp: float, layer_name: str, max_attempts: int = 6
) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + λI)⁻¹ with λ = damp · mean(diag H); returns (Hinv, damp used).

    ``Hinv`` is upper triangular with (H + λI)⁻¹ = Hinvᵀ Hinv; its diagonal and rows are what the OBS/GPTQ
    column loops read.  If a factorisation fails (H not positive definite in floating point, e.g. from a
    rank-deficient calibration set with little dampening), the dampening is multiplied by 10 (at least
    1e-4) and a ``HessianDampingWarning`` names the layer and both values.  After ``max_attempts`` a
    ``HessianError`` is raised: there is no identity fallback.
    """
    if not torch.isfinite(H).all():
        raise HessianError(
            f"{layer_name}: the Hessian holds NaN or inf (overflowing activations?); more dampening "
            f"cannot fix that — try dtype=float32 or bfloat16 for the calibration forward"
        )
    columns = H.shape[0]
    mean_diagonal = H.diagonal().mean()
    identity = torch.eye(columns, dtype=H.dtype, device=H.device)
    damp = percdamp
    for attempt in range(1, max_attempts + 1):
        L, info = torch.linalg.cholesky_ex(H + (damp * mean_diagonal) * identity)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            Hinv, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0 and torch.isfinite(Hinv).all():
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
    (Err1's not-yet-visited columns are 0).  Needed for dynamic group grids whose group extends past the
    block (the reference reads the stale W there).
    """
    i2 = i1 + W1.shape[1]
    inside = W1[:, start - i1 : min(stop, i2) - i1]
    if stop <= i2:
        return inside
    outside = W[:, i2:stop] - Err1 @ Hinv[i1:i2, i2:stop]
    return torch.cat([inside, outside], dim=1)
