"""A causal LM taken apart at its LM head: the body that yields the final hidden states, then the head and
what the architecture applies to the head's output, so that logits can be made a few positions at a time.

transformers has no generic "logits for these hidden states" call, so the split is found from the model's
structure (``base_model`` is the module the causal-LM wrapper runs before its head, ``get_output_embeddings``
the head) and the post-head steps from its config: a multiplier (``logit_scale``, Cohere), a divisor
(``logits_scaling``, Granite) and Gemma's ``final_logit_softcapping``.  Anything else an architecture might do
(a scaled input to the head, a bias added to the logits, ...) is caught by :func:`check_split`, which compares
the split's logits with the model's own on a short probe before the split is trusted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

#: Tokens in the probe that checks a split against the model's own forward pass.
PROBE_TOKENS = 8


@dataclass(frozen=True)
class HeadSplit:
    """The model's body and LM head, and the logit transforms its forward pass applies after the head."""

    body: nn.Module
    head: nn.Module
    multiplier: float | None = None
    divisor: float | None = None
    softcap: float | None = None
    body_takes_use_cache: bool = False

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states (``batch x tokens x hidden``) of ``input_ids``: what the head sees."""
        # No key/value cache: nothing is generated, and it would hold every layer's keys for the whole batch.
        extra = {"use_cache": False} if self.body_takes_use_cache else {}
        output = self.body(input_ids=input_ids, **extra)
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits of ``hidden``: the head, then the architecture's transforms (in place)."""
        logits = self.head(hidden)
        if self.multiplier is not None:
            logits.mul_(self.multiplier)
        if self.divisor is not None:
            logits.div_(self.divisor)
        if self.softcap is not None:
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits


def split_head(model: nn.Module) -> HeadSplit | str:
    """The split of ``model``, or why it has none (a sentence)."""
    body = getattr(model, "base_model", model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is model or head is None:
        return f"{type(model).__name__} has no separate body and LM head (base_model / get_output_embeddings)"
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    parameters = inspect.signature(body.forward).parameters
    return HeadSplit(
        body=body,
        head=head,
        multiplier=getattr(config, "logit_scale", None),
        divisor=getattr(config, "logits_scaling", None),
        softcap=getattr(config, "final_logit_softcapping", None),
        body_takes_use_cache="use_cache" in parameters,
    )


def check_split(model: nn.Module, split: HeadSplit, vocab: int, device: torch.device) -> str | None:
    """None when ``split`` gives the model's own logits on a short probe (input on ``device``), else why not.

    A body or head that cannot be called this way counts as a mismatch, with its error."""
    probe = (torch.arange(1, PROBE_TOKENS + 1, device=device) * 7919 % vocab).unsqueeze(0)
    try:
        with torch.no_grad():
            expected = model(probe).logits
            got = split.logits(split.hidden_states(probe))
    except Exception as error:  # an architecture whose body wants more than input_ids: use the full path
        return f"scoring from its final hidden states failed on a probe: {error!r}"
    if got.shape != expected.shape:
        return (
            f"its LM head gives logits of shape {tuple(got.shape)}, its forward pass {tuple(expected.shape)}"
        )
    # The split runs the same operations as the forward pass: beyond a few units of rounding of the
    # logits' dtype, the forward pass does something more.
    tolerance = 8 * torch.finfo(expected.dtype).eps * float(expected.abs().max()) + 1e-6
    got, expected = got.float(), expected.float()
    difference = float((got - expected).abs().max())
    if difference > tolerance:
        return (
            f"its forward pass transforms the LM head's output in a way this scorer does not know (largest "
            f"difference {difference:.3g} on a probe)"
        )
    return None
