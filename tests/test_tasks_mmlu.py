"""MMLU: CSV loading, generated task files, the paper's 5-shot prompt, exact scores of both protocols."""

from __future__ import annotations

from pathlib import Path

import pytest
from task_fixtures import MMLU_LETTERS, MMLU_TEST_ROWS, ScriptedLM, evaluate, mmlu_gold, task_manager

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.mmlu import _generate_configs, utils

SUBJECT_INDEX = {subject: index for index, subject in enumerate(utils.SUBJECTS)}


def test_subjects_and_categories() -> None:
    # Hendrycks et al.'s categories.py (used by LLM-KICK); note anatomy is "health" -> other.
    counts = {category: list(utils.SUBJECTS.values()).count(category) for category in utils.CATEGORIES}
    assert counts == {"stem": 18, "humanities": 13, "social_sciences": 12, "other": 14}
    assert utils.SUBJECTS["anatomy"] == "other" and utils.SUBJECTS["econometrics"] == "social_sciences"


def test_generated_task_files_are_up_to_date() -> None:
    expected = _generate_configs.expected_files()
    for path, content in expected.items():
        assert path.is_file(), f"{path} missing: run python -m llmkick_tasks.mmlu._generate_configs"
        assert path.read_text(encoding="utf-8") == content, f"{path} is stale: re-run the generator"
    on_disk = {
        p for folder in _generate_configs.PROTOCOLS for p in (_generate_configs.HERE / folder).glob("*.yaml")
    }
    assert on_disk == set(expected)


def test_csv_parsing_keeps_quoted_commas_and_newlines(task_data_dir: Path) -> None:
    docs = utils.parse_csv(task_data_dir / "mmlu" / "test" / "anatomy_test.csv", "anatomy")
    index = SUBJECT_INDEX["anatomy"]
    assert docs[1] == {
        "question": "anatomy test question 1, which option?\n(one line more)",
        "choices": ["option a of 1", "option b of 1", "option c of 1", "option d of 1"],
        "answer": mmlu_gold(index, 1),
        "subject": "anatomy",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q,a,b,c,d\n", "row 1 is not question,A,B,C,D,answer"),
        ("q,a,b,c,d,E\n", "row 1 is not question,A,B,C,D,answer"),
        ("", "empty MMLU file"),
        (b"\xff\xfe,a,b,c,d,A\n", "cannot read"),
    ],
)
def test_malformed_csv_names_the_path_and_layout(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "anatomy_test.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataLayoutError) as error:
        utils.parse_csv(path, "anatomy")
    assert message in str(error.value) and str(path) in str(error.value)
    assert "mmlu/test/<subject>_test.csv" in str(error.value)


def test_missing_subject_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    with pytest.raises(
        DataLayoutError, match=r"missing MMLU file for subject 'virology'.*virology_test\.csv"
    ):
        task_manager({"data_dir": str(tmp_path)}).load(["llmkick_mmlu_virology"])


def test_paper_prompt_is_five_shot_from_dev(task_data_dir: Path) -> None:
    lm = ScriptedLM(generate=lambda request: " A")
    evaluate(lm, ["llmkick_mmlu_machine_learning"], {"data_dir": str(task_data_dir)}, limit=1)
    [prompt] = lm.prompts["llmkick_mmlu_machine_learning"]
    index = SUBJECT_INDEX["machine_learning"]
    shots = "".join(
        f"machine_learning dev question {row}, which option?\n(one line more)\n"
        + "".join(f"{letter}. option {c} of {row}\n" for letter, c in zip("ABCD", "abcd", strict=True))
        + f"Answer: {MMLU_LETTERS[mmlu_gold(index, row)]}\n\n"
        for row in range(5)
    )
    question = "machine_learning test question 0, which option?\n(one line more)\n" + "".join(
        f"{letter}. option {c} of 0\n" for letter, c in zip("ABCD", "abcd", strict=True)
    )
    header = "The following are multiple choice questions (with answers) about machine learning.\n\n"
    assert prompt == header + shots + question + "Answer:"


def _category_of(request) -> str:
    return utils.SUBJECTS[request.doc["subject"]]


def _generate(request) -> str:
    """STEM: always right; humanities: right, then a wrong letter; social sciences: no letter, then a
    wrong letter; other: "X." form right, then no letter."""
    gold = MMLU_LETTERS[request.doc["answer"]]
    wrong = MMLU_LETTERS[(request.doc["answer"] + 1) % 4]
    first = request.doc_id == 0
    return {
        "stem": " " + gold,
        "humanities": " " + (gold if first else wrong),
        "social_sciences": "\n" if first else " " + wrong,
        "other": gold + "." if first else "Paris",
    }[_category_of(request)]


def _loglikelihood(request) -> float:
    """Highest score on the gold letter for STEM and for every first question, else on a wrong letter."""
    target = request.doc["answer"]
    if not (_category_of(request) == "stem" or request.doc_id == 0):
        target = (target + 1) % 4
    return 0.0 if request.idx == target else -1.0


def test_scripted_lm_gives_exact_group_scores(task_data_dir: Path) -> None:
    lm = ScriptedLM(generate=_generate, loglikelihood=_loglikelihood)
    results = evaluate(lm, ["llmkick_mmlu", "llmkick_mmlu_ll"], {"data_dir": str(task_data_dir)})["results"]
    n = {"stem": 18, "humanities": 13, "social_sciences": 12, "other": 14}
    questions = {category: count * MMLU_TEST_ROWS for category, count in n.items()}
    total = sum(questions.values())
    assert total == 114
    generative = {"stem": 1.0, "humanities": 0.5, "social_sciences": 0.0, "other": 0.5}
    letter_rate = {"stem": 1.0, "humanities": 1.0, "social_sciences": 0.5, "other": 0.5}
    loglikelihood = {"stem": 1.0, "humanities": 0.5, "social_sciences": 0.5, "other": 0.5}
    for category in utils.CATEGORIES:
        assert results[f"llmkick_mmlu_{category}"]["acc,none"] == pytest.approx(generative[category])
        assert results[f"llmkick_mmlu_{category}"]["letter_rate,none"] == pytest.approx(letter_rate[category])
        assert results[f"llmkick_mmlu_ll_{category}"]["acc,none"] == pytest.approx(loglikelihood[category])
    # micro-averages over all 114 questions: (36 + 13 + 0 + 14) / 114 etc.
    assert results["llmkick_mmlu"]["acc,none"] == pytest.approx(63 / 114)
    assert results["llmkick_mmlu"]["letter_rate,none"] == pytest.approx(88 / 114)
    assert results["llmkick_mmlu_ll"]["acc,none"] == pytest.approx(75 / 114)
    # per subject too
    assert results["llmkick_mmlu_anatomy"]["acc,none"] == 0.5
    assert results["llmkick_mmlu_ll_sociology"]["acc,none"] == 0.5
    assert results["llmkick_mmlu_ll_virology"]["acc,none"] == 0.5
    assert results["llmkick_mmlu_college_physics"]["acc,none"] == 1.0


def test_real_data_every_subject_loads(shared_data: Path) -> None:
    sizes = {"test": 0, "dev": 0}
    manager = task_manager({"data_dir": str(shared_data)})
    for subject in utils.SUBJECTS:
        data = manager.load([f"llmkick_mmlu_{subject}"])["tasks"][f"llmkick_mmlu_{subject}"].dataset
        assert data["dev"].num_rows == 5
        for split in sizes:
            sizes[split] += data[split].num_rows
    assert sizes == {"test": 14042, "dev": 285}
    release = {p.name.removesuffix("_test.csv") for p in (shared_data / "mmlu" / "test").glob("*_test.csv")}
    assert release == set(utils.SUBJECTS)
