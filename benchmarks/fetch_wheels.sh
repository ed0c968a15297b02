#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, downloaded here (it has no network) into an ignored folder that the
# device call carries; benchmarks/gpu_check.sh installs them there with pip --no-index.
#
# The GPU image (Python 3.12, x86-64; torch 2.11, Lightning, transformers, tokenizers, pandas, pyarrow, scipy,
# scikit-learn, Pillow, tqdm, ... already there) lacks: Hydra (hydra-core, omegaconf, antlr4-python3-runtime),
# Hugging Face datasets (datasets, dill, multiprocess) for the text readers, soundfile (+ cffi, pycparser) for
# the FLAC fixtures, and seglearn for the embedded sensor data of the GPU job test. Versions: constraints.txt.
# WITH_PYARROW=1 also fetches pyarrow (about 45 MB; only if the image's is older than datasets' >= 24).
#
# Usage: bash benchmarks/fetch_wheels.sh            (into .wheels/; WHEELS=<folder> for another)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.wheels}
PYTHON=${PYTHON:-.venv/bin/python}
PACKAGES=(hydra-core omegaconf datasets dill multiprocess soundfile cffi pycparser seglearn)
[[ ${WITH_PYARROW:-0} == 1 ]] && PACKAGES+=(pyarrow)

pin() {  # NAME==VERSION from constraints.txt (names compared case- and -/_-insensitively)
  local want line
  want=$(echo "$1" | tr 'A-Z_' 'a-z-')
  while IFS= read -r line; do
    [[ $(echo "${line%%==*}" | tr 'A-Z_' 'a-z-') == "$want" ]] && { echo "$line"; return; }
  done < <(grep -v '^#' constraints.txt)
  echo "fetch_wheels: $1 is not pinned in constraints.txt" >&2
  return 1
}

pins=()
for package in "${PACKAGES[@]}"; do pins+=("$(pin "$package")"); done
mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl
# Binary wheels for the GPU machine's interpreter and platform, without dependencies (each one is listed).
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  "${pins[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only: build its
# pure-Python wheel here.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "$(pin antlr4-python3-runtime)"
ls -1 "$WHEELS"
du -sh "$WHEELS"
