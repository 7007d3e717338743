"""WikiText-2 perplexity: ``llmkick_wikitext2_ppl`` (the papers' token windows, checked against a direct
windowed computation) and ``llmkick_wikitext2_ppl_articles`` (articles, detokenized)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from task_fixtures import TASKS_DIR as TASKS

from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.wikitext2.utils import detokenize, split_articles
from llmkick_tasks.wikitext2.windows import (
    NoTokenizerError,
    joined_text,
    release_rows,
    resolve_seqlen,
    token_windows,
)

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


def articles(**metadata: object) -> list[dict]:
    name = "llmkick_wikitext2_ppl_articles"
    return list(
        TaskManager(include_path=str(TASKS), include_defaults=False, metadata=metadata)
        .load([name])["tasks"][name]
        .test_docs()
    )


def test_loads_from_the_data_dir(wikitext_dir: Path) -> None:
    assert [a["title"] for a in articles(data_dir=str(wikitext_dir))] == ["Robert Boulter", "Second Article"]


def test_article_cap_knob(wikitext_dir: Path) -> None:
    assert [a["title"] for a in articles(data_dir=str(wikitext_dir), wikitext2_articles=1)] == [
        "Robert Boulter"
    ]
    with pytest.raises(ValueError, match="wikitext2_articles=0"):
        articles(data_dir=str(wikitext_dir), wikitext2_articles=0)


def test_missing_file_names_the_path_and_layout(tmp_path: Path) -> None:
    (tmp_path / "wikitext2").mkdir()
    with pytest.raises(DataLayoutError, match=r"(?s)no WikiText-2 test file.*wikitext2/test.txt"):
        articles(data_dir=str(tmp_path))


def test_perplexity_through_lm_eval(tiny_llama_dir: Path, wikitext_dir: Path) -> None:
    results = simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={tiny_llama_dir},method=magnitude,sparsity=0.5",
        tasks=["llmkick_wikitext2_ppl_articles"],
        task_manager=TaskManager(metadata={"data_dir": str(wikitext_dir)}),
        device="cpu",
    )
    metrics = results["results"]["llmkick_wikitext2_ppl_articles"]
    assert metrics["word_perplexity,none"] > 1 and metrics["bits_per_byte,none"] > 0
    assert results["higher_is_better"]["llmkick_wikitext2_ppl_articles"]["word_perplexity"] is False


def test_real_wikitext2_loads(shared_data: Path) -> None:
    test = articles(data_dir=str(shared_data))
    assert len(test) > 50  # WikiText-2 test has ~60 articles
    assert "@-@" not in test[0]["page"]


@pytest.fixture
def long_wikitext_dir(tmp_path: Path) -> Path:
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "test.txt").write_text("\n".join(RELEASE_LINES * 6) + "\n")
    return tmp_path


def test_rows_are_joined_as_the_reference_scripts_do() -> None:
    rows = release_rows([" ", " = A = ", " text . "])
    assert rows == ["", " = A = \n", " text . \n"]  # the Hub's wikitext rows
    assert joined_text(rows) == "\n\n = A = \n\n\n text . \n"


def test_token_windows_are_exact_non_overlapping_slices(tiny_llama_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = joined_text(release_rows(RELEASE_LINES * 6))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = token_windows(tokenizer, text, 16)
    assert len(windows) == len(ids) // 16  # the remainder is dropped, as in the reference scripts
    for index, window in enumerate(windows):
        assert window["round_trip"] and window["tokens"] == 16
        assert (
            tokenizer(window["text"], add_special_tokens=False)["input_ids"]
            == ids[index * 16 : (index + 1) * 16]
        )
    assert len(token_windows(tokenizer, text, 16, windows=3)) == 3


def test_seqlen_defaults_to_2048_capped_at_the_context(tiny_llama_dir: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert resolve_seqlen({"pretrained": str(tiny_llama_dir)}, tokenizer) == 256  # the model's context
    assert resolve_seqlen({"pretrained": str(tiny_llama_dir), "max_length": 64}, tokenizer) == 64
    assert resolve_seqlen({"pretrained": str(tiny_llama_dir), "wikitext2_seqlen": 32}, tokenizer) == 32
    with pytest.raises(ValueError, match="wikitext2_seqlen=0"):
        resolve_seqlen({"wikitext2_seqlen": 0}, tokenizer)


def test_windowed_task_builds_without_a_model_and_needs_its_tokenizer_for_documents(
    long_wikitext_dir: Path,
) -> None:
    # As lm-eval's own task tests build it: no model args, so no tokenizer.
    bare = TaskManager(
        include_path=str(TASKS), include_defaults=False, metadata={"data_dir": str(long_wikitext_dir)}
    )
    task = bare.load(["llmkick_wikitext2_ppl"])["tasks"]["llmkick_wikitext2_ppl"]
    with pytest.raises(NoTokenizerError, match="llmkick_wikitext2_ppl_articles, which needs no tokenizer"):
        task.test_docs()
    with pytest.raises(NoTokenizerError):
        task.build_all_requests(limit=2, rank=0, world_size=1)
    with pytest.raises(ValueError, match="wikitext2_windows='2'"):  # a bad knob still fails at once
        TaskManager(metadata={"data_dir": str(long_wikitext_dir), "wikitext2_windows": "2"}).load(
            ["llmkick_wikitext2_ppl"]
        )


def test_windowed_task_cuts_windows_with_the_named_tokenizer(
    tiny_llama_dir: Path, long_wikitext_dir: Path
) -> None:
    metadata = {"data_dir": str(long_wikitext_dir), "pretrained": str(tiny_llama_dir), "wikitext2_seqlen": 16}
    task = TaskManager(metadata=metadata).load(["llmkick_wikitext2_ppl"])["tasks"]["llmkick_wikitext2_ppl"]
    docs = task.test_docs()
    assert docs[0]["window"] == 0 and docs[0]["tokens"] == 16 and len(docs) >= 4
    task.build_all_requests(limit=2, rank=0, world_size=1)
    assert [i.arguments for i in task.instances] == [("", docs[0]["text"]), ("", docs[1]["text"])]


def _direct_windowed_perplexity(model_dir: Path, text: str, seqlen: int) -> tuple[float, int]:
    """The reference computation, written out: windows of the joined text, each scored on all its tokens
    after the prefix token (BOS, else EOS), as the harness scores an empty context."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total, scored = 0.0, 0
    for start in range(0, len(ids) // seqlen * seqlen, seqlen):
        window = ids[start : start + seqlen]
        with torch.no_grad():
            logits = model(torch.tensor([[prefix, *window[:-1]]])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        total += float(logprobs[torch.arange(seqlen), torch.tensor(window)].sum())
        scored += seqlen
    return math.exp(-total / scored), scored // seqlen


@pytest.mark.parametrize("batch_size", [1, 3])
def test_windowed_perplexity_equals_a_direct_computation(
    tiny_llama_dir: Path, long_wikitext_dir: Path, batch_size: int
) -> None:
    results = simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={tiny_llama_dir}",
        tasks=["llmkick_wikitext2_ppl"],
        # The lm_eval CLI merges --model_args into the task metadata; with an explicit TaskManager we do.
        task_manager=TaskManager(
            metadata={
                "data_dir": str(long_wikitext_dir),
                "wikitext2_seqlen": 24,
                "pretrained": str(tiny_llama_dir),
            }
        ),
        device="cpu",
        batch_size=batch_size,
        log_samples=True,
    )
    text = joined_text(release_rows((long_wikitext_dir / "wikitext2" / "test.txt").read_text().splitlines()))
    expected, windows = _direct_windowed_perplexity(tiny_llama_dir, text, 24)
    metrics = results["results"]["llmkick_wikitext2_ppl"]
    assert windows >= 4 and len(results["samples"]["llmkick_wikitext2_ppl"]) == windows
    assert metrics["token_perplexity,none"] == pytest.approx(expected, rel=1e-5)
    assert metrics["bits_per_byte,none"] > 0 and metrics["word_perplexity,none"] > 1
    assert results["higher_is_better"]["llmkick_wikitext2_ppl"]["token_perplexity"] is False
