#!/usr/bin/env bash
# GPU check, one script: the card, the GPU tests (fused SDPA kernel, bf16-mixed job), a smoke run of
# the embedded default on the GPU, and the RQ + encoder benchmarks on CUDA.
# Usage: OUT=<folder> bash benchmarks/gpu_check.sh   (results and logs under $OUT)
set -uo pipefail
OUT=${OUT:-results/gpu_check}
mkdir -p "$OUT"
export DABS_RQ_CACHE=${DABS_RQ_CACHE:-$HOME/.cache/dabs_rq} DABS_RQ_TEST_CACHE=${DABS_RQ_TEST_CACHE:-$DABS_RQ_CACHE}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python -m pytest -q tests/test_gpu.py tests/test_augment_edge_cases.py -x 2>&1 | tail -n 5 | tee "$OUT/tests.txt"
start=$(date +%s)
python -m dabs_rq.cli experiment=embedded domain=embedded_image algorithm=rq seed=0 \
  trainer.enable_progress_bar=false hydra.run.dir="$OUT/smoke/job" results_dir="$OUT/smoke/results" \
  2>&1 | grep -E "dabs-rq|Error|error" | tee "$OUT/smoke.txt"
echo "smoke wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/smoke.txt"
python -m dabs_rq.cli bench --only rq encoder --device cuda --out "$OUT/bench" 2>&1 | tail -n 40 > "$OUT/bench.txt"
echo "done"
