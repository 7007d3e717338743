"""Peak memory of perplexity scoring with a large vocabulary: compressed-hf's logits budget vs none.

A model with Gemma 3's 262,144-entry vocabulary (tiny otherwise: 2 layers, hidden 64, so the logits are
all that weighs) scores 2048-token windows the way ``llmkick_wikitext2_ppl`` asks for them, through
compressed-hf's loglikelihood path.  Each measurement runs in its own process (peak RSS is its own):

* ``capped``: ``--batch_size 16`` with the default budget (batches cut to fit it, at least one window);
* ``uncapped``: the logits budget lifted, at a batch small enough to run on this machine; lm-eval's own
  behaviour at batch 16 is extrapolated from it (memory grows linearly with the batch).

    python benchmarks/ppl_memory_bench.py [--vocab 262144] [--seqlen 2048] [--windows 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_common import rss_mib, run_worker


def _build_model(folder: Path, vocab: int, seqlen: int) -> None:
    import transformers

    from tiny_models import build_tokenizer

    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=seqlen + 8, tie_word_embeddings=True,
        bos_token_id=vocab - 1, eos_token_id=0,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)


def _worker(step: str, folder: str, seqlen: int, windows: int, batch: int) -> None:
    import torch

    from llmkick_models.compressed_hf import CompressedHFLM

    lm = CompressedHFLM(pretrained=folder, device="cpu", batch_size=batch, max_length=seqlen)
    loaded = rss_mib()
    generator = torch.Generator().manual_seed(0)
    vocab = lm.model.config.vocab_size
    requests = []
    for _ in range(windows):
        window = torch.randint(1, vocab - 1, (seqlen,), generator=generator).tolist()
        requests.append((("", ""), [lm.prefix_token_id], window))
    start = time.perf_counter()
    scores = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    print(json.dumps({
        "step": step, "batch": batch, "loaded_mib": loaded, "peak_mib": rss_mib(),
        "seconds": time.perf_counter() - start, "windows": len(scores),
    }))  # fmt: skip


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--uncapped-batch", type=int, default=2, help="batch of the budget-free run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "uncapped":
            os.environ["LLMKICK_LOGITS_BUDGET_MB"] = str(10**9)
        _worker(args.worker, args.folder, args.seqlen, args.windows, args.batch)
        return
    with tempfile.TemporaryDirectory() as tmp:
        _build_model(Path(tmp), args.vocab, args.seqlen)
        common = ["--folder", tmp, "--seqlen", str(args.seqlen)]
        capped = run_worker(
            __file__, "capped", [*common, "--windows", str(args.windows), "--batch", str(args.batch)]
        )
        uncapped = run_worker(
            __file__, "uncapped",
            [*common, "--windows", str(args.uncapped_batch), "--batch", str(args.uncapped_batch)],
        )  # fmt: skip
    per_window = (uncapped["peak_mib"] - uncapped["loaded_mib"]) / args.uncapped_batch
    print(f"vocab {args.vocab}, {args.seqlen}-token windows, model load {capped['loaded_mib']:.0f} MiB RSS")
    print(
        f"capped (default budget), batch {args.batch}, {capped['windows']} windows: peak "
        f"{capped['peak_mib']:.0f} MiB in {capped['seconds']:.0f} s"
    )
    print(
        f"uncapped, batch {args.uncapped_batch}: peak {uncapped['peak_mib']:.0f} MiB "
        f"({per_window:.0f} MiB per window in a batch)"
    )
    estimate = uncapped["loaded_mib"] + per_window * args.batch
    print(f"uncapped at batch {args.batch} (extrapolated): ~{estimate / 1024:.1f} GiB; "
          f"capped / uncapped = {capped['peak_mib'] / estimate:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
