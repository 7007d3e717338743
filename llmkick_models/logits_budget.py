"""A memory bound for lm-eval's loglikelihood batches, whatever the vocabulary.

HFLM scores a batch by materializing ``log_softmax(logits)`` over the whole batch: ``batch x tokens x vocab``
values, twice (the logits and their log-softmax), while the previous batch's log-softmax is still alive (its
loop variable), so three such tensors at the peak; four when the log-softmax is taken in a wider dtype than
the logits' (compressed-hf's float32 scoring of a 16-bit model), which first makes a converted copy.  With a
262k vocabulary (Gemma 3) and 2048-token windows one sequence's logits are 2.1 GB in float32, and
``--batch_size 16`` asks for ~64 GB (measured: ``benchmarks/ppl_memory_bench.py``).  compressed-hf therefore
cuts each loglikelihood batch to as many sequences as fit a logits budget (at least one), logging when it
does; scores are unchanged (lm-eval scores each sequence on its own).  The budget is
``$LLMKICK_LOGITS_BUDGET_MB`` (default 2048 MiB); ``--batch_size auto`` is left to lm-eval's own memory probe.
"""

from __future__ import annotations

import os

import torch

from llmkick_tasks.errors import UserError

BUDGET_ENV = "LLMKICK_LOGITS_BUDGET_MB"
DEFAULT_BUDGET_MB = 2048


def budget_bytes() -> int:
    """The logits budget in bytes, from ``$LLMKICK_LOGITS_BUDGET_MB`` (a positive number) or the default."""
    given = os.environ.get(BUDGET_ENV)
    if given in (None, ""):
        return DEFAULT_BUDGET_MB * 2**20
    try:
        value = float(given)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"${BUDGET_ENV}={given!r}: allowed a positive number of MiB")
    return int(value * 2**20)


def bytes_per_logit(model_dtype: torch.dtype, softmax_dtype: torch.dtype | None) -> int:
    """Bytes one vocabulary entry of one position costs at the peak: the logit, its log-softmax, and the
    previous batch's log-softmax that lm-eval's loop still holds; plus, when the log-softmax dtype differs
    from the logits', the converted copy ``log_softmax(..., dtype=)`` makes first (an upper bound: CUDA
    converts float16 to float32 on the fly)."""
    logit = torch.finfo(model_dtype).bits // 8 if model_dtype.is_floating_point else 4
    if softmax_dtype is None or softmax_dtype == model_dtype:
        return 3 * logit
    return logit + 3 * (torch.finfo(softmax_dtype).bits // 8)


def bounded_batch_size(batch_size: int, longest: int, vocab: int, per_logit: int, budget: int) -> int:
    """The largest batch (<= ``batch_size``, >= 1) whose ``longest x vocab`` logits fit ``budget`` bytes."""
    per_sequence = max(1, longest) * vocab * per_logit
    return max(1, min(batch_size, budget // per_sequence))
