#!/usr/bin/env bash
# One-GPU check of Sapiens-2B pose fine-tuning under DeepSpeed ZeRO-3 vs. the same Trainer run without DeepSpeed
# (details: benchmarks/gpu_check_2b_zero3.py, docs/training.md), alone. benchmarks/run_gpu.sh runs it too, with the
# GPU benchmarks, under one deadline.
#
# Prerequisite: pip install -e ".[train]" (or ".[train,bench]"). The script also works from a plain checkout with
# those dependencies installed, since it puts src/ on PYTHONPATH.
# One H100/H200: about 3–4 minutes for the three runs (an estimate; each run at most --timeout s, 150 here).
# Results: gpu_check.json in OUTPUT_DIR (default outputs/gpu_check/); extra arguments are passed on (--tiny: the CPU
# dry run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# DeepSpeed's ops are JIT-built on first use; the check uses none (torch AdamW from create_optimizer, no offload, no
# ZeRO++ quantisation). Anything built anyway lands here, and is listed at the end. A fresh folder by default: a build
# killed by a timeout leaves a lock there that makes the next build wait for ever.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$(mktemp -d /tmp/torch_extensions.XXXXXX)}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, deepspeed, sapiens_hf.training
print('torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)"
status=0
python3 benchmarks/gpu_check_2b_zero3.py --output_dir "${OUTPUT_DIR:-outputs/gpu_check}" --timeout 150 "$@" || status=$?
find "$TORCH_EXTENSIONS_DIR" -name "*.so" 2>/dev/null | sed 's/^/JIT-built op: /'
exit $status
