"""Overhead of compressed-hf over lm-eval's own hf model, and of loading a cached compressed model.

    python benchmarks/eval_overhead.py [--model DIR] [--repeats 3]

1. Evaluation time of ``compressed-hf`` with ``method=none`` vs ``hf`` on the same requests (target <= 1.05x).
2. Time to first request: a second ``compressed-hf`` load of an already-compressed spec (served from the
   llmkick model cache) vs loading the dense model with ``hf`` (target <= 1.2x).

Both sides run interleaved in this one process, ``repeats`` times; medians are compared.  The default model
is the tiny Llama from the test rig; pass a converted SmolLM2 folder for a real one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from llmkick_models.compressed_hf import CompressedHFLM

PROMPTS = [f"Question {i}: what is {i} plus {i}? The answer is" for i in range(64)]


def _requests() -> list[Instance]:
    return [
        Instance(request_type="loglikelihood", doc={}, arguments=(prompt, f" {2 * i}"), idx=i)
        for i, prompt in enumerate(PROMPTS)
    ]


def _eval_seconds(lm: HFLM) -> float:
    start = time.perf_counter()
    lm.loglikelihood(_requests())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="HF model folder (default: a tiny Llama built here)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tiny_models import save_tiny_model

            model = save_tiny_model("llama", Path(tmp) / "tiny-llama")
        common = {"pretrained": str(model), "device": "cpu", "batch_size": 8}
        _eval_seconds(HFLM(**common))  # warm-up: first-call costs (kernels, allocator) hit neither side
        hf, ours = [], []
        for _ in range(args.repeats):
            hf.append(_eval_seconds(HFLM(**common)))
            ours.append(_eval_seconds(CompressedHFLM(method="none", **common)))
        ratio = statistics.median(ours) / statistics.median(hf)
        print(
            f"eval time: hf {statistics.median(hf):.3f}s, compressed-hf(none) {statistics.median(ours):.3f}s"
        )
        print(f"RATIO eval compressed-hf(none)/hf = {ratio:.3f}  (target <= 1.05)")

        cache_args = {"method": "magnitude", "sparsity": 0.5, "llmkick_cache_dir": str(Path(tmp) / "cache")}
        try:
            CompressedHFLM(**common, **cache_args)  # fills the cache
        except TypeError as error:
            print(f"cache benchmark skipped: {error}")
            return
        dense_load, cached_load = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            HFLM(**common)
            dense_load.append(time.perf_counter() - start)
            start = time.perf_counter()
            CompressedHFLM(**common, **cache_args)
            cached_load.append(time.perf_counter() - start)
        ratio = statistics.median(cached_load) / statistics.median(dense_load)
        dense_s, cached_s = statistics.median(dense_load), statistics.median(cached_load)
        print(f"load time: hf {dense_s:.3f}s, cached compressed-hf {cached_s:.3f}s")
        print(f"RATIO time-to-first-request cached/dense = {ratio:.3f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
