"""MMLU for lm-eval: subjects and categories, the task class, the CSV reader, and the generative scoring.

The task YAMLs read ``cais/mmlu`` (``dataset_path``; ``dataset_name`` = the subject); with a data dir the
original Hendrycks CSVs under ``<data dir>/mmlu`` are read into the same columns (:class:`MMLUTask`)::

    {"question": str, "subject": str, "choices": list[str] (4), "answer": int (0-3, named A-D)}
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks import scoring
from llmkick_tasks.data_dir import layout_error, to_dataset
from llmkick_tasks.hub_task import HubTask

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


BENCHMARK = "mmlu"
CATEGORIES = ("stem", "humanities", "social_sciences", "other")

# Subject -> category, from the subcategories of Hendrycks et al.'s categories.py: STEM = physics,
# chemistry, biology, computer science, math, engineering; humanities = history, philosophy, law;
# social sciences = politics, culture, economics, geography, psychology; other = other, business, health.
SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "other",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}

# lm-eval split name -> folder / file suffix of the original release.  Only test (evaluated) and dev
# (the 5-shot pool) are read; the release's val/ folder is not needed by any task.
SPLIT_FOLDERS = {"test": "test", "dev": "dev"}

# cais/mmlu's columns (answer: a class label, i.e. an int 0-3 named A-D).
FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=list(scoring.MMLU_LETTERS)),
    }
)


def parse_csv(path: Path, subject: str) -> list[dict[str, Any]]:
    """Documents of one original MMLU CSV (no header; question, A, B, C, D, answer letter)."""
    docs = []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if len(row) != 6 or row[5].strip() not in scoring.MMLU_LETTERS:
                    raise layout_error(
                        BENCHMARK, path, f"row {number} is not question,A,B,C,D,answer(A-D): {row!r:.200}"
                    )
                docs.append(
                    {
                        "question": row[0],
                        "choices": row[1:5],
                        "answer": scoring.MMLU_LETTERS.index(row[5].strip()),
                        "subject": subject,
                    }
                )
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise layout_error(BENCHMARK, path, f"cannot read ({type(error).__name__}: {error})") from error
    if not docs:
        raise layout_error(BENCHMARK, path, "empty MMLU file")
    return docs


class MMLUTask(HubTask):
    """An MMLU subject task: ``cais/mmlu`` (config = subject) from the Hub, or the Hendrycks CSVs of the
    data dir read into the same columns.
    """

    BENCHMARK = BENCHMARK

    @classmethod
    def split_files(cls, folder: Path, subject: str) -> dict[str, Path]:
        """The release CSV of each split (``SPLIT_FOLDERS``) of ``subject`` in ``folder``; each must exist."""
        if subject not in SUBJECTS:
            raise ValueError(f"unknown MMLU subject {subject!r}; known: {', '.join(SUBJECTS)}")
        files = {split: folder / name / f"{subject}_{name}.csv" for split, name in SPLIT_FOLDERS.items()}
        for path in files.values():
            if not path.is_file():
                raise layout_error(BENCHMARK, path, f"missing MMLU file for subject {subject!r}")
        return files

    @classmethod
    def local_files(cls, folder: Path, dataset_name: str | None) -> list[Path]:
        """The test and dev CSVs of the subject ``dataset_name`` (:meth:`split_files`)."""
        return list(cls.split_files(folder, str(dataset_name)).values())

    def load_local(self, folder: Path) -> datasets.DatasetDict:
        """The ``test`` and ``dev`` splits of the task's subject from ``<data dir>/mmlu``."""
        subject = str(self.DATASET_NAME)
        files = self.split_files(folder, subject)
        return datasets.DatasetDict(
            {split: to_dataset(parse_csv(path, subject), FEATURES) for split, path in files.items()}
        )


def process_generative(doc: Mapping[str, Any], results: list[str]) -> dict[str, float]:
    """Paper protocol: the one generated token must be the gold letter.

    ``letter_rate`` is the fraction of answers that are an option letter at all; a compressed model that
    stops answering with letters drops below chance in ``acc`` (LLM-KICK's Vicuna-7B at 50%: 0.050).
    """
    continuation = results[0]
    return {
        "acc": scoring.mmlu_letter_match(continuation, int(doc["answer"])),
        "letter_rate": float(scoring.mmlu_predicted_letter(continuation) is not None),
    }
