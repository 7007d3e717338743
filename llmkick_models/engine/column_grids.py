"""The quantization grid of each column in a quantizing column loop (GPTQ, joint sparse + quant).

Three ways to find them, chosen once per layer by ``column_grids``:

* per channel (``ChannelGrid``): one min-max grid per row, found on W before the loop, as the reference;
* dynamic groups (``DynamicGroupGrids``, the reference default, as IST-DASLab's ``fasterquant`` and
  GPTQ-for-LLaMa): a group's grid is found when the loop reaches its first column, on the group's columns
  as they stood at the start of the current column block (every earlier block's update applied, none of
  the current block's), so with ``group_size`` < ``blocksize`` the result depends on ``blocksize``,
  exactly as in the reference;
* static groups (``StaticGroupGrids``): every group's grid found on the original W before the loop, so
  with act-order a group's grid does not depend on the processing order.

Masked (pruned) weights count as 0 when a grid is found.  Each also gives the ``QuantizedWeight`` of the
layer, in the original column order, for packed export.
"""

from __future__ import annotations

import torch

from llmkick_models.engine.column_loop import LazyColumnBlock
from llmkick_models.engine.quantizer import QuantizedWeight, QuantizerConfig, find_params, level_bounds

#: One column's grid as ``quantizer.fake_quantize_into`` takes it: per row the scale and the clamp bounds.
ColumnGrid = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def row_grid(scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> ColumnGrid:
    """The per-row grid (scale, zero), each of shape (rows,), as ``fake_quantize_into`` takes it."""
    low, high = level_bounds(zero, maxq)
    return scale.contiguous(), low.contiguous(), high.contiguous()


def masked(W: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """W with its masked (pruned) weights as 0: what a grid is found on."""
    return W if mask is None else W.masked_fill(mask, 0.0)


class GridLog:
    """The group grids a layer was quantized on, in the order found, for its ``QuantizedWeight``."""

    def __init__(self, config: QuantizerConfig) -> None:
        self.config = config
        self.scales: list[torch.Tensor] = []
        self.zeros: list[torch.Tensor] = []

    def add(self, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Record grids found on W: scale and zero point of shape (rows, groups)."""
        self.scales.append(scale)
        self.zeros.append(zero)

    def quantized_weight(self, g_idx: torch.Tensor | None = None) -> QuantizedWeight:
        """Every recorded grid, on the CPU (``g_idx``: see ``QuantizedWeight``)."""
        scale, zero = torch.cat(self.scales, dim=1).cpu(), torch.cat(self.zeros, dim=1).cpu()
        return QuantizedWeight(self.config, scale, zero, g_idx)


class ChannelGrid:
    """One grid per row, found on W (masked weights as 0) before the loop."""

    def __init__(self, W: torch.Tensor, mask: torch.Tensor | None, config: QuantizerConfig) -> None:
        self.log = GridLog(config)
        scale, zero = find_params(masked(W, mask), config)
        self.log.add(scale, zero)
        self.grid = row_grid(scale.squeeze(1), zero.squeeze(1), config.maxq)

    def block_grids(self, block: LazyColumnBlock) -> list[ColumnGrid]:
        """The grid of each of the block's columns."""
        return [self.grid] * block.count

    def quantized_weight(self) -> QuantizedWeight:
        """The layer's grid for packed export."""
        return self.log.quantized_weight()


def find_static_groups(
    W: torch.Tensor, mask: torch.Tensor | None, config: QuantizerConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points (rows, groups) of every group of columns of W (before reordering)."""
    assert config.group_size is not None
    W = masked(W, mask)
    found = [
        find_params(W[:, s : s + config.group_size], config) for s in range(0, W.shape[1], config.group_size)
    ]
    return torch.cat([scale for scale, _ in found], dim=1), torch.cat([zero for _, zero in found], dim=1)


class StaticGroupGrids:
    """Every group's grid found before the loop (``find_static_groups``); with act-order, column j of the
    loop is original column ``perm[j]`` and uses that column's group."""

    def __init__(
        self, found: tuple[torch.Tensor, torch.Tensor], config: QuantizerConfig, perm: torch.Tensor | None
    ) -> None:
        assert config.group_size is not None
        self.log = GridLog(config)
        self.log.add(*found)
        scale, zero = found
        self.groups = [row_grid(scale[:, g], zero[:, g], config.maxq) for g in range(scale.shape[1])]
        self.group_size = config.group_size
        self.order = perm.tolist() if perm is not None else None

    def block_grids(self, block: LazyColumnBlock) -> list[ColumnGrid]:
        """The grid of each of the block's columns."""
        columns = range(block.i1, block.i2) if self.order is None else self.order[block.i1 : block.i2]
        return [self.groups[column // self.group_size] for column in columns]

    def quantized_weight(self) -> QuantizedWeight:
        """The layer's grids for packed export (column j uses group j // group_size)."""
        return self.log.quantized_weight()


class DynamicGroupGrids:
    """A group's grid found when the loop reaches its first column, on its columns as they stood at the
    start of that column block (W is not touched inside a block; the block's copy is)."""

    def __init__(self, mask: torch.Tensor | None, config: QuantizerConfig, perm: torch.Tensor | None) -> None:
        self.mask, self.config, self.perm = mask, config, perm
        self.log = GridLog(config)
        self.now: ColumnGrid | None = None  # the grid in force (a group may straddle two blocks)

    def block_grids(self, block: LazyColumnBlock) -> list[ColumnGrid]:
        """Find the grids of the groups that begin in this block; the grid of each of its columns."""
        beginning = self._find(block.W, block.i1, block.i2)
        grids = []
        for j in range(block.i1, block.i2):
            self.now = beginning.get(j, self.now)
            assert self.now is not None  # column 0 begins a group
            grids.append(self.now)
        return grids

    def _find(self, W: torch.Tensor, i1: int, i2: int) -> dict[int, ColumnGrid]:
        """Grids of the groups that begin in the column block [i1, i2), found on W's columns as they are now,
        in one ``find_params`` call (a layer's last group may be narrower: a second call); by first column."""
        group_size, config = self.config.group_size, self.config
        assert group_size is not None
        rows, columns = W.shape
        starts = range(-(-i1 // group_size) * group_size, i2, group_size)
        if not starts:
            return {}
        first, stop = starts[0], min(starts[-1] + group_size, columns)
        segment = masked(W[:, first:stop], None if self.mask is None else self.mask[:, first:stop])
        full = (stop - first) // group_size
        scales, zeros = [], []
        if full:
            scale, zero = find_params(
                segment[:, : full * group_size].reshape(rows * full, group_size), config
            )
            scales.append(scale.view(rows, full))
            zeros.append(zero.view(rows, full))
        if full < len(starts):
            scale, zero = find_params(segment[:, full * group_size :], config)
            scales.append(scale)
            zeros.append(zero)
        scale, zero = torch.cat(scales, dim=1), torch.cat(zeros, dim=1)
        self.log.add(scale, zero)
        return {start: row_grid(scale[:, k], zero[:, k], config.maxq) for k, start in enumerate(starts)}

    def quantized_weight(self) -> QuantizedWeight:
        """The layer's grids for packed export; with act-order, ``g_idx`` maps each original column to the
        group it was quantized in (column perm[j] in group j // group_size)."""
        g_idx = None
        if self.perm is not None:
            assert self.config.group_size is not None
            columns = self.perm.shape[0]
            g_idx = torch.empty(columns, dtype=torch.long)
            g_idx[self.perm.cpu()] = torch.arange(columns) // self.config.group_size
        return self.log.quantized_weight(g_idx)


def column_grids(
    W: torch.Tensor,
    mask: torch.Tensor | None,
    config: QuantizerConfig,
    static: tuple[torch.Tensor, torch.Tensor] | None,
    perm: torch.Tensor | None,
) -> ChannelGrid | StaticGroupGrids | DynamicGroupGrids:
    """The grids of a layer's columns: per channel without groups; ``static`` groups when found before
    the loop (``find_static_groups``); else dynamic groups.  W, mask in processing order (``perm``)."""
    if config.group_size is None:
        return ChannelGrid(W, mask, config)
    if static is not None:
        return StaticGroupGrids(static, config, perm)
    return DynamicGroupGrids(mask, config, perm)
