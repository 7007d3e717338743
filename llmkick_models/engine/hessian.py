"""The Hessian algebra shared by SparseGPT and GPTQ: dead inputs, dampening, and the inverse factor.

The column loops (``column_loop``) read the upper Cholesky factor of the damped inverse (H + λI)⁻¹.  This
module

* handles dead inputs (a feature that is zero on every token: H_jj = 0),
* computes that factor from one Cholesky and a triangular inverse, retrying with more dampening and a
  warning when the factorisation fails; it never falls back to the identity (that would silently turn
  SparseGPT into magnitude pruning and GPTQ into round-to-nearest).

H itself is accumulated by ``input_statistics.InputStatistics``.
"""

from __future__ import annotations

import warnings

import torch


class HessianError(RuntimeError):
    """The Hessian cannot be factorised: not finite, or not positive definite at any tried dampening."""


class HessianDampingWarning(UserWarning):
    """The Cholesky factorisation failed at the requested dampening and was retried with more."""


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
