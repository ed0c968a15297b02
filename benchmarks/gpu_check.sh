#!/usr/bin/env bash
# The one prepared GPU check, for a task that is lent a GPU machine. That machine has no network and its image
# lacks hydra-core, datasets, soundfile and seglearn: they travel as wheels made here first with
#   bash benchmarks/fetch_wheels.sh          (-> .wheels/, ignored by git)
# and the device call carries that folder:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".wheels"], timeout_s=570)
# (elsewhere: OUT=<folder> bash benchmarks/gpu_check.sh). Stages, in order of what matters most, each with its
# own limit inside one overall budget of GPU_CHECK_S seconds (default 480 = 8 minutes):
#   1. the carried wheels installed with pip --no-index into /tmp/site; the card and package versions
#   2. the GPU tests: tests/test_gpu.py (fused SDPA kernel, bf16-mixed job, model.compile=auto against eager),
#      and the CUDA cases of the RQ operator and its gradient
#   3. dabs-rq bench --only pretrain_step --device cuda: protocol dabs, imagenet / librispeech / wikitext103 x
#      none, emix, rq, shed, mae, rq_emix, eager and compiled (--budget-s: the rows it leaves no time for
#      are marked skipped, and the JSON is written)
#   4. dabs-rq plan -m experiment=paper protocol=dabs --bench-dir $OUT/bench
#   5. dabs-rq bench --only rq, then --only encoder, on CUDA, as the budget allows (then the plan again, with the
#      encoder benchmark: it sets the assumed throughputs of the domains pretrain_step does not measure)
# Under $OUT: log.txt (all output), bench/*.json and bench/README.md, plan.txt and plan.json.
set -uo pipefail
OUT=${OUT:-results/gpu_check}
WHEELS=${WHEELS:-.wheels}
BUDGET=${GPU_CHECK_S:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT/bench"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
START=$(date +%s)

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
# stage NAME MAX_S CMD...: CMD for at most MAX_S seconds and what the budget has left; skipped under MIN_S (20)
stage() {
  local name=$1 max=$2 limit t0 rc
  shift 2
  limit=$(left)
  ((limit > max)) && limit=$max
  if ((limit < ${MIN_S:-20})); then
    echo "== $name: skipped, $(left) s of the ${BUDGET} s budget left"
    return 0
  fi
  echo "== $name: at most ${limit} s, from $(elapsed) s"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@"
  rc=$?
  echo "== $name: exit ${rc}$( ((rc == 124)) && echo ' (time limit)') after $(($(date +%s) - t0)) s"
}

echo "== setup"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || echo "!! installing the wheels of $WHEELS failed"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "!! no wheels in $WHEELS: run bash benchmarks/fetch_wheels.sh here and carry the folder"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'EOF'
import importlib

import torch

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name(0)}")
for name in ("hydra", "omegaconf", "datasets", "soundfile", "seglearn", "pyarrow", "pandas", "fsspec",
             "huggingface_hub", "transformers", "tokenizers", "pytorch_lightning", "torchaudio", "triton"):
    try:
        print(f"  {name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as err:  # the stage that needs it will say more
        print(f"  {name} NOT IMPORTABLE: {type(err).__name__}: {err}")
EOF

stage "GPU tests" 150 "$PY" -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
  tests/test_gpu.py tests/test_rq_gradient.py tests/test_augment_edge_cases.py

# pretrain_step gets what the budget leaves after 150 s for plan and rq (at most 300 s), + 60 s to end its row
pretrain_s=$(($(left) - 150))
((pretrain_s > 300)) && pretrain_s=300
if ((pretrain_s >= 60)); then
  stage "bench pretrain_step (protocol dabs)" $((pretrain_s + 60)) "$PY" -m dabs_rq.cli bench --only pretrain_step \
    --device cuda --budget-s "$pretrain_s" --out "$OUT/bench"
else
  echo "== bench pretrain_step: skipped, $(left) s of the ${BUDGET} s budget left"
fi

plan() {
  stage "$1" 60 bash -c "'$PY' -m dabs_rq.cli plan -m experiment=paper protocol=dabs --bench-dir '$OUT/bench' \
    --json '$OUT/plan.json' > '$OUT/plan.txt' 2>&1; rc=\$?; tail -n 40 '$OUT/plan.txt'; exit \$rc"
}
plan "plan"

MIN_S=60 stage "bench rq" 90 "$PY" -m dabs_rq.cli bench --only rq --device cuda --out "$OUT/bench"
MIN_S=100 stage "bench encoder" 240 "$PY" -m dabs_rq.cli bench --only encoder --device cuda --out "$OUT/bench"
# again with the encoder benchmark, which the domains without a pretrain_step row are planned from
[[ -f $OUT/bench/encoder-cuda.json ]] && plan "plan (with the encoder benchmark)"
echo "== done after $(elapsed) s; results in $OUT"
