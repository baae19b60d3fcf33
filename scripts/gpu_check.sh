#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one device call (at most about 8 minutes on one H100/H200):
#   1. the GPU part of the speed benchmark, beside SevenNet: inference at 7net-Omni size on 1,000 Si
#      atoms, force training at 7net-0 and at quickstart size, inference on 4,096 / 10,648 / 21,952
#      atoms, compiled cueq on 1,000; benchmarks/speed.py writes speed_gpu.{json,md} after every case
#      (and on SIGTERM), logs every warm-up call, and starts no case after its --budget;
#   2. the tests marked `cuda`: the kernels against e3nn, and a forward with no host-device sync;
#   3. the trainer's distributed path on NCCL: torchrun with one process per GPU, one short stage.
# Usage: scripts/gpu_check.sh OUT_DIR [GPU_REPEATS...]   (default repeats: 5 8 11 14)
# Packages the device lacks come from a carried folder, $GPU_CARRY (default .whl; built here by
# scripts/gpu_carry.sh): its site312.tar.xz and site_extra/ are unpacked into /tmp/site.
# Each step has its own time limit (SPEED_LIMIT, TESTS_LIMIT, DDP_LIMIT seconds); a failing step
# is reported and the next one still runs.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [GPU_REPEATS...]}
shift
repeats=${*:-5 8 11 14}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
carry=${GPU_CARRY:-.whl}
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export CUEQUIVARIANCE_OPS_PARALLEL_COMPILE=1 CUEQUIVARIANCE_OPS_NVRTC_CACHE_DIR=${CUEQUIVARIANCE_OPS_NVRTC_CACHE_DIR:-/tmp/cueq_nvrtc}
failed=()

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${seconds} s)" | tee -a "$log"
    local start=$SECONDS
    timeout -k 15 "$seconds" "$@" 2>&1 | tee -a "$log"
    local code=${PIPESTATUS[0]}
    echo "=== $name: exit $code after $((SECONDS - start)) s" | tee -a "$log"
    [ "$code" -eq 0 ] || failed+=("$name")
}

if [ -d "$carry" ]; then
    mkdir -p /tmp/site
    [ -f "$carry/site312.tar.xz" ] && tar -C /tmp/site -xJf "$carry/site312.tar.xz"
    [ -d "$carry/site_extra" ] && cp -r "$carry/site_extra/." /tmp/site/
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step environment 45 python3 -c '
import importlib, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("e3nn", "cuequivariance", "cuequivariance_torch", "cuequivariance_ops_torch", "sevenn", "ase", "vesin", "lmdb"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:
        print(name, "NOT IMPORTABLE:", type(error).__name__, error)
from sevenomni.nn import backend
print("cuEquivariance kernels installed:", backend.cueq_kernels_installed())
assert torch.cuda.is_available(), "no CUDA device visible to torch"
assert backend.cueq_kernels_installed(), "the cuEquivariance kernels do not import: the GPU numbers would be the fallback"
'

speed_limit=${SPEED_LIMIT:-330}
# shellcheck disable=SC2086
step "speed (GPU part)" "$speed_limit" python3 benchmarks/speed.py --gpu-only --rounds 3 --budget $((speed_limit * 2 / 3)) \
    --gpu-train-batch 32 --gpu-repeats $repeats --gpu-compiled --out "$out/speed_gpu"

step "cuda tests" "${TESTS_LIMIT:-60}" python3 -m pytest -m cuda tests/unit/nn/test_backends.py tests/unit/nn/test_hot_path.py \
    -p no:cacheprovider -q -rs

run_dir=$(mktemp -d)/ddp
step "trainer on NCCL (torchrun, 1 process)" "${DDP_LIMIT:-80}" python3 -m torch.distributed.run --nproc_per_node 1 \
    -m sevenomni.cli train \
    recipes/quickstart.yaml --set train.run_dir="$run_dir" --set train.device=cuda \
    --set 'stages=[{name: short, databases: [crystal_gfn1, molecule_gfn2], epochs: 1}]' --set train.validation_channels=own
grep -iE "world|nccl|rank|device" "$run_dir/train.log" 2>/dev/null | head -5 | tee -a "$log"

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "all GPU checks passed" | tee -a "$log"
