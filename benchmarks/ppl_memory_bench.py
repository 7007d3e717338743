"""Peak memory and time of perplexity scoring with a large vocabulary: chunked LM head vs full logits.

compressed-hf scores ``llmkick_wikitext2_ppl`` windows either from the final hidden states with the LM head
applied a chunk of positions at a time and the body to as many windows at a time as the budget holds of
their activations (the default), or through lm-eval's full logits
(``$LLMKICK_SCORING=full-logits``, batches cut to the logits budget, at least one window).  Each path runs in
its own process (peak RSS is its own), on the same windows, and the scores are compared.

* ``--model DIR``: a real model (e.g. Gemma-3-270m converted by ``scripts/demo.sh``) runs the task itself,
  ``llmkick_wikitext2_ppl`` through lm-eval with ``--batch_size``, on the first ``--windows`` windows of the
  shared WikiText-2 test split (``--data``);
* without it, a model with Gemma 3's 262,144-entry vocabulary (tiny otherwise: 2 layers, hidden 64, so the
  logits are all that weighs) scores random-token windows through compressed-hf's loglikelihood path.

    python benchmarks/ppl_memory_bench.py [--model DIR] [--dtype bfloat16] [--batch 16] [--windows 16]
                                          [--threads 1] [--paths chunked|full-logits|both]

Printed per path: peak RSS, the wall and CPU seconds of the scoring itself (CPU time is what to compare on a
loaded machine; one thread), the whole run's seconds; then the ratios and the largest relative difference of
a window's log-likelihood between the two paths.
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

from bench_common import DEFAULT_TEXT, rss_mib, run_worker

PATHS = ("full-logits", "chunked")


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


def _random_windows(args: argparse.Namespace) -> tuple[list[float], dict[str, Any]]:
    """Per-window log-likelihoods of ``args.windows`` random-token windows, and how they were scored."""
    import torch

    from llmkick_models.compressed_hf import CompressedHFLM

    lm = CompressedHFLM(pretrained=args.folder, device="cpu", batch_size=args.batch, **_model_args(args))
    generator = torch.Generator().manual_seed(0)
    vocab = lm.model.config.vocab_size
    requests = []
    for _ in range(args.windows):
        window = torch.randint(1, vocab - 1, (args.seqlen,), generator=generator).tolist()
        requests.append((None, [lm.prefix_token_id], window))
    scores = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    return [ll for ll, _ in scores], lm.get_model_info()["llmkick_scoring"]


def _task_windows(args: argparse.Namespace) -> tuple[list[float], dict[str, Any]]:
    """``llmkick_wikitext2_ppl``'s per-window log-likelihoods through lm-eval, and how they were scored."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    model_args = {"pretrained": args.folder, **_model_args(args)}
    # the task cuts windows with the model's tokenizer, found from the model args (lm-eval's CLI passes them)
    metadata = {**model_args, "data_dir": str(args.data.parent), "wikitext2_windows": args.windows}
    metadata["wikitext2_seqlen"] = args.seqlen
    results = simple_evaluate(
        model="compressed-hf",
        model_args=model_args,
        tasks=["llmkick_wikitext2_ppl"],
        task_manager=TaskManager(metadata=metadata),
        device="cpu",
        batch_size=args.batch,
        log_samples=True,
    )
    samples = sorted(results["samples"]["llmkick_wikitext2_ppl"], key=lambda sample: sample["doc_id"])
    return [float(sample["filtered_resps"][0][0]) for sample in samples], results["config"]["llmkick_scoring"]


def _model_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_length": args.seqlen, **({"dtype": args.dtype} if args.dtype else {})}


def _time_scoring() -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each call of compressed-hf's loglikelihood scoring from now on."""
    from llmkick_models.compressed_hf import CompressedHFLM

    spent: list[tuple[float, float]] = []
    original = CompressedHFLM._loglikelihood_tokens

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent.append((time.perf_counter() - start, time.process_time() - cpu))

    CompressedHFLM._loglikelihood_tokens = timed  # type: ignore[method-assign]
    return spent


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    os.environ["LLMKICK_SCORING"] = args.worker
    spent = _time_scoring()
    start = time.perf_counter()
    scores, scoring = (_task_windows if args.model else _random_windows)(args)
    print(json.dumps({
        "path": args.worker, "peak_mib": rss_mib(), "seconds": sum(wall for wall, _ in spent),
        "cpu_seconds": sum(cpu for _, cpu in spent), "total_seconds": time.perf_counter() - start,
        "scores": scores, "scoring": scoring,
    }))  # fmt: skip


def _report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> None:
    what = args.model or f"a 2-layer model with a {args.vocab}-entry vocabulary"
    windows = len(next(iter(runs.values()))["scores"])
    print(f"{what} ({args.dtype or 'its saved dtype'}): {windows} windows of {args.seqlen} "
          f"tokens, --batch_size {args.batch}, {args.threads} thread(s)")  # fmt: skip
    for run in runs.values():
        print(f"  {run['path']:<12} peak RSS {run['peak_mib']:6.0f} MiB; scoring {run['seconds']:6.1f} s "
              f"wall, {run['cpu_seconds']:6.1f} s CPU (whole run {run['total_seconds']:.1f} s)  "
              f"{json.dumps(run['scoring'])}")  # fmt: skip
    if len(runs) < len(PATHS):
        return
    old, new = runs["full-logits"], runs["chunked"]
    worst = max(abs(a - b) / abs(b) for a, b in zip(new["scores"], old["scores"], strict=True))
    memory = new["peak_mib"] / old["peak_mib"]
    wall, cpu = new["seconds"] / old["seconds"], new["cpu_seconds"] / old["cpu_seconds"]
    print(f"chunked / full-logits: peak RSS {memory:.2f}x, scoring time {wall:.2f}x wall, {cpu:.2f}x CPU; "
          f"largest relative difference of a window's log-likelihood {worst:.2e}")  # fmt: skip


def main() -> None:
    """Run both paths, each in its own process, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a real model folder: run llmkick_wikitext2_ppl on it")
    parser.add_argument("--data", type=Path, default=DEFAULT_TEXT, help="the WikiText-2 folder (--model)")
    parser.add_argument("--vocab", type=int, default=262_144, help="vocabulary of the built model")
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", help="the model's dtype (compressed-hf's dtype=), e.g. bfloat16")
    parser.add_argument(
        "--paths", choices=[*PATHS, "both"], default="both", help="run one path only (no ratios)"
    )
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model
        if folder is None:
            folder = tmp
            _build_model(Path(tmp), args.vocab, args.seqlen)
        forwarded = [f"--folder={folder}", f"--seqlen={args.seqlen}", f"--windows={args.windows}",
                     f"--batch={args.batch}", f"--threads={args.threads}", f"--data={args.data}"]  # fmt: skip
        if args.dtype:
            forwarded.append(f"--dtype={args.dtype}")
        if args.model:
            forwarded += ["--model", args.model]
        paths = PATHS if args.paths == "both" else (args.paths,)
        runs = {path: run_worker(__file__, path, forwarded) for path in paths}
    _report(args, runs)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
