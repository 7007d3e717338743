"""compressed-hf vs compressed-vllm on the same compressed weights: agreement and evaluation time.

    python benchmarks/vllm_agreement.py --model /path/to/gemma-3-270m [--limit 1000] [--threads 2]

Compresses once (compressed-hf stores the point in a fresh model cache) and evaluates with compressed-hf
FreebaseQA (greedy, ``contains`` / ``exact_match``, dev split) and the log-likelihood of each of those
questions' first gold answer after the same prompt; then starts compressed-vllm on the cached weights and
evaluates the same documents.  Prints the share of FreebaseQA documents whose generations agree (and every
differing one, with why), the mean and largest per-token log-likelihood gap, and the evaluation times
(vLLM / HF, the engine start-up apart).

Needs vLLM (the README's Scaling out section has the CPU venv).  CPU defaults keep the run small on a
shared machine: ``--threads`` for both backends, 1 GiB of vLLM KV cache, no torch.compile
(``--compile`` turns it on; on a GPU leave it on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FREEBASEQA, ANSWERS = "llmkick_freebaseqa", "freebaseqa_answer_ll"
#: The log-likelihood task: FreebaseQA's prompt, the first gold answer as the continuation.
ANSWERS_TASK = """task: freebaseqa_answer_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "Please give answer to this question: {{{{question}}}}\\nThe answer is"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="HF folder (Gemma-3-270m in benchmarks/README.md)")
    parser.add_argument("--compression", default="method=magnitude,sparsity=0.2", help="compressed-hf args")
    parser.add_argument("--limit", type=int, default=1000, help="FreebaseQA questions (dev split)")
    parser.add_argument(
        "--ll-limit", type=int, default=None, help="answer log-likelihoods (default: --limit)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="compressed-hf's batch size")
    parser.add_argument("--dtype", default="bfloat16", help="weights' dtype for both backends (as the demo)")
    parser.add_argument(
        "--gen-tokens", type=int, default=8, help="answer tokens (the demo's 8; the task's 32)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each backend")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU check")
    parser.add_argument("--data-dir", default=str(DATA), help="LLM-KICK data dir (FreebaseQA dev split)")
    parser.add_argument(
        "--max-model-len",
        type=int,
        help="vLLM's context (default: the model's, at most 2048: a small KV cache)",
    )
    parser.add_argument("--compile", action="store_true", help="let vLLM torch.compile (slow start on CPU)")
    return parser.parse_args()


def _evaluate(
    lm: Any, task: str, limit: int | None, arguments: argparse.Namespace, include: str | None = None
) -> tuple[list, float]:
    """``task``'s logged samples and the seconds ``simple_evaluate`` took."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    metadata = {"data_dir": arguments.data_dir, "freebaseqa_split": "dev"}
    manager = TaskManager(include_path=include, metadata=metadata)
    start = time.perf_counter()
    results = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=manager,
        limit=limit,
        log_samples=True,
        bootstrap_iters=0,
        gen_kwargs=f"max_gen_toks={arguments.gen_tokens}",
    )
    return results["samples"][task], time.perf_counter() - start


def _context(model: str) -> int:
    import transformers

    config = transformers.AutoConfig.from_pretrained(model)
    return getattr(getattr(config, "text_config", None) or config, "max_position_embeddings", None) or 2048


def _answers_task(samples: list[dict]) -> str:
    """A folder with the log-likelihood task over the evaluated FreebaseQA questions."""
    folder = Path(tempfile.mkdtemp(prefix="vllm-agreement-task-"))
    rows = [{"question": s["doc"]["question"], "answer": s["doc"]["answers"][0]} for s in samples]
    (folder / "answers.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "answers.yaml").write_text(ANSWERS_TASK.format(data=folder / "answers.jsonl"))
    return str(folder)


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
    compression = {**simple_parse_args_string(arguments.compression), "dtype": arguments.dtype}
    start = time.perf_counter()
    hf = CompressedHFLM(pretrained=arguments.model, device=arguments.device, batch_size=arguments.batch_size,
                        **compression)  # fmt: skip
    hf_start = time.perf_counter() - start
    hf_freebase, hf_seconds = _evaluate(hf, FREEBASEQA, arguments.limit, arguments)
    include = _answers_task(hf_freebase)
    hf_answers, hf_answers_seconds = _evaluate(hf, ANSWERS, arguments.ll_limit, arguments, include)
    tokenizer = hf.tokenizer
    del hf

    from llmkick_models.compressed_vllm import CompressedVLLM

    start = time.perf_counter()
    engine = {} if arguments.compile else {"enforce_eager": True}
    engine["max_model_len"] = arguments.max_model_len or min(2048, _context(arguments.model))
    vllm = CompressedVLLM(
        pretrained=arguments.model, device=arguments.device, seed=0, **engine, **compression
    )
    vllm_start = time.perf_counter() - start
    vllm_freebase, vllm_seconds = _evaluate(vllm, FREEBASEQA, arguments.limit, arguments)
    vllm_answers, vllm_answers_seconds = _evaluate(vllm, ANSWERS, arguments.ll_limit, arguments, include)

    generations = compare_generations(hf_freebase, vllm_freebase)
    gaps = loglikelihood_gaps(
        hf_answers, vllm_answers, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    )
    mode = "compiled" if arguments.compile else "eager"
    print(f"model {arguments.model} ({arguments.compression}, {arguments.dtype}), device {arguments.device}, "
          f"{arguments.threads} threads each, vLLM {mode}, {arguments.gen_tokens} answer tokens")  # fmt: skip
    print(f"FreebaseQA: {generations.documents} questions, generations agree on {generations.agreeing} "
          f"({generations.rate:.2%}; {generations.identical} identical text)")  # fmt: skip
    for diff in generations.differences:
        print(f"  doc {diff.doc_id}: {diff.why}: HF {diff.first!r} | vLLM {diff.second!r}")
    print(f"answer log-likelihoods ({len(gaps)} requests): per-token gap mean {sum(gaps) / len(gaps):.2e}, "
          f"max {max(gaps):.2e}")  # fmt: skip
    print(f"start-up: HF compress/load {hf_start:.1f} s, vLLM (cache hit + engine) {vllm_start:.1f} s")
    print(f"FreebaseQA evaluation: HF {hf_seconds:.1f} s (batch {arguments.batch_size}), "
          f"vLLM {vllm_seconds:.1f} s -> vLLM/HF {vllm_seconds / hf_seconds:.2f}x")  # fmt: skip
    print(f"answer log-likelihoods: HF {hf_answers_seconds:.1f} s, vLLM {vllm_answers_seconds:.1f} s "
          f"-> vLLM/HF {vllm_answers_seconds / hf_answers_seconds:.2f}x")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":  # vLLM starts its workers with spawn
    main()
