"""FreebaseQA: the three release formats parse to one schema; the tasks score exactly with a scripted LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from task_fixtures import (
    FREEBASEQA_DEV,
    FREEBASEQA_EVAL,
    FREEBASEQA_EXPECTED,
    FREEBASEQA_TRAIN,
    ScriptedLM,
    evaluate,
    task_manager,
    write_freebaseqa,
)

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.freebaseqa import loader, utils


def _questions_and_aliases(docs: list[dict]) -> list[tuple[str, list[str]]]:
    return [(doc["question"], doc["answers"]) for doc in docs]


def test_json_collects_aliases_from_every_parse(task_data_dir: Path) -> None:
    docs = loader.parse_json(task_data_dir / "freebaseqa" / "FreebaseQA-eval.json")
    assert [doc["question_id"] for doc in docs] == [row[0] for row in FREEBASEQA_EVAL]
    assert docs[0] == {
        "question_id": "fq-0",
        "question": "Who wrote Hamlet?",
        "answers": ["William Shakespeare", "Shakespeare"],
    }


def test_tab_and_txt_give_the_same_documents(task_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = task_data_dir / "freebaseqa"
    expected = [(question, aliases) for _raw, question, aliases in FREEBASEQA_DEV]
    tab = loader.parse_tab(folder / "FreebaseQA-dev.tab")
    assert _questions_and_aliases(tab) == expected
    with caplog.at_level("WARNING"):
        txt = loader.parse_txt(folder / "FreebaseQA-dev.txt")
    assert _questions_and_aliases(txt) == expected
    # the malformed first line ("85326 | whose film debut ...") is skipped and reported by line number
    assert "skipped 1 malformed line(s), e.g. line(s) [1]" in caplog.text
    assert all(set(doc) == {"question_id", "question", "answers"} for doc in tab + txt)


def test_format_preference(tmp_path: Path) -> None:
    folder = write_freebaseqa(tmp_path)
    assert loader.split_file(folder, "eval").suffix == ".json"
    assert loader.split_file(folder, "dev").suffix == ".tab"
    (folder / "FreebaseQA-dev.tab").unlink()
    assert loader.split_file(folder, "dev").suffix == ".txt"
    assert loader.split_file(folder, "nope") is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("FreebaseQA-eval.json", "{not json", "not a FreebaseQA release JSON"),
        ("FreebaseQA-eval.json", json.dumps({"Data": []}), "not a FreebaseQA release JSON"),
        (
            "FreebaseQA-eval.json",
            json.dumps({"Questions": [{"Question-ID": "q", "RawQuestion": "?"}]}),
            "no Answers",
        ),
        ("FreebaseQA-eval.txt", "no separator here\nnor here\nWho? | me\n", "2 of 3 lines are not"),
        ("FreebaseQA-eval.tab", "a\tb\tc\n", "1 of 1 lines are not 8-field"),
    ],
)
def test_malformed_files_name_the_path_and_layout(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    folder = tmp_path / "freebaseqa"
    folder.mkdir()
    (folder / name).write_text(content)
    with pytest.raises(DataLayoutError) as error:
        utils.load_freebaseqa(release_split="eval", data_dir=str(tmp_path))
    text = str(error.value)
    assert message.replace("no Answers", "has no AnswersName") in text
    assert str(folder / name) in text
    assert "FreebaseQA-{train,dev,eval}.json" in text  # the expected layout is shown


def test_missing_split_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "freebaseqa").mkdir()
    with pytest.raises(DataLayoutError, match=r"no file for the eval split.*FreebaseQA-eval\.json"):
        utils.load_freebaseqa(release_split="eval", data_dir=str(tmp_path))


def test_a_missing_split_fails_only_the_task_that_evaluates_it(tmp_path: Path) -> None:
    folder = write_freebaseqa(tmp_path)
    (folder / "FreebaseQA-train.json").unlink()  # the paper variant's split; the pool of dev runs
    manager = task_manager({"data_dir": str(tmp_path)})
    assert len(manager.load(["llmkick_freebaseqa"])["tasks"]["llmkick_freebaseqa"].test_docs()) == 8
    with pytest.raises(DataLayoutError) as error:
        manager.load(["llmkick_freebaseqa_paper"])
    assert str(error.value).startswith(
        "no file for the train split (.json/.tab/.txt; the folder has dev, eval; evaluate another with "
        f"--metadata '{{\"freebaseqa_split\": ...}}'): {folder / 'FreebaseQA-train.json'}"
    )


def test_loader_splits_first_n_and_override(task_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = utils.load_freebaseqa(release_split="train", first_n=2, data_dir=str(task_data_dir))
    assert [doc["question_id"] for doc in data["test"]] == ["tr-0", "tr-1"]
    assert data["fewshot"].num_rows == len(FREEBASEQA_DEV)  # the pool of a train run is dev
    # --metadata '{"freebaseqa_split": "dev"}' wins over the task's split; the pool is then train
    data = utils.load_freebaseqa(release_split="eval", data_dir=str(task_data_dir), freebaseqa_split="dev")
    assert data["test"].num_rows == len(FREEBASEQA_DEV)
    assert [doc["question_id"] for doc in data["fewshot"]] == [row[0] for row in FREEBASEQA_TRAIN]
    # eval's pool (dev) missing: an empty pool and a warning, zero-shot still works
    folder = write_freebaseqa(task_data_dir.parent / "no_dev")
    for suffix in (".tab", ".txt"):
        (folder / f"FreebaseQA-dev{suffix}").unlink()
    with caplog.at_level("WARNING"):
        data = utils.load_freebaseqa(release_split="eval", data_dir=str(folder.parent))
    assert data["fewshot"].num_rows == 0 and data["test"].num_rows == len(FREEBASEQA_EVAL)
    assert "few-shot pool (dev split) not available" in caplog.text


def _scripted_freebaseqa(request) -> str:
    return {row[0]: row[3] for row in FREEBASEQA_EVAL}[request.doc["question_id"]]


def test_scripted_lm_gives_the_exact_scores(task_data_dir: Path) -> None:
    lm = ScriptedLM(generate=_scripted_freebaseqa)
    results = evaluate(lm, ["llmkick_freebaseqa"], {"data_dir": str(task_data_dir)})
    scores = results["results"]["llmkick_freebaseqa"]
    assert scores["contains,none"] == pytest.approx(FREEBASEQA_EXPECTED["contains"])
    assert scores["exact_match,none"] == pytest.approx(FREEBASEQA_EXPECTED["exact_match"])
    per_doc = {
        s["doc"]["question_id"]: (s["contains"], s["exact_match"])
        for s in results["samples"]["llmkick_freebaseqa"]
    }
    assert per_doc == {row[0]: (row[4], row[5]) for row in FREEBASEQA_EVAL}
    # the prompt: the paper's, ending without a trailing space
    assert lm.prompts["llmkick_freebaseqa"][0] == (
        "Please give answer to this question: Who wrote Hamlet?\nThe answer is"
    )


def test_fewshot_uses_the_dev_pool(task_data_dir: Path) -> None:
    lm = ScriptedLM(generate=_scripted_freebaseqa)
    evaluate(lm, ["llmkick_freebaseqa"], {"data_dir": str(task_data_dir)}, num_fewshot=2, limit=1)
    prompt = lm.prompts["llmkick_freebaseqa"][0]
    shots = prompt.split("\n\n")
    assert len(shots) == 3 and shots[-1].endswith("Who wrote Hamlet?\nThe answer is")
    dev_questions = {question for _raw, question, _aliases in FREEBASEQA_DEV}
    for shot in shots[:2]:
        question, answer = shot.removeprefix("Please give answer to this question: ").split(
            "\nThe answer is "
        )
        assert question in dev_questions and answer


def test_paper_variant_reads_train(task_data_dir: Path) -> None:
    lm = ScriptedLM(generate=lambda request: " " + request.doc["answers"][0])
    results = evaluate(lm, ["llmkick_freebaseqa_paper"], {"data_dir": str(task_data_dir)})
    scores = results["results"]["llmkick_freebaseqa_paper"]
    assert scores["contains,none"] == 1.0 and scores["exact_match,none"] == 1.0
    assert [s["doc"]["question_id"] for s in results["samples"]["llmkick_freebaseqa_paper"]] == [
        row[0] for row in FREEBASEQA_TRAIN
    ]


def test_real_dev_data_parses(shared_data: Path) -> None:
    folder = shared_data / "freebaseqa"
    tab = loader.parse_tab(folder / "FreebaseQA-dev.tab")
    txt = loader.parse_txt(folder / "FreebaseQA-dev.txt")
    # 3,996 question strings in the .tab, two of which differ only by trailing whitespace
    assert len(tab) == 3995
    assert 3990 <= len(txt) <= len(tab)
    by_question = {doc["question"]: doc["answers"] for doc in tab}
    assert by_question["The 1999 film '10 Things I Hate About You' is based on which Shakespeare play?"] == [
        "Taming of the Shrew",
        "the taming of the shrew",
    ]
    assert "Who began as a Broadway actor" in next(q for q in by_question if '"The Grapes of Wrath"' in q)
    assert not any(doc["question"].startswith("85326") for doc in txt)


def test_hold_out_takes_evenly_spaced_questions_out_of_the_evaluated_ones() -> None:
    docs = [{"question_id": str(i), "question": f"q{i}?", "answers": ["a"]} for i in range(10)]
    evaluated, pool = loader.hold_out(docs, 3)
    assert [d["question_id"] for d in pool] == ["0", "3", "6"]  # spread over the (subject-sorted) file
    assert [d["question_id"] for d in evaluated] == ["1", "2", "4", "5", "7", "8", "9"]
    assert loader.hold_out(docs, 3) == (evaluated, pool)  # deterministic: every sweep point sees the same
    with pytest.raises(ValueError, match=r"freebaseqa_fewshot_holdout=10: allowed fewer than the split's 10"):
        loader.hold_out(docs, 10)


def test_holdout_pool_replaces_the_missing_split_and_first_n_applies_after(task_data_dir: Path) -> None:
    folder = write_freebaseqa(task_data_dir.parent / "dev_only")
    for split in ("train", "eval"):
        for suffix in (".json", ".tab", ".txt"):
            (folder / f"FreebaseQA-{split}{suffix}").unlink(missing_ok=True)
    metadata = {"data_dir": str(folder.parent), "freebaseqa_split": "dev"}
    data = utils.load_freebaseqa(**metadata, freebaseqa_fewshot_holdout=2)
    test_ids = [doc["question_id"] for doc in data["test"]]
    pool_ids = [doc["question_id"] for doc in data["fewshot"]]
    assert len(pool_ids) == 2 and len(test_ids) == len(FREEBASEQA_DEV) - 2
    assert not set(test_ids) & set(pool_ids)  # no question is both a shot and evaluated
    data = utils.load_freebaseqa(**metadata, freebaseqa_fewshot_holdout=2, first_n=1)
    assert [doc["question_id"] for doc in data["test"]] == test_ids[:1]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"freebaseqa_fewshot_holdout": "50"}, "freebaseqa_fewshot_holdout='50': allowed a positive integer"),
        ({"freebaseqa_fewshot_holdout": 0}, "freebaseqa_fewshot_holdout=0: allowed a positive integer"),
        ({"freebaseqa_split": "test"}, "freebaseqa_split='test': allowed train, dev, eval"),
        ({"wikitext2_windows": 2.5}, "wikitext2_windows=2.5: allowed a positive integer"),
        ({"wikitext2_seqlen": 1}, "wikitext2_seqlen=1: allowed an integer >= 2"),
        ({"evidence_tokens": -1}, "evidence_tokens=-1: allowed a non-negative integer"),
    ],
)
def test_bad_knobs_fail_before_the_model_is_loaded(tmp_path: Path, metadata: dict, message: str) -> None:
    import types

    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    from llmkick_tasks import preflight

    module = types.ModuleType("evaluator_copy")
    module.simple_evaluate = lm_eval.evaluator.simple_evaluate
    preflight.install(module)
    tasks_dir = str(Path(utils.__file__).parents[1])
    manager = TaskManager(include_path=tasks_dir, include_defaults=False, metadata=metadata)
    # Were the (missing) model loaded first, this would fail with its loading error instead.
    with pytest.raises(ValueError, match=message):
        module.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tmp_path / 'no_such_model'}",
            tasks=["llmkick_freebaseqa"],
            task_manager=manager,
        )


def test_num_fewshot_draws_shots_from_the_held_out_questions_only(task_data_dir: Path) -> None:
    folder = write_freebaseqa(task_data_dir.parent / "dev_only_shots")
    for split in ("train", "eval"):
        for suffix in (".json", ".tab", ".txt"):
            (folder / f"FreebaseQA-{split}{suffix}").unlink(missing_ok=True)
    metadata = {"data_dir": str(folder.parent), "freebaseqa_split": "dev", "freebaseqa_fewshot_holdout": 2}
    pool = utils.load_freebaseqa(**metadata)["fewshot"]
    lm = ScriptedLM(generate=lambda request: " nothing")
    results = evaluate(lm, ["llmkick_freebaseqa"], metadata, num_fewshot=1)
    prompts = lm.prompts["llmkick_freebaseqa"]
    assert len(prompts) == len(FREEBASEQA_DEV) - 2  # the held-out questions are not evaluated
    for prompt in prompts:
        shot, question = prompt.split("\n\n")  # one shot, then the evaluated question
        assert any(f"question: {doc['question']}\nThe answer is {doc['answers'][0]}" in shot for doc in pool)
        assert question.startswith("Please give answer to this question:")
        assert question.endswith("The answer is")
    assert results["configs"]["llmkick_freebaseqa"]["metadata"]["freebaseqa_fewshot_holdout"] == 2


@pytest.mark.parametrize("task", ["llmkick_freebaseqa", "llmkick_freebaseqa_paper"])
def test_without_a_data_dir_and_offline_the_error_names_the_release_and_the_override(task: str) -> None:
    # conftest sets HF_DATASETS_OFFLINE=1: the GitHub release cannot be fetched, and there is no Hub copy.
    with pytest.raises(RuntimeError) as error:
        task_manager({}).load([task])
    split = "train" if task.endswith("paper") else "eval"
    url = f"https://raw.githubusercontent.com/kelvin-jiang/FreebaseQA/master/FreebaseQA-{split}.json"
    message = str(error.value)
    assert message.startswith(
        f"could not fetch the official FreebaseQA release {url} (FreebaseQA has no Hugging Face Hub copy "
        "that `datasets` loads without a loading script) ("
    )
    assert (
        'give the tasks a local data dir: --metadata \'{"data_dir": "/path"}\' or $LLMKICK_DATA_DIR'
        in message
    )
