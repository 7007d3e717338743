"""``llmkick sweep --backend``: which lm-eval model evaluates every point of a planned sweep."""

from __future__ import annotations

from collections.abc import Iterable

from llmkick_models.workflow.preflight import SweepPlan
from llmkick_models.workflow.sweep_plan import SweepError, point_args

#: The lm-eval model of each backend.
BACKENDS = {"hf": "compressed-hf", "vllm": "compressed-vllm"}


def use_backend(plan: SweepPlan, backend: str, devices: Iterable[str] | None = None) -> None:
    """Evaluate every point of ``plan`` with ``backend``'s lm-eval model (``hf``, compressed-hf: as planned).

    For ``vllm``: vLLM must be importable and every point's model_args pass compressed-vllm's own checks
    (vLLM argument names, the method, the parallelism) before any point runs.  The model is added last to
    the pass-through options (lm-eval keeps the last ``--model``) and to every point's fingerprint, with
    vLLM's version, so that a point evaluated by one backend is never reused for the other.
    """
    if backend == "hf":
        return
    if devices:
        # vLLM places a model on the GPUs it sees, not on a worker's --device.
        raise SweepError(
            "--backend vllm does not take --devices: vLLM uses the GPUs that CUDA_VISIBLE_DEVICES shows it "
            "(tensor_parallel_size= in --model_args spreads one point over them); run the points one after "
            "another, or one Slurm job per point"
        )
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.vllm_checks import (
        VLLMMissingError,
        check_vllm_model_args,
        import_vllm_model,
        vllm_version,
    )

    try:
        vllm_model = import_vllm_model()
    except VLLMMissingError as error:
        raise SweepError(f"--backend vllm: {error}") from None
    for point in plan.points:
        args = simple_parse_args_string(point_args(point, plan.base_model_args, plan.compress_args))
        args.pop("pretrained", None)
        try:
            check_vllm_model_args(args, vllm_model)
        except ValueError as error:
            raise SweepError(f"point {point.point_id}: {error}") from None
    plan.lm_eval_args.extend(["--model", BACKENDS[backend]])
    for fingerprint in plan.fingerprints.values():
        fingerprint["backend"] = {"model": BACKENDS[backend], "vllm": vllm_version()}
