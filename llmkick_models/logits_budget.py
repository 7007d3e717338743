"""A memory bound for loglikelihood scoring, whatever the vocabulary.

lm-eval's HFLM scores a batch by materializing ``log_softmax(logits)`` over the whole batch: ``batch x tokens
x vocab`` values, several times over (the logits, a float32 copy of 16-bit ones, their log-softmax, and the
previous batch's log-softmax still bound to its loop variable).  With a 262k vocabulary (Gemma 3) and
2048-token windows one sequence's logits are 2.1 GB in float32, and ``--batch_size 16`` asks for ~64 GB.

compressed-hf therefore scores from the final hidden states (:mod:`llmkick_models.chunked_loglikelihood`):
the LM head runs on a chunk of scored positions at a time, and the budget bounds that chunk (``positions x
vocab`` logits, their float32 copy and log-softmax).  The batch is lm-eval's, but the model's body runs on
as many of its rows at a time as the same budget holds of the body's activations (:func:`body_rows`: 16
windows of 2048 tokens are ~1.1 GiB for Gemma-3-270m in float32), each sub-batch scored before the next one
runs.  Where a model cannot be split at its head, or ``$LLMKICK_SCORING=full-logits`` asks for lm-eval's own
path, the budget instead cuts each batch to as many sequences as fit their logits (at least one).  Scores
are the same either way.  The budget is ``$LLMKICK_LOGITS_BUDGET_MB`` (default 256 MiB).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from llmkick_tasks.errors import UserError

BUDGET_ENV = "LLMKICK_LOGITS_BUDGET_MB"
DEFAULT_BUDGET_MB = 256
SCORING_ENV = "LLMKICK_SCORING"
#: ``$LLMKICK_SCORING`` values: scoring from the hidden states in chunks (default), or lm-eval's full logits.
SCORING_METHODS = ("chunked", "full-logits")


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


def scoring_method() -> str:
    """``$LLMKICK_SCORING`` (one of :data:`SCORING_METHODS`), ``chunked`` when unset."""
    given = os.environ.get(SCORING_ENV) or SCORING_METHODS[0]
    if given not in SCORING_METHODS:
        raise UserError(f"${SCORING_ENV}={given!r}: allowed {' or '.join(SCORING_METHODS)}")
    return given


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


def chunk_positions(vocab: int, model_dtype: torch.dtype, softmax_dtype: torch.dtype, budget: int) -> int:
    """How many positions' logits one LM-head chunk may hold (>= 1): each costs ``vocab`` logits in the
    model's dtype, their copy in ``softmax_dtype`` when that differs, and their log-softmax."""
    logit = torch.finfo(model_dtype).bits // 8 if model_dtype.is_floating_point else 4
    softmax = torch.finfo(softmax_dtype).bits // 8
    per_position = vocab * (logit + softmax + (softmax if softmax_dtype != model_dtype else 0))
    return max(1, budget // per_position)


def body_row_bytes(config: Any, dtype: torch.dtype, length: int) -> int | None:
    """An upper estimate of what one row of ``length`` tokens adds to a forward pass of the model's body
    (``config``: its text config), None when the config names no ``hidden_size``.  Without gradients a layer's
    activations are freed before the next layer runs, so this is one layer's: per token the MLP's two
    projections and their product (3 x intermediate size), four hidden-size tensors (residual, normed input,
    attention and MLP outputs), the queries, keys and values, and a row of attention scores per head
    (``heads x length``; fused attention kernels skip them)."""
    hidden = getattr(config, "hidden_size", None)
    if not hidden:
        return None
    heads = getattr(config, "num_attention_heads", None) or 0  # none: an attention-free body (Mamba)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads else 0)
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden  # GPT-2's n_inner=None: 4x
    per_token = 3 * intermediate + 4 * hidden + (heads + 2 * kv_heads) * head_dim + heads * length
    return per_token * length * dtype.itemsize


def body_budget_bytes(device: torch.device | str) -> int:
    """The activation budget of one forward pass of the body on ``device``: ``$LLMKICK_LOGITS_BUDGET_MB`` when
    set; else the default on the CPU (host memory is what the bound protects), and on an accelerator half of
    the device memory free now, at least the default -- there small sub-batches cost throughput, and its
    memory is reported exactly, unlike a shared host's."""
    device = torch.device(device)
    if os.environ.get(BUDGET_ENV) not in (None, "") or device.type != "cuda":
        return budget_bytes()
    free, _total = torch.cuda.mem_get_info(device)
    return max(budget_bytes(), free // 2)


def body_rows(row_bytes: int, budget: int) -> int:
    """How many rows one forward pass of the body may take (>= 1): as many as ``budget`` holds."""
    return max(1, budget // max(1, row_bytes))
