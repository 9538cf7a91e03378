#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels that the GPU machine lacks, at the versions of this venv.
# The GPU machine cannot reach PyPI; its image has torch, timm, opencv, numpy and transformers 5.17, but this package
# needs transformers >= 5.23 and the huggingface_hub stack it was tested with. benchmarks/run_gpu.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(transformers huggingface_hub httpx2 httpcore2 truststore hf-xet click)
pins=()
for package in "${packages[@]}"; do
    pins+=("$package==$(python3 -c "import importlib.metadata as m; print(m.version('$package'))")")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
ls -l .whl
