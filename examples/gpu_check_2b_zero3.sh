#!/usr/bin/env bash
# One-GPU check of Sapiens-2B pose fine-tuning under DeepSpeed ZeRO-3 vs. the same Trainer run without DeepSpeed
# (details: examples/gpu_check_2b_zero3.py, docs/training.md). Needs `pip install -e ".[train]"` and one H100/H200;
# takes about 4–6 minutes (≤ 8). Results: $OUT/gpu_check.json (or outputs/gpu_check/); extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, transformers, deepspeed; print('torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__)"
exec python examples/gpu_check_2b_zero3.py --output_dir "${OUT:-outputs/gpu_check}" --timeout 150 "$@"
