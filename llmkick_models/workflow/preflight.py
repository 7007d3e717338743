"""Everything a sweep point could fail on late, checked before the first point; the fingerprinted plan.

Every point's compressed-hf arguments go through compressed-hf's own ``check_model_args``, the lm-eval
options through lm-eval's own parser and config, the task names through its ``TaskManager``; the
calibration sources are read and judged tasks need their judge.  Each point's fingerprint is taken here
(:mod:`.fingerprints`); finished points whose fingerprint differs from the plan's are *stale*
(:mod:`.stale_points`): the sweep refuses them unless asked to recompute.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# compressed-hf's own argument names: the one place the sweep takes them from.
from llmkick_models.arguments import compression_args
from llmkick_models.engine.methods import method_class, methods_taking
from llmkick_models.preload_checks import check_model_args
from llmkick_models.workflow.fingerprints import common_fingerprint, point_fingerprint
from llmkick_models.workflow.model_grid import model_identities
from llmkick_models.workflow.sweep_plan import (
    CACHE_ARGS,
    OWN_LM_EVAL_OPTIONS,
    SWEEP_AXES,
    SweepError,
    SweepPoint,
    accepted_extra_args,
    point_args,
)


def _check_scope(key: str, name: str, scope: str, methods: list[str]) -> None:
    """A scoped key (``gptq:calibration``) names a method of the run that takes the option."""
    if scope not in methods:
        raise SweepError(f"--compress_args {key}=: method {scope} is not in --methods ({', '.join(methods)})")
    if not any(option.name == name for option in method_class(scope).accepted_options()):
        raise SweepError(f"--compress_args {key}=: method {scope} does not take {name}; methods that "
                         f"take it: {'|'.join(methods_taking(name)) or 'none'}")  # fmt: skip


def check_compress_args(points: Sequence[SweepPoint], compress_args: dict[str, str]) -> list[str]:
    """Refuse --compress_args keys that compressed-hf does not know, that are sweep axes or that are scoped
    to a method not in the run; return a warning for each key that reaches no point of this sweep (printed,
    so it is never dropped unseen)."""
    allowed = [name for name in compression_args() if name not in SWEEP_AXES]
    methods = sorted({p.method for p in points if p.method != "none"})
    for key in compress_args:
        scope, _, name = key.rpartition(":")
        if name in SWEEP_AXES:
            raise SweepError(
                f"--compress_args {key}=: {name} is a sweep axis; use --methods, --sparsities, --patterns "
                f"or --bits"
            )
        if name not in compression_args():
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SweepError(f"--compress_args: unknown key {name!r}; {hint}allowed: {', '.join(allowed)}")
        if scope:
            _check_scope(key, name, scope, methods)
    warnings = []
    for key in compress_args:
        scope, _, name = key.rpartition(":")
        if not any(name in accepted_extra_args(p) for p in points if scope in ("", p.method)):
            takers = "|".join(methods_taking(name)) or "none"
            warnings.append(
                f"--compress_args {key}={compress_args[key]} reaches no point of this sweep (methods "
                f"{', '.join(methods)}; Wanda/magnitude take quantizer options only with bits=); methods "
                f"that take it: {takers}"
            )
    return warnings


def _hflm_args() -> frozenset[str]:
    from lm_eval.models.huggingface import HFLM

    return frozenset(inspect.signature(HFLM.__init__).parameters)


def check_point_args(
    points: Sequence[SweepPoint], base_model_args: str, compress_args: dict[str, str]
) -> None:
    """Validate every point's full model_args with compressed-hf's own pre-load checks, and read each
    calibration source once (an unreachable ``c4`` fails here, not at point 2)."""
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.engine.calibration import CalibrationDataError, load_documents

    hflm_args = _hflm_args()
    checked_sources: set[str] = set()
    for point in points:
        parsed = simple_parse_args_string(point_args(point, base_model_args, compress_args))
        pretrained = parsed.pop("pretrained", None)
        args = {k: v for k, v in parsed.items() if k not in CACHE_ARGS}
        try:
            # compressed-hf's own pre-load checks: names, values, dtypes, N:M / group widths vs the config
            spec = check_model_args(pretrained, args, hflm_args).spec
            if spec.calibration is not None and spec.calibration.source not in checked_sources:
                load_documents(spec.calibration)
                checked_sources.add(spec.calibration.source)
        except (ValueError, CalibrationDataError) as error:
            raise SweepError(f"point {point.point_id}: {error}") from None


def lm_eval_parser() -> Any:
    """lm-eval's own command-line parser, which the sweep's pass-through options are read with."""
    from lm_eval._cli.harness import HarnessCLI

    return HarnessCLI()._parser


def parse_lm_eval_options(base_model_args: str, tasks: str, lm_eval_args: Sequence[str]) -> Any:
    """lm-eval's own parse and validation of the pass-through options; its message on error."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    for option in lm_eval_args:
        name = option.split("=", 1)[0].lstrip("-")
        if option.startswith("--") and name in OWN_LM_EVAL_OPTIONS:
            raise SweepError(
                f"{option.split('=', 1)[0]} is set by llmkick sweep for every point; use the sweep's "
                f"--model / --model_args / --tasks / --output"
            )
    argv = ["run", "--model", "compressed-hf", "--model_args", base_model_args, "--tasks", tasks,
            *lm_eval_args]  # fmt: skip
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace = lm_eval_parser().parse_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise SweepError(
            "lm-eval refuses the pass-through options: "
            + (message[-1] if message else " ".join(lm_eval_args))
        ) from None
    try:
        config = EvaluatorConfig.from_cli(namespace)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SweepError(f"lm-eval refuses the pass-through options: {error}") from None
    return namespace, config


def check_tasks(config: Any) -> Any:
    """Check the tasks' --metadata knobs, resolve the task names with lm-eval's TaskManager (unknown names
    listed) and check the judge and the tasks' local data files (``llmkick_tasks.preflight``)."""
    from llmkick_tasks.judge.config import JudgeConfigError
    from llmkick_tasks.preflight import check_requested_tasks
    from llmkick_tasks.run_metadata import check_run_metadata

    try:
        check_run_metadata(config.metadata)
    except ValueError as error:
        raise SweepError(f"--metadata: {error}") from None
    try:
        manager = config.process_tasks(config.metadata)
    except ValueError as error:
        raise SweepError(
            f"--tasks: {error} (see `lm_eval ls tasks`; local tasks need --include_path)"
        ) from None
    try:
        check_requested_tasks(config.tasks, manager)
    except JudgeConfigError as error:
        raise SweepError(str(error)) from None
    return manager


@dataclass
class SweepPlan:
    """Validated points with their fingerprints, ready to run."""

    points: list[SweepPoint]
    base_model_args: str
    tasks: str
    compress_args: dict[str, str]
    lm_eval_args: list[str]
    common: dict[str, Any]
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)


def preflight(
    points: Sequence[SweepPoint],
    *,
    base_model_args: str,
    tasks: str,
    compress_args: dict[str, str],
    lm_eval_args: Sequence[str] = (),
) -> SweepPlan:
    """Everything a point could fail on late, checked before the first point; raises :class:`SweepError`."""
    for warning in check_compress_args(points, compress_args):
        print(f"llmkick sweep: warning: {warning}", file=sys.stderr, flush=True)
    namespace, config = parse_lm_eval_options(base_model_args, tasks, lm_eval_args)
    check_point_args(points, base_model_args, compress_args)
    check_tasks(config)
    common = common_fingerprint(base_model_args, tasks, namespace, config)
    plan = SweepPlan(list(points), base_model_args, tasks, dict(compress_args), list(lm_eval_args), common)
    models = list(dict.fromkeys(p.pretrained for p in points if p.pretrained))
    identities = model_identities(models, base_model_args)  # refuses two models of the same weights
    plan.fingerprints = {
        p.point_id: point_fingerprint(p, common, base_model_args, compress_args, identities) for p in points
    }
    return plan
