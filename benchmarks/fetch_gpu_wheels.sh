#!/usr/bin/env bash
# Puts into .whl/ (git-ignored) the wheels that the GPU machine lacks, at the versions of this project's venv
# (.venv, or whatever `python3` is when there is none). benchmarks/run_gpu.sh installs them there with
#   python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl; export PYTHONPATH=/tmp/site
# The GPU machine cannot reach PyPI. Its image (Python 3.12, torch 2.11, timm, opencv, numpy, pyarrow, pandas,
# accelerate 1.15, transformers 5.17, huggingface_hub 1.33) lacks:
#   - transformers >= 5.23 (this package) and the huggingface_hub 2.x stack it was tested with: huggingface_hub,
#     httpx2, httpcore2, truststore, hf-xet, click;
#   - for the training check (examples/gpu_check_2b_zero3.py; sapiens_hf.training imports `datasets` at the top):
#     datasets, dill, multiprocess;
#   - DeepSpeed and what it imports: deepspeed (PyPI has only its sdist, so it is built here as a pure-Python wheel
#     with DS_BUILD_OPS=0: no compiled op travels; the check uses a torch optimizer and needs none), pydantic,
#     pydantic-core, annotated-types, typing-inspection, typing-extensions (pydantic needs >= 4.16), hjson.
# pycocotools and albumentations (the `train` extra) are imported only by the data pipelines, which the GPU run does
# not use. Total: about 24 MiB (the device tool carries at most 64 MiB with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
version() { "$python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
binary=(transformers huggingface_hub httpx2 httpcore2 truststore hf-xet click
        datasets dill multiprocess
        pydantic pydantic-core annotated-types typing-inspection typing-extensions hjson)
pins=()
for package in "${binary[@]}"; do
    pins+=("$package==$(version "$package")")
done
rm -rf .whl && mkdir .whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${pins[@]}"
# DeepSpeed: sdist only. Build the py3-none-any wheel without ops (pip reuses a wheel it built before, from its cache).
DS_BUILD_OPS=0 "$python" -m pip wheel -q --no-deps -w .whl "deepspeed==$(version deepspeed)"
count=$(ls .whl/*.whl | wc -l)
if ((count != ${#binary[@]} + 1)); then
    echo "expected $((${#binary[@]} + 1)) wheels in .whl/, found $count" >&2
    exit 1
fi
ls -l .whl
du -ch .whl/*.whl | tail -1
