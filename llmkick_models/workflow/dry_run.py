"""``llmkick sweep --dry-run``: the planned points and the lm-eval requests each would send, from the tasks
alone (no model is loaded, nothing is run or written)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from llmkick_models.workflow.model_grid import model_identities
from llmkick_models.workflow.study_plan import Study, base_model_args
from llmkick_models.workflow.sweep_plan import point_args

#: What the estimate counts, printed under it.
ESTIMATE_NOTE = (
    "requests: the instances lm-eval's own tasks build up front for one point (documents x requests per "
    "document: one per answer choice, one per generation, one per rolling-loglikelihood document), with "
    "this command's --limit; the same for every point of a model (a --models run counts each model with its "
    "own tokenizer). Not counted: the token windows a "
    "loglikelihood_rolling document is split into, the judge's calls of judged tasks, and requests built "
    "during the run (MT-Bench's second turn)"
)


def task_requests(tasks: str, config: Any, base_model_args: str) -> dict[str, Counter[str]]:
    """Per leaf task, its requests by type (``loglikelihood``, ``generate_until``, ...), built by lm-eval
    without a model, as lm-eval's evaluator would (the model_args as task metadata, few-shot default 0,
    the run's --limit and --num_fewshot)."""
    from lm_eval.evaluator_utils import get_sample_size
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string

    metadata = simple_parse_args_string(base_model_args) | (config.metadata or {})
    manager = TaskManager(include_path=config.include_path, metadata=metadata)
    loaded = manager.load([t.strip() for t in tasks.split(",") if t.strip()])
    counts: dict[str, Counter[str]] = {}
    for name, task in loaded["tasks"].items():
        if config.num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=config.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.build_all_requests(limit=get_sample_size(task, config.limit), rank=0, world_size=1)
        counts[str(name)] = Counter(instance.request_type for instance in task.instances)
    return counts


def dry_run(study: Study, args: argparse.Namespace, passthrough: list[str]) -> int:
    """Print every point (its id and model_args) with its estimated requests; run and write nothing."""
    import sys

    from llmkick_models.workflow.preflight import check_compress_args, check_tasks, parse_lm_eval_options

    for warning in check_compress_args(study.grid.points, study.compress_args):
        print(f"llmkick sweep: warning: {warning}", file=sys.stderr)
    base = base_model_args(args)
    model_identities(args.models, base)  # two --models of the same weights are refused here too
    _, config = parse_lm_eval_options(base, study.tasks, passthrough)
    check_tasks(config)  # names, knobs and judge first: their messages are the clearest
    points = study.grid.points
    # Each model's tasks are built with its own model args: the perplexity windows are cut with its tokenizer.
    counts = {
        model: task_requests(
            study.tasks, config, ",".join(filter(None, [f"pretrained={model}" * bool(model), base]))
        )
        for model in dict.fromkeys(point.pretrained for point in points)
    }
    totals = {model: sum(sum(c.values()) for c in found.values()) for model, found in counts.items()}
    print(f"{len(points)} points, tasks {study.tasks}:")
    for point in points:
        args_of = point_args(point, base, study.compress_args)
        print(f"  {point.point_id}: {args_of}; ~{totals[point.pretrained]} requests")
    labels = {point.pretrained: point.model for point in points}
    for model, found in counts.items():
        kinds = Counter[str]()
        for counter in found.values():
            kinds.update(counter)
        breakdown = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        which = f" of {labels[model]}" if labels[model] else ""
        print(f"per point{which}: ~{totals[model]} requests ({breakdown}); per task: "
              + ", ".join(f"{task} {sum(c.values())}" for task, c in found.items()))  # fmt: skip
    total = sum(totals[point.pretrained] for point in points)
    print(f"all points: ~{total} requests. {ESTIMATE_NOTE}.")
    return 0
