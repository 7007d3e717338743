"""The pull-request folder in an lm-eval source tree, without llmkick: lm-eval's own task tests pass there.

The folder (``llmkick upstream-tasks``) is copied to ``lm_eval/tasks/llmkick/`` of lm-eval's source
distribution (the sdist that ``test_lm_eval_task_tests.py`` downloads and caches), and lm-eval's unmodified
``tests/test_tasks.py`` runs in a subprocess started with ``python -S``: no site-packages ``.pth`` file is
read, so neither the editable llmkick install nor its plugin hook is there; ``PYTHONPATH`` is the lm-eval
tree, then the venv's site-packages for lm-eval's dependencies.  The data are local folders in the Hub's
layout (parquet per config and split, configs in the README), written from the shared data, and the copied
YAMLs' ``dataset_path`` points at them (only in this test's copy).

Marked ``lm_eval_tests``, as ``test_lm_eval_task_tests.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_lm_eval_task_tests import (
    CACHE,
    LIMIT,
    LM_EVAL_VERSION,
    SIZE_CHECK,
    lm_eval_sdist_file,
    run_lm_eval_task_tests,
)

from llmkick_models.workflow.cli import main
from llmkick_models.workflow.upstream_offline import local_hub, point_at_local_hub, without_llmkick_env
from llmkick_models.workflow.upstream_tasks import defined_names, write_upstream_folder

pytestmark = pytest.mark.lm_eval_tests


def lm_eval_tree(root: Path) -> Path:
    """lm-eval's package from its sdist (downloaded and cached once), extracted under ``root``."""
    lm_eval_sdist_file("pyproject.toml")  # downloads the sdist once, or skips saying why
    archive_path = sorted((CACHE / f"lm_eval-{LM_EVAL_VERSION}").glob("lm_eval-*.tar.gz"))[0]
    prefix = f"lm_eval-{LM_EVAL_VERSION}/lm_eval/"
    with tarfile.open(archive_path) as archive:
        members = [member for member in archive.getmembers() if member.name.startswith(prefix)]
        archive.extractall(root, members=members, filter="data")
    return root / f"lm_eval-{LM_EVAL_VERSION}"


def test_the_pull_request_folder_passes_lm_evals_task_tests_without_llmkick(
    shared_data: Path, tmp_path: Path
) -> None:
    tree = lm_eval_tree(tmp_path / "src")
    folder = tree / "lm_eval" / "tasks" / "llmkick"
    write_upstream_folder(folder)
    hubs, counts = local_hub(shared_data, tmp_path / "hub")
    point_at_local_hub(folder, hubs)
    tasks = sorted(name for name in counts if name in defined_names(folder))
    assert len(tasks) == 117, tasks

    env = without_llmkick_env(tree)
    probe = "import lm_eval, sys\ntry:\n import llmkick_tasks\nexcept ImportError:\n print(lm_eval.__file__)"
    seen = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert seen.stdout.strip() == str(tree / "lm_eval" / "__init__.py"), seen.stdout + seen.stderr

    source = lm_eval_sdist_file("tests/test_tasks.py")
    outcomes, output = run_lm_eval_task_tests(source, tasks, tmp_path, env, python=("-S",))
    failed = {name for name, outcome in outcomes.items() if outcome != "passed"}
    # The 4-question TriviaQA sample is below lm-eval's 10 documents: that check alone fails.
    expected = {f"{SIZE_CHECK}[{name}]" for name in tasks if counts[name] < LIMIT}
    assert expected == {f"{SIZE_CHECK}[llmkick_triviaqa_closed]", f"{SIZE_CHECK}[llmkick_triviaqa_open]"}
    assert failed == expected, f"unexpected outcomes {sorted(failed ^ expected)}:\n{output}"


def test_the_pull_request_folder_passes_lm_evals_lint(tmp_path: Path) -> None:
    """lm-eval's pre-commit lint on the folder: ruff with lm-eval's own rules, and codespell."""
    folder = tmp_path / "llmkick"
    write_upstream_folder(folder)
    config = tmp_path / "pyproject.toml"
    config.write_text(lm_eval_sdist_file("pyproject.toml"))
    for command in (
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(config), str(folder)],
        [sys.executable, "-m", "codespell_lib", "--check-filenames", "--check-hidden", str(folder)],
    ):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr


def test_upstream_score_runs_the_folder_without_llmkick_and_fills_its_results_table(
    shared_data: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """``llmkick upstream-score`` scores the folder's own tasks (lm-eval run with ``python -S -P``), and its
    results JSON fills the folder's README: documents counted, the local data named, the limit stated."""
    tasks = "llmkick_triviaqa,llmkick_mmlu_ll_virology,llmkick_mmlu_anatomy,llmkick_wikitext2_ppl_articles"
    lm_eval_args = ["--model", "hf", "--model_args", f"pretrained={tiny_llama_dir}", "--tasks", tasks]
    work = tmp_path / "work"
    assert (
        main(
            ["upstream-score", str(work), "--data_dir", str(shared_data), "--", *lm_eval_args, "--limit", "2"]
        )
        == 0
    )
    (results,) = (work / "results").rglob("results_*.json")
    data = json.loads(results.read_text())
    # The tasks came from the copied folder, not from the plugin: their YAML paths are in the tree.
    assert {name: config["dataset_path"] for name, config in data["configs"].items()} == {
        "llmkick_mmlu_anatomy": str(work / "hub" / "cais_mmlu"),
        "llmkick_mmlu_ll_virology": str(work / "hub" / "cais_mmlu"),
        "llmkick_triviaqa_closed": str(work / "hub" / "trivia_qa"),
        "llmkick_triviaqa_open": str(work / "hub" / "trivia_qa"),
        "llmkick_wikitext2_ppl_articles": str(work / "hub" / "wikitext"),
    }
    assert main(["upstream-tasks", str(tmp_path / "out"), "--results", str(results)]) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "**limit 2 per task: not the full data**" in readme and "**not read from the Hub**" in readme
    assert re.search(
        r"\| llmkick_triviaqa_closed \| exact_match \| [0-9.]+ \| [0-9.]+ \| 2 of 4 \| – \|", readme
    )
    assert re.search(
        r"\| llmkick_wikitext2_ppl_articles \| word_perplexity \| [0-9.]+ \| N/A \| 2 of 62 \|", readme
    )
