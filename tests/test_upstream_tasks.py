"""``llmkick upstream-tasks DIR``: the lm-eval pull-request folder, its generated utils and its README."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import datasets
import pytest
from test_tasks_hub import WIKITEXT_ROWS

from llmkick_models.workflow import upstream_tasks
from llmkick_models.workflow.cli import UserErrorExit, main
from llmkick_models.workflow.upstream_readme import HUB_IDS, RECORDED_NOTE, RECORDED_RESULTS, load_results
from llmkick_models.workflow.upstream_tasks import (
    TASKS_DIR,
    stale_versions,
    task_versions,
    write_upstream_folder,
)

TRIVIAQA_ROW: dict[str, Any] = {
    "question": " Who was the man behind The Chipmunks? ",
    "question_id": "tc_2",
    "question_source": "http://www.triviacountry.com/",
    "entity_pages": {
        "doc_source": ["w"],
        "filename": ["a.txt"],
        "title": ["t"],
        "wiki_context": ["Wiki. " * 900],
    },
    "search_results": {
        "description": ["d1"],
        "filename": ["61/61_97.txt"],
        "rank": [4],
        "title": ["t1"],
        "url": ["u1"],
        "search_context": ["First search result. " * 100],
    },
    "answer": {
        "aliases": ["David Seville", "Ross Bagdasarian"],
        "normalized_aliases": ["david seville", "ross bagdasarian"],
        "matched_wiki_entity_name": "",
        "normalized_matched_wiki_entity_name": "",
        "normalized_value": "david seville",
        "type": "WikipediaEntity",
        "value": "David Seville",
    },
}
NO_EVIDENCE = {
    **TRIVIAQA_ROW,
    "question_id": "tc_3",
    "entity_pages": {k: [] for k in TRIVIAQA_ROW["entity_pages"]},
}
NO_EVIDENCE["search_results"] = {k: [] for k in TRIVIAQA_ROW["search_results"]}
CONTINUATIONS = [
    "B",
    " B",
    "B.",
    "C)",
    "Bob",
    "",
    "\n",
    " david seville\nmore",
    "Ross",
    " the  Seville!",
    "x",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("upstream") / "llmkick"
    write_upstream_folder(out)
    return out


def generated(folder: Path, relative: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"upstream_{relative.split('/')[0]}", folder / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("relative", ["mmlu/utils.py", "triviaqa/utils.py", "wikitext2/utils.py"])
def test_generated_utils_import_nothing_of_llmkick(folder: Path, relative: str) -> None:
    tree = ast.parse((folder / relative).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.startswith("llmkick")]


def test_generated_scoring_is_the_plugins(folder: Path) -> None:
    from llmkick_tasks.mmlu import utils as mmlu
    from llmkick_tasks.triviaqa import utils as triviaqa

    upstream_mmlu, upstream_triviaqa = (
        generated(folder, "mmlu/utils.py"),
        generated(folder, "triviaqa/utils.py"),
    )
    for continuation in CONTINUATIONS:
        for answer in range(4):
            doc = {"answer": answer}
            assert upstream_mmlu.process_generative(doc, [continuation]) == mmlu.process_generative(
                doc, [continuation]
            )
        doc = {"aliases": TRIVIAQA_ROW["answer"]["aliases"] + TRIVIAQA_ROW["answer"]["normalized_aliases"]}
        assert upstream_triviaqa.process_results(doc, [continuation]) == triviaqa.process_results(
            doc, [continuation]
        )


def test_generated_documents_are_the_plugins(folder: Path) -> None:
    from llmkick_tasks.triviaqa import documents
    from llmkick_tasks.triviaqa.evidence import EvidenceBudget, open_book_docs
    from llmkick_tasks.wikitext2 import data

    rows = datasets.Dataset.from_list([TRIVIAQA_ROW, NO_EVIDENCE])
    upstream = generated(folder, "triviaqa/utils.py")
    assert list(upstream.process_closed_book(rows)) == list(documents.process_closed_book(rows))
    # No tokenizer in the plugin's metadata: its evidence cut is the upstream one, in characters.
    opened = list(upstream.process_open_book(rows))
    assert opened == list(open_book_docs(rows, EvidenceBudget.from_metadata({})))
    assert len(opened[0]["evidence"]) == 3072 - 1 and opened[1]["evidence"] == ""  # rstrip of "Wiki. "
    text = datasets.Dataset.from_dict({"text": WIKITEXT_ROWS})
    articles = generated(folder, "wikitext2/utils.py").process_articles(text)
    assert list(articles) == list(data.process_articles(text)) and articles.num_rows == 2


def test_the_yamls_name_nothing_of_the_plugin(folder: Path) -> None:
    texts = {path: path.read_text() for path in folder.rglob("*") if path.is_file() and path.suffix != ".py"}
    for path, text in texts.items():
        for plugin_only in ("custom_dataset", "llmkick_tasks", "data_dir", "LLMKICK_DATA_DIR", "\nclass: "):
            assert plugin_only not in text, f"{path} names {plugin_only!r}"
    assert "llmkick_freebaseqa" not in (folder / "_llmkick_exact_match.yaml").read_text().split("\ngroup:")[1]
    # A plugin-only sentence goes; the protocol's sentences before it in the same comment stay.
    template = (folder / "mmlu" / "_generative_template_yaml").read_text()
    assert template.startswith("# LLM-KICK's MMLU protocol")
    readme = (folder / "README.md").read_text()
    assert "llmkick_freebaseqa, llmkick_freebaseqa_paper" in readme


def test_results_table_from_an_lm_eval_results_file(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    scores = {"alias": "x", "acc,none": 0.25, "acc_stderr,none": 0.01, "letter_rate,none": 0.9}
    config = {"model": "hf", "model_args": "pretrained=tiny", "limit": 10.0}
    results.write_text(json.dumps({"results": {"llmkick_mmlu": scores}, "config": config}))
    assert main(["upstream-tasks", str(tmp_path / "out"), "--results", str(results)]) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| llmkick_mmlu | acc | 0.2500 | 0.0100 |  | 0.471 |" in readme
    assert "| llmkick_mmlu | letter_rate | 0.9000 |  |  | – |" in readme
    assert "`pretrained=tiny` — **limit 10 per task: not the full data**." in readme
    assert "To be filled" not in readme and "not read from the Hub" not in readme


def test_results_table_counts_documents_and_says_where_the_data_came_from(tmp_path: Path) -> None:
    """A group's documents are its subjects' summed; a local dataset_path is named; the note is shown."""
    results = tmp_path / "results.json"
    data = {
        "results": {
            "llmkick_mmlu": {"acc,none": 0.3},
            "llmkick_triviaqa_closed": {"exact_match,none": 0.0, "exact_match_stderr,none": 0.0},
        },
        "group_subtasks": {
            "llmkick_mmlu": ["llmkick_mmlu_stem"],
            "llmkick_mmlu_stem": ["llmkick_mmlu_anatomy", "llmkick_mmlu_virology"],
        },
        "n-samples": {
            "llmkick_mmlu_anatomy": {"original": 135, "effective": 40},
            "llmkick_mmlu_virology": {"original": 166, "effective": 40},
            "llmkick_triviaqa_closed": {"original": 4, "effective": 4},
        },
        "configs": {
            "llmkick_mmlu_anatomy": {"dataset_path": "/data/hub/cais_mmlu"},
            "llmkick_triviaqa_closed": {"dataset_path": "mandarjoshi/trivia_qa"},
        },
        "config": {"model": "hf", "model_args": "pretrained=m", "limit": None},
        "lm_eval_version": "0.4.13",
        "date": 1796569848.57,
    }
    results.write_text(json.dumps(data))
    note = "m is SmolLM2-135M-Instruct dequantized from its Q4_1 GGUF."
    out = tmp_path / "out"
    ppl = tmp_path / "ppl.json"
    ppl.write_text(
        json.dumps(
            {
                "results": {"llmkick_wikitext2_ppl_articles": {"word_perplexity,none": 31.5}},
                "n-samples": {"llmkick_wikitext2_ppl_articles": {"original": 62, "effective": 62}},
                "config": {
                    "model": "hf",
                    "model_args": {"pretrained": "m", "dtype": "bfloat16"},
                    "limit": 40,
                },
            }
        )
    )
    args = ["--results", str(results), "--results", str(ppl), "--results_note", note]
    assert main(["upstream-tasks", str(out), *args]) == 0
    readme = (out / "README.md").read_text()
    # One table per file, each under its own model line; the note and the paper's caveat once.
    assert readme.count(note) == 1 and readme.count("comparable only when") == 1
    assert (
        "Model: `hf` with `pretrained=m,dtype=bfloat16` — **limit 40 per task: not the full data**." in readme
    )
    assert "| llmkick_wikitext2_ppl_articles | word_perplexity | 31.5000 |  | 62 of 62 | – |" in readme
    assert readme.index(note) < readme.index("Model: `hf` with `pretrained=m` (") < readme.index("31.5000")
    assert "| llmkick_mmlu | acc | 0.3000 |  | 80 of 301 | 0.471 |" in readme
    assert "| llmkick_triviaqa_closed | exact_match | 0.0000 | 0.0000 | 4 of 4 | – |" in readme
    assert "Model: `hf` with `pretrained=m` (lm-eval 0.4.13, run on 2026-12-06)." in readme
    local = "**not read from the Hub** — `dataset_path` named local Hub-layout folders (`…/cais_mmlu`)."
    assert local in readme


def test_the_folder_carries_the_recorded_run_of_every_task_at_the_folders_versions(folder: Path) -> None:
    """Fails when a task version changes and the folder is not scored again (`llmkick upstream-score`)."""
    runs = [load_results(path) for path in RECORDED_RESULTS]
    folder_tasks = set(task_versions(folder))
    assert len(folder_tasks) == 117
    assert folder_tasks <= {task for data in runs for task in data["versions"]}
    for data in runs:
        assert stale_versions(data, task_versions(TASKS_DIR)) == []
    readme = (folder / "README.md").read_text()
    assert RECORDED_NOTE in readme and "To be filled" not in readme
    for data in runs:  # one table per run, each with its own model line
        limit = data["config"]["limit"]
        if limit is not None:
            assert f"**limit {limit:g} per task: not the full data**" in readme
        for task, scores in data["results"].items():
            if task in ("llmkick_mmlu", "llmkick_wikitext2_ppl_articles"):
                metric = "acc,none" if task == "llmkick_mmlu" else "word_perplexity,none"
                assert f"| {task} | {metric.split(',')[0]} | {scores[metric]:.4f} | " in readme
    mmlu = [data for data in runs if "llmkick_mmlu" in data["results"]]
    assert len(mmlu) == 1
    scored = sum(count["effective"] for task, count in mmlu[0]["n-samples"].items() if "_mmlu_" in task) // 2
    assert f"| {scored:,} of 14,042 | 0.471 |" in readme


def test_results_of_other_task_versions_are_refused_and_a_stale_record_is_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results.json"
    data = {"results": {"llmkick_mmlu": {"acc,none": 0.3}}, "versions": {"llmkick_mmlu_anatomy": 0.5}}
    results.write_text(json.dumps(data))
    with pytest.raises(UserErrorExit):
        main(["upstream-tasks", str(tmp_path / "out"), "--results", str(results)])
    assert (
        f"--results {results} is from other task versions: llmkick_mmlu_anatomy (scored at version 0.5, the "
        "folder's is 1); score again" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(upstream_tasks, "RECORDED_RESULTS", (results,))  # the recorded run, gone stale
    write_upstream_folder(tmp_path / "out", (results,))
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "**To be filled.** The recorded run scored other task versions (llmkick_mmlu_anatomy" in readme
    assert "| llmkick_mmlu | acc |" not in readme
    assert "the recorded results are stale: llmkick_mmlu_anatomy" in capsys.readouterr().err


def test_a_results_note_without_results_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserErrorExit):
        main(["upstream-tasks", str(tmp_path / "out"), "--results_note", "a model"])
    assert "--results_note describes the model of --results: give --results too" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_hub_ids_the_results_table_knows_are_those_the_yamls_read(tmp_path: Path) -> None:
    write_upstream_folder(tmp_path / "out")
    paths = set()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix != ".py" and path.name != "README.md":
            paths.update(re.findall(r"^dataset_path: (\S+)$", path.read_text(), re.MULTILINE))
    assert paths == HUB_IDS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a readable lm-eval results JSON (FileNotFoundError"),
        ("{", "not a readable lm-eval results JSON (JSONDecodeError"),
        ('{"results": {"arc_easy": {}}}', "has no result of this folder's tasks (llmkick_mmlu, "),
    ],
)
def test_bad_results_files_are_refused_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    results = tmp_path / "results.json"
    if content is not None:
        results.write_text(content)
    with pytest.raises(UserErrorExit):
        main(["upstream-tasks", str(tmp_path / "out"), "--results", str(results)])
    err = capsys.readouterr().err
    assert f"llmkick upstream-tasks: error: --results {results}" in err and message in err
    assert not (tmp_path / "out").exists()


def test_a_non_empty_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserErrorExit):
        main(["upstream-tasks", str(tmp_path)])
    assert (
        f"llmkick upstream-tasks: error: DIR {tmp_path} exists and is not an empty folder; give a new or "
        "empty folder" in capsys.readouterr().err
    )
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]
