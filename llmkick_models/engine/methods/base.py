"""The contract every compression method fulfils: what it declares, what it needs, what it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from llmkick_models.engine.input_statistics import InputStatistics
from llmkick_models.engine.model_layout import TargetLinear
from llmkick_models.engine.options import Option
from llmkick_models.engine.quantizer import QuantizedWeight
from llmkick_models.engine.spec import CompressionSpec

if TYPE_CHECKING:
    from llmkick_models.engine.calibration import CalibrationSet
    from llmkick_models.engine.report import CompressionReport


@dataclass(frozen=True)
class Needs:
    """What the driver must provide to a method for one spec."""

    #: It cannot run without calibration tokens (without this, tokens given only measure its errors).
    calibration: bool = False
    #: It reads the Hessian over every calibration token (``LayerJob.statistics_for(exact_hessian=True)``);
    #: otherwise the Hessian is accumulated on a token subsample, only to measure reconstruction errors.
    full_hessian: bool = False
    #: It reads ``InputStatistics.feature_sq_mean`` (not accumulated otherwise).
    feature_norms: bool = False
    #: It reads ``InputStatistics.feature_abs_mean``, the mean |x_j| per input (not accumulated otherwise).
    feature_abs_means: bool = False

    def __or__(self, other: Needs) -> Needs:
        """Everything either needs."""
        return Needs(
            self.calibration or other.calibration,
            self.full_hessian or other.full_hessian,
            self.feature_norms or other.feature_norms,
            self.feature_abs_means or other.feature_abs_means,
        )


#: What SparseGPT and GPTQ need: the Hessian over every calibration token.
FULL_HESSIAN = Needs(calibration=True, full_hessian=True)


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


@dataclass
class LayerResult:
    """What a method returns for one linear it compressed (in place)."""

    #: Facts for the layer's report entry (e.g. ``percdamp`` when the dampening had to be raised).
    facts: dict[str, float] = field(default_factory=dict)
    #: ‖WX − ŴX‖² / ‖WX‖² against the weight as the method received it, when the method measured it
    #: anyway (SparseGPT, GPTQ: from their column loop); None: the driver measures it.
    error: float | None = None
    #: The grid the weight was quantized on (scales, zero points), for packed export; None if not quantized.
    grid: QuantizedWeight | None = None


@dataclass
class BlockJob:
    """One decoder block's linears before any of them is compressed, grouped by the input they read.

    ``groups`` are the block's input groups in execution order (each group's jobs share one
    ``InputStatistics``); ``probe`` runs the block on the first calibration sample and returns its output
    hidden states (a method may hook modules around it, e.g. to see which op produced a group's input).
    ``name`` is the block's qualified name.  With ``true_sequential`` a block arrives in several
    ``BlockJob`` s, one per input group, each after the groups before it were compressed.
    """

    name: str
    block: nn.Module
    groups: list[list[LayerJob]]
    probe: Callable[[], torch.Tensor]


class CompressionMethod:
    """Compresses the decoder linears of a model, one linear (or one group of linears) at a time, in place.

    Lifecycle of a method (``methods.build_spec``, ``compress.compress_model``, ``sequential``):

    1. **Declared** before any model loads: ``name``; ``options``, the model_args it takes (reuse the
       groups in ``engine/options.py``, or declare an ``Option``, read back with ``spec.option(name)``);
       ``quantizer_options``, those it takes only with ``bits=``; ``check``, rules between its options;
       ``refused_options``, the reason for refusing an option a user may expect it to take.
       ``build_spec`` turns model_args into a validated ``CompressionSpec`` from these: a bad value fails
       before the model loads.  ``register_method`` (or a line in ``METHODS``) makes ``method=name`` known
       to compressed-hf, the sweep and ``llmkick model-args``.
    2. **Asked what it needs** for that spec (``needs``): calibration tokens, the full Hessian, the input
       feature norms, the mean input magnitudes.  Without calibration tokens a method that needs them is
       refused before any weight changes; the driver accumulates only what is needed.
    3. **Instantiated** once per compressed model.
    4. **Called** with ``compress_group(jobs)``: without calibration for each linear alone; with it, by
       the block-by-block driver, for the linears of a block that read the same input tensor (q/k/v,
       gate/up), sharing one ``InputStatistics`` (``job.statistics_for(name)``).  The default calls
       ``compress_layer(job)`` for each job; override ``compress_group`` when the group can share work.
       It changes each ``job.target.weight`` in place and returns one ``LayerResult`` per job, in order.
       The driver reaches ``compress_group`` through ``compress_block(block_job)``, called once per
       decoder block with all of the block's groups after their statistics are accumulated and before
       any of its weights changes; the default compresses the groups one after the other.  Override it
       when a method must see the whole block first (AWQ searches every group's scales on the float
       weights, then folds them into the ops before: norms, and the rows of other linears of the block).
    5. **Measured** by the driver: sparsity and N:M violations from the weights, the reconstruction error
       when calibrated (the method's own, or measured against a copy of the weight taken before the call),
       and the grids collected into ``CompressionReport.quantized``.

    A method that does not edit weights linear by linear (LLM.int8(): run-time modules) overrides
    ``compress_whole_model`` instead of steps 4-5, and ``loaded_problems`` to check a cache hit.

    A complete method (``method=shrinkprune,sparsity=0.5,shrink=0.9``)::

        from typing import ClassVar

        from llmkick_models.engine.masks import pruning_mask
        from llmkick_models.engine.methods import register_method
        from llmkick_models.engine.methods.base import CompressionMethod, LayerJob, LayerResult
        from llmkick_models.engine.options import PRUNING, Option, fraction

        SHRINK = Option(
            "shrink",
            fraction("shrink", "a number in [0, 1]", include_one=True),
            0.5,
            "a number in [0, 1]",
            "factor applied to the weights that survive",
        )


        class ShrinkPrune(CompressionMethod):
            \"\"\"Magnitude pruning, then the surviving weights scaled by ``shrink`` (a toy).\"\"\"

            name: ClassVar[str] = "shrinkprune"
            options = (*PRUNING, SHRINK)

            def compress_layer(self, job: LayerJob) -> LayerResult:
                weight, spec = job.target.weight, job.spec
                mask = pruning_mask(weight.abs(), spec.sparsity, spec.pattern, per_row=False)
                weight.masked_fill_(mask, 0).mul_(spec.option("shrink"))
                return LayerResult(facts={"shrink": spec.option("shrink")})


        register_method("shrinkprune", ShrinkPrune)
    """

    name: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    quantizer_options: ClassVar[tuple[Option, ...]] = ()
    #: ``CompressionSpec`` fields the method fixes whatever the model_args (not options of its own), e.g.
    #: LLM.int8()'s one scale per row: ``{"group_size": None}``; they are recorded in the spec.
    fixed_fields: ClassVar[dict[str, Any]] = {}
    #: False when the result is not plain weight tensors that ``save_pretrained`` writes and vLLM loads
    #: (LLM.int8()'s run-time int8 modules): ``--model compressed-vllm`` then refuses the method before load.
    plain_weights: ClassVar[bool] = True
    #: Why an option this method does not take is refused, for options a user may expect it to take
    #: (e.g. AWQ and ``sparsity``); other options it does not take get the generic message.
    refused_options: ClassVar[Mapping[str, str]] = {}

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
    def needs(cls, spec: CompressionSpec) -> Needs:
        """What this method needs from the driver to run ``spec``; by default nothing."""
        return Needs()

    def compress_whole_model(
        self,
        model: nn.Module,
        spec: CompressionSpec,
        device: torch.device | None,
        calibration: CalibrationSet | None,
    ) -> CompressionReport | None:
        """For a method that does not edit weights linear by linear (LLM.int8() replaces the linears by
        run-time modules): do all of it here and return the measured report.  None (the default): the
        per-linear steps above run instead."""
        return None

    @classmethod
    def loaded_problems(cls, targets: list[TargetLinear], spec: CompressionSpec) -> list[str]:
        """What is wrong with a model loaded from the cache beyond what the generic checks measure (zeros,
        N:M, quantization levels); empty when nothing.  A method with run-time modules checks them here."""
        return []

    def compress_layer(self, job: LayerJob) -> LayerResult:
        """Compress ``job.target``'s weight in place, computing on ``job.device``."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither compress_layer nor compress_group"
        )

    def compress_group(self, jobs: list[LayerJob]) -> list[LayerResult]:
        """Compress linears that read the same input tensor (their jobs share one ``InputStatistics``); one
        result per job, in order.  By default one at a time; a method whose work on the statistics can be
        shared (SparseGPT's and GPTQ's damped inverse Hessian and column loop) does it once for the group,
        with each layer's result identical to compressing it alone."""
        return [self.compress_layer(job) for job in jobs]

    def compress_block(self, block: BlockJob) -> list[list[LayerResult]]:
        """Compress a decoder block's linears (only with calibration, from the block-by-block driver):
        one list of results per group of ``block.groups``, in order.  By default ``compress_group`` for
        each group in turn; a method that needs the whole block at once overrides this."""
        return [compress_jobs(self, jobs) for jobs in block.groups]


def compress_block_jobs(method: CompressionMethod, block: BlockJob) -> list[list[LayerResult]]:
    """``method.compress_block(block)``, refused unless it returned one result list per group, each with
    one ``LayerResult`` per job."""
    results = method.compress_block(block)
    if not (isinstance(results, list) and len(results) == len(block.groups)):
        raise TypeError(
            f"method={method.name}: compress_block must return one list of LayerResults per input group of "
            f"{block.name} ({len(block.groups)}), got {type(results).__name__}"
        )
    for jobs, group_results in zip(block.groups, results, strict=True):
        _check_results(method, jobs, group_results, "compress_block")
    return results


def compress_jobs(method: CompressionMethod, jobs: list[LayerJob]) -> list[LayerResult]:
    """``method.compress_group(jobs)``, refused unless it returned one ``LayerResult`` per job."""
    results = method.compress_group(jobs)
    _check_results(method, jobs, results, "compress_group")
    return results


def _check_results(method: CompressionMethod, jobs: list[LayerJob], results: object, caller: str) -> None:
    if not (
        isinstance(results, list)
        and len(results) == len(jobs)
        and all(isinstance(result, LayerResult) for result in results)
    ):
        got = [type(r).__name__ for r in results] if isinstance(results, list) else type(results).__name__
        raise TypeError(
            f"method={method.name}: {caller} must return a list of one LayerResult per layer "
            f"({', '.join(job.target.name for job in jobs)}), got {got}"
        )


class Dense(CompressionMethod):
    """No compression: the dense baseline (``method=none``); it takes no options."""

    name: ClassVar[str] = "none"

    def compress_layer(self, job: LayerJob) -> LayerResult:
        """Never called: a dense spec leaves every weight as it is."""
        raise RuntimeError("method=none compresses nothing")
