"""Plugin boot: make lm-eval see llmkick without any command-line flag.

``llmkick.pth`` (installed into site-packages) imports this module at interpreter start.  lm-eval 0.4.13
has no entry-point discovery, so this module installs a ``sys.meta_path`` finder that waits for a few lm-eval
modules to be imported and then:

* after ``lm_eval.models`` ran, registers ``compressed-hf`` and ``compressed-vllm`` as lazy placeholders
  (registering earlier would make ``get_model`` believe the registry is already populated and skip
  lm-eval's own models);
* after ``lm_eval.tasks.manager`` ran, wraps ``TaskManager.__init__`` so that the ``llmkick_tasks`` directory
  is indexed next to lm-eval's built-in tasks, unless lm-eval already discovers plugin task directories;
* after ``lm_eval.api.task`` ran, shows lm-eval's per-task "custom kwargs" warning once per run, not once
  for each of the 117 llmkick subtasks;
* after ``lm_eval.evaluator`` ran, installs the judged tasks' pre-flight check.

Rules: standard library only, no work at start-up beyond appending one finder, and never raise: a broken
hook must not break Python.  Delete this file and ``llmkick.pth`` once lm-eval reads the entry points that
``pyproject.toml`` already declares.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at start-up; annotations stay strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

#: llmkick's lm-eval models: name -> "module:Class" (imported only when lm-eval asks for the name).
MODELS = {
    "compressed-hf": "llmkick_models.compressed_hf:CompressedHFLM",
    "compressed-vllm": "llmkick_models.compressed_vllm:CompressedVLLM",
}
_PATCHED_FLAG = "_llmkick_include_path_patch"


def _debug(message: str) -> None:
    # logging is not imported at start-up; only report when asked to.
    import os

    if os.environ.get("LLMKICK_BOOT_DEBUG"):
        print(f"[llmkick boot] {message}", file=sys.stderr)


def register_model(_module: ModuleType | None = None) -> None:
    """Register llmkick's models in lm-eval's model registry as lazy ``module:Class`` placeholders."""
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def llmkick_tasks_dir() -> str | None:
    """Directory of the installed ``llmkick_tasks`` package, found without importing it."""
    from importlib.util import find_spec

    spec = find_spec("llmkick_tasks")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations))


def lm_eval_discovers_plugin_tasks(manager_module: ModuleType) -> bool:
    """True when this lm-eval indexes installed plugins' task directories by itself (entry points)."""
    import inspect

    try:
        source = inspect.getsource(manager_module)
    except (OSError, TypeError):
        return False
    return "entry_points" in source and "lm_eval.tasks" in source


def patch_task_manager(manager_module: ModuleType) -> None:
    """Wrap ``TaskManager.__init__`` so every TaskManager also indexes ``llmkick_tasks``."""
    if lm_eval_discovers_plugin_tasks(manager_module):
        _debug("lm-eval discovers plugin tasks itself; task patch skipped")
        return
    task_manager = manager_module.TaskManager
    original_init = task_manager.__init__
    if getattr(original_init, _PATCHED_FLAG, False):
        return
    tasks_dir = llmkick_tasks_dir()
    if tasks_dir is None:
        return

    import functools
    import inspect
    import os

    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def init_with_llmkick_tasks(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            if bound.arguments.get("include_defaults", True):
                given = bound.arguments.get("include_path")
                paths = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
                resolved = {os.path.realpath(str(p)) for p in paths}
                if os.path.realpath(tasks_dir) not in resolved:
                    # Ours first: a user's --include_path still overrides a task of the same name.
                    bound.arguments["include_path"] = [tasks_dir, *paths]
            args, kwargs = bound.args[1:], bound.kwargs
        except Exception as error:  # never let the hook change behaviour beyond adding a path
            _debug(f"could not add llmkick tasks: {error!r}")
        original_init(self, *args, **kwargs)

    setattr(init_with_llmkick_tasks, _PATCHED_FLAG, True)
    task_manager.__init__ = init_with_llmkick_tasks


def install_preflight(module: ModuleType) -> None:
    """Let judged llmkick tasks refuse a run (e.g. no judge) before ``simple_evaluate`` loads the model."""
    from llmkick_tasks.judge.preflight import install

    install(module)


def quiet_task_warnings(_module: ModuleType) -> None:
    """One "custom kwargs go through --metadata" warning per run, not one per llmkick subtask."""
    from llmkick_tasks.logs import quiet_repeated_task_warnings

    quiet_repeated_task_warnings()


AFTER_IMPORT: dict[str, Callable[[ModuleType], None]] = {
    "lm_eval.api.task": quiet_task_warnings,
    "lm_eval.models": register_model,
    "lm_eval.tasks.manager": patch_task_manager,
    "lm_eval.evaluator": install_preflight,
}


def _run_after_import(name: str, module: ModuleType) -> None:
    try:
        AFTER_IMPORT[name](module)
    except Exception as error:
        _debug(f"hook for {name} failed: {error!r}")


class _LoaderWithCallback:
    """Delegates everything to the real loader; runs our callback once the module has executed."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._loader, attribute)

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _run_after_import(self._name, module)


class AfterImportFinder:
    """A ``sys.meta_path`` finder that only reacts to the module names in ``AFTER_IMPORT``."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        """Find the real spec with the other finders and wrap its loader."""
        if fullname not in AFTER_IMPORT:
            return None
        try:
            for finder in sys.meta_path:
                if finder is self or isinstance(finder, AfterImportFinder):
                    continue
                find_spec = getattr(finder, "find_spec", None)
                spec = find_spec(fullname, path, target) if find_spec else None
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _LoaderWithCallback(spec.loader, fullname)
                    return spec
        except Exception as error:
            _debug(f"finder failed for {fullname}: {error!r}")
        return None


def install() -> None:
    """Install the finder once; handle modules that were imported before we got here."""
    try:
        if any(isinstance(finder, AfterImportFinder) for finder in sys.meta_path):
            return
        sys.meta_path.insert(0, AfterImportFinder())
        for name in AFTER_IMPORT:
            if name in sys.modules:
                _run_after_import(name, sys.modules[name])
    except Exception as error:
        _debug(f"install failed: {error!r}")


install()
