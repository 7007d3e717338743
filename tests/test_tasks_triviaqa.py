"""TriviaQA: release layout loading, the token budget of open-book evidence, exact scripted-LM scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import transformers
import yaml
from task_fixtures import (
    TASKS_DIR,
    TRIVIAQA_DEV,
    TRIVIAQA_EXPECTED,
    TRIVIAQA_WEB_TEXT,
    TRIVIAQA_WIKI_TEXT,
    ScriptedLM,
    evaluate,
    task_manager,
    triviaqa_validation_order,
    write_triviaqa,
)

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.triviaqa import evidence
from llmkick_tasks.triviaqa.documents import CHARS_PER_TOKEN, hub_raw_doc
from llmkick_tasks.triviaqa.release import release_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)


def _n_tokens(tokenizer: transformers.PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def task_docs(task: str, **metadata: Any) -> list[dict[str, Any]]:
    """The documents of ``task`` built with ``metadata`` (as lm-eval builds them)."""
    return list(task_manager(metadata).load([task])["tasks"][task].test_docs())


def test_release_layout_reads_validation_in_hub_order(
    task_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        rows = release_rows(task_data_dir / "triviaqa", "dev", with_evidence=True)
    docs = [hub_raw_doc(row, True) for row in rows]
    assert [doc.question_id for doc in docs] == triviaqa_validation_order()
    first = docs[0]
    assert first.aliases == ["Paris", "Paris, France", "paris", "paris, france"]  # value, aliases, normalized
    # the missing first entity page is skipped (and reported); the next one is used
    assert "Missing_Page.txt is missing" in caplog.text
    assert rows[0]["entity_pages"]["filename"] == ["tq-0.txt"]
    wiki, web = TRIVIAQA_WIKI_TEXT.format(qid="tq-0").strip(), TRIVIAQA_WEB_TEXT.format(qid="tq-0").strip()
    assert first.evidence == wiki + "\n\n" + web
    wikipedia_doc = next(doc for doc in docs if doc.question_id == "tq-2")
    assert wikipedia_doc.evidence == TRIVIAQA_WIKI_TEXT.format(qid="tq-2").strip()  # no search result


def test_closed_book_has_no_evidence(task_data_dir: Path) -> None:
    docs = task_docs("llmkick_triviaqa_closed", data_dir=str(task_data_dir))
    assert len(docs) == len(TRIVIAQA_DEV)
    assert set(docs[0]) == {"question_id", "question", "answer", "aliases", "evidence"}
    assert {doc["evidence"] for doc in docs} == {""}


def test_folder_names_of_the_archive_and_the_sample(tmp_path: Path) -> None:
    write_triviaqa(tmp_path, "triviaqa_sample")
    assert len(task_docs("llmkick_triviaqa_closed", data_dir=str(tmp_path))) == len(TRIVIAQA_DEV)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"no triviaqa folder in the data dir.*triviaqa_sample"):
        task_docs("llmkick_triviaqa_closed", data_dir=str(tmp_path))
    folder = write_triviaqa(tmp_path)
    (folder / "qa" / "web-dev.json").write_text(json.dumps({"Data": [{"Question": "no answer"}]}))
    with pytest.raises(DataLayoutError, match=r"not a TriviaQA rc question file.*web-dev\.json"):
        task_docs("llmkick_triviaqa_closed", data_dir=str(tmp_path))
    for name in ("web-dev.json", "wikipedia-dev.json"):
        (folder / "qa" / name).unlink()
    with pytest.raises(DataLayoutError, match=r"no TriviaQA rc question file for the dev split") as error:
        task_docs("llmkick_triviaqa_closed", data_dir=str(tmp_path))
    assert "triviaqa/qa/{web,wikipedia}-{train,dev}.json" in str(error.value)
    folder = write_triviaqa(tmp_path / "other")
    shutil.rmtree(folder / "evidence" / "web")
    with pytest.raises(DataLayoutError, match=r"evidence folder missing.*evidence/web"):
        task_docs("llmkick_triviaqa_open", data_dir=str(tmp_path / "other"), evidence_tokens=100)


class TestEvidenceBudget:
    def test_cut_is_a_prefix_within_the_token_budget(self, tokenizer) -> None:
        budget = evidence.EvidenceBudget(50, tokenizer, max_length=10_000)
        text = "The quick brown fox jumps over the lazy dog. " * 200
        cut = budget.cut(text, 50)
        assert text.startswith(cut)
        assert 45 <= _n_tokens(tokenizer, cut) <= 50
        assert budget.cut("short text", 50) == "short text"
        assert budget.cut(text, 0) == ""

    def test_per_question_budget_leaves_room_for_question_and_answer(self, tokenizer) -> None:
        budget = evidence.EvidenceBudget(10_000, tokenizer, max_length=256)
        question = "Who was the next British Prime Minister after Arthur Balfour?"
        allowed = budget.tokens_for(question)
        prompt = "\n\n" + evidence.OPEN_BOOK_QUESTION.format(question=question)
        assert allowed + _n_tokens(tokenizer, prompt) + evidence.MAX_GEN_TOKS <= 256
        assert (
            allowed >= 256 - _n_tokens(tokenizer, prompt) - evidence.MAX_GEN_TOKS - evidence.MARGIN_TOKENS - 2
        )
        assert evidence.EvidenceBudget(20, tokenizer, max_length=256).tokens_for(question) == 20  # knob wins
        assert (
            evidence.EvidenceBudget(20, tokenizer, max_length=10).tokens_for(question) == 0
        )  # no room at all

    def test_from_model_args(self, tiny_llama_dir: Path) -> None:
        budget = evidence.EvidenceBudget.from_metadata(
            {"pretrained": str(tiny_llama_dir), "evidence_tokens": 64}
        )
        assert budget.tokenizer is not None and budget.max_length == 256  # the tiny model's context
        budget = evidence.EvidenceBudget.from_metadata(
            {"pretrained": str(tiny_llama_dir), "max_length": 128, "evidence_tokens": 64}
        )
        assert budget.max_length == 128  # --model_args max_length wins, as in lm-eval's HFLM

    def test_without_tokenizer_falls_back_to_characters(self, tmp_path: Path) -> None:
        budget = evidence.EvidenceBudget.from_metadata({"evidence_tokens": 10})
        assert budget.tokenizer is None
        assert budget.cut("x" * 1000, budget.tokens_for("q")) == "x" * 10 * CHARS_PER_TOKEN
        missing = evidence.EvidenceBudget.from_metadata(
            {"pretrained": str(tmp_path / "none"), "evidence_tokens": 10}
        )
        assert missing.tokenizer is None

    @pytest.mark.parametrize("value", [-1, 1.5, "768", True])
    def test_bad_knob(self, value: object) -> None:
        with pytest.raises(ValueError, match="evidence_tokens must be a non-negative integer"):
            evidence.EvidenceBudget.from_metadata({"evidence_tokens": value})

    def test_yaml_reserves_what_it_generates(self) -> None:
        template = yaml.safe_load(
            (TASKS_DIR / "triviaqa" / "_triviaqa_template_yaml").read_text().replace("!function", "")
        )
        assert template["generation_kwargs"]["max_gen_toks"] == evidence.MAX_GEN_TOKS
        assert "evidence_tokens: 768" in (TASKS_DIR / "triviaqa" / "triviaqa_open.yaml").read_text()


def _scripted(request) -> str:
    return {row[0]: row[5] for row in TRIVIAQA_DEV}[request.doc["question_id"]]


@pytest.mark.parametrize("task", ["llmkick_triviaqa_closed", "llmkick_triviaqa_open"])
def test_scripted_lm_gives_the_exact_scores(task_data_dir: Path, task: str) -> None:
    lm = ScriptedLM(generate=_scripted)
    results = evaluate(lm, [task], {"data_dir": str(task_data_dir)})
    scores = results["results"][task]
    for metric, expected in TRIVIAQA_EXPECTED.items():
        assert scores[f"{metric},none"] == pytest.approx(expected), metric
    per_doc = {
        s["doc"]["question_id"]: (s["exact_match"], s["f1"], s["lenient_match"])
        for s in results["samples"][task]
    }
    for row in TRIVIAQA_DEV:
        assert per_doc[row[0]] == pytest.approx(row[6:9]), row[0]
    prompt = lm.prompts[task][0]
    question = (
        "Answer these questions:"
        if task.endswith("closed")
        else "Based on these texts, answer these questions:"
    )
    assert prompt.endswith(f"{question}\n\nQ: What is the capital of France?\nA:")
    if task.endswith("closed"):
        assert prompt == "Answer these questions:\n\nQ: What is the capital of France?\nA:"
    else:  # no tokenizer known from a Python LM object: 768 tokens -> 3072 characters, all of the evidence
        assert prompt.startswith(TRIVIAQA_WIKI_TEXT.format(qid="tq-0").strip() + "\n\n" + "Search result")


def test_open_book_budget_in_tokens_of_the_model(
    task_data_dir: Path, tiny_llama_dir: Path, tokenizer
) -> None:
    lm = ScriptedLM(generate=_scripted)
    metadata = {"data_dir": str(task_data_dir), "tokenizer": str(tiny_llama_dir), "evidence_tokens": 40}
    evaluate(lm, ["llmkick_triviaqa_open"], metadata)
    for prompt in lm.prompts["llmkick_triviaqa_open"]:
        evidence, _question = prompt.split("\n\nBased on these texts", 1)
        assert 35 <= _n_tokens(tokenizer, evidence) <= 40
        assert evidence.startswith("Wiki page about tq-")
    # a budget of 0 tokens: the open-book prompt without evidence
    lm = ScriptedLM(generate=_scripted)
    evaluate(lm, ["llmkick_triviaqa_open"], {**metadata, "evidence_tokens": 0}, limit=1)
    assert lm.prompts["llmkick_triviaqa_open"] == [
        "Based on these texts, answer these questions:\n\nQ: What is the capital of France?\nA:"
    ]


def test_real_sample_loads(shared_data: Path, tiny_llama_dir: Path) -> None:
    closed = task_docs("llmkick_triviaqa_closed", data_dir=str(shared_data))
    assert [doc["question_id"] for doc in closed] == [
        "tc_2",
        "tc_33",
        "tc_33",
        "tc_40",
    ]  # web, then wikipedia
    assert "sunset boulevard" in closed[1]["aliases"]
    opened = task_docs(
        "llmkick_triviaqa_open",
        data_dir=str(shared_data),
        pretrained=str(tiny_llama_dir),
        evidence_tokens=768,
    )
    evidence = [doc["evidence"] for doc in opened]
    assert evidence[0].startswith("Alvin and the Chipmunks")  # tc_2 has only search results
    assert evidence[1].startswith("Andrew Lloyd Webber")  # entity page first
    assert all(0 < len(text) < 2000 for text in evidence)  # cut to the tiny model's 256-token context
