"""The sweep's grid: its points, and which model_args each point passes to compressed-hf."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# compressed-hf's own argument names: the one place the sweep takes them from.
from llmkick_models.engine.methods import METHODS, build_spec, method_class
from llmkick_models.engine.options import CompressionArgumentError, Option
from llmkick_models.workflow.grid_axes import GridAxis, id_part
from llmkick_tasks.errors import UserError

QUANTIZATION_ARGS = frozenset({"bits"})
#: Set by the sweep grid itself (--methods, --sparsities, --patterns, --bits), never by --compress_args.
SWEEP_AXES = ("method", "sparsity", "pattern", "bits")
#: compressed-hf's cache switches: they change where weights come from, not what they are.
CACHE_ARGS = frozenset({"cache", "llmkick_cache_dir"})
#: lm-eval options the sweep sets for every point; giving them again would contradict the sweep.
OWN_LM_EVAL_OPTIONS = ("model", "model_args", "tasks", "output_path")
#: lm-eval settings that do not change any number (logging, display, trackers; ``use_cache``, because the
#: sweep keeps each point's response cache under a digest of the point's fingerprint): left out of
#: fingerprints.
COSMETIC_LM_EVAL_OPTIONS = frozenset({
    "config", "verbosity", "log_samples", "show_config", "write_out", "wandb_args", "wandb_config_args",
    "trackio_args", "hf_hub_log_args", "check_integrity", "metadata", "model", "model_args", "tasks",
    "output_path", "use_cache",
})  # fmt: skip
LOG_TAIL_LINES = 25
KILL_GRACE_S = 10.0


class SweepError(UserError):
    """The sweep cannot start as asked; the message says what to change."""


@dataclass(frozen=True)
class SweepPoint:
    """One compression setting of a sweep."""

    method: str = "none"
    sparsity: float | None = None
    pattern: str | None = None
    bits: int | None = None
    #: The values of the --grid axes that reach this point, ``(option, value as given)``, in --grid order.
    settings: tuple[tuple[str, str], ...] = ()
    #: With --models: the model this point compresses (its ``pretrained=``) and its label in point ids.
    pretrained: str = ""
    model: str = ""

    @property
    def point_id(self) -> str:
        """File-system safe, human-readable id, e.g. ``dense``, ``wanda-s0.5``, ``sparsegpt-2of4``,
        ``wanda-s0.5-4bit`` (pruned, then quantized), ``wanda-s0.5-nsamples_32`` (a --grid axis)."""
        prefix = f"{self.model}--" if self.model else ""
        if self.method == "none":
            return prefix + "dense"
        parts = [prefix + self.method]
        if self.pattern:
            parts.append(self.pattern.replace(":", "of"))
        elif self.sparsity is not None:
            parts.append(f"s{self.sparsity:g}")
        if self.bits is not None:
            parts.append(f"{self.bits}bit")
        parts += [id_part(name, value) for name, value in self.settings]
        return "-".join(parts)

    @property
    def series(self) -> str:
        """What the report draws as one line: the method, with the bits of a pruned-then-quantized point
        and every --grid axis value (``wanda+4bit``, ``wanda nsamples=32``)."""
        joint = f"+{self.bits}bit" if self.bits is not None and (self.sparsity or self.pattern) else ""
        label = f"{self.model}: " if self.model else ""
        return label + " ".join([self.method + joint, *(f"{name}={value}" for name, value in self.settings)])

    def model_args(self) -> str:
        """This point's compressed-hf arguments."""
        args = {"method": self.method, "sparsity": self.sparsity, "pattern": self.pattern, "bits": self.bits}
        parts = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in args.items() if value is not None]  # fmt: skip
        return ",".join(parts + [f"{name}={value}" for name, value in self.settings])

    def as_dict(self) -> dict[str, Any]:
        """For the report: the point's coordinates."""
        return {"id": self.point_id, "method": self.method, "sparsity": self.sparsity,
                "pattern": self.pattern, "bits": self.bits, "axes": dict(self.settings),
                "series": self.series, **({"model": self.model, "pretrained": self.pretrained}
                                          if self.model else {})}  # fmt: skip


@dataclass(frozen=True)
class SweepGrid:
    """The planned points and the lines to print before any of them runs (what the grid left out, why)."""

    points: list[SweepPoint]
    notes: list[str]


#: The bit widths a method's ``bits`` option is probed with to describe what it allows ("2-8", "8").
BITS_PROBE = range(1, 33)


def _prunes(method: str) -> bool:
    return any(option.name == "sparsity" for option in method_class(method).options)


def _bits_option(method: str, joint: bool = True) -> Option | None:
    """A quantization method's own ``bits``; with ``joint``, also the ``bits`` a pruning method quantizes
    its pruned weights with (prune, then quantize)."""
    cls = method_class(method)
    declared = cls.accepted_options() if joint and _prunes(method) else cls.options
    return next((option for option in declared if option.name == "bits"), None)


def _takes(option: Option, bits: int) -> bool:
    try:
        option.parse(bits)
    except CompressionArgumentError:
        return False
    return True


def allowed_bits(option: Option) -> str:
    """What a ``bits`` option allows, from its own parser: runs of values ("2-8", "8", "4, 8")."""
    values = [b for b in BITS_PROBE if _takes(option, b)]
    if not values or len(values) == len(BITS_PROBE):
        return option.allowed  # nothing in the probe range, or no upper bound: the declared text
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _csv(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values)


def _bits_per_method(
    methods: list[str], bits: list[int], joint: bool
) -> tuple[dict[str, list[int]], list[str]]:
    """Each quantizing method's share of ``bits`` (the values its ``bits`` option takes), and a note for
    each method that leaves some out.  A value no method takes, or a method that takes none, is refused."""
    options = {m: option for m in methods if (option := _bits_option(m, joint)) is not None}
    if not bits or not options:
        return {m: list(bits) for m in options}, []
    allows = "; ".join(f"{m} allows {allowed_bits(o)}" for m, o in options.items())
    for value in bits:
        if not any(_takes(option, value) for option in options.values()):
            raise SweepError(f"--bits {value}: no method of --methods takes it ({allows})")
    taken, notes = {}, []
    for method, option in options.items():
        taken[method] = [b for b in bits if _takes(option, b)]
        skipped = [b for b in bits if b not in taken[method]]
        if not taken[method]:
            raise SweepError(
                f"--bits {_csv(bits)}: method {method} allows {allowed_bits(option)} only; add such a value "
                f"to --bits or drop {method} from --methods"
            )
        if skipped:
            notes.append(
                f"{method}: bits {_csv(taken[method])} only ({_csv(skipped)} skipped: the method allows "
                f"{allowed_bits(option)})"
            )
    return taken, notes


def _crossed(point: SweepPoint, axes: Sequence[GridAxis]) -> list[SweepPoint]:
    """``point`` at every combination of the values of the --grid axes that reach it."""
    reaching = [axis for axis in axes if axis.name in accepted_extra_args(point)]
    combos = itertools.product(*([(axis.name, value) for value in axis.values] for axis in reaching))
    return [dataclasses.replace(point, settings=tuple(combo)) for combo in combos]


def _method_points(
    method: str, sparsities: list[float], patterns: list[str], bits: list[int]
) -> list[SweepPoint]:
    """A method's points before the --grid axes: pruned (then also quantized at each of ``bits``), or
    quantized at each of ``bits``."""
    if not _prunes(method):
        return [SweepPoint(method, bits=b) for b in bits]
    pruned = [SweepPoint(method, sparsity=s) for s in sparsities if s > 0]
    pruned += [SweepPoint(method, pattern=p) for p in patterns]
    return pruned + [dataclasses.replace(p, bits=b) for p in pruned for b in bits]


def plan_grid(
    methods: Iterable[str],
    sparsities: Iterable[float] = (),
    patterns: Iterable[str] = (),
    bits: Iterable[int] = (),
    axes: Sequence[GridAxis] = (),
    joint: bool = True,
    compress_args: Mapping[str, str] | None = None,
) -> SweepGrid:
    """The grid: dense first; every pruning method at every sparsity and pattern, and (with ``joint``)
    each of those pruned, then quantized at each of the ``bits`` the method's quantizer takes; every
    quantization method at each of the ``bits`` its ``bits`` option takes (LLM-KICK's Table 2: method x
    bits); every point at every combination of the --grid ``axes`` its method takes.

    Sparsity 0 is the dense point (listed once).  Every point is validated here, before any run starts
    (a point with --grid values together with the ``compress_args`` it receives);
    ``notes`` say which ``bits`` a method was not paired with (to be printed before any point runs).
    """
    methods, bits = list(methods), list(dict.fromkeys(bits))
    sparsities, patterns = list(sparsities), list(patterns)
    for method in methods:
        if method not in METHODS or method == "none":
            allowed = ", ".join(m for m in METHODS if m != "none")
            raise SweepError(f"--methods: unknown method {method!r}; allowed: {allowed}")
    bits_of, notes = _bits_per_method(methods, bits, joint)
    points = [SweepPoint()]
    for method in methods:
        candidates = [c for p in _method_points(method, sparsities, patterns, bits_of.get(method, []))
                      for c in _crossed(p, axes)]  # fmt: skip
        if not candidates:
            raise SweepError(f"--methods {method}: no --sparsities/--patterns/--bits value applies to it")
        for point in candidates:
            # an axis value may need a --compress_args beside it (magnitude: nsamples= with calibration=)
            given = args_for(method, dict(compress_args or {})) if point.settings else {}
            extra = {
                k: v for k, v in given.items() if k in accepted_extra_args(point) and k not in CACHE_ARGS
            }
            try:  # raises, naming the bad value
                build_spec(point.method, point.sparsity, point.pattern, bits=point.bits,
                           **extra, **dict(point.settings))  # fmt: skip
            except CompressionArgumentError as error:
                raise SweepError(f"point {point.point_id}: {error}") from None
        points += candidates
    seen: set[str] = set()
    return SweepGrid([p for p in points if not (p.point_id in seen or seen.add(p.point_id))], notes)


def plan_points(
    methods: Iterable[str],
    sparsities: Iterable[float] = (),
    patterns: Iterable[str] = (),
    bits: Iterable[int] = (),
) -> list[SweepPoint]:
    """The points of :func:`plan_grid` (without its notes)."""
    return plan_grid(methods, sparsities, patterns, bits).points


def accepted_extra_args(point: SweepPoint) -> frozenset[str]:
    """The --compress_args keys that reach ``point`` (its method's options, and the cache switches)."""
    implementation = method_class(point.method)
    # e.g. percdamp= reaches Wanda only when it quantizes with GPTQ
    quantizes = implementation.always_quantizes() or point.bits is not None
    accepted = frozenset(option.name for option in implementation.offered_options(quantizes))
    if point.method != "none":
        accepted = accepted | CACHE_ARGS
    return accepted


def args_for(method: str, compress_args: dict[str, str]) -> dict[str, str]:
    """The --compress_args meant for ``method``: the unscoped ones (``calibration``), overridden by those
    scoped to it (``gptq:calibration``)."""
    unscoped = {key: value for key, value in compress_args.items() if ":" not in key}
    prefix = f"{method}:"
    return unscoped | {key[len(prefix) :]: v for key, v in compress_args.items() if key.startswith(prefix)}


def point_args(point: SweepPoint, base_model_args: str, compress_args: dict[str, str]) -> str:
    """Full --model_args for a point: the base (pretrained=..., dtype=...), the point, and the extra
    compression args meant for its method (:func:`args_for`) that it accepts (calibration args are not
    given to magnitude)."""
    if point.pretrained:  # a --models run: the base holds no pretrained= of its own
        base_model_args = ",".join(filter(None, [f"pretrained={point.pretrained}", base_model_args]))
    accepted = accepted_extra_args(point)
    extra = [
        f"{key}={value}" for key, value in args_for(point.method, compress_args).items() if key in accepted
    ]
    return ",".join(part for part in (base_model_args, point.model_args(), *extra) if part)
