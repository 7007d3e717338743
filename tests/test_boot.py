"""The site-packages boot hook: registers compressed-hf and llmkick tasks, costs nothing, never raises."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest

from llmkick_models import _boot


def _fake_manager_module(source_marker: str = "") -> types.ModuleType:
    module = types.ModuleType("fake_manager")

    class TaskManager:
        def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None) -> None:
            self.include_path = include_path

    module.TaskManager = TaskManager
    module.__source_marker__ = source_marker
    return module


@pytest.fixture
def tasks_dir() -> str:
    path = _boot.llmkick_tasks_dir()
    assert path is not None and Path(path, "__init__.py").is_file()
    return path


def test_task_manager_gets_llmkick_tasks_first(tasks_dir: str) -> None:
    module = _fake_manager_module()
    _boot.patch_task_manager(module)
    assert module.TaskManager().include_path == [tasks_dir]
    assert module.TaskManager(include_path="/mine").include_path == [tasks_dir, "/mine"]
    assert module.TaskManager(None, ["/a", "/b"]).include_path == [tasks_dir, "/a", "/b"]  # positional
    assert module.TaskManager(include_path=[tasks_dir]).include_path == [tasks_dir]  # no duplicate
    assert module.TaskManager(include_defaults=False).include_path is None  # user opted out


def test_patch_is_idempotent(tasks_dir: str) -> None:
    module = _fake_manager_module()
    _boot.patch_task_manager(module)
    _boot.patch_task_manager(module)
    assert module.TaskManager().include_path == [tasks_dir]


def test_patch_skipped_when_lm_eval_discovers_plugin_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _fake_manager_module()
    monkeypatch.setattr(_boot, "lm_eval_discovers_plugin_tasks", lambda _module: True)
    _boot.patch_task_manager(module)
    assert module.TaskManager().include_path is None


def test_discovery_detection_reads_the_manager_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_style = tmp_path / "new_manager.py"
    new_style.write_text('from importlib.metadata import entry_points\nGROUP = "lm_eval.tasks"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import new_manager

    assert _boot.lm_eval_discovers_plugin_tasks(new_manager)
    import lm_eval.tasks.manager

    assert not _boot.lm_eval_discovers_plugin_tasks(lm_eval.tasks.manager)  # 0.4.13 has no discovery


def test_failing_callback_never_breaks_the_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "watched_module.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[str] = []

    def explode(module: types.ModuleType) -> None:
        calls.append(module.__name__)
        raise RuntimeError("boom")

    monkeypatch.setitem(_boot.AFTER_IMPORT, "watched_module", [explode])
    import watched_module

    assert watched_module.VALUE == 42
    assert calls == ["watched_module"]
    monkeypatch.delitem(sys.modules, "watched_module")


def test_real_lm_eval_sees_model_and_tasks(tasks_dir: str) -> None:
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from llmkick_models.compressed_hf import CompressedHFLM

    assert get_model("compressed-hf") is CompressedHFLM
    assert get_model("hf").__name__ == "HFLM"  # built-in models still load
    assert TaskManager().include_path == [tasks_dir]  # indexes lm-eval's built-ins and ours


def test_start_up_imports_nothing_heavy() -> None:
    code = (
        "import sys; from llmkick_models._boot import AfterImportFinder;"
        "print(any(isinstance(f, AfterImportFinder) for f in sys.meta_path),"
        " 'lm_eval' in sys.modules, 'torch' in sys.modules, 'typing' in sys.modules)"
    )
    # -S would skip site (and our .pth); run normally so the .pth is what installs the finder.
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["True", "False", "False", "False"]


def test_per_task_custom_kwargs_warning_shows_once(caplog: pytest.LogCaptureFixture) -> None:
    import lm_eval.api.task  # noqa: F401  (the boot hook installs the filter when this module is imported)

    from llmkick_tasks.logs import OncePerRun

    logger = logging.getLogger("lm_eval.api.task")
    (once,) = [f for f in logger.filters if isinstance(f, OncePerRun)]
    once.seen.clear()  # an earlier test in this process may have shown it already
    text = ": Custom kwargs can be passed to `--metadata` in console (as json string) or to the TaskManager."
    with caplog.at_level(logging.WARNING, logger="lm_eval.api.task"):
        for task in ("llmkick_mmlu_anatomy", "llmkick_mmlu_astronomy", "llmkick_freebaseqa"):
            logger.warning(task + text)
        logger.warning("llmkick_mmlu_anatomy: some other warning")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Custom kwargs" in m for m in messages) == 1
    assert "llmkick_mmlu_anatomy: some other warning" in messages


def _resolve(target: str) -> object:
    """The object ``module:attribute.path`` names, with every wrapper of ours unwrapped."""
    import importlib
    import inspect

    module_name, _, path = target.partition(":")
    value: object = importlib.import_module(module_name)
    for attribute in path.split("."):
        assert hasattr(value, attribute), f"lm-eval no longer has {target} ({attribute!r} missing)"
        value = getattr(value, attribute)
    return inspect.unwrap(value) if callable(value) else value


@pytest.mark.parametrize("patch", _boot.PATCHES, ids=lambda patch: patch.target)
def test_each_patched_lm_eval_function_still_exists_with_the_parameters_the_patch_uses(
    patch: _boot.Patch,
) -> None:
    import importlib
    import inspect

    importlib.import_module(patch.after_import)  # the module whose import triggers the patch
    function = _resolve(patch.target)
    parameters = inspect.signature(function).parameters
    missing = [name for name in patch.parameters if name not in parameters]
    assert not missing, f"lm-eval's {patch.target} lost the parameters {missing} that {patch} relies on"
    assert patch.why and patch.replaced_by


def test_the_filtered_warning_is_still_logged_by_lm_eval() -> None:
    import inspect

    from llmkick_tasks.logs import REPEATED_TASK_WARNINGS

    (patch,) = [p for p in _boot.PATCHES if p.install is _boot.quiet_task_warnings]
    source = inspect.getsource(_resolve(patch.target))
    for fragment in REPEATED_TASK_WARNINGS:
        assert fragment in source, f"lm-eval's {patch.target} no longer logs {fragment!r}: drop the filter"


def test_every_patch_is_installed_in_lm_eval(tasks_dir: str) -> None:
    import lm_eval.evaluator
    import lm_eval.tasks.manager

    from llmkick_tasks import preflight
    from llmkick_tasks.judge import chat

    assert getattr(lm_eval.evaluator.simple_evaluate, preflight.INSTALLED_FLAG, False)
    assert getattr(lm_eval.evaluator.evaluate, chat.INSTALLED_FLAG, False)
    assert getattr(lm_eval.tasks.manager.TaskManager.__init__, _boot._PATCHED_FLAG, False)
    assert set(_boot.AFTER_IMPORT) == {p.after_import for p in _boot.PATCHES}


def test_models_match_the_declared_entry_points() -> None:
    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert declared["project"]["entry-points"]["lm_eval.models"] == _boot.MODELS
