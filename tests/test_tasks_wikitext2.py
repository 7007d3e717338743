"""``llmkick_wikitext2_ppl``: WikiText-2 articles, detokenized, perplexity through lm-eval."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.wikitext2.utils import detokenize, load_wikitext2, split_articles

RELEASE_LINES = [
    " ",
    " = Robert Boulter = ",
    " ",
    " Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role . ",
    ' In 2006 he won 1 @,@ 000 pounds ( about $ 1 @.@ 5 ) and said " it \'s fine " . ',
    " ",
    " = = Career = = ",
    " He didn 't stop . ",
    " = Second Article = ",
    " Short text ; with a colon : here . ",
]


def test_detokenize_undoes_word_level_tokenization() -> None:
    assert detokenize("guest @-@ starring , and 1 @,@ 000 ( 1 @.@ 5 )") == "guest-starring, and 1,000 (1.5)"
    assert detokenize('he said " it \'s fine " .') == 'he said "it\'s fine".'
    assert detokenize("He didn 't stop .") == "He didn't stop."


def test_articles_split_at_top_level_headings_only() -> None:
    articles = split_articles(RELEASE_LINES)
    assert [a["title"] for a in articles] == ["Robert Boulter", "Second Article"]
    first = articles[0]["page"]
    assert first.startswith(" = Robert Boulter = \n\n")
    assert "= = Career = =" in first  # sub-headings stay inside their article
    assert "guest-starring role." in first and "1,000 pounds (about $1.5)" in first
    assert articles[1]["page"].endswith("Short text; with a colon: here.")


@pytest.fixture
def wikitext_dir(tmp_path: Path) -> Path:
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "test.txt").write_text("\n".join(RELEASE_LINES) + "\n")
    return tmp_path


def test_loads_from_the_data_dir(wikitext_dir: Path) -> None:
    test = load_wikitext2(data_dir=str(wikitext_dir))["test"]
    assert test["title"] == ["Robert Boulter", "Second Article"]


def test_article_cap_knob(wikitext_dir: Path) -> None:
    assert load_wikitext2(data_dir=str(wikitext_dir), wikitext2_articles=1)["test"]["title"] == [
        "Robert Boulter"
    ]
    with pytest.raises(ValueError, match="wikitext2_articles=0"):
        load_wikitext2(data_dir=str(wikitext_dir), wikitext2_articles=0)


def test_missing_file_names_the_path_and_layout(tmp_path: Path) -> None:
    (tmp_path / "wikitext2").mkdir()
    with pytest.raises(DataLayoutError, match=r"(?s)no WikiText-2 test file.*wikitext2/test.txt"):
        load_wikitext2(data_dir=str(tmp_path))


def test_perplexity_through_lm_eval(tiny_llama_dir: Path, wikitext_dir: Path) -> None:
    results = simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={tiny_llama_dir},method=magnitude,sparsity=0.5",
        tasks=["llmkick_wikitext2_ppl"],
        task_manager=TaskManager(metadata={"data_dir": str(wikitext_dir)}),
        device="cpu",
    )
    metrics = results["results"]["llmkick_wikitext2_ppl"]
    assert metrics["word_perplexity,none"] > 1 and metrics["bits_per_byte,none"] > 0
    assert results["higher_is_better"]["llmkick_wikitext2_ppl"]["word_perplexity"] is False


def test_real_wikitext2_loads(shared_data: Path) -> None:
    test = load_wikitext2(data_dir=str(shared_data))["test"]
    assert len(test) > 50  # WikiText-2 test has ~60 articles
    assert "@-@" not in test[0]["page"]
