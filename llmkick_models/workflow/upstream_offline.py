"""The pull-request folder scored offline, without llmkick: the Hub datasets its YAMLs name are rebuilt from a
release-layout data dir as local folders in the Hub's layout, a copy of the folder points at them, and lm-eval
runs from a source tree holding that copy in a ``python -S -P`` process (no ``.pth`` file read, so neither the
editable llmkick install nor its plugin hook is importable).  lm-eval's task tests and the results run of
``llmkick upstream-score`` both use it, so the folder that is tested is the folder that is scored.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import datasets

from llmkick_models.workflow.upstream_tasks import defined_names, tag_names, write_upstream_folder
from llmkick_tasks.data_dir import benchmark_dir
from llmkick_tasks.errors import UserError
from llmkick_tasks.mmlu.utils import FEATURES as MMLU_FEATURES
from llmkick_tasks.mmlu.utils import SUBJECTS, parse_csv
from llmkick_tasks.triviaqa.release import release_dataset
from llmkick_tasks.wikitext2.data import local_rows, split_articles


def write_hub_folder(root: Path, configs: dict[str, dict[str, datasets.Dataset]]) -> Path:
    """A dataset folder in the Hub's layout: ``<config>/<split>-00000-of-00001.parquet`` + README configs."""
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (root / config).mkdir(parents=True, exist_ok=True)
            rows.to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
            card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join([*card, "---", ""]))
    return root


def local_hub(data_dir: Path, root: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """Hub-layout copies under ``root`` of the folder's datasets, read from ``data_dir`` (release layout):
    (Hub id -> local folder, task -> its number of documents).  TriviaQA's validation is whatever the data dir
    holds of the dev files (offline, a small sample)."""
    mmlu = {
        subject: {
            split: datasets.Dataset.from_list(
                parse_csv(data_dir / "mmlu" / split / f"{subject}_{split}.csv", subject),
                features=MMLU_FEATURES,
            )
            for split in ("test", "dev")
        }
        for subject in SUBJECTS
    }
    trivia_dir = benchmark_dir(data_dir, "triviaqa")
    trivia = {
        "rc": release_dataset(trivia_dir, "dev", True),
        "rc.nocontext": release_dataset(trivia_dir, "dev", False),
    }
    wikitext = local_rows(data_dir / "wikitext2")
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


def point_at_local_hub(folder: Path, hubs: dict[str, Path]) -> None:
    """Rewrite, in this copy of the folder, every ``dataset_path: <Hub id>`` to its local folder."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix != ".py" and path.name != "README.md":
            text = path.read_text(encoding="utf-8")
            for hub_id, local in hubs.items():
                text = text.replace(f"dataset_path: {hub_id}\n", f"dataset_path: {local}\n")
            path.write_text(text, encoding="utf-8")


def copy_installed_lm_eval(root: Path) -> Path:
    """A source tree under ``root`` holding a copy of the installed ``lm_eval`` package; returns the tree."""
    import lm_eval

    shutil.copytree(
        Path(lm_eval.__file__).parent, root / "lm_eval", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def without_llmkick_env(tree: Path) -> dict[str, str]:
    """The environment of a ``python -S`` that sees the lm-eval ``tree`` and this venv's packages, not llmkick
    (offline, with a datasets cache of its own beside the tree)."""
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(tree), *dict.fromkeys(site)]), PYTHONNOUSERSITE="1")
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    # `datasets` reuses a cached build of another local folder with the same name and config.
    env["HF_DATASETS_CACHE"] = str(tree.parent / "datasets_cache")
    return env


# MMLU's per-subject tasks and category groups (left out of the names listed in an error).
SUBJECT_OR_CATEGORY = re.compile(r"llmkick_mmlu_(?!ll$)")
# lm-eval options the scoring run sets itself (where the folder is, where results go).
OWN_OPTIONS = ("--include_path", "--output_path", "-o")


def check_lm_eval_args(lm_eval_args: list[str], names: set[str]) -> None:
    """Refuse lm-eval arguments the offline run cannot take: no ``--model``/``--tasks``, options it sets
    itself, or a task or group that the folder does not define (named, with what it defines)."""
    for option in OWN_OPTIONS:
        if any(arg == option or arg.startswith(f"{option}=") for arg in lm_eval_args):
            raise UserError(f"lm-eval argument {option}: set by llmkick upstream-score itself; leave it out")
    values: dict[str, str] = {}
    for index, arg in enumerate(lm_eval_args):
        for option in ("--model", "--tasks"):
            if arg == option and index + 1 < len(lm_eval_args):
                values[option] = lm_eval_args[index + 1]
            elif arg.startswith(f"{option}="):
                values[option] = arg.partition("=")[2]
    for option in ("--model", "--tasks"):
        if not values.get(option):
            raise UserError(f"lm-eval argument {option} is required after `--` (e.g. --model hf --tasks ...)")
    unknown = [name for name in values["--tasks"].split(",") if name not in names]
    if unknown:
        groups = ", ".join(sorted(name for name in names if not SUBJECT_OR_CATEGORY.match(name)))
        raise UserError(
            f"lm-eval argument --tasks: {', '.join(unknown)} not in the pull-request folder; it defines "
            f"{groups} and the MMLU subject tasks and categories"
        )


def score_offline(work: Path, data_dir: Path, lm_eval_args: list[str]) -> Path:
    """Score the pull-request folder offline, without llmkick importable: write the folder into a copy of the
    installed lm-eval under ``work/tree``, its datasets from ``data_dir`` under ``work/hub``, and run
    ``python -S -P -m lm_eval`` with ``lm_eval_args`` and ``--output_path work/results``.  Returns the results
    JSON written.  Bad arguments are refused before anything is written."""
    work, data_dir = work.resolve(), data_dir.resolve()
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise UserError(f"WORK {work} exists and is not an empty folder; give a new or empty folder")
    if not data_dir.is_dir():
        raise UserError(f"--data_dir {data_dir}: not a folder (a data dir in the release layout)")
    with tempfile.TemporaryDirectory() as scratch:  # the folder's names are checked before work is made
        folder = Path(scratch) / "llmkick"
        write_upstream_folder(folder)
        check_lm_eval_args(lm_eval_args, set(defined_names(folder)) | tag_names(folder))
        try:  # a data dir missing a file: nothing is left half-built in work
            hubs, _ = local_hub(data_dir, work / "hub")
            tree = copy_installed_lm_eval(work / "tree")
            shutil.copytree(folder, tree / "lm_eval" / "tasks" / "llmkick")
            point_at_local_hub(tree / "lm_eval" / "tasks" / "llmkick", hubs)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    # -P: the current folder (a checkout of llmkick, say) is not put on sys.path, yet stays the working
    # folder, so relative paths in the lm-eval arguments mean what they mean to the caller.
    command = [
        sys.executable,
        "-S",
        "-P",
        "-m",
        "lm_eval",
        *lm_eval_args,
        "--output_path",
        str(work / "results"),
    ]
    print("llmkick upstream-score: running " + " ".join(command), flush=True)
    finished = subprocess.run(command, env=without_llmkick_env(tree))
    if finished.returncode != 0:
        raise UserError(f"lm-eval exited with status {finished.returncode} (its output is above)")
    results = sorted((work / "results").rglob("results_*.json"))
    if not results:
        raise UserError(f"lm-eval wrote no results_*.json under {work / 'results'}")
    return results[-1]
