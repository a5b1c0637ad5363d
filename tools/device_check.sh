#!/usr/bin/env bash
# The GPU check of issue 13, in one script: under 8 minutes on one GPU, no package index needed.
#
#   prepare (on a machine with the package index, from the repo root):
#       bash ../shared/offline-gpu/make_bundle.sh .gpu_bundle    # Detectron2 + pure-Python deps
#   run (on the GPU machine, from the repo root):
#       bash tools/device_check.sh [OUT_DIR]                     # default output/device_check
#   dry run on a CPU (tiny settings: checks the script, measures nothing):
#       bash tools/device_check.sh --cpu [OUT_DIR]
#
# Steps (each with its own time limit, so that one slow step cannot eat the others' budget):
#   1. the CUDA tests (tests/gpu: AMP training of both heads, batched inference, host syncs);
#   2. the model benchmark of the paper configuration: Faster R-CNN, I-Net, DC-I-Net in one run,
#      inference at K = 10/25/100 detections and a training step, fp32 and AMP, peak memory;
#   3. batched inference throughput (DC-I-Net, paper configuration) at 1, 8 and 32 images per
#      forward, fp32 and AMP, the plain model and the inference copy that evaluation runs;
#   4. a short demo training (300 iterations of the small DC-I-Net) with its evaluation;
#   5. a summary table for the README (tools/device_summary.py), from the JSON lines of 2 and 3.
set -uo pipefail
DRY=${DRY_RUN:-0}
if [ "${1:-}" = "--cpu" ]; then DRY=1; shift; fi
OUT=${1:-output/device_check}
mkdir -p "$OUT"
if [ -f .gpu_bundle/env.sh ]; then source .gpu_bundle/env.sh; fi
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ ! -f .gpu_bundle/env.sh ]; then PY=.venv/bin/python; fi
status=0
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc, $((SECONDS - t0)) s, log $OUT/$name.log"
  tail -n 5 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
rm -f "$OUT/bench.jsonl"
if [ "$DRY" = 1 ]; then
  step cuda_tests 120 "$PY" -m pytest -q tests/gpu
  step bench_model 300 "$PY" bench/bench_model.py --image-size 96 --batch 2 --iters 1 --warmup 0 \
    --amp --json "$OUT/bench.jsonl"
  step bench_inference 300 "$PY" bench/bench_inference.py --image-size 96 --batches 1 2 --iters 1 \
    --warmup 0 --json "$OUT/bench.jsonl"
  step demo 600 "$PY" demo/run_demo.py --iters 4 --out "$OUT/demo" SOLVER.WARMUP_ITERS 2 \
    INPUT.MIN_SIZE_TRAIN "(192,)" INPUT.MIN_SIZE_TEST 192
else
  step cuda_tests 150 "$PY" -m pytest -q tests/gpu
  step bench_model 150 "$PY" bench/bench_model.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml \
    --image-size 600 --batch 4 --iters 20 --warmup 3 --threads 0 --amp --json "$OUT/bench.jsonl"
  step bench_inference 90 "$PY" bench/bench_inference.py --config-file configs/cuhk_sysu/dcinet_R50_C4.yaml \
    --image-size 600 --batches 1 8 32 --iters 10 --warmup 2 --json "$OUT/bench.jsonl"
  step demo 150 "$PY" demo/run_demo.py --iters 300 --out "$OUT/demo"
fi
"$PY" tools/device_summary.py "$OUT/bench.jsonl" | tee "$OUT/summary.md"
exit $status
