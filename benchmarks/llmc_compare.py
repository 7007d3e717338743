"""llmkick against llm-compressor, side by side: time, peak RSS and zero-mask agreement on the same tokens.

    python benchmarks/llmc_compare.py --model HF_DIR --llmc-python /tmp/llmc_venv/bin/python \
        [--methods wanda,wanda24,sparsegpt,gptq] [--nsamples 16] [--seqlen 256] [--threads 1] [--rounds 1]

llm-compressor pins transformers <= 5.17, so it runs in its own venv (see benchmarks/README.md for how to
create it offline from the package index); this script runs there as a worker, with no llmkick import.
Both sides get the very same calibration token ids (drawn once here, saved to a scratch file), fp32
weights and the same thread count.  Every measurement is its own subprocess (so its peak RSS is its own),
and the rounds are interleaved: forward, then for each method llm-compressor then llmkick.

Per method it prints both times (the compression step only, after the model is loaded), their ratio,
llmkick's time over one plain forward pass over the same tokens, each side's peak RSS over its dense load,
and, for the pruning methods, the zero-mask agreement: the fraction of weights of the compressed linears
whose being zero or not is the same on both sides, for the first decoder block and overall.

Methods: ``wanda`` (50% unstructured), ``wanda24`` (2:4), ``sparsegpt`` (50%), ``sparsegpt24`` (2:4),
``gptq`` (4-bit symmetric, groups of ``--group-size``, no act_order on either side; llm-compressor finds
its group grids before the loop, llmkick as the GPTQ reference, so their weights are not compared),
``awq`` (4-bit asymmetric, groups of ``--group-size``: llmkick's ``method=awq`` with its defaults against
llm-compressor's ``AWQModifier`` with its defaults followed by its ``QuantizationModifier``).  For ``awq``
both sides also measure the WikiText-2 token perplexity of the quantized model on the same evaluation
ids (``--ppl-windows`` windows of ``--ppl-seqlen`` tokens from the start of ``--ppl-text``), and the
forward worker that of the dense model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import DEFAULT_TEXT, rss_mib, run_worker

METHODS = {
    "wanda": {"llmkick": ("wanda", {"sparsity": 0.5}), "llmc": ("wanda", "0:0")},
    "wanda24": {"llmkick": ("wanda", {"pattern": "2:4"}), "llmc": ("wanda", "2:4")},
    "sparsegpt": {"llmkick": ("sparsegpt", {"sparsity": 0.5}), "llmc": ("sparsegpt", "0:0")},
    "sparsegpt24": {"llmkick": ("sparsegpt", {"pattern": "2:4"}), "llmc": ("sparsegpt", "2:4")},
    "gptq": {"llmkick": ("gptq", {"bits": 4}), "llmc": ("gptq", None)},
    "awq": {"llmkick": ("awq", {"bits": 4, "sym": False}), "llmc": ("awq", None)},
}
#: Methods whose quantized model's perplexity is measured on both sides.
PERPLEXITY_METHODS = ("awq",)


def _load(model_dir: str, threads: int) -> tuple[Any, float]:
    import torch
    import transformers

    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():  # weights may be memory-mapped: make "loaded" mean resident
        sum(float(p.sum()) for p in model.parameters())
    return model, rss_mib()


def _system_seconds() -> float:
    """CPU time this process has spent in the kernel (mostly page faults here)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _cpu_seconds() -> float:
    """CPU time of this process, user and kernel (what a loaded machine does not inflate as much as the
    wall time: compare both)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _zero_masks(model: Any, path: str) -> None:
    """Save, per compressed decoder linear (2-D weights inside ``layers``), where the weight is zero."""
    import torch

    masks = {
        name: (module.weight.detach() == 0)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}."
    }
    torch.save(masks, path)


def _perplexity(model: Any, path: str | None) -> dict[str, float]:
    """Token perplexity of ``model`` on the evaluation windows saved at ``path`` (none: nothing)."""
    import torch

    if not path:
        return {}
    ids = torch.load(path)
    total, count = 0.0, 0
    with torch.no_grad():
        for window in ids.split(1):
            logits = model(input_ids=window, use_cache=False).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), window[:, 1:].flatten(), reduction="sum"
            )
            total, count = total + float(loss), count + window.shape[1] - 1
    return {"perplexity": float(torch.tensor(total / count).exp())}


def worker_llmkick(args: argparse.Namespace) -> dict[str, float]:
    """One llmkick measurement: ``forward`` (one plain pass, batched as the driver) or a method."""
    import torch

    from llmkick_models.arguments import build_spec
    from llmkick_models.engine.calibration import CalibrationSet
    from llmkick_models.engine.compress import compress_model
    from llmkick_models.engine.sequential import DEFAULT_BATCH_TOKENS

    model, loaded = _load(args.model, args.threads)
    ids = torch.load(args.tokens)
    start, system, cpu = time.perf_counter(), _system_seconds(), _cpu_seconds()
    if args.worker == "forward":
        batch = max(1, DEFAULT_BATCH_TOKENS // ids.shape[1])
        with torch.no_grad():
            for i in range(0, ids.shape[0], batch):
                model(input_ids=ids[i : i + batch], use_cache=False)
    else:
        name, options = METHODS[args.method]["llmkick"]
        if name in ("gptq", "awq"):
            options = {**options, "group_size": args.group_size}
        spec = build_spec(name, calibration="random", **options)  # the tokens are given below
        compress_model(model, spec, calibration=CalibrationSet(ids, "llmc_compare", 0))
    seconds, system, cpu = time.perf_counter() - start, _system_seconds() - system, _cpu_seconds() - cpu
    if args.masks:
        _zero_masks(model, args.masks)
    peak = rss_mib()  # before the perplexity's logits
    measured = {"seconds": seconds, "system_seconds": system, "cpu_seconds": cpu}
    measured |= {"loaded_rss_mib": loaded, "peak_rss_mib": peak}
    return measured | _perplexity(model, args.eval_tokens)


def worker_llmc(args: argparse.Namespace) -> dict[str, float]:
    """One llm-compressor ``oneshot`` measurement, in its own venv (no llmkick import)."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot

    model, loaded = _load(args.model, args.threads)
    ids = torch.load(args.tokens)
    kind, structure = METHODS[args.method]["llmc"]
    if kind == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        recipe: Any = WandaPruningModifier(sparsity=0.5, mask_structure=structure, ignore=["re:.*lm_head"])
    elif kind == "sparsegpt":
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        recipe = SparseGPTModifier(sparsity=0.5, mask_structure=structure, ignore=["re:.*lm_head"])
    else:
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(
            num_bits=4, type="int", symmetric=kind == "gptq", strategy="group", group_size=args.group_size
        )
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        if kind == "gptq":
            from llmcompressor.modifiers.quantization import GPTQModifier

            recipe = GPTQModifier(config_groups=groups, ignore=["re:.*lm_head"], actorder=None)
        else:
            from llmcompressor.modifiers.quantization import QuantizationModifier
            from llmcompressor.modifiers.transform.awq import AWQModifier
            from llmcompressor.pipelines.cache import IntermediatesCache

            # Its AWQ pins cached activations for host-to-accelerator copies, which needs an accelerator.
            IntermediatesCache.pin_memory = lambda self, *a, **k: None
            recipe = [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=["re:.*lm_head"])]
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    batch = max(1, min(ids.shape[0], args.batch_tokens // ids.shape[1]))  # as llmkick's driver batches
    start, system, cpu = time.perf_counter(), _system_seconds(), _cpu_seconds()
    oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        num_calibration_samples=ids.shape[0],
        max_seq_length=ids.shape[1],
        shuffle_calibration_samples=False,
        batch_size=batch,
        pipeline="sequential",
    )
    seconds, system, cpu = time.perf_counter() - start, _system_seconds() - system, _cpu_seconds() - cpu
    if args.masks:
        _zero_masks(model, args.masks)
    peak = rss_mib()  # before the perplexity's logits
    measured = {"seconds": seconds, "system_seconds": system, "cpu_seconds": cpu}
    measured |= {"loaded_rss_mib": loaded, "peak_rss_mib": peak}
    return measured | _perplexity(model, args.eval_tokens)


def _tokens(args: argparse.Namespace, path: Path) -> None:
    """Draw the calibration token ids once, with llmkick's loader, for both sides."""
    import torch
    import transformers

    from llmkick_models.engine.calibration import calibration_tokens, load_documents
    from llmkick_models.engine.spec import CalibrationSpec

    source = args.source or (str(DEFAULT_TEXT) if DEFAULT_TEXT.is_dir() else "random")
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    spec = CalibrationSpec(source, args.nsamples, args.seqlen, seed=0)
    ids = calibration_tokens(spec, load_documents(spec), tokenizer, len(tokenizer)).input_ids
    torch.save(ids, path)
    print(f"calibration: {source}, {args.nsamples} x {args.seqlen} tokens")


def _evaluation_tokens(args: argparse.Namespace, path: Path) -> None:
    """The perplexity windows: the start of ``--ppl-text`` tokenized by the model's tokenizer."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    text = Path(args.ppl_text).read_text()
    need = args.ppl_windows * args.ppl_seqlen
    ids = tokenizer(text[: need * 8], return_tensors="pt").input_ids[0]  # ~4 characters per token
    if ids.numel() < need:
        raise SystemExit(f"--ppl-text {args.ppl_text}: {ids.numel()} tokens, fewer than {need}")
    torch.save(ids[:need].reshape(args.ppl_windows, args.ppl_seqlen), path)
    print(f"perplexity: {args.ppl_text}, {args.ppl_windows} x {args.ppl_seqlen} tokens")


def _agreement(path_a: str, path_b: str) -> tuple[float, float]:
    """Zero-mask agreement (first block, overall) between two saved mask sets."""
    import torch

    a, b = torch.load(path_a), torch.load(path_b)
    if set(a) != set(b):
        raise RuntimeError(f"the two sides compressed different linears: {sorted(set(a) ^ set(b))[:4]}")
    first = sorted({name.split(".layers.")[1].split(".")[0] for name in a}, key=int)[0]
    same = total = same_first = total_first = 0
    for name in a:
        agree = int((a[name] == b[name]).sum())
        same, total = same + agree, total + a[name].numel()
        if f".layers.{first}." in f"{name}.":
            same_first, total_first = same_first + agree, total_first + a[name].numel()
    return same_first / total_first, same / total


def main() -> None:
    """Interleave the measurements in subprocesses and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="saved HF model folder (e.g. converted SmolLM2-135M)")
    parser.add_argument("--llmc-python", default="/tmp/llmc_venv/bin/python", help="the side venv's python")
    parser.add_argument("--methods", default="wanda,wanda24,sparsegpt,gptq")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are printed")
    parser.add_argument("--source", help="calibration text (default: shared WikiText-2, else random ids)")
    parser.add_argument("--ppl-text", default=str(DEFAULT_TEXT / "test.txt"), help="perplexity text (awq)")
    parser.add_argument("--ppl-windows", type=int, default=16)
    parser.add_argument("--ppl-seqlen", type=int, default=512)
    parser.add_argument("--eval-tokens", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    parser.add_argument("--masks", help=argparse.SUPPRESS)
    parser.add_argument("--batch-tokens", type=int, default=2048, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "llmc":
        print(json.dumps(worker_llmc(args)))
        return
    if args.worker:
        print(json.dumps(worker_llmkick(args)))
        return
    methods = args.methods.split(",")
    for method in methods:
        if method not in METHODS:
            parser.error(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
    if not Path(args.llmc_python).exists():
        parser.error(f"--llmc-python {args.llmc_python} does not exist; see benchmarks/README.md")
    with tempfile.TemporaryDirectory() as scratch:
        tokens = Path(scratch) / "tokens.pt"
        _tokens(args, tokens)
        evaluation = Path(scratch) / "evaluation.pt"
        perplexity = any(method in PERPLEXITY_METHODS for method in methods)
        if perplexity:
            _evaluation_tokens(args, evaluation)
        from llmkick_models.engine.sequential import DEFAULT_BATCH_TOKENS

        # llm-compressor's worker (no llmkick import there) is told llmkick's batch, so both batch alike.
        common = ["--model", args.model, "--tokens", str(tokens), "--threads", str(args.threads),
                  "--group-size", str(args.group_size),
                  "--batch-tokens", str(DEFAULT_BATCH_TOKENS)]  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {}
        for round_index in range(args.rounds):
            dense_ppl = ["--eval-tokens", str(evaluation)] if perplexity else []
            runs.setdefault("forward", []).append(run_worker(__file__, "forward", [*common, *dense_ppl]))
            for method in methods:
                for side in ("llmc", "llmkick"):
                    masks = str(Path(scratch) / f"{method}-{side}-{round_index}.pt")
                    command = [*common, "--method", method, "--masks", masks]
                    if method in PERPLEXITY_METHODS:
                        command += ["--eval-tokens", str(evaluation)]
                    python = args.llmc_python if side == "llmc" else sys.executable
                    result = _run(python, side, command)
                    runs.setdefault(f"{method}/{side}", []).append(result)
                    print(
                        f"round {round_index + 1} {method:<12} {side:<8} {result['seconds']:8.1f} s, CPU "
                        f"{result['cpu_seconds']:.1f} s ({result['system_seconds']:.1f} s in the kernel)",
                        flush=True,
                    )
                if method not in ("gptq", "awq"):
                    first, overall = _agreement(
                        str(Path(scratch) / f"{method}-llmc-{round_index}.pt"),
                        str(Path(scratch) / f"{method}-llmkick-{round_index}.pt"),
                    )
                    runs.setdefault(f"{method}/agreement", []).append({"first": first, "overall": overall})
    median = {key: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for key, rows in runs.items()}
    forward = median["forward"]["seconds"]
    print(f"\nmodel={args.model} threads={args.threads} rounds={args.rounds} forward={forward:.1f} s")
    print(
        f"{'method':<12} {'llm-comp s':>10} {'llmkick s':>10} {'ratio':>6} {'CPU ratio':>9} {'x fwd':>6} "
        f"{'llmc RSS/load':>13} {'llmkick RSS/load':>16} {'mask agree first/overall':>25}"
    )
    for method in methods:
        llmc, ours = median[f"{method}/llmc"], median[f"{method}/llmkick"]
        agree = median.get(f"{method}/agreement")
        agreement = f"{agree['first']:.2%} / {agree['overall']:.2%}" if agree else "-"
        print(
            f"{method:<12} {llmc['seconds']:>10.1f} {ours['seconds']:>10.1f} "
            f"{ours['seconds'] / llmc['seconds']:>6.2f} {ours['cpu_seconds'] / llmc['cpu_seconds']:>9.2f} "
            f"{ours['seconds'] / forward:>6.2f} "
            f"{llmc['peak_rss_mib'] / llmc['loaded_rss_mib']:>13.2f} "
            f"{ours['peak_rss_mib'] / ours['loaded_rss_mib']:>16.2f} {agreement:>25}"
        )
    for method in (m for m in methods if m in PERPLEXITY_METHODS):
        llmc, ours = median[f"{method}/llmc"]["perplexity"], median[f"{method}/llmkick"]["perplexity"]
        print(
            f"{method} WikiText-2 perplexity: dense {median['forward']['perplexity']:.3f}, llm-compressor "
            f"{llmc:.3f}, llmkick {ours:.3f} ({ours / llmc - 1:+.2%} relative to llm-compressor)"
        )


def _run(python: str, side: str, worker_args: list[str]) -> dict[str, float]:
    """``run_worker`` with the interpreter of the side (llm-compressor's lives in its own venv)."""
    import subprocess

    command = [python, __file__, "--worker", side, *worker_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
