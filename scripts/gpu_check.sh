#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (a few minutes on one H100/H200):
#   1. the tests marked `cuda`: cuEquivariance's CUDA kernels against e3nn on the same weights;
#   2. the GPU part of the speed benchmark, beside SevenNet (needs `sevenn`);
#   3. the quickstart recipe trained on the GPU (tp_backend auto: the kernels when installed).
# Usage: scripts/gpu_check.sh OUT_DIR [GPU_REPEATS...]   (writes gpu_check.log, quickstart_*, speed_gpu.*)
# Each step has its own time limit; a failing step is reported and the next one still runs.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [GPU_REPEATS...]}
shift
repeats=${*:-5 8 11}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1
failed=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${seconds} s)" | tee -a "$log"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    local code=${PIPESTATUS[0]}
    echo "=== $name: exit $code after $((SECONDS - start)) s" | tee -a "$log"
    [ "$code" -eq 0 ] || failed+=("$name")
}

step environment 60 python3 -c '
import importlib, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("e3nn", "cuequivariance", "cuequivariance_torch", "cuequivariance_ops_torch", "sevenn", "ase"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:
        print(name, "NOT IMPORTABLE:", type(error).__name__, error)
from sevenomni.nn import backend
print("cuEquivariance kernels installed:", backend.cueq_kernels_installed())
assert torch.cuda.is_available(), "no CUDA device visible to torch"
'

step "cuda tests" 150 python3 -m pytest -m cuda tests/test_backends.py -p no:cacheprovider -q -rs

# shellcheck disable=SC2086
step "speed (GPU part)" 270 python3 benchmarks/speed.py --gpu-only --gpu-repeats $repeats --out "$out/speed_gpu"

run_dir=$(mktemp -d)/quickstart
step "quickstart on the GPU" 90 python3 -m sevenomni.cli train recipes/quickstart.yaml \
    --set train.run_dir="$run_dir" --set train.device=cuda
cp "$run_dir/train.log" "$out/quickstart_train.log" 2>/dev/null
cp "$run_dir/final.csv" "$out/quickstart_final.csv" 2>/dev/null

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "all GPU checks passed" | tee -a "$log"
