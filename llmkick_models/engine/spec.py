"""What to compress and how: the validated compression settings shared by every method.

Plain data, no torch: ``arguments`` builds a ``CompressionSpec`` from model_args before anything is loaded,
the methods read it, and the report records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: The quantization fields of ``CompressionSpec`` (left out of ``to_dict`` when nothing is quantized).
QUANTIZATION_OPTIONS = ("bits", "group_size", "sym", "act_order", "static_groups", "quantizer")


@dataclass(frozen=True)
class NMPattern:
    """LLM-KICK's N:M semi-structured sparsity: in every group of ``group`` consecutive input columns of a
    row, the ``pruned`` lowest-scoring weights are zeroed ("2:4" zeroes 2 of every 4, i.e. 50%)."""

    pruned: int
    group: int

    @property
    def sparsity(self) -> float:
        """Fraction of weights that the pattern zeroes."""
        return self.pruned / self.group

    def __str__(self) -> str:
        return f"{self.pruned}:{self.group}"


@dataclass(frozen=True)
class CalibrationSpec:
    """Which calibration tokens the calibrated methods see.

    ``source`` is ``c4`` (the paper's: allenai/c4 en, train shard 0), ``wikitext2`` (its train split),
    ``random`` (uniform random token ids; tests and benchmarks only) or a local path (a text file, a JSONL
    file of ``{"text": ...}`` records, or a directory of such files).  ``nsamples`` windows of ``seqlen``
    tokens are drawn at random positions of randomly chosen documents longer than ``seqlen``, seeded by
    ``seed``; ``seqlen`` is capped at the model's context when the model is known.
    """

    source: str = "c4"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0

    @property
    def tokens(self) -> int:
        """Calibration tokens in total (before any cap of ``seqlen`` at the model's context)."""
        return self.nsamples * self.seqlen


@dataclass(frozen=True)
class CompressionSpec:
    """The compression to apply on load; ``method='none'`` leaves the model dense.

    Calibrated settings (``calibration`` and the options below it) are only meaningful for the methods
    that accept them (see ``methods.METHODS``); ``arguments.build_spec`` refuses the rest.
    """

    method: str = "none"
    sparsity: float = 0.0
    pattern: NMPattern | None = None
    calibration: CalibrationSpec | None = None
    #: SparseGPT/GPTQ: dampening λ = percdamp · mean(diag H) added to the Hessian's diagonal.
    percdamp: float = 0.01
    #: SparseGPT/GPTQ: columns processed together (lazy batch updates); a multiple of the N:M group.
    blocksize: int = 128
    #: Recompute the statistics of later sub-layers of a block after its earlier ones are compressed.
    true_sequential: bool = False
    #: Tokens on which the reconstruction error of non-Hessian methods is measured (None: all of them).
    error_tokens: int | None = 16384
    #: Quantization (gptq, rtn; or after pruning): bits per weight in [2, 8]; None = no quantization.
    bits: int | None = None
    #: Input columns sharing one scale/zero point; None = one grid per output row ("per channel").
    group_size: int | None = 128
    #: Symmetric grid (zero point in the middle, the signed-int layout packed formats store) or min-max.
    sym: bool = True
    #: GPTQ: process columns by descending Hessian diagonal.
    act_order: bool = False
    #: GPTQ: all group grids found on the original weights before the loop (else at each group's start).
    static_groups: bool = False
    #: Wanda/magnitude with bits: quantize the pruned weights with ``gptq`` or ``rtn``.
    quantizer: str | None = None

    @property
    def is_dense(self) -> bool:
        """True when nothing will be changed in the weights."""
        return self.method == "none"

    @property
    def target_sparsity(self) -> float:
        """The fraction of each compressed matrix that should end up zero."""
        return self.pattern.sparsity if self.pattern is not None else self.sparsity

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the pattern spelled as in model_args; options the method ignores are left
        out so that a results file shows only what shaped the weights."""
        from llmkick_models.engine.methods import METHODS, quantization_only_args  # pure data, no torch

        data = asdict(self)
        data["pattern"] = str(self.pattern) if self.pattern is not None else "unstructured"
        accepted = METHODS[self.method].accepts if self.method in METHODS else frozenset()
        for option in ("percdamp", "blocksize", "true_sequential", "error_tokens", *QUANTIZATION_OPTIONS):
            if option not in accepted:
                del data[option]
        if self.bits is None:  # a pruning method that was not asked to quantize
            for option in (*QUANTIZATION_OPTIONS, *quantization_only_args(self.method)):
                data.pop(option, None)
        elif data.get("quantizer") == "rtn":
            for option in ("percdamp", "blocksize", "act_order", "static_groups"):
                data.pop(option, None)
        if "group_size" in data and data["group_size"] is None:
            data["group_size"] = -1  # spelled as in model_args
        if self.calibration is None:
            del data["calibration"]
            data.pop("error_tokens", None)
        return data
