"""The pre-flight resolves every requested llmkick task's local data files before the model is created."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lm_eval.evaluator
import pytest
from judge_fixtures import write_judged_data
from task_fixtures import task_manager

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_tasks import preflight
from llmkick_tasks.data_dir import DataLayoutError

JUDGE = {"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m"}  # valid settings; never contacted


class ModelReached(Exception):
    """Raised by the spied model class: the pre-flight let the run through to the model."""


@pytest.fixture
def model_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every construction of the ``compressed-hf`` model class, which stops the run right there."""
    constructed: list[dict[str, Any]] = []

    def spy(self: Any, **kwargs: Any) -> None:
        constructed.append(kwargs)
        raise ModelReached

    monkeypatch.setattr(CompressedHFLM, "__init__", spy)
    return constructed


@pytest.fixture
def data_dir(task_data_dir: Path, tmp_path: Path) -> Path:
    """A complete copy of every benchmark's fixture data (exact-match, WikiText-2, judged), to break."""
    root = shutil.copytree(task_data_dir, tmp_path / "data")
    (root / "wikitext2").mkdir()
    (root / "wikitext2" / "wiki.test.raw").write_text(" \n = Title = \n \n Some text .\n")
    write_judged_data(root)
    return root


def run(tasks: list[str], metadata: dict[str, Any], model_dir: Path) -> None:
    """``lm_eval``'s (boot-patched) ``simple_evaluate`` with the compressed-hf model, as the CLI calls it."""
    assert getattr(lm_eval.evaluator.simple_evaluate, preflight.INSTALLED_FLAG, False)
    lm_eval.evaluator.simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={model_dir},method=magnitude,sparsity=0.5",
        tasks=tasks,
        task_manager=task_manager(metadata),
    )


# (file to remove under the data dir, tasks requested, extra metadata, error text)
BROKEN = [
    ("freebaseqa/FreebaseQA-eval.json", ["llmkick_exact_match"], {},
     "no file for the eval split (.json/.tab/.txt; the folder has train, dev; evaluate another with "
     "--metadata '{\"freebaseqa_split\": ...}')"),
    ("freebaseqa/FreebaseQA-train.json", ["llmkick_freebaseqa"], {"freebaseqa_split": "train"},
     "no file for the train split"),
    # the paper task evaluates train through its YAML's dataset_kwargs (release_split: train)
    ("freebaseqa/FreebaseQA-train.json", ["llmkick_freebaseqa_paper"], {}, "no file for the train split"),
    ("mmlu/dev/anatomy_dev.csv", ["llmkick_mmlu"], {}, "missing MMLU file for subject 'anatomy'"),
    ("triviaqa/evidence/web", ["llmkick_triviaqa_open"], {}, "evidence folder missing (open book)"),
    ("triviaqa/qa", ["llmkick_triviaqa_closed"], {}, "no TriviaQA rc question file for the dev split"),
    ("wikitext2/wiki.test.raw", ["llmkick_wikitext2_ppl"], {}, "no WikiText-2 test file"),
    ("cnn_dailymail/mid", ["llmkick_summarization"], JUDGE, "missing length-bin folder"),
    ("vicuna80/question.jsonl", ["llmkick_judged"], JUDGE, "missing question file"),
    ("mt_bench/question.jsonl", ["llmkick_mtbench"], JUDGE, "missing question file"),
]  # fmt: skip


@pytest.mark.parametrize(("missing", "tasks", "metadata", "message"), BROKEN)
def test_missing_data_file_fails_before_the_model_is_constructed(
    data_dir: Path,
    tiny_llama_dir: Path,
    model_spy: list[dict[str, Any]],
    missing: str,
    tasks: list[str],
    metadata: dict[str, Any],
    message: str,
) -> None:
    target = data_dir / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataLayoutError) as error:
        run(tasks, {"data_dir": str(data_dir), **metadata}, tiny_llama_dir)
    assert message in str(error.value)
    assert model_spy == []  # refused before the model (and its compression) was created


def test_complete_data_dir_passes_the_preflight(
    data_dir: Path, tiny_llama_dir: Path, model_spy: list[dict[str, Any]]
) -> None:
    tasks = ["llmkick_exact_match", "llmkick_wikitext2_ppl", "llmkick_judged"]
    with pytest.raises(ModelReached):
        run(tasks, {"data_dir": str(data_dir), **JUDGE}, tiny_llama_dir)
    assert len(model_spy) == 1


def test_tasks_without_a_data_dir_are_not_checked(
    tiny_llama_dir: Path, model_spy: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkick_tasks import hub_task
    from llmkick_tasks.freebaseqa import loader

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the pre-flight must not download")

    monkeypatch.delenv("LLMKICK_DATA_DIR", raising=False)
    monkeypatch.setattr(hub_task, "read_hub_split", no_download)
    monkeypatch.setattr(loader, "download_file", no_download)
    with pytest.raises(ModelReached):
        run(["llmkick_exact_match", "llmkick_wikitext2_ppl"], {}, tiny_llama_dir)
    assert len(model_spy) == 1


def test_loader_and_preflight_share_the_resolver(data_dir: Path) -> None:
    """The loader raises the very error the pre-flight raised (one resolver, not two copies)."""
    from llmkick_tasks.freebaseqa.loader import load_freebaseqa

    (data_dir / "freebaseqa" / "FreebaseQA-eval.json").unlink()
    metadata = {"data_dir": str(data_dir)}
    with pytest.raises(DataLayoutError) as preflight_error:
        preflight.check_requested_tasks(["llmkick_freebaseqa"], task_manager(metadata))
    with pytest.raises(DataLayoutError) as loader_error:
        load_freebaseqa(**metadata)
    assert str(preflight_error.value) == str(loader_error.value)
