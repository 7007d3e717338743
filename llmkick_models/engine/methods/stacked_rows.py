"""Linears that read the same input, stacked by rows for one column loop, and each one's result after it.

Rows are independent in the column loop (``column_loop``), so SparseGPT and GPTQ compress a group of such
linears (q/k/v, gate/up) as one matrix and hand each linear its rows back: bit for bit what it gets alone.
"""

from __future__ import annotations

import torch

from llmkick_models.engine.column_loop import row_blocks
from llmkick_models.engine.methods.base import LayerJob, LayerResult
from llmkick_models.engine.quantizer import QuantizedWeight


def stack_weights(jobs: list[LayerJob]) -> tuple[torch.Tensor, list[int]]:
    """The jobs' weights on the compute device in fp32, stacked by rows; and each one's row count."""
    weights = [job.target.weight for job in jobs]
    stacked = torch.cat([w.to(device=jobs[0].device, dtype=torch.float32) for w in weights])
    return stacked, [w.shape[0] for w in weights]


def loop_facts(damp: float, percdamp: float, dead: int) -> dict[str, float]:
    """Report facts of a column loop worth a note: a dampening raised after a failed factorisation, and
    dead inputs (zero on every calibration token, so their weights were dropped for free)."""
    facts: dict[str, float] = {}
    if damp != percdamp:
        facts["percdamp"] = damp
    if dead:
        facts["dead_inputs"] = dead
    return facts


def unstack_results(
    jobs: list[LayerJob],
    W_hat: torch.Tensor,
    splits: list[int],
    errors: list[float],
    facts: dict[str, float],
    grid: QuantizedWeight | None,
) -> list[LayerResult]:
    """Write each job's rows of ``W_hat`` into its weight (in place, in its dtype); its ``LayerResult``
    with the shared ``facts``, its own error and its rows of ``grid``."""
    results = []
    for job, rows, error in zip(jobs, row_blocks(splits), errors, strict=True):
        weight = job.target.weight
        weight.copy_(W_hat[rows].to(device=weight.device, dtype=weight.dtype))
        results.append(LayerResult(dict(facts), error, None if grid is None else grid.rows(rows)))
    return results
