#!/usr/bin/env bash
# Build the folder that scripts/gpu_check.sh installs from on a GPU machine without network access
# (Python 3.12, x86-64; under the 64 MiB a device call carries, with the repository).
#   DIR/site312.tar.xz  cuEquivariance (with the CUDA 13 kernels), ase, vesin, pydantic (../shared/gpu)
#   DIR/site_extra/     platformdirs (the kernels need it), lmdb, vesin-torch (neighbour lists on the GPU;
#                       only the build for the device's torch, $DEVICE_TORCH, default 2.11), braceexpand, matscipy, and SevenNet
#                       pruned to 7net-0 and the 7net-l3i5 configuration (its weights dropped: the
#                       benchmark builds the 7net-Omni size with random weights from that config)
# Usage: scripts/gpu_carry.sh [DIR] [SHARED_GPU_DIR]   (defaults: .whl, ../shared/gpu). DIR must be
# ignored by git (e.g. echo /.whl/ >> .git/info/exclude) and named in the device call's carry.
set -euo pipefail
dir=${1:-.whl}
shared=${2:-../shared/gpu}
download=$(mktemp -d)
mkdir -p "$dir/site_extra"
cp "$shared/site312.tar.xz" "$dir/"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$download" platformdirs lmdb braceexpand matscipy vesin-torch==0.6.2 sevenn==0.13.0
for wheel in "$download"/*.whl; do
    python3 -m zipfile -e "$wheel" "$dir/site_extra/"
done
find "$dir/site_extra/vesin_torch" -mindepth 1 -maxdepth 1 -type d -name 'torch-*' ! -name "torch-${DEVICE_TORCH:-2.11}" -exec rm -r {} +
potentials="$dir/site_extra/sevenn/pretrained_potentials"
find "$potentials" -mindepth 1 -maxdepth 1 -type d ! -name SevenNet_0__11Jul2024 ! -name SevenNet_l3i5 -exec rm -r {} +
rm -rf "$dir/site_extra/sevenn/pair_e3gnn" "$dir"/site_extra/sevenn/pair_d3*.so
python3 - "$potentials/SevenNet_l3i5/checkpoint_l3i5.pth" <<'EOF'
import sys

import torch

path = sys.argv[1]
checkpoint = torch.load(path, map_location="cpu", weights_only=False)
# Keep the configuration and a few small tensors (a checkpoint must have a state dict to be read).
checkpoint["model_state_dict"] = {k: v for k, v in checkpoint["model_state_dict"].items() if v.numel() < 200}
checkpoint["optimizer_state_dict"], checkpoint["scheduler_state_dict"] = {}, {}
torch.save(checkpoint, path)
EOF
rm -rf "$download"
du -sh "$dir"
