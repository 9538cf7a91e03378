#!/usr/bin/env bash
# The prepared GPU run of issue 8: everything docs/performance.md reports, in one command of at most 8 minutes on one
# H100 or H200. Steps run in order of priority; one that would start after the deadline is skipped, and so is any
# row of a step that runs out of it (the row says so). Each JSON is rewritten after every row, so a run cut short
# keeps what it measured.
#
# Here, first:          bash benchmarks/fetch_gpu_wheels.sh      (the wheels the GPU machine lacks, into .whl/)
# With the device tool: run(command="bash benchmarks/run_gpu.sh", carry=[".whl"], timeout_s=540)
# Back under $OUT: gpu-*.json (the rows), report.md (the tables), log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sapiens-bench}
mkdir -p "$OUT"

bench() {  # one step with what is left of the budget; the timeout only guards against a hung step
    local left=$((deadline - SECONDS))
    if ((left < 20)); then
        echo "skipped (budget spent): $*"
        return
    fi
    timeout $((left + 30)) python3 benchmarks/benchmark.py --device cuda --budget-s "$left" "$@"
}

main() {
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, transformers, timm, sapiens_hf
print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__,
      'cuDNN', torch.backends.cudnn.version())" || return 1
    deadline=$((SECONDS + ${BUDGET_S:-450}))

    # 1. The targets: backbone against ViTModel and timm at 0.3B bs16 and 2B bs4 (SDPA's own choice, flash, cuDNN),
    #    the pose model (head NCHW and NHWC), torch.compile at 0.3B; the fast-path checks (head dim 60 padded to 64,
    #    bf16 against fp32).
    bench --mode check,inference --sizes 0.3b,2b --tasks pose --head-formats contiguous,channels_last --compile 0.3b \
        --iters 8 --warmup 2 --out "$OUT/gpu-1-targets.json"
    # 2. The pose pipeline: crop + model + decode of 16 people in a 1920×1080 photo, 308 keypoints.
    bench --mode pipeline --sizes 0.3b --attention none --peers none --iters 5 --warmup 1 \
        --out "$OUT/gpu-2-pipeline.json"
    # 3. Training steps (bf16 autocast, fused AdamW; activation checkpointing for the 2B) against ViTModel.
    bench --mode train --sizes 0.3b,2b --tasks pose --peers hf-vit --iters 5 --warmup 2 --out "$OUT/gpu-3-train.json"
    # 4. The other sizes, and the other task models (head NCHW and NHWC).
    bench --mode inference --sizes 0.6b,1b --attention sdpa --peers hf-vit --iters 5 --warmup 2 \
        --out "$OUT/gpu-4-sizes.json"
    bench --mode inference --sizes 0.3b,2b --attention none --peers none --tasks seg,depth,normal \
        --head-formats contiguous,channels_last --iters 5 --warmup 2 --out "$OUT/gpu-5-tasks.json"

    python3 benchmarks/benchmark.py --report "$OUT"/gpu-*.json > "$OUT/report.md"
    cat "$OUT/report.md"
    echo "total ${SECONDS}s"
}

main 2>&1 | tee "$OUT/log.txt"
