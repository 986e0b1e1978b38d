#!/usr/bin/env bash
# Download, here (with network), the wheels scripts/gpu_check.sh carries to the GPU machine
# (no network there; its Python is 3.12): gsplat 1.5.3 and packaging for the CUDA rasterizer,
# and what the bag tool needs beyond the machine's own packages. Into wheels/ (git-ignored),
# then: run(command="bash scripts/gpu_check.sh", carry=["wheels"], timeout_s=540).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p wheels
"$PY" -m pip download -q --no-deps -d wheels gsplat==1.5.3 packaging plyfile rosbags==0.11.9 ruamel.yaml
for pkg in apsw lz4 backports.zstd; do  # compiled: the device's CPython 3.12 on manylinux x86_64
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d wheels "$pkg"
done
ls -1 wheels
