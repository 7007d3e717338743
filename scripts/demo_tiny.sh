#!/usr/bin/env bash
# Demo: build a tiny Llama offline, then evaluate it dense and 2:4-pruned through the real lm_eval CLI.
# Usage: scripts/demo_tiny.sh [OUTPUT_DIR]      (run inside the project's venv)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/demo_output}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$out"

python - "$out" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from tiny_models import save_tiny_model

out = Path(sys.argv[1])
save_tiny_model("llama", out / "tiny-llama")
rows = [{"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2)], "answer": 0} for i in range(20)]
(out / "task").mkdir(exist_ok=True)
(out / "task" / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
(out / "task" / "demo.yaml").write_text(
    "task: llmkick_demo_choice\ndataset_path: json\n"
    f"dataset_kwargs:\n  data_files:\n    test: {out / 'task' / 'data.jsonl'}\ntest_split: test\n"
    "output_type: multiple_choice\ndoc_to_text: \"{{question}} Answer:\"\n"
    "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
    "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
)
PY

for args in "method=none" "method=magnitude,sparsity=0.5" "method=magnitude,pattern=2:4"; do
  echo "== compressed-hf $args"
  lm_eval --model compressed-hf --model_args "pretrained=$out/tiny-llama,$args" \
    --tasks llmkick_demo_choice --include_path "$out/task" --device cpu \
    --output_path "$out/results/${args//[=,:]/_}" 2>&1 | grep -E "^\||compressed [0-9]+ linears"
done
echo "Results JSON (with the per-layer compression report under config.llmkick_compression): $out/results"
