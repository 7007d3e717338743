"""MMLU for lm-eval: subjects and categories, the CSV / Hub loaders, and the generative scoring.

Document schema (both sources)::

    {"question": str, "choices": list[str] (4), "answer": int (0-3), "subject": str}

which is also ``cais/mmlu``'s schema.  Local data: the original Hendrycks CSVs under ``<data dir>/mmlu``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from llmkick_tasks import scoring
from llmkick_tasks.data_dir import layout_error, load_hub_split, local_benchmark_dir, to_dataset

BENCHMARK = "mmlu"
HUB_DATASET = "cais/mmlu"
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

FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("int64"),
        "subject": datasets.Value("string"),
    }
)


def parse_csv(path: Path, subject: str) -> list[dict[str, Any]]:
    """Documents of one original MMLU CSV (no header; question, A, B, C, D, answer letter)."""
    if not path.is_file():
        raise layout_error(BENCHMARK, path, f"missing MMLU file for subject {subject!r}")
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


def load_mmlu(mmlu_subject: str, **metadata: Any) -> datasets.DatasetDict:
    """``custom_dataset`` of one MMLU subject task: the ``test`` and ``dev`` splits.

    Args:
        mmlu_subject: the subject (``dataset_kwargs`` of the task), e.g. ``"abstract_algebra"``.
        **metadata: the task metadata (``data_dir`` is read from it; the rest is ignored).
    """
    if mmlu_subject not in SUBJECTS:
        raise ValueError(f"unknown MMLU subject {mmlu_subject!r}")
    folder = local_benchmark_dir(metadata, BENCHMARK)
    splits = {}
    for split, release_name in SPLIT_FOLDERS.items():
        if folder is None:
            dataset = load_hub_split(HUB_DATASET, mmlu_subject, split)
            splits[split] = dataset.select_columns(list(FEATURES)).cast(FEATURES)
        else:
            path = folder / release_name / f"{mmlu_subject}_{release_name}.csv"
            splits[split] = to_dataset(parse_csv(path, mmlu_subject), FEATURES)
    return datasets.DatasetDict(splits)


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
