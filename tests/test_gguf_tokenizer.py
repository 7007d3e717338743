"""A converted GGUF's tokenizer adds BOS/EOS exactly as the GGUF's metadata says, also after saving."""

from __future__ import annotations

import transformers

from llmkick_models.storage.gguf import align_special_tokens, special_token_mismatches
from tiny_models import build_tokenizer


def test_a_tokenizer_that_drops_bos_is_mended_and_stays_mended_after_saving(tmp_path) -> None:
    tokenizer = build_tokenizer()  # like transformers 5.19's Gemma-3 GGUF tokenizer: no BOS added
    flags = {"add_bos_token": True, "add_eos_token": False}
    mismatches = special_token_mismatches(tokenizer, flags)
    assert mismatches == ["add_bos_token=True but the tokenizer does not add it"]

    align_special_tokens(tokenizer, flags, "model.gguf")

    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.bos_token_id
    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert special_token_mismatches(reloaded, flags) == []
    assert reloaded("Hello world")["input_ids"][0] == reloaded.bos_token_id


def test_a_tokenizer_that_adds_bos_against_the_gguf_stops_adding_it() -> None:
    tokenizer = build_tokenizer()
    tokenizer.add_bos_token = True
    align_special_tokens(tokenizer, {"add_bos_token": False, "add_eos_token": None}, "model.gguf")
    assert tokenizer("Hello world")["input_ids"][0] != tokenizer.bos_token_id


def test_flags_the_gguf_does_not_state_leave_the_tokenizer_alone() -> None:
    tokenizer = build_tokenizer()
    before = tokenizer("Hello world")["input_ids"]
    align_special_tokens(tokenizer, {"add_bos_token": None, "add_eos_token": None}, "model.gguf")
    assert tokenizer("Hello world")["input_ids"] == before
