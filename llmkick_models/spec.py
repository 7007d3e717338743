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
class CompressionSpec:
    """The compression to apply on load; ``method='none'`` leaves the model dense."""

    method: str = "none"
    sparsity: float = 0.0
    pattern: NMPattern | None = None

    @property
    def is_dense(self) -> bool:
        """True when nothing will be changed in the weights."""
        return self.method == "none"

    @property
    def target_sparsity(self) -> float:
        """The fraction of each compressed matrix that should end up zero."""
        return self.pattern.sparsity if self.pattern is not None else self.sparsity

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the pattern spelled as in model_args."""
        data = asdict(self)
        data["pattern"] = str(self.pattern) if self.pattern is not None else "unstructured"
        return data
