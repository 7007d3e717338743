"""lm-eval's own task tests, its unmodified ``tests/test_tasks.py``, on every llmkick exact-match task YAML.

lm-eval's CI runs that file on every changed task YAML; a task bound for lm-eval must pass it.  It runs as
lm-eval's CI does: tasks built by a bare ``TaskManager()``, no model, no judge, no metadata, here offline
against the data dir (``$LLMKICK_DATA_DIR``).  The file comes from lm-eval's source distribution for the
installed version, downloaded once by pip (the only network use) into a cache; ``tests/utils.py``, which
the sdist does not ship, is replaced by our shim (``tests/lm_eval_shim/utils.py``).  Nothing of lm-eval's
is copied into this repository.

Marked ``lm_eval_tests`` (``python -m pytest -m lm_eval_tests``; CI runs it as its own step).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from task_fixtures import PROJECT_ROOT, TASKS_DIR, task_manager, write_freebaseqa

from llmkick_tasks.data_dir import DataLayoutError

pytestmark = pytest.mark.lm_eval_tests

LM_EVAL_VERSION = importlib.metadata.version("lm_eval")
CACHE = Path(os.environ.get("LLMKICK_TEST_CACHE") or Path.home() / ".cache" / "llmkick-tests")
SHIM = Path(__file__).parent / "lm_eval_shim" / "utils.py"
# lm-eval's `limit` fixture: test_construct_requests asserts that this many documents give requests.
LIMIT = 10
# Too-small data fails this check only; every other check must pass.
SIZE_CHECK = "test_construct_requests"


class TaskNotTested(UserWarning):
    """A task that lm-eval's tests could not run on: its data is not in the data dir."""


def lm_eval_sdist_file(member: str) -> str:
    """``member`` (e.g. ``tests/test_tasks.py``) of the installed lm-eval's sdist, downloaded once."""
    folder = CACHE / f"lm_eval-{LM_EVAL_VERSION}"
    sdists = sorted(folder.glob("lm_eval-*.tar.gz"))
    if not sdists:
        command = [sys.executable, "-m", "pip", "download", f"lm_eval=={LM_EVAL_VERSION}", "--no-deps"]
        command += ["--no-binary", ":all:", "--quiet", "--dest", str(folder)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            problem = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            problem = "timed out after 600 s"
        sdists = sorted(folder.glob("lm_eval-*.tar.gz"))
        if not sdists:
            pytest.skip(
                f"lm-eval's own checks did not run: lm_eval {LM_EVAL_VERSION}'s source distribution "
                f"could not be downloaded into {folder} ({problem})"
            )
    with tarfile.open(sdists[0]) as archive:
        extracted = archive.extractfile(f"lm_eval-{LM_EVAL_VERSION}/{member}")
        assert extracted is not None, f"{sdists[0]} has no {member}"
        return extracted.read().decode("utf-8")


# Tasks lm-eval's tests cannot check without a model, and why.
NEEDS_THE_MODEL = {"llmkick_wikitext2_ppl": "its documents are token windows of the model's tokenizer"}


def exact_match_tasks() -> list[str]:
    """Every llmkick task YAML that needs neither a judge nor the model: the exact-match tasks and the
    article perplexity (not :data:`NEEDS_THE_MODEL`)."""
    names = []
    for name, entry in task_manager({}).task_index.items():
        cfg = entry.cfg or {}
        in_tree = entry.yaml_path is not None and TASKS_DIR in Path(entry.yaml_path).resolve().parents
        judged = (cfg.get("metadata") or {}).get("llmkick_judged")
        if in_tree and "task" in cfg and "group" not in cfg and not judged and name not in NEEDS_THE_MODEL:
            names.append(name)
    return sorted(names)


def offline_data_dir(shared_data: Path, root: Path) -> Path:
    """The real offline data, but FreebaseQA from the hermetic fixture: the real offline copy has only dev,
    and the tasks evaluate eval (``llmkick_freebaseqa``) and train (``llmkick_freebaseqa_paper``)."""
    root.mkdir()
    for folder in shared_data.iterdir():
        if folder.is_dir() and folder.name != "freebaseqa":
            (root / folder.name).symlink_to(folder)
    write_freebaseqa(root)
    return root


def run_lm_eval_task_tests(
    source: str, tasks: list[str], tmp_path: Path, env: dict[str, str], python: tuple[str, ...] = ()
) -> tuple[dict[str, str], str]:
    """Run lm-eval's ``tests/test_tasks.py`` (``source``) on ``tasks`` in a subprocess (``python``: options
    of the interpreter); returns each check's outcome (passed, failure, error, skipped) and the output."""
    package = tmp_path / "lm_eval_task_tests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "test_tasks.py").write_text(source)
    shutil.copy(SHIM, package / "utils.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of this project's pytest options
    junit = tmp_path / "junit.xml"
    env = {**env, "LLMKICK_LM_EVAL_TASKS": ",".join(tasks)}
    # Only the tests parametrized over the given tasks; test_tasks.py's other test checks lm-eval's own
    # fda/swde/squad_completion classes.
    command = [sys.executable, *python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-c", str(tmp_path / "pytest.ini"), str(package / "test_tasks.py")]
    command += ["-k", "TestNewTasksElseDefault", f"--junitxml={junit}"]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    output = (run.stdout + run.stderr)[-6000:]
    assert junit.is_file(), f"lm-eval's task tests did not run:\n{output}"
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    assert {name.split("[", 1)[1].rstrip("]") for name in outcomes} == set(tasks), output
    return outcomes, output


def test_lm_eval_task_tests_pass_on_the_exact_match_tasks(shared_data: Path, tmp_path: Path) -> None:
    source = lm_eval_sdist_file("tests/test_tasks.py")
    data_dir = offline_data_dir(shared_data, tmp_path / "data")
    manager = task_manager({"data_dir": str(data_dir)})
    tested, small, missing = [], [], {}
    for name in exact_match_tasks():
        try:
            task = manager.load([name])["tasks"][name]
        except DataLayoutError as error:  # the data dir lacks this task's split: this task alone
            missing[name] = str(error).splitlines()[0]
            continue
        tested.append(name)
        if len(task.eval_docs) < LIMIT:
            small.append(name)
    for name, reason in missing.items():
        warnings.warn(f"{name} not tested by lm-eval's task tests: {reason}", TaskNotTested, stacklevel=1)
    assert len(tested) > 100, f"too few tasks could be built from {data_dir}: {missing}"

    env = {
        **os.environ,
        "LLMKICK_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    outcomes, output = run_lm_eval_task_tests(source, tested, tmp_path, env)
    failed = {name for name, outcome in outcomes.items() if outcome != "passed"}
    # Data too small for lm-eval's limit of 10 documents (the 4-question TriviaQA sample, the 8 eval and 3
    # train questions of the FreebaseQA fixture): expected to fail the request-count check, nothing else.
    expected = {f"{SIZE_CHECK}[{name}]" for name in small}
    assert failed == expected, f"unexpected outcomes {sorted(failed ^ expected)}:\n{output}"


def test_lm_eval_lint_rules_pass_on_llmkick_tasks(tmp_path: Path) -> None:
    """lm-eval's pre-commit lint: ruff with lm-eval's rules (its pyproject.toml) and codespell.

    Two of lm-eval's isort settings are replaced by this repository's, as they depend on where the code
    lives: ``lm_eval`` is third-party here (first-party inside lm-eval), and blank lines after imports
    follow this repository's ruff format (lm-eval asks for two).  lm-eval's ``ruff format`` (line length
    88) is not applied: this repository formats with 110.
    """
    config = tmp_path / "pyproject.toml"  # ruff reads any other name as a ruff.toml
    config.write_text(lm_eval_sdist_file("pyproject.toml"))
    ruff = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(config)]
    ruff += ["--config", "lint.isort.known-first-party=['llmkick_models', 'llmkick_tasks']"]
    ruff += ["--config", "lint.isort.lines-after-imports=-1", "--output-format", "concise", str(TASKS_DIR)]
    result = subprocess.run(ruff, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    codespell = [sys.executable, "-m", "codespell_lib", "--check-filenames", "--check-hidden", str(TASKS_DIR)]
    result = subprocess.run(codespell, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
