"""Step 1 of ``gpu_check.sh``: every method on ``--device`` against the CPU, on the same calibration ids.

    python benchmarks/gpu_check_compress.py --model DIR --device cuda [--nsamples 16] [--seqlen 256]

For each method (magnitude, Wanda, SparseGPT at 50%; GPTQ, RTN and AWQ at 4 bits, groups of 64; LLM.int8() is
bitsandbytes' own kernel, not ours, and is left out), the model is
loaded twice in float32, compressed once with the per-layer work on the CPU and once on ``--device``, from
the same calibration token ids (drawn once), and the two results compared over every compressed linear:
the share of weights whose zero/non-zero status agrees, the largest weight difference relative to the
layer's largest weight, the overall sparsity of each, and both compression times.  With ``--device cpu``
both runs are on the CPU (a check that the script runs, and that compression is deterministic).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "wikitext2" / "valid.txt"
METHODS = {
    "magnitude": {"sparsity": 0.5},
    "wanda": {"sparsity": 0.5},
    "sparsegpt": {"sparsity": 0.5},
    "gptq": {"bits": 4, "group_size": 64},
    "rtn": {"bits": 4, "group_size": 64},
    "awq": {"bits": 4, "group_size": 64},
}


def _compressed(model_dir: str, spec: object, device: str, calibration: object) -> tuple[dict, float, float]:
    """The compressed linears' weights (on the CPU), the compression seconds and the overall sparsity."""
    import transformers

    from llmkick_models.engine.compress import compress_model
    from llmkick_models.engine.model_layout import decoder_linears

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if device != "cpu":
        model.to(device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    report = compress_model(model, spec, device, calibration)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    weights = {t.name: t.weight.detach().float().cpu().clone() for t in decoder_linears(model)}
    return weights, seconds, report.overall_sparsity


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--methods", default=",".join(METHODS))
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from llmkick_models.engine.calibration import calibration_tokens, load_documents
    from llmkick_models.engine.methods import build_spec

    source = str(TEXT) if TEXT.exists() else "random"
    tokenizer = transformers.AutoTokenizer.from_pretrained(arguments.model)
    config = transformers.AutoConfig.from_pretrained(arguments.model)
    vocab = getattr(getattr(config, "text_config", None) or config, "vocab_size", len(tokenizer))
    tokens = f"{arguments.nsamples} x {arguments.seqlen} tokens of {source}"
    print(f"{arguments.model}: CPU vs {arguments.device}, {tokens}")
    print("method | CPU s | device s | sparsity CPU / device | zero-mask agreement | max |dW| / max |W|")
    for name in arguments.methods.split(","):
        spec = build_spec(name, calibration=source, nsamples=arguments.nsamples, seqlen=arguments.seqlen,
                          **METHODS[name])  # fmt: skip
        calibration = None
        if spec.calibration is not None:  # drawn once: both runs see the same ids
            documents = load_documents(spec.calibration)
            calibration = calibration_tokens(spec.calibration, documents, tokenizer, vocab_size=vocab)
        cpu, cpu_seconds, cpu_sparsity = _compressed(arguments.model, spec, "cpu", calibration)
        other, seconds, sparsity = _compressed(arguments.model, spec, arguments.device, calibration)
        same = total = 0
        worst = 0.0
        for layer, weight in cpu.items():
            same += int(((weight == 0) == (other[layer] == 0)).sum())
            total += weight.numel()
            worst = max(
                worst, float((weight - other[layer]).abs().max() / weight.abs().max().clamp_min(1e-12))
            )
        print(f"{name} | {cpu_seconds:.1f} | {seconds:.1f} | {cpu_sparsity:.4f} / {sparsity:.4f} | "
              f"{same / total:.4%} | {worst:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
