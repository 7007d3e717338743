"""Shared fixtures: offline settings, tiny models of several architectures, a local task, the benchmarks'
fixture data, real data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Nothing may download: set before transformers / datasets / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import ARCHITECTURES, save_tiny_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test (and the lm_eval processes it starts) gets an empty compressed-model cache."""
    cache = tmp_path / "llmkick-model-cache"
    monkeypatch.setenv("LLMKICK_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved tiny model (with tokenizer) per architecture."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dirs: dict[str, Path]) -> Path:
    return tiny_model_dirs["llama"]


@pytest.fixture(scope="module")
def task_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exact-match benchmarks' fixture data (``task_fixtures``), written once per test module."""
    from task_fixtures import write_data_dir

    return write_data_dir(tmp_path_factory.mktemp("llmkick_data"))


@pytest.fixture(scope="module")
def judged_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The judged benchmarks' fixture data (``judge_fixtures``), written once per test module."""
    from judge_fixtures import write_judged_data

    return write_judged_data(tmp_path_factory.mktemp("judged_data"))


@pytest.fixture(scope="module")
def chat_model(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template (``judge_fixtures``), copied once per test module."""
    from judge_fixtures import chat_model_dir

    return chat_model_dir(tiny_llama_dir, tmp_path_factory.mktemp("chat_model") / "tiny")


@pytest.fixture(scope="session")
def local_task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local multiple-choice + generation task pair so the CLI runs without any llmkick task."""
    root = tmp_path_factory.mktemp("local_task")
    rows = [
        {"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2), str(i)], "answer": 0}
        for i in range(8)
    ]
    data = root / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "choice.yaml").write_text(
        "task: local_fixture_choice\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{question}} Answer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "generate.yaml").write_text(
        "task: local_fixture_generate\n" + common + "output_type: generate_until\n"
        'doc_to_text: "{{question}} Answer:"\ndoc_to_target: "{{choices[answer]}}"\n'
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data beside the project; tests that need it skip visibly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the project root)")
    return SHARED_DATA
