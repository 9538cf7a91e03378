#!/usr/bin/env bash
# One-GPU check of Sapiens-2B pose fine-tuning under DeepSpeed ZeRO-3 vs. the same Trainer run without DeepSpeed
# (details: examples/gpu_check_2b_zero3.py, docs/training.md), alone. benchmarks/run_gpu.sh runs it too, with the
# benchmarks, under one deadline: that is the prepared device call.
#
# Works from the repository as it is (PYTHONPATH=src, no `pip install -e .`): on a machine without PyPI (the device
# tool's GPU machine) it first installs the wheels of .whl/ (bash benchmarks/fetch_gpu_wheels.sh, here; carry
# [".whl"]) into /tmp/site; elsewhere it needs the packages of `pip install -e ".[train]"`.
# One H100/H200: about 3–4 minutes for the three runs (each at most --timeout s, default 150 here).
# Results: $OUT/gpu_check.json (or outputs/gpu_check/); extra arguments are passed on (--tiny: the CPU dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# DeepSpeed's ops are JIT-built on first use; the check uses none (torch AdamW from create_optimizer, no offload, no
# ZeRO++ quantisation). Anything built anyway lands here, and is listed at the end. A fresh folder by default: a build
# killed by a timeout leaves a lock there that makes the next build wait for ever.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$(mktemp -d /tmp/torch_extensions.XXXXXX)}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, deepspeed, sapiens_hf.training
print('torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)"
status=0
python3 examples/gpu_check_2b_zero3.py --output_dir "${OUT:-outputs/gpu_check}" --timeout 150 "$@" || status=$?
find "$TORCH_EXTENSIONS_DIR" -name "*.so" 2>/dev/null | sed 's/^/JIT-built op: /'
exit $status
