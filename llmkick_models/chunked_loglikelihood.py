"""lm-eval's loglikelihood requests scored from the final hidden states, a chunk of positions at a time.

HFLM runs the whole model on a batch and takes the log-softmax of all ``batch x tokens x vocab`` logits.
Here the model's body runs on the same batch (lm-eval's batching: same order, same batch sizes, same
one-token-continuation grouping; a batch whose activations exceed the budget in sub-batches of rows, each
padded to the batch's length and scored before the next runs), and only the positions that score a
continuation token go through the LM head, ``chunk`` positions at a time: each chunk's logits get the
architecture's post-head transforms, a log-softmax in ``softmax_dtype``, and give up the continuation tokens'
log-probabilities and the greedy tokens before the next chunk is made.  Each request's log-probabilities are
summed in ``softmax_dtype``, as HFLM does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lm_eval.models.utils import Collator
from lm_eval.models.utils_hf import pad_and_concat
from tqdm import tqdm

from llmkick_models.head_split import HeadSplit

log = logging.getLogger(__name__)

#: Fewest rows the LM head is applied to: BLAS computes a product of 1-3 rows with another kernel (a
#: matrix-vector one) whose sums round differently from the full forward pass's, by ~1e-5 of a logit.
MIN_HEAD_ROWS = 16

Request = tuple[tuple[str, str] | None, list[int], list[int]]


@dataclass
class _Scored:
    """One request of a batch: which flat positions of the batch score its continuation tokens."""

    request_str: tuple[str, str] | None
    positions: torch.Tensor  # indices into the batch's flattened (row, position) hidden states
    tokens: torch.Tensor


def _sort_key(request: Request) -> tuple[int, tuple[int, ...]]:
    """HFLM's order: longest first (the first batch is the largest), ties by tokens."""
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def _group_key(request: Request) -> list[int]:
    """HFLM's grouping of requests that share everything but the last continuation token."""
    return request[1] + request[2][:-1]


def score_requests(
    lm: Any,
    split: HeadSplit,
    requests: list[Request],
    chunk: int,
    body_rows: Callable[[int], int],
    disable_tqdm: bool,
    override_bs: int | None,
) -> list[tuple[float, bool]]:
    """``(log-likelihood, greedy)`` per request, as HFLM's ``_loglikelihood_tokens`` returns them, for a
    causal ``lm`` (an HFLM) whose model splits as ``split``; at most ``chunk`` positions' logits at a time,
    the body run on at most ``body_rows(padded length)`` rows of a batch at a time."""
    reorder = Collator(
        requests, sort_fn=_sort_key, group_by="contexts" if lm.logits_cache else None, group_fn=_group_key
    )
    auto = lm.batch_size == "auto"
    batch_size = lm.batch_size if not auto else override_bs if override_bs is not None else 0
    batch_fn = lm._batch_scheduler if auto and len(reorder) > 0 and not override_bs else None
    if batch_fn is not None:
        lm.batch_sizes = {}  # as HFLM: sizes probed for earlier (shorter) requests must not be reused
    results: list[tuple[float, bool]] = []
    progress = tqdm(
        total=len(requests), disable=disable_tqdm or lm.rank != 0, desc="Running loglikelihood requests"
    )
    for batch in reorder.get_batched(n=batch_size, batch_fn=batch_fn):
        inputs, spans = [], []
        for _, context, continuation in batch:
            if not context or not 0 < len(continuation) <= lm.max_length:  # HFLM asserts the same
                raise ValueError(
                    f"loglikelihood request with a {len(context)}-token context and a {len(continuation)}-"
                    f"token continuation: both must be non-empty, the continuation at most "
                    f"max_length={lm.max_length}"
                )
            window = (context + continuation)[-(lm.max_length + 1) :][:-1]
            if len(context) + len(continuation) > lm.max_length + 1:
                log.warning("loglikelihood request of %d tokens cut from the left to the model's %d",
                            len(context) + len(continuation), lm.max_length + 1)  # fmt: skip
            inputs.append(torch.tensor(window, dtype=torch.long, device=lm.device))
            spans.append((len(window), len(continuation)))
        padded = max(length for length, _ in spans)
        # Every sub-batch is padded to the whole batch's length: each row is computed as in one forward pass.
        step = body_rows(padded)
        for first in range(0, len(batch), step):
            rows = slice(first, first + step)
            for answer in _score_rows(
                lm, split, reorder, batch[rows], inputs[rows], spans[rows], padded, chunk
            ):
                results.append(answer)
                progress.update(1)
    progress.close()
    return reorder.get_original(results)


def _score_rows(
    lm: Any,
    split: HeadSplit,
    reorder: Collator,
    batch: list[Request],
    inputs: list[torch.Tensor],
    spans: list[tuple[int, int]],
    padded: int,
    chunk: int,
) -> list[tuple[float, bool]]:
    """The answers of the requests of ``batch``'s rows (and of those lm-eval grouped with them), in
    ``reorder``'s order, from one forward pass of the body on the rows padded to ``padded`` tokens."""
    with forward_context(lm):
        hidden = split.hidden_states(pad_and_concat(padded, inputs, padding_side="right"))
    rows, length = hidden.shape[0], hidden.shape[1]
    scored: list[_Scored] = []
    placeholder = torch.empty(1, 1, 1)  # Collator.get_cache wants logits; only its bookkeeping is used
    for row, ((request_str, context, continuation), (inplen, _)) in enumerate(zip(batch, spans, strict=True)):
        end = row * length + inplen + (length - padded)  # the position after the last scored one
        for member_str, member_continuation, _ in reorder.get_cache(
            req_str=request_str, cxt_toks=context, cont_toks=continuation, logits=placeholder
        ):
            # A grouped request may have a shorter continuation: it is scored on the last positions.
            count = len(member_continuation)
            positions = torch.arange(end - count, end, device=hidden.device)
            tokens = torch.tensor(member_continuation, dtype=torch.long, device=hidden.device)
            scored.append(_Scored(member_str, positions, tokens))
    with forward_context(lm):
        log_probs, greedy = _score_positions(
            split, hidden.reshape(rows * length, -1), scored, chunk, _Buffers(lm.softmax_dtype)
        )
    del hidden
    answers = []
    for item, values in zip(scored, log_probs, strict=True):
        answer = (float(values.sum()), bool((greedy[item.positions] == item.tokens).all()))
        answers.append(answer)
        if item.request_str is not None:  # rolling windows are cached per document by the caller
            lm.cache_hook.add_partial("loglikelihood", item.request_str, answer)
    return answers


def _score_positions(
    split: HeadSplit, hidden: torch.Tensor, scored: list[_Scored], chunk: int, buffers: _Buffers
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each request's token log-probabilities (in the buffers' dtype; None: the logits'), and the greedy
    token at every position of ``hidden`` (-1 where nothing is scored), with at most ``chunk`` positions'
    logits."""
    pair_positions = torch.cat([item.positions for item in scored])
    pair_tokens = torch.cat([item.tokens for item in scored])
    wanted = torch.unique(pair_positions)  # sorted
    pair_values: torch.Tensor | None = None
    greedy = torch.full((hidden.shape[0],), -1, dtype=torch.long, device=hidden.device)
    for start in range(0, len(wanted), chunk):
        positions = wanted[start : start + chunk]
        rows = positions
        if len(rows) < min(MIN_HEAD_ROWS, chunk):  # repeat the last row (within the chunk); copies dropped
            rows = torch.cat([rows, rows[-1:].expand(min(MIN_HEAD_ROWS, chunk) - len(rows))])
        log_probs = buffers.log_softmax(split.logits(hidden.index_select(0, rows)))[: len(positions)]
        if pair_values is None:
            pair_values = torch.empty(len(pair_positions), dtype=log_probs.dtype, device=hidden.device)
        head_device = log_probs.device  # the head may sit on another device than the body's output
        greedy[positions] = log_probs.argmax(dim=-1).to(greedy.device)
        inside = (pair_positions >= positions[0]) & (pair_positions <= positions[-1])
        chunk_rows = torch.searchsorted(positions, pair_positions[inside])
        picked = log_probs[chunk_rows.to(head_device), pair_tokens[inside].to(head_device)]
        pair_values[inside] = picked.to(pair_values.device)
        del log_probs  # before the next chunk's logits exist
    assert pair_values is not None  # every request scores at least one token
    return list(pair_values.split([len(item.positions) for item in scored])), greedy


class _Buffers:
    """A chunk's log-softmax (and the ``dtype`` copy of 16-bit logits) in buffers reused by every chunk of a
    sub-batch (and freed before the next sub-batch's forward pass, whose activations the budget also bounds):
    a fresh ~100 MB tensor per chunk is faulted in page by page each time, which on a CPU costs about five
    times the log-softmax itself."""

    def __init__(self, dtype: torch.dtype | None) -> None:
        self.dtype = dtype
        self.out: torch.Tensor | None = None
        self.copy: torch.Tensor | None = None

    def log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """``log_softmax(logits, dim=-1, dtype=dtype)`` (the same values), valid until the next call."""
        dtype = self.dtype or logits.dtype
        rows = logits.shape[0]
        out = self.out
        if (
            out is None
            or out.shape[0] < rows
            or out.shape[1:] != logits.shape[1:]
            or out.device != logits.device
        ):
            out = self.out = torch.empty(logits.shape, dtype=dtype, device=logits.device)
            self.copy = None
        source = logits
        if logits.dtype != dtype:
            if self.copy is None:
                self.copy = torch.empty_like(out)
            source = self.copy[:rows]
            source.copy_(logits)
        torch.log_softmax(source, dim=-1, out=out[:rows])
        return out[:rows]


@contextlib.contextmanager
def forward_context(lm: Any) -> Iterator[None]:
    """No gradients, and the autocast HFLM's own forward passes run under (``mixed_precision_dtype``)."""
    dtype = lm.mixed_precision_dtype
    with torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=dtype, enabled=dtype is not None):
        yield
