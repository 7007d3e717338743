"""Where task data comes from: --metadata data_dir over $LLMKICK_DATA_DIR over the public sources."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from llmkick_tasks import data_dir
from llmkick_tasks.freebaseqa import loader as freebaseqa


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data_dir.ENV_VAR, raising=False)


def test_metadata_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env, from_metadata = tmp_path / "env", tmp_path / "meta"
    from_env.mkdir(), from_metadata.mkdir()
    assert data_dir.resolve_data_dir({}) is None  # public sources
    monkeypatch.setenv(data_dir.ENV_VAR, str(from_env))
    assert data_dir.resolve_data_dir({}) == from_env
    assert data_dir.resolve_data_dir(None) == from_env
    assert data_dir.resolve_data_dir({"data_dir": str(from_metadata)}) == from_metadata
    assert data_dir.resolve_data_dir({"data_dir": ""}) == from_env  # empty means "not given"


def test_a_named_but_missing_dir_is_an_error_not_a_download(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(
        data_dir.DataLayoutError, match=r"from metadata 'data_dir' is not a directory: .*nope"
    ):
        data_dir.resolve_data_dir({"data_dir": str(tmp_path / "nope")})
    monkeypatch.setenv(data_dir.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(data_dir.DataLayoutError, match=r"from \$LLMKICK_DATA_DIR is not a directory: .*gone"):
        freebaseqa.load_freebaseqa()


def test_benchmark_folder_lookup(tmp_path: Path) -> None:
    (tmp_path / "triviaqa-rc").mkdir()
    assert data_dir.benchmark_dir(tmp_path, "triviaqa") == tmp_path / "triviaqa-rc"
    with pytest.raises(data_dir.DataLayoutError) as error:
        data_dir.benchmark_dir(tmp_path, "mmlu")
    message = str(error.value)
    assert f"no mmlu folder in the data dir (tried {tmp_path / 'mmlu'})" in message
    assert "mmlu/test/<subject>_test.csv" in message  # the layout expected


def test_offline_without_data_dir_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    # HF_DATASETS_OFFLINE=1 (conftest): nothing may be fetched, so the official release is unreachable.
    assert datasets.config.HF_DATASETS_OFFLINE
    with pytest.raises(RuntimeError) as error:
        freebaseqa.load_freebaseqa(release_split="eval")
    message = str(error.value)
    assert "FreebaseQA-eval.json" in message and "LLMKICK_DATA_DIR" in message and '"data_dir"' in message


class _FakeBuilder:
    def __init__(self, data_files: dict[str, list[str]]) -> None:
        self.config = SimpleNamespace(data_files=data_files)
        self.info = SimpleNamespace(features=None)


def test_hub_split_downloads_only_that_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []
    files = {
        "train": [
            "hf://datasets/x/rc/train-00000-of-00002.parquet",
            "hf://datasets/x/rc/train-00001.parquet",
        ],
        "validation": ["hf://datasets/x/rc/validation-00000-of-00001.parquet"],
    }
    builders = []

    def builder(path: str, name: str, revision: str | None, files: dict = files) -> _FakeBuilder:
        builders.append((path, name, revision))
        return _FakeBuilder(files)

    monkeypatch.setattr(datasets, "load_dataset_builder", builder)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or "ds"
    )
    assert data_dir.load_hub_split("x", "rc", "validation", revision="abc123") == "ds"
    assert builders == [("x", "rc", "abc123")]  # the data files of the pinned revision
    assert calls == [
        (
            ("parquet",),
            {"data_files": {"validation": files["validation"]}, "split": "validation", "features": None},
        )
    ]
    # not parquet (or no file list): the ordinary load of one split
    calls.clear()
    monkeypatch.setattr(
        datasets, "load_dataset_builder", lambda path, name, revision: _FakeBuilder({"test": ["a.json"]})
    )
    data_dir.load_hub_split("y", "cfg", "test", revision="abc123")
    assert calls == [(("y", "cfg"), {"split": "test", "revision": "abc123"})]


def test_other_benchmarks_plug_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_dir, "FOLDER_NAMES", dict(data_dir.FOLDER_NAMES))
    monkeypatch.setattr(data_dir, "LAYOUTS", dict(data_dir.LAYOUTS))
    (tmp_path / "wikitext2").mkdir()
    assert data_dir.benchmark_dir(tmp_path, "wikitext2") == tmp_path / "wikitext2"  # unregistered: own name
    with pytest.raises(data_dir.DataLayoutError, match=r"cnn/  \(see the task documentation\)"):
        data_dir.benchmark_dir(tmp_path, "cnn")
    data_dir.register_benchmark(
        "cnn", "  cnn_dailymail/{small,mid,large}/<id>.story", ("cnn_dailymail", "cnn")
    )
    with pytest.raises(data_dir.DataLayoutError, match=r"cnn_dailymail/\{small,mid,large\}/<id>\.story"):
        data_dir.benchmark_dir(tmp_path, "cnn")
    (tmp_path / "cnn").mkdir()
    assert data_dir.benchmark_dir(tmp_path, "cnn") == tmp_path / "cnn"


# The public-source paths, offline: the fetch is replaced by local data in the Hub's own schema, so the
# mapping from each Hub / release schema to the task schema is what is tested.


def test_freebaseqa_from_the_official_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from task_fixtures import FREEBASEQA_EVAL, write_freebaseqa

    folder = write_freebaseqa(tmp_path)
    fetched = []

    def fake_download(url: str, what: str | None = None) -> Path:
        fetched.append(url)
        name = url.rsplit("/", 1)[1]
        if not (folder / name).exists():
            raise RuntimeError(f"could not fetch {url}")
        return folder / name

    monkeypatch.setattr(freebaseqa, "download_file", fake_download)
    data = freebaseqa.load_freebaseqa(release_split="eval")
    assert fetched == [freebaseqa.RELEASE_URL.format(split=split) for split in ("eval", "dev")]
    assert (
        fetched[0] == "https://raw.githubusercontent.com/kelvin-jiang/FreebaseQA/master/FreebaseQA-eval.json"
    )
    assert data["test"]["question_id"] == [row[0] for row in FREEBASEQA_EVAL]
    assert data["fewshot"].num_rows == 0  # dev.json not fetchable here: empty pool, no error


def test_triviaqa_from_the_hub_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from task_fixtures import task_manager

    from llmkick_tasks import hub_task

    row = {
        "question": " Who was the man behind The Chipmunks? ",
        "question_id": "tc_2",
        "question_source": "http://www.triviacountry.com/",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {
            "description": ["d1", "d2"],
            "filename": ["61/61_97.txt", "10/10_99.txt"],
            "rank": [4, 6],
            "title": ["t1", "t2"],
            "url": ["u1", "u2"],
            "search_context": ["First search result. " * 100, "Second search result."],
        },
        "answer": {
            "aliases": ["David Seville"],
            "normalized_aliases": ["david seville"],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": "david seville",
            "type": "WikipediaEntity",
            "value": "David Seville",
        },
    }
    calls = []

    def fake_split(path: str, name: str, split: str, revision: str | None) -> datasets.Dataset:
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list([row])

    def first_doc(task: str, metadata: dict) -> dict:
        return task_manager(metadata).load([task])["tasks"][task].test_docs()[0]

    monkeypatch.setattr(hub_task, "read_hub_split", fake_split)
    closed = first_doc("llmkick_triviaqa_closed", {})
    assert closed == {
        "question_id": "tc_2",
        "question": "Who was the man behind The Chipmunks?",
        "answer": "David Seville",
        "aliases": ["David Seville", "david seville"],
        "evidence": "",
    }
    opened = first_doc("llmkick_triviaqa_open", {"evidence_tokens": 10})  # no tokenizer: 40 characters
    assert opened["evidence"] == ("First search result. " * 2)[:40]
    # Only the validation split, at the pinned revision; closed book downloads no evidence.
    revision = "0f7faf33a3908546c6fd5b73a660e0f8ff173c2f"
    assert calls == [
        ("mandarjoshi/trivia_qa", "rc.nocontext", "validation", revision),
        ("mandarjoshi/trivia_qa", "rc", "validation", revision),
    ]
