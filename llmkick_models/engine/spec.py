"""What to compress and how: the validated compression settings shared by every method.

Plain data, no torch: ``methods.build_spec`` builds one from model_args before anything is loaded,
the methods read it, and the report records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
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


@dataclass(frozen=True)
class CompressionSpec:
    """The compression to apply on load; ``method='none'`` leaves the model dense.

    Each method declares which of these options it takes (``engine.options``); ``methods.build_spec``
    refuses the rest and fills the defaults.
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
    error_tokens: int | None = 256
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
    #: Options of one method that have no field above, as (name, value) pairs.
    method_options: tuple[tuple[str, Any], ...] = ()
    #: The options that shaped the weights (what ``to_dict`` records); derived by ``build_spec``.
    applied: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def is_dense(self) -> bool:
        """True when nothing will be changed in the weights."""
        return self.method == "none"

    def option(self, name: str) -> Any:
        """The value of a method-specific option (one without a field of its own here)."""
        return dict(self.method_options)[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the pattern spelled as in model_args; only the options that shaped the
        weights (``applied``, decided when the spec was built from the method's declarations)."""
        data: dict[str, Any] = {
            "method": self.method,
            "sparsity": self.sparsity,
            "pattern": str(self.pattern) if self.pattern is not None else "unstructured",
        }
        if self.calibration is not None:
            data["calibration"] = asdict(self.calibration)
        for spec_field in fields(self):
            if spec_field.name in self.applied and spec_field.name not in data:
                value = getattr(self, spec_field.name)
                data[spec_field.name] = -1 if spec_field.name == "group_size" and value is None else value
        data.update((name, value) for name, value in self.method_options if name in self.applied)
        return data
