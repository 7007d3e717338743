"""Min-max uniform weight quantizer shared by GPTQ, RTN and joint sparse+quant.

A row segment w (one output row of a group of ``group_size`` input columns, or the whole row for
per-channel quantization) is mapped to integers q ∈ {0, …, 2^bits − 1} with a scale s and an integer zero
point z:

    q = clamp(round(w / s) + z, 0, maxq),     ŵ = s · (q − z)        (fake quantization: ŵ is a float)

* asymmetric: the range [min(w, 0), max(w, 0)] is split into maxq steps, z = round(−min / s);
* symmetric: the range is [−m, m] with m = max|w|, and z = 2^(bits−1) (the midpoint), so the grid is
  s · {−2^(bits−1), …, 2^(bits−1) − 1}; this is the signed-int layout that packed formats store.

The range always contains 0 and z is an integer, so a weight that is exactly 0 dequantizes to exactly 0:
pruned weights stay pruned.  Each segment holds at most 2^bits distinct values by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmkick_models.engine.spec import CompressionSpec

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantizerConfig:
    """How weights are quantized: ``bits`` in [2, 8], symmetric or not, ``group_size`` input columns
    per scale (None: one scale per output row, "per channel")."""

    bits: int
    sym: bool = True
    group_size: int | None = 128

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits={self.bits} is out of range; allowed: {MIN_BITS}..{MAX_BITS}")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size={self.group_size} must be positive (or None for per channel)")

    @property
    def maxq(self) -> int:
        """The largest integer level, 2^bits − 1."""
        return (1 << self.bits) - 1

    def facts(self) -> dict[str, float]:
        """The quantizer's entries in a layer's report (``group_size`` −1: per channel)."""
        return {"bits": self.bits, "group_size": self.group_size or -1}


def find_params(W: torch.Tensor, config: QuantizerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and integer zero point of each row of ``W`` (rows, columns); both (rows, 1) fp32.

    The zero point is returned as a float tensor holding integers (it is used in float arithmetic).
    """
    W = W.float()
    zeros = torch.zeros(W.shape[0], device=W.device)
    xmin = torch.minimum(W.min(dim=1).values, zeros)
    xmax = torch.maximum(W.max(dim=1).values, zeros)
    if config.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    # An all-zero row: any positive scale works (every weight maps to the zero point); avoid 0 / 0.
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -1.0, xmin)
    xmax = torch.where(empty, 1.0, xmax)
    scale = (xmax - xmin) / config.maxq
    if config.sym:
        zero = torch.full_like(scale, float((config.maxq + 1) // 2))
    else:
        zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer levels q ∈ [0, maxq] (as floats) of ``w`` on the grid (scale, zero); shapes broadcast."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Quantize then dequantize: the float value ŵ = s · (q − z) that evaluation uses."""
    return scale * (quantize_codes(w, scale, zero, maxq) - zero)


def level_bounds(zero: torch.Tensor, maxq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer levels relative to the zero point, −z and maxq − z: the clamp bounds of
    ``fake_quantize_into``."""
    return -zero, maxq - zero


def fake_quantize_into(
    out: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """``fake_quantize`` written into ``out`` (which may be ``w`` itself) with no temporaries and the same
    values, in four operations: the column loops of GPTQ and SparseGPT call it once per column.
    ``low``, ``high`` = ``level_bounds(zero, maxq)``.  clamp(round(w / s) + z, 0, maxq) − z equals
    clamp(round(w / s), −z, maxq − z) exactly: every term is an integer held exactly in floating point (a
    level beyond 2^24 is clamped either way).  The one difference in bits: a small negative weight whose
    level is the zero point comes out as −0.0 instead of +0.0 (equal as numbers; exact zeros stay +0.0)."""
    return torch.div(w, scale, out=out).round_().clamp_(low, high).mul_(scale)


@dataclass
class QuantizedWeight:
    """The grid a layer was quantized on, kept for packed export (not saved with fake-quantized weights).

    ``scale`` and ``zero`` are (rows, groups) with groups = ceil(columns / group_size) (1 per channel);
    column j of the weight uses group ``g_idx[j]``.  ``g_idx`` is None when column j simply uses group
    j // group_size (always the case without act_order, and with act_order + static groups).
    """

    config: QuantizerConfig
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor | None = None

    def rows(self, rows: slice) -> QuantizedWeight:
        """The grid of a range of rows: one matrix of several stacked by rows that shared a column loop."""
        return QuantizedWeight(self.config, self.scale[rows].clone(), self.zero[rows].clone(), self.g_idx)

    def group_of_columns(self, columns: int) -> torch.Tensor:
        """Group index of every input column."""
        if self.g_idx is not None:
            return self.g_idx
        if self.config.group_size is None:
            return torch.zeros(columns, dtype=torch.long)
        return torch.arange(columns) // self.config.group_size

    def dequantize(self, W: torch.Tensor) -> torch.Tensor:
        """``W`` snapped to this grid (a fake-quantized W is returned unchanged up to round-off)."""
        groups = self.group_of_columns(W.shape[1]).to(W.device)
        scale, zero = self.scale.to(W.device)[:, groups], self.zero.to(W.device)[:, groups]
        return fake_quantize(W.float(), scale, zero, self.config.maxq)


def rtn_quantize(W: torch.Tensor, config: QuantizerConfig) -> tuple[torch.Tensor, QuantizedWeight]:
    """Round-to-nearest of W (rows, columns) group by group; returns (Ŵ in fp32, its grid).

    Weights that are 0 stay 0 (see the module docstring), so RTN after pruning keeps the mask.
    """
    W = W.float()
    rows, columns = W.shape
    size = config.group_size or columns
    if columns % size == 0:  # every group whole: all at once, each group row through the same find_params
        groups = columns // size
        segments = W.reshape(rows * groups, size)
        scale, zero = find_params(segments, config)
        Q = fake_quantize(segments, scale, zero, config.maxq).reshape(rows, columns)
        grid = QuantizedWeight(config, scale.reshape(rows, groups), zero.reshape(rows, groups))
        return Q, grid
    Q = torch.empty_like(W)
    scales, zeros = [], []
    for start in range(0, columns, size):
        block = W[:, start : start + size]
        scale, zero = find_params(block, config)
        Q[:, start : start + size] = fake_quantize(block, scale, zero, config.maxq)
        scales.append(scale)
        zeros.append(zero)
    return Q, QuantizedWeight(config, torch.cat(scales, dim=1), torch.cat(zeros, dim=1))


def quantizer_config(spec: CompressionSpec) -> QuantizerConfig:
    """The quantizer a spec asks for (``spec.bits`` must be set)."""
    if spec.bits is None:
        raise ValueError(f"method={spec.method} was asked to quantize without bits=")
    return QuantizerConfig(spec.bits, spec.sym, spec.group_size)
