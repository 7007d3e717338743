"""The interface every compression method implements, and the options it declares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from llmkick_models.engine.hessian import InputStatistics
from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.options import Option
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.quantizer import QuantizedWeight


@dataclass
class LayerJob:
    """One linear to compress: the layer, the spec, where to compute, and its calibration statistics."""

    target: TargetLinear
    spec: CompressionSpec
    device: torch.device
    statistics: InputStatistics | None = None

    def statistics_for(self, method: str, exact_hessian: bool = False) -> InputStatistics:
        """The layer's statistics, refusing a layer that calibration never reached (or, with
        ``exact_hessian``, whose Hessian was accumulated on a subsample only)."""
        stats = self.statistics
        tokens = 0 if stats is None else (stats.hessian_tokens if exact_hessian else stats.tokens)
        if stats is None or tokens == 0:
            raise ValueError(f"{method}: {self.target.name} received no calibration tokens")
        if exact_hessian and not stats.hessian_is_exact:
            raise ValueError(
                f"{method}: {self.target.name} needs the Hessian over every token, got a subsample"
            )
        return stats


class CompressionMethod(ABC):
    """Compresses one decoder linear at a time, in place.

    A method declares the model_args it takes: ``options`` always, ``quantizer_options`` only when it
    is also asked to quantize (``bits=``); ``check`` adds the rules between options that belong to the
    method alone.  ``methods.build_spec`` turns model_args into a ``CompressionSpec`` from these.

    ``compress_layer`` returns extra per-layer facts for the report (e.g. the dampening used); the measured
    sparsity is added by the report itself, from the weights, and the reconstruction error by the
    sequential driver, from the layer's input statistics.

    Class flags tell the driver what to collect: ``needs_calibration`` methods only run through
    ``llmkick_models.engine.sequential`` and receive the ``InputStatistics`` of the layer's input;
    ``needs_hessian`` methods need its Hessian over every calibration token (otherwise the Hessian is
    accumulated on a subsample, only to measure the reconstruction error).  A method whose needs depend on
    the spec (Wanda/magnitude followed by GPTQ) overrides ``requires_calibration``/``uses_full_hessian``.

    Quantizing methods record each layer's grid (scales, zero points) in ``quantized``, keyed by layer
    name, for packed export; it is not part of the saved fake-quantized weights.
    """

    name: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    quantizer_options: ClassVar[tuple[Option, ...]] = ()
    needs_calibration: ClassVar[bool] = False
    needs_hessian: ClassVar[bool] = False
    #: False for methods that never read ``InputStatistics.feature_sq_mean`` (it is then not accumulated).
    uses_feature_norms: ClassVar[bool] = True
    #: True for methods whose ``compress_group`` always reports ``recon_error`` itself (from its own
    #: loop): the driver then keeps no copy of the original weights to measure it.
    reports_errors: ClassVar[bool] = False

    def __init__(self) -> None:
        self.quantized: dict[str, QuantizedWeight] = {}

    @classmethod
    def accepted_options(cls) -> tuple[Option, ...]:
        """Every option this method takes in some configuration."""
        return cls.options + cls.quantizer_options

    @classmethod
    def always_quantizes(cls) -> bool:
        """True for quantization methods (``bits`` is one of their own options)."""
        return any(option.name == "bits" for option in cls.options)

    @classmethod
    def offered_options(cls, quantizes: bool) -> tuple[Option, ...]:
        """The options that mean something for a run that quantizes (``bits=`` given) or not."""
        return cls.options + (cls.quantizer_options if quantizes else ())

    @classmethod
    def check(cls, values: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Rules between this method's options; ``values`` (parsed, defaults filled) may be completed,
        or trimmed of options that do not apply after all.  ``given`` holds the raw model_args."""
        return None  # most methods have no rules of their own

    @classmethod
    def requires_calibration(cls, spec: CompressionSpec) -> bool:
        """True when this method cannot run on ``spec`` without calibration tokens."""
        return cls.needs_calibration

    @classmethod
    def uses_full_hessian(cls, spec: CompressionSpec) -> bool:
        """True when this method needs the Hessian over every calibration token for ``spec``."""
        return cls.needs_hessian

    @abstractmethod
    def compress_layer(self, job: LayerJob) -> dict[str, float]:
        """Compress ``job.target``'s weight in place, computing on ``job.device``."""

    def compress_group(self, jobs: list[LayerJob]) -> list[dict[str, float]]:
        """Compress linears that read the same input tensor (their jobs share one ``InputStatistics``);
        one report dict per job.  By default one at a time; a method whose work on the statistics can be
        shared (SparseGPT's and GPTQ's damped inverse Hessian and column loop) does it once for the group,
        with each layer's result identical to ``compress_layer``'s.  A dict may carry ``recon_error``
        already (from the method's own loop); the driver measures it otherwise."""
        return [self.compress_layer(job) for job in jobs]


class Dense(CompressionMethod):
    """No compression: the dense baseline (``method=none``); it takes no options."""

    name: ClassVar[str] = "none"

    def compress_layer(self, job: LayerJob) -> dict[str, float]:
        """Never called: a dense spec leaves every weight as it is."""
        raise RuntimeError("method=none compresses nothing")
