#!/usr/bin/env bash
# GPU check (issue 5): the CUDA-marked tests and the speed benchmark at the paper setting
# (B = 8, G = 8, K = 2, M = 4, L = 200, T = 128, dna-full) on one GPU, in at most ~8 minutes.
#
# Usage (from anywhere):  bash benchmarks/gpu_check.sh
# Results go to $OUT when it is set (the device tool copies $OUT back), else benchmarks/results/gpu/:
#   gpu_env.txt            nvidia-smi, torch / CUDA versions, device name
#   pytest_cuda.log        `pytest -m cuda` output (the CUDA-only tests)
#   gpu_check.log          the benchmark's progress output and the summary
#   iteration/speed.json   one iteration per estimator, reference-style and rollout-only (+ speed.md)
#   samplers/samplers.json sampler throughput, bf16 autocast, chunking (+ samplers.md)
# Exit status: 0 when every step succeeded, 1 otherwise (each step still runs and writes what it has).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR/iteration" "$OUT_DIR/samplers"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# the project's virtualenv when it has a CUDA build of torch, else the system python (the GPU image's)
PY=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  PY=.venv/bin/python
fi

status=0
{
  date -u +%FT%TZ
  nvidia-smi || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0))"
} > "$OUT_DIR/gpu_env.txt" 2>&1 || { echo "no usable CUDA device (see gpu_env.txt)"; exit 1; }

# 1. the CUDA-marked tests (a few seconds each; collection imports the whole package)
timeout 120 "$PY" -m pytest -m cuda -o addopts="" -q -rs -p no:cacheprovider > "$OUT_DIR/pytest_cuda.log" 2>&1 || status=1
tail -n 3 "$OUT_DIR/pytest_cuda.log"

# 2. one iteration per estimator at the paper setting (reference-style: one sample's whole neighbourhood measured)
timeout 200 "$PY" -m sepo.cli bench speed --preset paper --device cuda --no-samplers --out "$OUT_DIR/iteration" \
  > "$OUT_DIR/gpu_check.log" 2>&1 || status=1

# 3. sampler throughput (T = 128 and 1000, corrector at 128, bf16 autocast, chunking)
timeout 140 "$PY" -m sepo.cli bench speed --preset paper --device cuda --samplers-only --quiet --out "$OUT_DIR/samplers" \
  >> "$OUT_DIR/gpu_check.log" 2>&1 || status=1

grep -E "^target|^wrote|error" "$OUT_DIR/gpu_check.log" || true
exit $status
