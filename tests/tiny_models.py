"""Tiny decoder-only models and a real tokenizer, built offline for tests and benchmarks.

Each architecture is chosen for a layout the compressor must handle generically: Llama (GQA, untied
embeddings), Qwen2 (biases on q/k/v, tied embeddings), GPT-NeoX (fused QKV, ``gpt_neox.layers``), GPT-2
(``Conv1D`` with (in, out) weights, ``transformer.h``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please give answer to this question: who wrote Hamlet? The answer is William Shakespeare.",
    "The following are multiple choice questions (with answers) about anatomy.",
    "Answer these questions: Q: What is the capital of France? A: Paris",
    "Summarize the given story in less than 150 words while preserving high coherence.",
    "A. one B. two C. three D. four Answer: A B C D",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000",
] * 20

ARCHITECTURES = ("llama", "qwen2", "gpt_neox", "gpt2")


def build_tokenizer(vocab_size: int = 384) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a small corpus: every string encodes, nothing downloads."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="<|endoftext|>", model_max_length=256
    )


def build_config(arch: str, vocab_size: int, layers: int = 2) -> transformers.PretrainedConfig:
    """A small config of ``arch`` whose linear widths are multiples of 16 (so 2:4, 4:8 and 8:16 apply)."""
    common = {"vocab_size": vocab_size, "bos_token_id": vocab_size - 1, "eos_token_id": 0}
    if arch == "llama":
        return transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, **common,
        )  # fmt: skip
    if arch == "qwen2":
        return transformers.Qwen2Config(
            hidden_size=64, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, **common,
        )  # fmt: skip
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            max_position_embeddings=256, tie_word_embeddings=False, **common,
        )  # fmt: skip
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=64, n_layer=layers, n_head=4, n_positions=256, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; known: {ARCHITECTURES}")


def build_model(arch: str, tokenizer: transformers.PreTrainedTokenizerFast, seed: int = 0):
    """A randomly initialised float32 model of ``arch`` (deterministic for a seed)."""
    torch.manual_seed(seed)
    config = build_config(arch, len(tokenizer))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_tiny_model(arch: str, directory: Path, seed: int = 0) -> Path:
    """Save model + tokenizer of ``arch`` under ``directory`` (loadable by ``pretrained=directory``)."""
    tokenizer = build_tokenizer()
    model = build_model(arch, tokenizer, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
