"""Plugin boot: the one list of every place where llmkick registers itself in, wraps or patches lm-eval.

``llmkick.pth`` (installed into site-packages) imports this module at interpreter start.  lm-eval 0.4.13
has no entry-point discovery, so this module installs a ``sys.meta_path`` finder that waits for the lm-eval
modules named in :data:`PATCHES` to be imported and then applies each patch.  :data:`PATCHES` says, per
patch, which lm-eval function it touches (``tests/test_boot.py`` fails when the installed lm-eval no longer
has it, or its signature lacks a parameter the patch relies on), why it exists and what replaces it:

* model registration (:data:`MODELS`): replaced by the ``lm_eval.models`` entry points that
  ``pyproject.toml`` already declares (EleutherAI/lm-evaluation-harness#4013, merged, not yet released);
* task path (``TaskManager.__init__``): replaced by the ``lm_eval.tasks`` entry point (#4015, proposed);
  it steps aside by itself once lm-eval discovers plugin task directories;
* pre-flight (``simple_evaluate``), model hand-off (``evaluate``) and the warning filter: entry points
  do not replace them; they stay until lm-eval offers what each docstring below names.

Rules: standard library only, no work at start-up beyond appending one finder, and never raise: a broken
hook must not break Python.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at start-up; annotations stay strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

#: Every lm-eval model of the plugin: name -> lazy ``module:Class`` (imported only when the model is used).
#: Keep equal to ``[project.entry-points."lm_eval.models"]`` in pyproject.toml.
MODELS: dict[str, str] = {
    "compressed-hf": "llmkick_models.compressed_hf:CompressedHFLM",
    "compressed-vllm": "llmkick_models.compressed_vllm:CompressedVLLM",
}
_PATCHED_FLAG = "_llmkick_include_path_patch"


def _debug(message: str) -> None:
    # logging is not imported at start-up; only report when asked to.
    import os

    if os.environ.get("LLMKICK_BOOT_DEBUG"):
        print(f"[llmkick boot] {message}", file=sys.stderr)


def register_models(_module: ModuleType | None = None) -> None:
    """Register every model of :data:`MODELS` in lm-eval's model registry as a lazy placeholder.

    Runs after ``lm_eval.models``: registering earlier would make ``get_model`` believe the registry is
    already populated and skip lm-eval's own models.
    """
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
    """Wrap ``simple_evaluate``: llmkick tasks refuse a run (missing local data files, no judge, a broken
    judge template, a bad knob) before the model is loaded — lm-eval loads the model first and builds the
    tasks afterwards."""
    from llmkick_tasks.preflight import install

    install(module)


def install_model_hand_off(module: ModuleType) -> None:
    """Wrap ``evaluate``: record the model it runs, for the judged tasks' chat format and MT-Bench's second
    turn (generated after the model's own first answer) — lm-eval never hands a task its model."""
    from llmkick_tasks.judge.chat import install

    install(module)


def quiet_task_warnings(_module: ModuleType) -> None:
    """One "custom kwargs go through --metadata" warning per run, not one per llmkick subtask (a logging
    filter on ``lm_eval.api.task``; the warning is logged by ``ConfigurableTask.download``)."""
    from llmkick_tasks.logs import quiet_repeated_task_warnings

    quiet_repeated_task_warnings()


class Patch:
    """One place where the plugin changes lm-eval: applied by ``install`` once ``after_import`` has run.

    ``target`` (``module:attribute.path``) is the lm-eval function the patch wraps or relies on and
    ``parameters`` the parameters of it that the patch uses; ``tests/test_boot.py`` checks both against the
    installed lm-eval.  ``why`` and ``replaced_by`` are the documentation.
    """

    def __init__(
        self,
        after_import: str,
        target: str,
        parameters: tuple[str, ...],
        install: Callable[[ModuleType], None],
        why: str,
        replaced_by: str,
    ) -> None:
        self.after_import, self.target, self.parameters = after_import, target, parameters
        self.install, self.why, self.replaced_by = install, why, replaced_by

    def __repr__(self) -> str:
        return f"Patch({self.target})"


PATCHES: tuple[Patch, ...] = (
    Patch(
        "lm_eval.models",
        "lm_eval.api.registry:model_registry.register",
        ("target",),
        register_models,
        "lm-eval 0.4.13 reads no entry points: `--model compressed-hf` must be in the registry",
        "the `lm_eval.models` entry points (lm-evaluation-harness#4013), already declared in pyproject.toml",
    ),
    Patch(
        "lm_eval.tasks.manager",
        "lm_eval.tasks.manager:TaskManager.__init__",
        ("include_path", "include_defaults"),
        patch_task_manager,
        "`--tasks llmkick...` without `--include_path`: every TaskManager also indexes llmkick_tasks/",
        "the `lm_eval.tasks` entry point (lm-evaluation-harness#4015); steps aside once lm-eval has it",
    ),
    Patch(
        "lm_eval.evaluator",
        "lm_eval.evaluator:simple_evaluate",
        ("model_args", "tasks", "task_manager", "metadata"),
        install_preflight,
        "refuse missing data files, a judged run without a judge, or bad knobs before the model loads",
        "a pre-run validation hook for tasks in lm-eval, or tasks built before the model is loaded",
    ),
    Patch(
        "lm_eval.evaluator",
        "lm_eval.evaluator:evaluate",
        ("lm",),
        install_model_hand_off,
        "the judged tasks' own chat format and MT-Bench's second turn need the running model",
        "lm-eval handing tasks the model (e.g. to build_all_requests); entry points do not",
    ),
    Patch(
        "lm_eval.api.task",
        "lm_eval.api.task:ConfigurableTask.download",
        (),
        quiet_task_warnings,
        "the custom-kwargs warning once per run, not once for each of the 117 llmkick subtasks",
        "lm-eval logging that warning once per run; cosmetic, entry points do not change it",
    ),
)

#: The patches by the lm-eval module whose import triggers them.
AFTER_IMPORT: dict[str, list[Callable[[ModuleType], None]]] = {}
for _patch in PATCHES:
    AFTER_IMPORT.setdefault(_patch.after_import, []).append(_patch.install)


def _run_after_import(name: str, module: ModuleType) -> None:
    for install_patch in AFTER_IMPORT[name]:
        try:
            install_patch(module)
        except Exception as error:
            _debug(f"hook {install_patch.__name__} for {name} failed: {error!r}")


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
