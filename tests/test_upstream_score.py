"""``llmkick upstream-score``: its arguments are refused before anything is written or run (the run itself,
in an lm-eval tree without llmkick, is in ``test_upstream_lm_eval.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkick_models.workflow.cli import UserErrorExit, main
from llmkick_models.workflow.upstream_offline import check_lm_eval_args
from llmkick_models.workflow.upstream_tasks import defined_names, tag_names, write_upstream_folder


@pytest.fixture(scope="module")
def folder_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    folder = tmp_path_factory.mktemp("folder") / "llmkick"
    write_upstream_folder(folder)
    return set(defined_names(folder)) | tag_names(folder)


def test_the_folders_tags_and_groups_are_accepted(folder_names: set[str]) -> None:
    assert {"llmkick_triviaqa", "llmkick_closed_book", "llmkick_perplexity"} <= folder_names
    for tasks in ("llmkick_exact_match", "llmkick_triviaqa,llmkick_mmlu_ll_virology", "llmkick_mmlu_stem"):
        check_lm_eval_args(["--model", "hf", f"--tasks={tasks}"], folder_names)


@pytest.mark.parametrize(
    ("lm_eval_args", "message"),
    [
        (["--tasks", "llmkick_mmlu"], "lm-eval argument --model is required after `--`"),
        (["--model", "hf"], "lm-eval argument --tasks is required after `--`"),
        (
            ["--model", "hf", "--tasks", "llmkick_freebaseqa,llmkick_mmlu"],
            "lm-eval argument --tasks: llmkick_freebaseqa not in the pull-request folder; it defines "
            "llmkick_closed_book, llmkick_exact_match, llmkick_mmlu, llmkick_mmlu_ll, llmkick_paper,",
        ),
        (
            ["--model", "hf", "--tasks", "llmkick_mmlu", "--output_path", "x"],
            "lm-eval argument --output_path: set by llmkick upstream-score itself",
        ),
        (
            ["--model", "hf", "--tasks", "llmkick_mmlu", "--include_path=x"],
            "lm-eval argument --include_path: set by llmkick upstream-score itself",
        ),
    ],
)
def test_bad_lm_eval_arguments_are_refused_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lm_eval_args: list[str], message: str
) -> None:
    work = tmp_path / "work"
    with pytest.raises(UserErrorExit):
        main(["upstream-score", str(work), "--data_dir", str(tmp_path), "--", *lm_eval_args])
    assert message in capsys.readouterr().err
    assert not work.exists()  # no tree copied, no dataset written


def test_a_missing_data_dir_and_a_used_work_dir_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--", "--model", "hf", "--tasks", "llmkick_mmlu"]
    with pytest.raises(UserErrorExit):
        main(["upstream-score", str(tmp_path / "work"), "--data_dir", str(tmp_path / "nowhere"), *args])
    assert f"--data_dir {tmp_path / 'nowhere'}: not a folder" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(UserErrorExit):
        main(["upstream-score", str(tmp_path / "used"), "--data_dir", str(tmp_path), *args])
    assert f"WORK {tmp_path / 'used'} exists and is not an empty folder" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "used").iterdir()] == ["keep.txt"]


def test_a_data_dir_missing_files_leaves_nothing_half_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(UserErrorExit):
        lm_eval_args = ["--model", "hf", "--tasks", "llmkick_mmlu"]
        main(
            [
                "upstream-score",
                str(tmp_path / "work"),
                "--data_dir",
                str(tmp_path / "data"),
                "--",
                *lm_eval_args,
            ]
        )
    assert "Expected the mmlu data in its original release layout" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
