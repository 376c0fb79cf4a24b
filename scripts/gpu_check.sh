#!/usr/bin/env bash
# One prepared check of the GPU path, for a person with a GPU to run once (docs/GPU.md):
#
#   scripts/gpu_check.sh [--model DIR] [OUT_DIR]     # on one GPU; about 8 minutes at most
#   scripts/gpu_check.sh --cpu [OUT_DIR]              # the same steps, shrunk, on the CPU
#
# Steps, each under its own time limit, each run whatever the others did:
#   env        nvidia-smi, the versions of torch, CUDA, transformers, vLLM, DeepSpeed, PEFT, TRL
#   stand_in   a random-weight Qwen2.5-family stand-in (scripts/stand_in.py) and synthetic GSM8k rows
#   bench_hf   `tsllm bench engine --backend hf`   (tse, prf, vcn; docs/BENCHMARKS.md)
#   bench_vllm `tsllm bench engine --backend vllm`
#   eval       `tsllm eval --task gsm8k` with greedy and MCTS-alpha, chat format, vLLM, on --model (a
#              local instruct model folder, with a fresh value head) or else on the stand-in
#   loop       one round of configs/gsm8k/qwen2.5_0.5b_instruct.yaml on the stand-in, the value model
#              trained through DeepSpeed ZeRO-2 under `accelerate launch`, counts shrunk
# Everything goes to OUT_DIR (default: $OUT, else ./gpu_check_out): one log per step, the JSON
# results, peak memory per step, and summary.md, the figures docs/GPU.md asks for.
set -uo pipefail  # no -e: a failed step is recorded and the next one runs

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's tsllm, whatever is installed
export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false

CPU=0
MODEL=""
DEST=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --model) MODEL=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    *) DEST=$1 ;;
  esac
  shift
done
DEST=${DEST:-${OUT:-gpu_check_out}}
mkdir -p "$DEST" || exit 2
DEST=$(cd "$DEST" && pwd)
WORK="$DEST/work"
mkdir -p "$WORK"
if [ -n "$MODEL" ] && [ ! -f "$MODEL/config.json" ]; then
  echo "gpu_check.sh: --model $MODEL is not a model folder (no config.json)" >&2
  exit 2
fi

# Sizes. The GPU run keeps the engine benchmark's defaults (comparable with docs/BENCHMARKS.md);
# the CPU run shrinks every count so the whole check takes minutes on two cores.
if [ "$CPU" = 1 ]; then
  BENCH=(--roots 2 --simulations 2 --repeats 1)
  EVAL_QUESTIONS=2
  # no GPU: the HF backend for the loop, fp32, smaller searches (DeepSpeed runs on one CPU process)
  LOOP_DEVICE=(backend=hf generator.gpu_memory_utilization=null generator.max_model_len=null generator.dtype=null
               "value.mixed_precision='no'" "policy.mixed_precision='no'"
               search.knobs.num_simulations=2 search.knobs.width=2 max_step_tokens=16)
  EVAL_DEVICE=(--backend hf --max-step-tokens 16 --set mcts_alpha.num_simulations=2 --set mcts_alpha.width=2)
  export VLLM_CPU_KVCACHE_SPACE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  LIMITS=(env=30 stand_in=60 bench_hf=120 bench_vllm=240 eval=120 loop=180)
else
  BENCH=()
  EVAL_QUESTIONS=16
  LOOP_DEVICE=()
  EVAL_DEVICE=(--backend vllm)
  LIMITS=(env=20 stand_in=40 bench_hf=60 bench_vllm=100 eval=100 loop=150)  # 470 s in all
fi

# --use_deepspeed: accelerate's launcher that sets RANK/MASTER_ADDR for one process, which the
# Trainer's DeepSpeed start needs (the plain one-process launcher sets none, and --multi_gpu wants
# two processes). It also puts the policy's LoRA SFT through DeepSpeed (accelerate's ZeRO-2 plugin).
LOOP_LAUNCH=(accelerate launch --use_deepspeed --num_processes 1 recipes/iterate.py)

limit() {  # the time limit of step $1
  local pair
  for pair in "${LIMITS[@]}"; do
    [ "${pair%%=*}" = "$1" ] && echo "${pair#*=}" && return
  done
  echo 60
}

HAS_GPU=0
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 && HAS_GPU=1
printf 'step\tstatus\tseconds\tlimit_s\tpeak_gpu_mib\tpeak_rss_mib\n' > "$DEST/steps.tsv"

# step NAME COMMAND...: run COMMAND under NAME's time limit, its output in NAME.log; record how it
# ended, its seconds, and its peak memory (GPU memory in use, sampled twice a second; the largest
# process's resident memory, from /usr/bin/time when present).
step() {
  local name=$1 sampler="" status start seconds gpu="-" rss="-"
  shift
  local seconds_allowed
  seconds_allowed=$(limit "$name")
  echo "== $name (limit ${seconds_allowed}s)"
  if [ "$HAS_GPU" = 1 ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/$name.gpumem" 2>/dev/null &
    sampler=$!
  fi
  local timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f "%M" -o "$WORK/$name.rss")
  start=$(date +%s)
  timeout --kill-after=15 "$seconds_allowed" "${timer[@]}" "$@" > "$DEST/$name.log" 2>&1
  status=$?
  seconds=$(( $(date +%s) - start ))
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    gpu=$(sort -n "$WORK/$name.gpumem" | tail -1)
  fi
  [ -s "$WORK/$name.rss" ] && rss=$(( $(tail -1 "$WORK/$name.rss") / 1024 ))
  case $status in
    0) status=ok ;;
    124|137) status="timed out" ;;
    *) status="failed (exit $status)" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$seconds_allowed" "${gpu:--}" "$rss" >> "$DEST/steps.tsv"
  echo "   $status in ${seconds}s; log: $DEST/$name.log"
}

environment() {
  if [ "$HAS_GPU" = 1 ]; then nvidia-smi; else echo "no nvidia-smi / no GPU"; fi
  python - <<'EOF'
import importlib
import platform

import torch

print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| GPUs", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
for name in ("transformers", "vllm", "deepspeed", "peft", "trl", "accelerate", "tokenizers"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # a missing or broken package is a finding, not a stop
        print(name, "not importable:", type(error).__name__, error)
EOF
}

stand_ins() {
  python scripts/stand_in.py --family qwen2.5 --out "$WORK/stand_in" || return
  if [ -n "$MODEL" ]; then python scripts/stand_in.py --value-for "$MODEL" --out "$WORK/model"; fi
}

# timeout runs programs, not shell functions: the two functions run in a child bash
export -f environment stand_ins
export HAS_GPU WORK MODEL
step env bash -c environment
step stand_in bash -c stand_ins
step bench_hf python -m tsllm.cli bench engine --backend hf "${BENCH[@]}" --out "$DEST/engine_hf.json"
step bench_vllm python -m tsllm.cli bench engine --backend vllm "${BENCH[@]}" --out "$DEST/engine_vllm.json"

POLICY="$WORK/stand_in/policy" VALUE="$WORK/stand_in/value"
[ -n "$MODEL" ] && POLICY=$MODEL VALUE="$WORK/model/value"
step eval python -m tsllm.cli eval --task gsm8k --policy "$POLICY" --value "$VALUE" \
  --data "$WORK/stand_in/gsm8k.jsonl" --test-questions "$EVAL_QUESTIONS" --methods greedy,mcts_alpha \
  --prompt-format chat --system-prompt "Please reason step by step, and put your final answer within \\boxed{}." \
  "${EVAL_DEVICE[@]}" --out "$DEST/eval.json"

# counts only, beside the device settings above; every other key is the recipe's
step loop "${LOOP_LAUNCH[@]}" --config configs/gsm8k/qwen2.5_0.5b_instruct.yaml \
  --output-dir "$DEST/loop" --overwrite --no-progress \
  base_model="$WORK/stand_in/policy" value_backbone="$WORK/stand_in/policy" \
  train_data="$WORK/stand_in/gsm8k.jsonl" test_data="$WORK/stand_in/gsm8k.jsonl" \
  rounds=1 train_questions=4 test_questions=4 samples_per_question=2 value.max_steps=4 policy.max_steps=4 \
  tracking.report_to=none "${LOOP_DEVICE[@]}"

python - "$DEST" "$CPU" "$MODEL" <<'EOF' | tee "$DEST/summary.md"
import csv
import json
import sys
from pathlib import Path

dest, cpu, model = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]


def read(name):
    try:
        return json.loads((dest / name).read_text())
    except (OSError, ValueError):
        return None


env = (dest / "env.log").read_text(errors="replace") if (dest / "env.log").is_file() else ""
print(f"# gpu_check.sh {'--cpu ' if cpu else ''}results\n")
versions = [line for line in env.splitlines() if line.startswith(("python ", "transformers", "vllm", "deepspeed"))]
print("\n".join(f"    {line}" for line in versions) or "    (no environment report)")
print("\n| step | status | seconds (limit) | peak GPU MiB | peak RSS MiB |\n|---|---|---|---|---|")
with open(dest / "steps.tsv") as rows:
    for row in csv.DictReader(rows, delimiter="\t"):
        print(f"| {row['step']} | {row['status']} | {row['seconds']} ({row['limit_s']}) | {row['peak_gpu_mib']} "
              f"| {row['peak_rss_mib']} |")
print("\n| engine | tse | prf | vcn | tree tok/s | flat tok/s |\n|---|---|---|---|---|---|")
for backend in ("hf", "vllm"):
    if r := read(f"engine_{backend}.json"):
        print(f"| {backend} | {r['tse']:.2f} | {r['prf']:.2f} | {r['vcn']:.2f} | {r['tree_tokens_per_s']:.0f} "
              f"| {r['flat_tokens_per_s']:.0f} |")
if r := read("eval.json"):
    print(f"\neval on {model or 'the stand-in (random weights: its accuracy means nothing)'}, "
          f"{r['questions']} synthetic GSM8k questions:\n\n| method | accuracy | tokens/q | compute/q |\n|---|---|---|---|")
    for name, m in r["methods"].items():
        print(f"| {name} | {m['accuracy']:.1%} | {m['tokens_per_question']:.0f} | {m['compute_per_question']:.0f} |")
rounds = dest / "loop" / "rounds.jsonl"
if rounds.is_file():
    print("\nloop rounds (stand-in, counts shrunk):")
    for line in rounds.read_text().splitlines():
        row = json.loads(line)
        print("    " + json.dumps({k: row.get(k) for k in ("round", "value_loss", "policy_loss", "wall_seconds")}))
EOF
