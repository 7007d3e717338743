"""What to compress and how: the validated compression settings shared by every method.

Plain data, no torch: ``arguments`` builds a ``CompressionSpec`` from model_args before anything is loaded,
the methods read it, and the report records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
    that accept them (see ``llmkick_models.methods.METHODS``); ``arguments.build_spec`` refuses the rest.
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
        from llmkick_models.methods import METHODS  # pure data, no torch

        data = asdict(self)
        data["pattern"] = str(self.pattern) if self.pattern is not None else "unstructured"
        accepted = METHODS[self.method].accepts if self.method in METHODS else frozenset()
        for option in ("percdamp", "blocksize", "true_sequential", "error_tokens"):
            if option not in accepted:
                del data[option]
        if self.calibration is None:
            del data["calibration"]
            data.pop("error_tokens", None)
        return data
