"""Cost of GPTQ (and RTN) quantization of a model, against one plain forward pass over the same tokens.

    python benchmarks/quant_bench.py [--model HF_DIR] [--bits 4] [--group-size 32] [--nsamples 16]

Each row runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own: ``forward`` (load, one
batched pass over the calibration tokens), ``gptq`` (load, ``compress_model`` with method=gptq) and ``rtn``
(load, round-to-nearest, no calibration).  Printed: seconds, ratio to the forward pass, RSS after loading
the dense model, peak RSS, their ratio, and GPTQ's/RTN's mean reconstruction error.  The default model is
the tiny Llama of the test rig; pass a saved HF folder for a real one.  Calibration text is WikiText-2 from
``../shared/data`` when present, else random tokens.  The comparison with llm-compressor's GPTQModifier
belongs in a separate virtual environment (it pins its own torch/transformers), never in the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DEFAULT_TEXT, rss_mib, run_worker


def worker(args: argparse.Namespace) -> dict[str, float | None]:
    """One measurement in this process: load, calibrate, run the step; seconds, RSS and mean error."""
    import torch
    import transformers

    from llmkick_models.arguments import build_spec
    from llmkick_models.engine.calibration import calibration_tokens, load_documents, model_context_length
    from llmkick_models.engine.compress import compress_model
    from llmkick_models.engine.sequential import DEFAULT_BATCH_TOKENS

    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    with torch.no_grad():  # make memory-mapped weights resident, so "loaded" means loaded
        sum(float(p.sum()) for p in model.parameters())
    loaded_rss = rss_mib()
    spec = build_spec(
        "gptq", bits=args.bits, group_size=args.group_size, calibration=args.source,
        nsamples=args.nsamples, seqlen=args.seqlen,
    )  # fmt: skip
    assert spec.calibration is not None
    vocab = model.get_input_embeddings().num_embeddings
    calibration = calibration_tokens(
        spec.calibration,
        load_documents(spec.calibration),
        tokenizer,
        vocab,
        model_context_length(model.config),
    )
    error = None
    start = time.perf_counter()
    if args.worker == "forward":
        ids = calibration.input_ids
        batch = max(1, DEFAULT_BATCH_TOKENS // ids.shape[1])
        with torch.no_grad():
            for i in range(0, ids.shape[0], batch):
                model(input_ids=ids[i : i + batch], use_cache=False)
    elif args.worker == "gptq":
        error = compress_model(model, spec, calibration=calibration).mean_recon_error
    else:  # rtn: no calibration for the quantization itself
        rtn = build_spec("rtn", bits=args.bits, group_size=args.group_size)
        compress_model(model, rtn)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loaded_rss_mib": loaded_rss, "peak_rss_mib": rss_mib(), "error": error}


def _measure(args: argparse.Namespace, step: str) -> dict[str, float | None]:
    worker_args = [
        "--model", str(args.model), "--source", args.source,
        "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--bits", str(args.bits),
        "--group-size", str(args.group_size), "--threads", str(args.threads),
    ]  # fmt: skip
    return run_worker(__file__, step, worker_args)


def main() -> None:
    """Parse arguments, run each row in a subprocess, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="saved HF model folder (default: the tiny Llama)")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=32, help="-1 per channel (tiny model: <= 64)")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--source", help="calibration source (default: shared WikiText-2, else random)")
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
            f"bits={args.bits} group_size={args.group_size} threads={args.threads}"
        )
        rows = [(step, _measure(args, step)) for step in ("forward", "gptq", "rtn")]
    forward = rows[0][1]["seconds"]
    header = ("seconds", "x forward", "load MiB", "peak MiB", "peak/load", "error")
    print(f"{'step':<8} " + " ".join(f"{h:>9}" for h in header))
    for name, row in rows:
        error = "" if row["error"] is None else f"{row['error']:.4g}"
        print(
            f"{name:<8} {row['seconds']:>9.3f} {row['seconds'] / forward:>9.2f} "
            f"{row['loaded_rss_mib']:>9.0f} {row['peak_rss_mib']:>9.0f} "
            f"{row['peak_rss_mib'] / row['loaded_rss_mib']:>9.2f} {error:>9}"
        )


if __name__ == "__main__":
    main()
