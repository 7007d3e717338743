"""compressed-hf vs compressed-vllm on the same compressed weights: agreement and evaluation time.

    python benchmarks/vllm_agreement.py --model /path/to/gemma-3-270m [--limit 1000] [--threads 2]

Compresses once (compressed-hf stores the point in a fresh model cache), evaluates FreebaseQA (greedy,
``contains`` / ``exact_match``) and MMLU's log-likelihood protocol with compressed-hf, then starts
compressed-vllm on the cached weights and evaluates the same documents.  Prints the share of FreebaseQA
documents whose generations agree (and every differing one, with why), the mean and largest per-token
log-likelihood gap on MMLU, and the evaluation times (vLLM / HF, the engine start-up apart).

Needs vLLM (the README's Scaling out section has the CPU venv).  CPU defaults keep the run small on a
shared machine: ``--threads`` for both backends, 1 GiB of vLLM KV cache, no torch.compile
(``--compile`` turns it on; on a GPU leave it on).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FREEBASEQA, MMLU = "llmkick_freebaseqa", "llmkick_mmlu_ll"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="HF folder (Gemma-3-270m in benchmarks/README.md)")
    parser.add_argument("--compression", default="method=magnitude,sparsity=0.2", help="compressed-hf args")
    parser.add_argument("--limit", type=int, default=1000, help="FreebaseQA questions (dev split)")
    parser.add_argument("--mmlu-limit", type=int, default=2, help="MMLU questions per subject (57 subjects)")
    parser.add_argument("--batch-size", type=int, default=16, help="compressed-hf's batch size")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each backend")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU check")
    parser.add_argument("--data-dir", default=str(DATA), help="LLM-KICK data dir (FreebaseQA dev, MMLU)")
    parser.add_argument("--compile", action="store_true", help="let vLLM torch.compile (slow start on CPU)")
    return parser.parse_args()


def _evaluate(lm: Any, task: str, limit: int, data_dir: str) -> tuple[list[dict], float]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(metadata={"data_dir": data_dir, "freebaseqa_split": "dev"})
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit, log_samples=True,
                              bootstrap_iters=0)  # fmt: skip
    seconds = time.perf_counter() - start
    samples = results["samples"]
    return [s for name in sorted(samples) for s in samples[name] if name.startswith(task)], seconds


def _subject_samples(samples: list[dict]) -> list[dict]:
    # MMLU's subjects restart doc ids at 0: make them unique for the comparison
    return [{**s, "doc_id": (s["doc"].get("subject"), s["doc_id"])} for s in samples]


def main() -> None:
    arguments = _arguments()
    os.environ.update(OMP_NUM_THREADS=str(arguments.threads), HF_HUB_OFFLINE="1",
                      LLMKICK_CACHE_DIR=tempfile.mkdtemp(prefix="vllm-agreement-cache-"))  # fmt: skip
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    import torch
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.backend_agreement import compare_generations, loglikelihood_gaps
    from llmkick_models.compressed_hf import CompressedHFLM

    torch.set_num_threads(arguments.threads)
    compression = simple_parse_args_string(arguments.compression)
    mmlu_limit = arguments.mmlu_limit
    start = time.perf_counter()
    hf = CompressedHFLM(pretrained=arguments.model, device=arguments.device, batch_size=arguments.batch_size,
                        **compression)  # fmt: skip
    hf_start = time.perf_counter() - start
    hf_freebase, hf_seconds = _evaluate(hf, FREEBASEQA, arguments.limit, arguments.data_dir)
    hf_mmlu, hf_mmlu_seconds = _evaluate(hf, MMLU, mmlu_limit, arguments.data_dir)
    tokenizer = hf.tokenizer
    del hf

    from llmkick_models.compressed_vllm import CompressedVLLM

    start = time.perf_counter()
    engine = {} if arguments.compile else {"enforce_eager": True}
    vllm = CompressedVLLM(pretrained=arguments.model, device=arguments.device, max_model_len=2048, seed=0,
                          **engine, **compression)  # fmt: skip
    vllm_start = time.perf_counter() - start
    vllm_freebase, vllm_seconds = _evaluate(vllm, FREEBASEQA, arguments.limit, arguments.data_dir)
    vllm_mmlu, vllm_mmlu_seconds = _evaluate(vllm, MMLU, mmlu_limit, arguments.data_dir)

    generations = compare_generations(hf_freebase, vllm_freebase)
    gaps = loglikelihood_gaps(
        _subject_samples(hf_mmlu),
        _subject_samples(vllm_mmlu),
        lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
    )
    mode = "compiled" if arguments.compile else "eager"
    print(f"model {arguments.model} ({arguments.compression}), device {arguments.device}, "
          f"{arguments.threads} threads each, vLLM {mode}")  # fmt: skip
    print(f"FreebaseQA: {generations.documents} questions, generations agree on {generations.agreeing} "
          f"({generations.rate:.2%}; {generations.identical} identical text)")  # fmt: skip
    for diff in generations.differences:
        print(f"  doc {diff.doc_id}: {diff.why}: HF {diff.first!r} | vLLM {diff.second!r}")
    print(f"MMLU (log-likelihood, {len(gaps)} requests): per-token gap mean {sum(gaps) / len(gaps):.2e}, "
          f"max {max(gaps):.2e}")  # fmt: skip
    print(f"start-up: HF compress/load {hf_start:.1f} s, vLLM (cache hit + engine) {vllm_start:.1f} s")
    print(f"FreebaseQA evaluation: HF {hf_seconds:.1f} s (batch {arguments.batch_size}), "
          f"vLLM {vllm_seconds:.1f} s -> vLLM/HF {vllm_seconds / hf_seconds:.2f}x")  # fmt: skip
    print(f"MMLU evaluation: HF {hf_mmlu_seconds:.1f} s, vLLM {vllm_mmlu_seconds:.1f} s "
          f"-> vLLM/HF {vllm_mmlu_seconds / hf_mmlu_seconds:.2f}x")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":  # vLLM starts its workers with spawn
    main()
