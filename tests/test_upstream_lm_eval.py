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

import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import datasets
import pytest
from test_lm_eval_task_tests import (
    CACHE,
    LIMIT,
    LM_EVAL_VERSION,
    SIZE_CHECK,
    lm_eval_sdist_file,
    run_lm_eval_task_tests,
)
from test_tasks_hub import write_hub_folder

from llmkick_models.workflow.upstream_tasks import defined_names, write_upstream_folder
from llmkick_tasks.mmlu.utils import FEATURES as MMLU_FEATURES
from llmkick_tasks.mmlu.utils import SUBJECTS, parse_csv
from llmkick_tasks.triviaqa.release import release_dataset
from llmkick_tasks.wikitext2.data import local_rows, split_articles

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


def local_hub(shared: Path, root: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """Local Hub-layout copies of the folder's datasets (Hub id -> folder), and each task's document count."""
    mmlu = {
        subject: {
            split: datasets.Dataset.from_list(
                parse_csv(shared / "mmlu" / split / f"{subject}_{split}.csv", subject), features=MMLU_FEATURES
            )
            for split in ("test", "dev")
        }
        for subject in SUBJECTS
    }
    sample = shared / "triviaqa_sample"
    trivia = {
        "rc": release_dataset(sample, "dev", True),
        "rc.nocontext": release_dataset(sample, "dev", False),
    }
    wikitext = local_rows(shared / "wikitext2")
    hubs = {
        "cais/mmlu": write_hub_folder(root / "cais_mmlu", mmlu),
        "mandarjoshi/trivia_qa": write_hub_folder(
            root / "trivia_qa", {name: {"validation": rows} for name, rows in trivia.items()}
        ),
        "Salesforce/wikitext": write_hub_folder(
            root / "wikitext", {"wikitext-2-raw-v1": {"test": datasets.Dataset.from_dict({"text": wikitext})}}
        ),
    }
    counts = {"llmkick_triviaqa_closed": len(trivia["rc"]), "llmkick_triviaqa_open": len(trivia["rc"])}
    counts["llmkick_wikitext2_ppl_articles"] = len(split_articles(wikitext))
    for subject, splits in mmlu.items():
        counts[f"llmkick_mmlu_{subject}"] = counts[f"llmkick_mmlu_ll_{subject}"] = len(splits["test"])
    return hubs, counts


def without_project_python(tree: Path) -> dict[str, str]:
    """The environment of a ``python -S`` that sees the lm-eval tree and the venv's packages, not llmkick."""
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(tree), *dict.fromkeys(site)]), PYTHONNOUSERSITE="1")
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    # A cache of its own: `datasets` reuses a cached build of another local folder with the same name and
    # config (seen with test_tasks_hub's 12-row "wikitext" folder).
    env["HF_DATASETS_CACHE"] = str(tree.parent / "datasets_cache")
    return env


def test_the_pull_request_folder_passes_lm_evals_task_tests_without_llmkick(
    shared_data: Path, tmp_path: Path
) -> None:
    tree = lm_eval_tree(tmp_path / "src")
    folder = tree / "lm_eval" / "tasks" / "llmkick"
    write_upstream_folder(folder)
    hubs, counts = local_hub(shared_data, tmp_path / "hub")
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".py" and path.name != "README.md":
            text = path.read_text(encoding="utf-8")
            for hub_id, local in hubs.items():
                text = text.replace(f"dataset_path: {hub_id}\n", f"dataset_path: {local}\n")
            path.write_text(text, encoding="utf-8")
    tasks = sorted(name for name in counts if name in defined_names(folder))
    assert len(tasks) == 117, tasks

    env = without_project_python(tree)
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
