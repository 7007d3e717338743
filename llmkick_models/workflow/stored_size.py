"""How much a compressed point would take to store, relative to the dense model in 16 bits.

The storage model (also in the README and in ``report.json``), per decoder linear of ``R`` output rows and
``C`` input columns (``n = R·C`` weights), from the point's measured compression report:

* **values**: every stored weight in ``b`` bits when the point quantizes (``bits``), else 16 bits;
* **pruning** (the spec prunes: sparsity > 0): an N:M layer stores ``(M−N)/M · n`` weights, each with a
  ``⌈log2 M⌉``-bit position inside its group of M (NVIDIA's 2:4 sparse tensor cores: 2 bits per kept
  weight; 4:8: 3 bits); an unstructured layer stores its ``k`` nonzero weights (measured) and the cheaper of
  a bitmask (1 bit per weight, ``n`` bits) and a CSR layout (a ``⌈log2 C⌉``-bit column index per kept
  weight plus ``R + 1`` 32-bit row offsets).  An N:M layer with measured violations is counted as
  unstructured;
* **quantization grids**: one 16-bit scale per group of ``group_size`` input columns of a row (per row
  without ``group_size``, or with −1, as LLM.int8()'s absmax row scales), plus, when the grid is asymmetric
  (``sym=false``), one ``b``-bit zero point per group (a symmetric grid's zero point is its implied
  midpoint).  Nothing else is stored: LLM.int8()'s outlier inputs are computed from the same int8 weights,
  AWQ's scales are folded into the preceding norm or linear;
* **everything else** (embeddings, norms, biases, the LM head; tied embeddings once): 16 bits, so that the
  ratio is of the whole model (lm-eval's ``model_num_parameters``).  The linears-only ratio is given too.

Dense is 1 by definition (its weights stored as they are, whatever zeros they hold).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmkick_models.workflow.run_results import PointResult

DENSE_BITS = 16
SCALE_BITS = 16
CSR_ROW_OFFSET_BITS = 32

STORAGE_MODEL = (
    "stored bits relative to every parameter in 16 bits. Per decoder linear (R x C, n weights): values in "
    "`bits` when quantized, else 16; pruned (sparsity > 0): N:M stores (M-N)/M of the weights with a "
    "ceil(log2 M)-bit position each (2:4: 2 bits, 4:8: 3 bits), unstructured stores the measured nonzero "
    "weights and the cheaper of a bitmask (n bits) and CSR (a ceil(log2 C)-bit column index per kept weight "
    "+ (R + 1) 32-bit row offsets); quantized: a 16-bit scale per group of group_size columns of a row "
    "(per row without group_size or with -1), and a bits-bit zero point per group when sym=false. "
    "Embeddings, norms, biases and the LM head stay 16 bits (model_num_parameters, tied weights once); "
    "linears_relative counts the decoder linears only, linear_share is their share of the parameters. "
    "Dense is 1."
)


@dataclass(frozen=True)
class Layout:
    """How one point stores its decoder linears (from its compression spec)."""

    bits: int | None = None  # None: 16-bit values
    group_size: int | None = None  # None: one scale per output row
    sym: bool = True
    nm: tuple[int, int] | None = None  # (N pruned, M)
    pruned: bool = False


@dataclass
class StoredSize:
    """A point's stored size relative to dense in 16 bits: whole model and decoder linears only."""

    relative: float | None
    linears_relative: float | None
    index: list[str] = field(default_factory=list)  # the sparse formats counted (bitmask, csr, N:M)
    reason: str | None = None  # why a ratio is missing
    #: The compressed linears' share of the model's parameters: whole = 1 - share x (1 - linears_relative).
    linear_share: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (no ``reason`` when both ratios are there)."""
        out = asdict(self)
        return out if self.reason is not None else {k: v for k, v in out.items() if k != "reason"}


def layout_of(spec: dict[str, Any]) -> Layout:
    """The storage layout a compression spec (its ``to_dict`` form) implies."""
    pattern = spec.get("pattern") or "unstructured"
    nm = None if pattern == "unstructured" else tuple(int(x) for x in pattern.split(":"))
    group = spec.get("group_size")
    return Layout(
        bits=spec.get("bits"),
        group_size=None if group in (None, -1) else int(group),
        sym=bool(spec.get("sym", True)),
        nm=nm,  # type: ignore[arg-type]
        pruned=(spec.get("sparsity") or 0) > 0,
    )


def _index_bits(bits: int) -> int:
    return max(1, math.ceil(math.log2(bits)))


def sparse_storage(
    rows: int, cols: int, zeros: int, layout: Layout, nm_violations: int = 0
) -> tuple[int, int, str]:
    """``(stored weights, index bits, format)`` of one pruned linear (``format``: ``N:M``, ``bitmask``,
    ``csr``)."""
    n = rows * cols
    if layout.nm is not None and not nm_violations:
        pruned, group = layout.nm
        stored = n // group * (group - pruned)
        return stored, stored * _index_bits(group), f"{pruned}:{group}"
    kept = n - zeros
    bitmask = n
    csr = kept * _index_bits(cols) + (rows + 1) * CSR_ROW_OFFSET_BITS
    return (kept, bitmask, "bitmask") if bitmask <= csr else (kept, csr, "csr")


def linear_bits(rows: int, cols: int, zeros: int, layout: Layout, nm_violations: int = 0) -> tuple[int, str]:
    """Stored bits of one decoder linear under ``layout`` and the sparse format used ("" when dense)."""
    stored, index, fmt = (
        sparse_storage(rows, cols, zeros, layout, nm_violations) if layout.pruned else (rows * cols, 0, "")
    )
    total = stored * (layout.bits or DENSE_BITS) + index
    if layout.bits is not None:
        groups = rows * math.ceil(cols / (layout.group_size or cols))
        total += groups * (SCALE_BITS + (0 if layout.sym else layout.bits))
    return total, fmt


def stored_size(compression: dict[str, Any] | None, total_parameters: Any) -> StoredSize:
    """A point's :class:`StoredSize` from its compression report (``config.llmkick_compression``) and
    lm-eval's ``model_num_parameters``; a ratio that cannot be computed is None, with the reason."""
    if not compression or "spec" not in compression or not isinstance(compression.get("layers"), dict):
        return StoredSize(None, None, reason="no compression report with per-layer shapes in the results")
    if compression["spec"].get("method") == "none":
        return StoredSize(1.0, 1.0)
    layout = layout_of(compression["spec"])
    weights = bits = 0
    formats: set[str] = set()
    for entry in compression["layers"].values():
        rows, cols = entry["shape"]
        layer, fmt = linear_bits(rows, cols, entry["zeros"], layout, entry.get("nm_violations") or 0)
        weights, bits = weights + rows * cols, bits + layer
        formats.add(fmt)
    if not weights:
        return StoredSize(None, None, reason="the compression report lists no compressed linear")
    linears = bits / (DENSE_BITS * weights)
    index = sorted(formats - {""})
    if (
        not isinstance(total_parameters, int)
        or isinstance(total_parameters, bool)
        or total_parameters < weights
    ):
        reason = f"model_num_parameters {total_parameters!r} does not cover the {weights} compressed weights"
        return StoredSize(None, linears, index, reason)
    whole = (bits + DENSE_BITS * (total_parameters - weights)) / (DENSE_BITS * total_parameters)
    return StoredSize(whole, linears, index, linear_share=weights / total_parameters)


def point_size(point: PointResult) -> StoredSize:
    """The stored size of a finished sweep point (dense: 1)."""
    if point.point["method"] == "none":
        return StoredSize(1.0, 1.0)
    config = point.results.get("config", {})
    return stored_size(config.get("llmkick_compression"), config.get("model_num_parameters"))
