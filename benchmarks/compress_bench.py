"""Cost of compressing a model with each method, against one plain forward pass over the same tokens.

    python benchmarks/compress_bench.py [--model HF_DIR] [--nsamples 16] [--seqlen 256] [--methods ...]

Every measurement runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own:

* ``forward``: load the model, then one ``model(input_ids)`` pass over the calibration set, batched as the
  sequential driver batches (``DEFAULT_BATCH_TOKENS`` tokens per call);
* ``<method>``: load the model, then ``compress_model`` with the same calibration tokens (magnitude runs
  without them, as it does by default).

Printed per row: seconds of the timed step, its ratio to the forward pass, the RSS right after loading the
dense model (all weights made resident), the peak RSS of the whole run, and their ratio (issue targets:
Wanda <= 1.5x the forward pass, peak RSS <= 1.3x the dense load).  The default model is the tiny Llama
of the test rig; pass a saved HF folder (e.g. SmolLM2-135M converted with ``llmkick convert-gguf``) for a
real one.  Calibration text is WikiText-2 from ``../shared/data`` when present, else random tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DEFAULT_TEXT, rss_mib, run_worker

METHODS = ("magnitude", "wanda", "sparsegpt")


def _calibration(model, tokenizer, source: str, nsamples: int, seqlen: int):
    from llmkick_models.engine.calibration import calibration_tokens, load_documents, model_context_length
    from llmkick_models.engine.spec import CalibrationSpec

    spec = CalibrationSpec(source, nsamples, seqlen, seed=0)
    vocab = model.get_input_embeddings().num_embeddings
    return calibration_tokens(
        spec, load_documents(spec), tokenizer, vocab, model_context_length(model.config)
    )


def worker(args: argparse.Namespace) -> dict[str, float]:
    """One measurement in this process: load, (calibrate), run the step; return seconds and RSS."""
    import torch
    import transformers

    from llmkick_models.arguments import build_spec
    from llmkick_models.engine.compress import compress_model
    from llmkick_models.engine.sequential import DEFAULT_BATCH_TOKENS

    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    # Weights may be memory-mapped and paged in lazily; touch them so that "loaded" means resident.
    with torch.no_grad():
        sum(float(p.sum()) for p in model.parameters())
    loaded_rss = rss_mib()
    calibration = _calibration(model, tokenizer, args.source, args.nsamples, args.seqlen)
    ids = calibration.input_ids
    if args.worker == "forward":
        batch = max(1, DEFAULT_BATCH_TOKENS // ids.shape[1])
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, ids.shape[0], batch):
                model(input_ids=ids[i : i + batch], use_cache=False)
        seconds = time.perf_counter() - start
    else:
        spec = build_spec(
            args.worker, args.sparsity, **({"calibration": args.source} if args.worker != "magnitude" else {})
        )
        start = time.perf_counter()
        report = compress_model(model, spec, calibration=calibration if args.worker != "magnitude" else None)
        seconds = time.perf_counter() - start
        assert abs(report.overall_sparsity - args.sparsity) < 1e-3, report.overall_sparsity
    return {"seconds": seconds, "loaded_rss_mib": loaded_rss, "peak_rss_mib": rss_mib()}


def _measure(args: argparse.Namespace, step: str) -> dict[str, float]:
    worker_args = [
        "--model", str(args.model), "--source", args.source,
        "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--sparsity", str(args.sparsity),
        "--threads", str(args.threads),
        *(["--error-tokens", args.error_tokens] if args.error_tokens is not None else []),
    ]  # fmt: skip
    runs = []
    for _ in range(args.repeats):
        runs.append(run_worker(__file__, step, worker_args))
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    """Parse arguments, run each measurement in a subprocess, print the table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="saved HF model folder (default: the tiny Llama)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the median is printed")
    parser.add_argument("--threads", type=int, default=torch_threads_default())
    parser.add_argument("--source", help="calibration source (default: shared WikiText-2, else random)")
    parser.add_argument(
        "--error-tokens", help="Wanda's error_tokens= (default: the library's); 'all' or a number"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source is None:
        args.source = str(DEFAULT_TEXT) if DEFAULT_TEXT.is_dir() else "random"
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            from tiny_models import save_tiny_model

            args.model = save_tiny_model("llama", Path(scratch) / "tiny-llama")
        print(
            f"model={args.model} calibration={args.source} nsamples={args.nsamples} seqlen={args.seqlen} "
            f"sparsity={args.sparsity} threads={args.threads} repeats={args.repeats}"
        )
        forward = _measure(args, "forward")
        rows = [("forward", forward)] + [(m, _measure(args, m)) for m in args.methods.split(",")]
    print(f"{'step':<10} {'seconds':>9} {'x forward':>9} {'load MiB':>9} {'peak MiB':>9} {'peak/load':>9}")
    for name, row in rows:
        print(
            f"{name:<10} {row['seconds']:>9.3f} {row['seconds'] / forward['seconds']:>9.2f} "
            f"{row['loaded_rss_mib']:>9.0f} {row['peak_rss_mib']:>9.0f} "
            f"{row['peak_rss_mib'] / row['loaded_rss_mib']:>9.2f}"
        )


def torch_threads_default() -> int:
    """All cores, as torch itself would use (explicit so that every subprocess uses the same)."""
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
