"""Calibration inputs of the first decoder block, captured once, and carried from block to block.

Generic by construction: block 0's inputs (hidden states plus whatever the model passes along: attention
mask, position ids, rotary position embeddings, cache position...) are captured by a forward pre-hook on
the block itself, never rebuilt per architecture.  Memory: one block's activations
(``nsamples × seqlen × hidden``), updated in place as each block's outputs become the next one's inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class StopForward(Exception):
    """Raised from a hook once everything needed from a forward pass has been seen."""


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside nested tuples / lists / dicts; other objects pass through."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured block arguments (tensors compared by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and a.device == b.device
            and torch.equal(a, b)
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return a is b or bool(a == b)
    except Exception:  # objects whose == is not a plain bool
        return False


@dataclass
class _BlockCall:
    """How the model called the first block for one batch of samples (the hidden states left out)."""

    rows: slice
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden_in_kwargs: bool

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Call ``block`` on ``hidden`` with the captured arguments; return its output hidden states."""
        if self.hidden_in_kwargs:
            output = block(*self.args, **{**self.kwargs, "hidden_states": hidden})
        else:
            output = block(hidden, *self.args, **self.kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class BlockInputs:
    """The inputs of the current block for every calibration sample, and the other arguments it takes."""

    hidden: torch.Tensor  # (nsamples, seqlen, hidden_size)
    calls: list[_BlockCall]

    def to(self, device: torch.device) -> None:
        """Move everything to ``device`` (when consecutive blocks execute on different devices)."""
        if self.hidden.device == device:
            return
        self.hidden = self.hidden.to(device)
        for call in self.calls:
            call.args = _map_tensors(call.args, lambda t: t.to(device))
            call.kwargs = _map_tensors(call.kwargs, lambda t: t.to(device))

    def run_all(self, block: nn.Module) -> None:
        """Run ``block`` over every batch, ignoring outputs (statistics passes; hooks may stop early)."""
        for call in self.calls:
            with contextlib.suppress(StopForward):
                call.run(block, self.hidden[call.rows])

    def advance(self, block: nn.Module) -> None:
        """Replace the stored inputs by ``block``'s outputs, batch by batch (they feed the next block)."""
        for call in self.calls:
            self.hidden[call.rows] = call.run(block, self.hidden[call.rows])


def model_input_device(model: nn.Module) -> torch.device:
    """Where the model expects ``input_ids``: the embedding's (execution) device."""
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None) or getattr(model, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    device = embeddings.weight.device
    return device if device.type != "meta" else torch.device("cpu")


def batch_rows(nsamples: int, batch_size: int) -> list[slice]:
    """Sample ranges of the block calls: the first holds a single sample, so that the per-block probe
    (``probe_input_groups``) costs one sample's forward; the rest hold ``batch_size`` samples each."""
    rows = [slice(0, 1)]
    rows += [slice(s, min(s + batch_size, nsamples)) for s in range(1, nsamples, batch_size)]
    return rows


def capture_first_block_inputs(
    model: nn.Module,
    first_block: nn.Module,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> BlockInputs:
    """Run the model on ``input_ids`` until the first block and keep what the block was called with.

    Everything before the block runs where the model lives; the captured tensors then move to ``device``.
    Batches follow ``batch_rows``.  Arguments equal to those of the previous batch (masks and position
    embeddings usually are) are stored once.
    """
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def stop_at_block(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise StopForward

    handle = first_block.register_forward_pre_hook(stop_at_block, with_kwargs=True)
    input_device = model_input_device(model)
    hidden_batches: list[torch.Tensor] = []
    calls: list[_BlockCall] = []
    try:
        for rows in batch_rows(input_ids.shape[0], batch_size):
            batch = input_ids[rows].to(input_device)
            try:
                model(input_ids=batch, use_cache=False)
            except StopForward:
                pass
            else:
                raise RuntimeError("the model's forward never reached its first decoder block")
            args, kwargs = captured.pop()
            hidden_in_kwargs = not args
            hidden = kwargs.pop("hidden_states") if hidden_in_kwargs else args[0]
            args = args if hidden_in_kwargs else args[1:]
            hidden_batches.append(hidden.to(device))
            args = _map_tensors(args, lambda t: t.to(device))
            kwargs = _map_tensors(kwargs, lambda t: t.to(device))
            previous = calls[-1] if calls else None
            if previous is not None and (previous.rows.stop - previous.rows.start) == batch.shape[0]:
                args = previous.args if _same(args, previous.args) else args
                kwargs = previous.kwargs if _same(kwargs, previous.kwargs) else kwargs
            calls.append(_BlockCall(rows, args, kwargs, hidden_in_kwargs))
    finally:
        handle.remove()
    return BlockInputs(torch.cat(hidden_batches), calls)
