"""Hub datasets by default, the data dir as the override: the task YAMLs turn the same rows into the same
documents whether they come from the Hub (``dataset_path`` / ``dataset_name``) or from a data dir's release
files.  The "Hub" here is a local folder in the Hub's layout (parquet per config and split, configs in the
README), so the YAML path runs offline through ``datasets.load_dataset`` exactly as for the real dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from lm_eval.tasks import TaskManager
from task_fixtures import (
    TASKS_DIR,
    TRIVIAQA_DEV,
    TRIVIAQA_WEB_TEXT,
    TRIVIAQA_WIKI_TEXT,
    task_manager,
    triviaqa_validation_order,
    write_triviaqa,
)

from llmkick_models.workflow.upstream_offline import write_hub_folder

MMLU_FEATURES = datasets.Features(  # cais/mmlu's columns
    {
        "question": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
    }
)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A datasets cache of each test's own: ``datasets`` keys local-folder builds by folder name and config,
    so a build left by an earlier run with other rows could otherwise be served."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


def load_task(name: str, metadata: dict[str, Any]) -> Any:
    return task_manager(metadata).load([name])["tasks"][name]


def load_task_from(hub: Path, name: str, tmp_path: Path, metadata: dict[str, Any] | None = None) -> Any:
    """``name``'s own YAML with ``dataset_path`` pointing at ``hub`` (a YAML including it), no data dir."""
    yaml_path = task_manager({}).task_index[name].yaml_path
    (tmp_path / "hub_tasks").mkdir(exist_ok=True)
    (tmp_path / "hub_tasks" / f"{name}.yaml").write_text(
        f"include: {yaml_path}\ntask: hub_{name}\ndataset_path: {hub}\n"
    )
    manager = TaskManager(
        include_path=[str(TASKS_DIR), str(tmp_path / "hub_tasks")], include_defaults=False, metadata=metadata
    )
    return manager.load([f"hub_{name}"])["tasks"][f"hub_{name}"]


def mmlu_rows(subject: str, split: str) -> datasets.Dataset:
    rows = [
        {
            "question": f'{split} question {i} about {subject}, with "quotes",\nand a second line',
            "subject": subject,
            "choices": [f"{subject} {i}{letter}" for letter in "abcd"],
            "answer": (i + len(subject)) % 4,
        }
        for i in range(6 if split == "test" else 5)
    ]
    return datasets.Dataset.from_list(rows, features=MMLU_FEATURES)


def write_mmlu_release(root: Path, subject: str, split: str, rows: datasets.Dataset) -> None:
    import csv

    folder = root / "mmlu" / split
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as handle:
        for row in rows:
            csv.writer(handle).writerow([row["question"], *row["choices"], "ABCD"[row["answer"]]])


@pytest.mark.parametrize("task", ["llmkick_mmlu_virology", "llmkick_mmlu_ll_anatomy"])
def test_mmlu_hub_rows_and_release_csvs_give_the_same_documents(tmp_path: Path, task: str) -> None:
    subject = task.rsplit("_", 1)[-1]
    splits = {split: mmlu_rows(subject, split) for split in ("test", "dev")}
    hub = write_hub_folder(tmp_path / "cais_mmlu", {subject: splits})
    data_dir = tmp_path / "data"
    for split, rows in splits.items():
        write_mmlu_release(data_dir, subject, split, rows)

    from_hub = load_task_from(hub, task, tmp_path)
    from_data_dir = load_task(task, {"data_dir": str(data_dir)})
    assert from_hub.config.dataset_path == str(hub) and from_hub.config.dataset_name == subject
    for split in ("test_docs", "fewshot_docs"):
        assert list(getattr(from_hub, split)()) == list(getattr(from_data_dir, split)())
    doc = from_hub.test_docs()[0]
    assert from_hub.fewshot_context(doc, 5) == from_data_dir.fewshot_context(doc, 5)
    assert list(from_hub.test_docs()) == list(splits["test"])  # the Hub's rows are the documents


WIKITEXT_ROWS = ["", " = First = \n", "", " Text @-@ here , with a comma . \n", "", " = = Sub = = \n"]
WIKITEXT_ROWS += ["", " More text . \n", " = Second = \n", "", " Short ; text . \n", ""]


@pytest.mark.parametrize("task", ["llmkick_wikitext2_ppl_articles", "llmkick_wikitext2_ppl"])
def test_wikitext2_hub_rows_and_release_file_give_the_same_documents(tmp_path: Path, task: str) -> None:
    rows = datasets.Dataset.from_dict({"text": WIKITEXT_ROWS})
    hub = write_hub_folder(tmp_path / "wikitext", {"wikitext-2-raw-v1": {"test": rows}})
    (tmp_path / "data" / "wikitext2").mkdir(parents=True)
    # The release file: one line per row, blank rows as a single space (as wiki.test.tokens has them).
    lines = [row.rstrip("\n") or " " for row in WIKITEXT_ROWS]
    (tmp_path / "data" / "wikitext2" / "test.txt").write_text("\n".join(lines) + "\n")

    from_hub = load_task_from(hub, task, tmp_path)
    from_data_dir = load_task(task, {"data_dir": str(tmp_path / "data")})
    assert list(from_hub.dataset["test"]) == list(from_data_dir.dataset["test"])  # the same rows
    if task == "llmkick_wikitext2_ppl_articles":
        assert list(from_hub.test_docs()) == list(from_data_dir.test_docs())
        assert [doc["title"] for doc in from_hub.test_docs()] == ["First", "Second"]


# mandarjoshi/trivia_qa's columns, as its dataset card's `dataset_info` states them (built by HF datasets'
# trivia_qa script): nested lists of entity pages and search results, the answer a struct.
TRIVIAQA_CARD_FEATURES = """
- {name: question, dtype: string}
- {name: question_id, dtype: string}
- {name: question_source, dtype: string}
- name: entity_pages
  sequence: [{name: doc_source, dtype: string}, {name: filename, dtype: string}, {name: title, dtype: string},
             {name: wiki_context, dtype: string}]
- name: search_results
  sequence: [{name: description, dtype: string}, {name: filename, dtype: string}, {name: rank, dtype: int32},
             {name: title, dtype: string}, {name: url, dtype: string}, {name: search_context, dtype: string}]
- name: answer
  struct: [{name: aliases, sequence: string}, {name: normalized_aliases, sequence: string},
           {name: matched_wiki_entity_name, dtype: string},
           {name: normalized_matched_wiki_entity_name, dtype: string},
           {name: normalized_value, dtype: string}, {name: type, dtype: string}, {name: value, dtype: string}]
"""
TRIVIAQA_FEATURES = datasets.Features._from_yaml_list(yaml.safe_load(TRIVIAQA_CARD_FEATURES))


def triviaqa_hub_rows(with_evidence: bool) -> datasets.Dataset:
    """The Hub's rc (or rc.nocontext) validation rows of the questions ``write_triviaqa`` releases, as the
    Hub's loader built them: web-dev then wikipedia-dev, evidence inline, the missing page dropped."""
    by_id = {row[0]: row for row in TRIVIAQA_DEV}
    rows = []
    for qid in triviaqa_validation_order():
        _, domain, question, value, aliases, *_ = by_id[qid]
        pages = {"doc_source": [], "filename": [], "title": [], "wiki_context": []}
        results: dict[str, list[Any]] = {
            key: [] for key in ("description", "filename", "rank", "title", "url", "search_context")
        }
        if with_evidence:
            pages = {
                "doc_source": ["TagMe"],
                "filename": [f"{qid}.txt"],
                "title": [qid],
                "wiki_context": [TRIVIAQA_WIKI_TEXT.format(qid=qid).strip()],
            }
            if domain == "web":
                results = {
                    "description": ["d"],
                    "filename": [f"7/{qid}.txt"],
                    "rank": [0],
                    "title": ["t"],
                    "url": ["u"],
                    "search_context": [TRIVIAQA_WEB_TEXT.format(qid=qid).strip()],
                }
        answer = {
            "aliases": aliases,
            "normalized_aliases": [alias.lower() for alias in aliases],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": value.lower(),
            "type": "WikipediaEntity",
            "value": value,
        }
        rows.append(
            {
                "question": question,
                "question_id": qid,
                "question_source": "http://www.example.org/",
                "entity_pages": pages,
                "search_results": results,
                "answer": answer,
            }
        )
    return datasets.Dataset.from_list(rows, features=TRIVIAQA_FEATURES)


@pytest.mark.parametrize(
    ("task", "metadata"),
    [
        ("llmkick_triviaqa_closed", {}),
        ("llmkick_triviaqa_open", {}),
        ("llmkick_triviaqa_open", {"evidence_tokens": 100}),  # no tokenizer: cut to 400 characters
    ],
)
def test_triviaqa_hub_rows_and_release_files_give_the_same_documents(
    tmp_path: Path, task: str, metadata: dict[str, Any]
) -> None:
    configs = {name: {"validation": triviaqa_hub_rows(name == "rc")} for name in ("rc", "rc.nocontext")}
    hub = write_hub_folder(tmp_path / "trivia_qa", configs)
    write_triviaqa(tmp_path / "data")

    from_hub = load_task_from(hub, task, tmp_path, metadata)
    from_data_dir = load_task(task, {**metadata, "data_dir": str(tmp_path / "data")})
    config = "rc" if task.endswith("open") else "rc.nocontext"
    assert from_hub.config.dataset_name == config
    # The release files become the Hub's rows (one evidence file per list here, as the Hub keeps them) ...
    assert from_data_dir.dataset["validation"].features == TRIVIAQA_FEATURES
    assert list(from_data_dir.dataset["validation"]) == list(configs[config]["validation"])
    # ... and so the same documents and prompts, evidence included.
    docs = list(from_hub.test_docs())
    assert docs == list(from_data_dir.test_docs())
    assert [from_hub.doc_to_text(doc) for doc in docs] == [from_data_dir.doc_to_text(doc) for doc in docs]
    wiki, web = TRIVIAQA_WIKI_TEXT.format(qid="tq-0").strip(), TRIVIAQA_WEB_TEXT.format(qid="tq-0").strip()
    characters = 4 * metadata.get("evidence_tokens", 768)
    expected = "" if config == "rc.nocontext" else (wiki + "\n\n" + web)[:characters].rstrip()
    assert docs[0]["question_id"] == "tq-0" and docs[0]["evidence"] == expected


@pytest.mark.parametrize(
    ("task", "dataset"),
    [
        ("llmkick_mmlu_virology", "cais/mmlu (virology)"),
        ("llmkick_wikitext2_ppl_articles", "Salesforce/wikitext (wikitext-2-raw-v1)"),
        ("llmkick_triviaqa_closed", "mandarjoshi/trivia_qa (rc.nocontext)"),
        ("llmkick_triviaqa_open", "mandarjoshi/trivia_qa (rc)"),
    ],
)
def test_an_unreachable_hub_dataset_names_it_and_the_data_dir_override(task: str, dataset: str) -> None:
    with pytest.raises(RuntimeError) as error:  # conftest sets HF_DATASETS_OFFLINE=1
        load_task(task, {})
    message = str(error.value)
    assert message.startswith(f"could not fetch the Hub dataset {dataset} (")
    assert (
        'give the tasks a local data dir: --metadata \'{"data_dir": "/path"}\' or $LLMKICK_DATA_DIR'
        in message
    )


# The Hub revisions the task YAMLs pin, each a commit other public projects pin for the same dataset.
PINNED = {
    "cais/mmlu": "c30699e8356da336a370243923dbaf21066bb9fe",
    "mandarjoshi/trivia_qa": "0f7faf33a3908546c6fd5b73a660e0f8ff173c2f",
    "Salesforce/wikitext": "b08601e04326c79dfdd32d625aee71d232d685c3",
}


@pytest.mark.parametrize(
    "task",
    [
        "llmkick_mmlu_virology",
        "llmkick_mmlu_ll_anatomy",
        "llmkick_triviaqa_closed",
        "llmkick_triviaqa_open",
        "llmkick_wikitext2_ppl",
        "llmkick_wikitext2_ppl_articles",
    ],
)
def test_hub_datasets_are_pinned_to_the_revision_the_readme_names(task: str) -> None:
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(task_manager({}).task_index[task].yaml_path, resolve_func=False)
    assert config["dataset_kwargs"]["revision"] == PINNED[config["dataset_path"]]
    readme = " ".join((TASKS_DIR / "README.md").read_text(encoding="utf-8").split())  # lines rewrapped
    assert f"`{config['dataset_path']}` at `{PINNED[config['dataset_path']]}`" in readme
