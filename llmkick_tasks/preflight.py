"""Pre-flight check: refuse a run whose llmkick tasks cannot run, before the model is loaded.

``lm_eval.evaluator.simple_evaluate`` (used by the CLI and the Python API) loads the model FIRST and
builds the tasks afterwards, so a check inside task construction alone would only fire after a possibly
long model load (and compression).  :func:`install` wraps ``simple_evaluate``: before calling it, every
requested task name is resolved through the task index (groups and tags expanded, YAML not executed), and

* every llmkick task reading a local data dir (``data_dir`` metadata or ``$LLMKICK_DATA_DIR``) has the
  files its splits need resolved by its loader's own resolver (``data_dir.CHECK_DATA_FILES`` on its
  ``custom_dataset`` function or ``class:``): a missing folder or file raises the loader's
  :class:`~llmkick_tasks.data_dir.DataLayoutError` now.  Existence only: nothing is parsed, and tasks
  reading the Hub or a public URL are not checked (their download errors are their own);
* each task whose YAML metadata carries ``llmkick_judged: <protocol>`` has its judge settings validated
  with the run's metadata and every judge prompt it may send rendered once with placeholder values (a
  broken template fails here).  No chat template is required: the judged tasks format their own chat
  prompts without one (:mod:`llmkick_tasks.judge.chat`).

The plugin boot hook (``llmkick_models._boot``, the list of every lm-eval patch) calls :func:`install`
right after ``lm_eval.evaluator`` is imported; it also wraps ``evaluate`` so the judged tasks can reach the
running model (:func:`llmkick_tasks.judge.chat.install`).
Task construction needs no judge (lm-eval's own task tests build every task with a bare ``TaskManager``);
building the requests repeats the judge check (:meth:`~llmkick_tasks.judge.task.JudgedTask.resolve_judge`),
and loading the data repeats the file resolution, which covers callers that bypass ``simple_evaluate``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkick_tasks.data_dir import CHECK_DATA_FILES
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType


log = logging.getLogger(__name__)

INSTALLED_FLAG = "_llmkick_preflight"
JUDGED_FLAG = "llmkick_judged"
EXACT_MATCH_GROUP = "llmkick_exact_match"  # every LLM-KICK task that needs no judge
PACKAGE_DIR = Path(__file__).resolve().parent  # only this package's loaders are imported for the data check


def _task_configs(specs: Iterable[Any], task_manager: Any) -> dict[str, dict[str, Any]]:
    """Raw configs (by task name; ``!function`` values unresolved) of the tasks that ``specs`` expand to."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    index = task_manager.task_index
    found: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()

    def visit_config(name: str, cfg: Mapping[str, Any]) -> None:
        # An inline group lists its members under `task`.
        if "group" in cfg and isinstance(cfg.get("task"), list):
            for member in cfg["task"]:
                visit(member)
        elif "group" not in cfg:
            found[name] = dict(cfg)

    def visit(spec: Any) -> None:
        if isinstance(spec, str):
            if spec in seen:
                return
            seen.add(spec)
            entry = index.get(spec)
            if entry is None:
                if spec.endswith(".yaml") and Path(spec).is_file():
                    visit_config(spec, load_yaml(spec, resolve_func=False))
                return
            if entry.kind == Kind.TAG:
                for member in sorted(entry.tags):
                    visit(member)
            elif entry.cfg is not None:
                visit_config(spec, entry.cfg)
        elif isinstance(spec, Mapping):
            group, task = spec.get("group"), spec.get("task")
            if isinstance(group, str) and group in index and not isinstance(task, list):
                visit(group)  # a registered group, referenced with overrides
            elif group is None and isinstance(task, str) and task in index:
                visit(task)  # a registered task, referenced with overrides
            else:
                visit_config(str(group or task), spec)  # an inline task or group
        # Task / Group objects were constructed already: their own checks ran.

    for spec in specs:
        visit(spec)
    return found


def _task_metadata(cfg: Mapping[str, Any], run_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A task's metadata: its YAML's, then the run's (as lm-eval's TaskFactory merges them)."""
    return dict(cfg.get("metadata") or {}) | dict(run_metadata)


def _data_check(target: Any) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None:
    """The data-file check a ``custom_dataset`` / ``class:`` value names, if it is an llmkick loader."""
    if isinstance(target, str):
        module = Path(target.rsplit(".", 1)[0]).resolve()
        if not module.is_relative_to(PACKAGE_DIR):
            return None  # another plugin's task: importing its code here is not ours to do
        # Our own module, so imported by its package name (lm-eval's `!function` resolver is private).
        package = ".".join((PACKAGE_DIR.name, *module.relative_to(PACKAGE_DIR).parts))
        target = getattr(importlib.import_module(package), target.rsplit(".", 1)[1], None)
    return getattr(target, CHECK_DATA_FILES, None)


def check_task_data(configs: Mapping[str, Mapping[str, Any]], run_metadata: Mapping[str, Any]) -> None:
    """Resolve the local data files of every task in ``configs`` with its loader's own resolver (a
    :class:`~llmkick_tasks.data_dir.DataLayoutError` when one is missing); tasks without a data dir pass.
    """
    checked = []
    for name, cfg in configs.items():
        for key in ("class", "custom_dataset"):
            check = _data_check(cfg.get(key)) if cfg.get(key) is not None else None
            if check is not None:
                check(cfg, _task_metadata(cfg, run_metadata))
                checked.append(name)
    if checked:
        log.info("llmkick pre-flight: data files found for %s", ", ".join(sorted(set(checked))))


def check_requested_tasks(tasks: Any, task_manager: Any) -> None:
    """Raise if a requested llmkick task cannot run: :class:`~llmkick_tasks.data_dir.DataLayoutError` for
    missing local data files, :class:`JudgeConfigError` for a judged task's judge; do nothing otherwise.
    """
    specs = tasks if isinstance(tasks, (list, tuple)) else [tasks]
    configs = _task_configs(specs, task_manager)
    run_metadata = dict(task_manager.metadata or {})
    check_task_data(configs, run_metadata)
    judged = {name: cfg for name, cfg in configs.items() if (cfg.get("metadata") or {}).get(JUDGED_FLAG)}
    for name, cfg in judged.items():
        metadata = _task_metadata(cfg, run_metadata)
        try:
            settings = JudgeSettings.from_metadata(metadata, task=name)
        except JudgeConfigError as error:
            # Judged tasks often arrive through a group (`llmkick`): say how to run without them.
            raise JudgeConfigError(
                f"{error}\nTo run without a judge, ask for the exact-match tasks only: "
                f"--tasks {EXACT_MATCH_GROUP} (judged tasks requested: {', '.join(sorted(judged))})."
            ) from None
        from llmkick_tasks.judge.protocol_choice import (  # openai: only when used
            PROTOCOL_CLASSES,
            make_protocol,
        )

        kind = (cfg.get("metadata") or {}).get(JUDGED_FLAG)
        if kind == "summarization":
            from llmkick_tasks.judge.data import summarization_bins

            summarization_bins(metadata)  # a bad value, or release bins without a data dir, fails now
        if isinstance(kind, str) and kind in PROTOCOL_CLASSES:
            make_protocol(
                kind, settings, metadata, name
            )  # renders every judge prompt: a broken one fails now
    if judged:
        log.info("llmkick pre-flight: judge and judge prompts checked for %s", ", ".join(sorted(judged)))


def install(evaluator: ModuleType) -> None:
    """Wrap ``evaluator.simple_evaluate``: the requested tasks are checked before the model is loaded."""
    original = evaluator.simple_evaluate
    if getattr(original, INSTALLED_FLAG, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def simple_evaluate(*args: Any, **kwargs: Any) -> Any:
        arguments = dict(signature.bind(*args, **kwargs).arguments)
        if arguments.get("tasks"):
            if arguments.get("task_manager") is None:
                # Build the TaskManager exactly as simple_evaluate would and hand it over: indexed once.
                from lm_eval.tasks import TaskManager
                from lm_eval.utils import simple_parse_args_string

                model_args = arguments.get("model_args")
                metadata = (
                    simple_parse_args_string(model_args)
                    if isinstance(model_args, str)
                    else model_args
                    if isinstance(model_args, dict)
                    else {}
                ) | (arguments.get("metadata") or {})
                arguments["task_manager"] = TaskManager(metadata=metadata)
            from llmkick_tasks.run_metadata import (
                check_run_metadata,  # the task loaders: only when run
            )

            check_run_metadata(arguments["task_manager"].metadata)
            check_requested_tasks(arguments["tasks"], arguments["task_manager"])
        return original(**arguments)  # every parameter of simple_evaluate can be passed by keyword

    setattr(simple_evaluate, INSTALLED_FLAG, True)
    evaluator.simple_evaluate = simple_evaluate
