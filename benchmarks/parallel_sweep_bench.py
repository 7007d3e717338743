"""Wall time of one ``llmkick sweep`` run sequentially and with ``--parallel 2`` on this machine's CPU.

    python benchmarks/parallel_sweep_bench.py [--model DIR] [--docs 64] [--parallel 2]

Both runs use the same command (dense + magnitude at three points, a local multiple-choice task of
``--docs`` questions, ``--device cpu``), each in a fresh run directory with an empty model cache; the
parallel run's workers get cores/N threads each.  Prints both times, the ratio and whether the results match.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT


def _task(folder: Path, docs: int) -> Path:
    rows = [{"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2), str(i)], "answer": 0}
            for i in range(docs)]  # fmt: skip
    data = folder / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (folder / "bench.yaml").write_text(
        f"task: bench_parallel_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}} Answer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def _sweep(model: Path, tasks: Path, run_dir: Path, cache: Path, *extra: str) -> float:
    command = [
        sys.executable, "-m", "llmkick_models.workflow.cli", "sweep", "--model", str(model),
        "--methods", "magnitude", "--sparsities", "0,0.3,0.5", "--patterns", "2:4",
        "--tasks", "bench_parallel_choice", "--output", str(run_dir), "--include_path", str(tasks),
        "--device", "cpu", "--no_report", *extra,
    ]  # fmt: skip
    env = {**os.environ, "LLMKICK_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def _results(run_dir: Path) -> dict[str, object]:
    return {
        p.parent.name: json.loads(p.read_text())["results"] for p in run_dir.glob("points/*/results.json")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a local HF model folder (default: tiny)")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model
        if model is None:
            from tiny_models import save_tiny_model

            model = save_tiny_model("llama", root / "model")
        tasks = _task(Path(tempfile.mkdtemp(dir=root)), args.docs)
        sequential = _sweep(model, tasks, root / "seq", root / "cache-seq")
        parallel = _sweep(model, tasks, root / "par", root / "cache-par", "--parallel", str(args.parallel))
        same = _results(root / "seq") == _results(root / "par")
    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}; 4 points, {args.docs} documents; model: {args.model or 'tiny'}")
    ratio = parallel / sequential
    print(f"sequential {sequential:.1f} s, --parallel {args.parallel} {parallel:.1f} s: {ratio:.2f}x the time"
          f" ({1 / ratio:.2f}x faster); same results: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
