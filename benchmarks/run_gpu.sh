#!/usr/bin/env bash
# The GPU benchmarks (docs/performance.md) and the Sapiens-2B fine-tuning check under DeepSpeed ZeRO-3
# (docs/training.md), in one command on one H100 or H200 that ends within ~8.5 minutes (default budget 480 s from its
# start; hard guards stop any step at most 15 s past it; then the report).
#
# Prerequisites: a CUDA build of torch, then `pip install -e ".[train,bench]"` (DeepSpeed, timm). The script puts
# src/ on PYTHONPATH, so it also runs from a plain checkout with those dependencies installed.
#
# Usage, on a CUDA machine:  bash benchmarks/run_gpu.sh
# Results in OUTPUT_DIR (default outputs/gpu/): gpu-1-targets.json, gpu_check.json, gpu-2-pipeline.json,
# gpu-3-train.json, gpu-4-sizes.json, gpu-5-tasks.json (rows), report.md (tables), log.txt.
#
# Steps, in this order, under one shared deadline. Each step is given what is left minus a reserve for the priority
# steps after it; one that would not fit is skipped and says so. Every JSON is rewritten after each row (run), so a
# step cut short keeps what it measured. Expected times (estimates from the peers' H200 speeds in
# docs/performance.md, model sizes and the scripts; compile and DeepSpeed set-up times are the unknowns):
#   setup: versions, nvidia-smi                                                                   ~5–15 s
#   1. targets (gpu-1-targets.json): check + inference at 0.3B bs16 and 2B bs4 (SDPA's
#      choice, flash, cuDNN; ViTModel; timm; pose head NCHW/NHWC), torch.compile at 0.3B last.
#      Starts no row after STEP1_S (150 s); a row in flight may finish, up to what is left after
#      the reserves of the next two steps (about 200 s from its start)                           ~150–200 s
#   ZeRO-3 check (gpu_check.json): benchmarks/gpu_check_2b_zero3.py, Sapiens-2B pose, bf16, activation
#      checkpointing, batch 2, 12 steps per run, each run its own process: plain Trainer (~45 s),
#      zero3_persistent_params (~75 s), then plain zero3 (~90 s) only if >= 80 s are left beside
#      the pipeline's reserve; each run at most min(150, budget - 100) s (>= 90). Reserved: 200 s ~120–210 s
#   2. pose pipeline (gpu-2-pipeline.json): 0.3B, 16 people, 308 keypoints. Reserved: 70 s       ~30–40 s
#   3.–5. with what remains: training steps at 0.3B and 2B (gpu-3-train.json), 0.6B/1B inference
#      (gpu-4-sizes.json), seg/depth/normal heads (gpu-5-tasks.json)                             ~0–150 s
#   report.md from the JSONs                                                                      ~3 s
# Expected total ~430–480 s; worst case ~500 s (the deadline plus a hard guard of 15 s plus the report).
#
# Environment: OUTPUT_DIR (default outputs/gpu, relative to the repository root); BUDGET_S (default 480),
# STEP1_S (default 150).
# GPU_DRY_RUN=cpu: the CPU dry run of this script (no GPU): every benchmark step runs with --device cpu and size tiny,
# the ZeRO-3 check with --tiny; the same steps, budgets and files. Only for checking the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir=${OUTPUT_DIR:-outputs/gpu}
mkdir -p "$out_dir"
DRY=${GPU_DRY_RUN:-}
RESERVE_CHECK=200 # the plain Trainer run (~45 s) and zero3_persistent_params (~75 s), with room for slower ones
RESERVE_PIPELINE=70 # a step needs >= 65 s to start (20 s to start rows + 45 s for the last one)

left() { echo $((deadline - SECONDS - ${1:-0})); }

bench() { # bench NAME SOFT_CAP RESERVE ARGS...: one benchmark.py step; starts no row after SOFT_CAP s or what is left
    local name=$1 cap=$2 reserve=$3
    shift 3
    local hard soft
    hard=$(left "$reserve")
    soft=$((hard - 45 < cap ? hard - 45 : cap)) # a row started at the soft limit gets ≥ 45 s before the hard one
    if ((soft < 20)); then
        echo "== $name: skipped, budget spent ($((deadline - SECONDS)) s left, $reserve s reserved for later steps)"
        return
    fi
    local args=("$@")
    if [[ $DRY == cpu ]]; then # the same step at size tiny on the CPU
        local i
        for ((i = 0; i < ${#args[@]}; i++)); do
            [[ ${args[i]} == --sizes || ${args[i]} == --compile ]] && args[i + 1]=tiny
        done
        args+=(--device cpu)
    else
        args+=(--device cuda)
    fi
    echo "== $name: starts no row after $soft s, stopped after $((hard + 15)) s (t=${SECONDS}s)"
    timeout -k 5 $((hard + 15)) python3 benchmarks/benchmark.py --budget-s "$soft" "${args[@]}"
    echo "== $name: exit $?, t=${SECONDS}s"
}

zero3_check() { # the 2B ZeRO-3 check, with what is left minus the pipeline's reserve
    local budget
    budget=$(left $RESERVE_PIPELINE)
    if ((budget < 100)); then
        echo "== 2b-zero3 check: skipped, budget spent ($((deadline - SECONDS)) s left)"
        return
    fi
    # plain zero3 runs last, and only if >= 80 s of the budget are left after the two others (--min_run_s);
    # a run gets at most 150 s, and the first at most budget - 100 s so that the second still has 100 s
    local modes=plain,zero3_persistent_params,zero3 per_run=$((budget - 100))
    ((per_run > 150)) && per_run=150
    ((per_run < 90)) && per_run=90
    local tiny=()
    [[ $DRY == cpu ]] && tiny=(--tiny)
    echo "== 2b-zero3 check: modes $modes, budget $budget s, each run at most $per_run s (t=${SECONDS}s)"
    timeout -k 5 $((budget + 15)) python3 benchmarks/gpu_check_2b_zero3.py "${tiny[@]}" --modes "$modes" \
        --budget_s "$budget" --timeout $per_run --min_run_s 80 --output_dir "$out_dir"
    echo "== 2b-zero3 check: exit $?, t=${SECONDS}s"
    # DeepSpeed should have compiled nothing (torch AdamW, no offload): any JIT-built op shows here
    find "$TORCH_EXTENSIONS_DIR" -name "*.so" 2>/dev/null | sed 's/^/JIT-built op: /'
}

main() {
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    # a fresh folder: a build killed by a timeout leaves a lock that makes the next one wait for ever
    TORCH_EXTENSIONS_DIR=$(mktemp -d /tmp/torch_extensions.XXXXXX)
    export TORCH_EXTENSIONS_DIR TOKENIZERS_PARALLELISM=false
    [[ $DRY == cpu ]] || nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, transformers, deepspeed, sapiens_hf, sapiens_hf.training
try:
    import timm; timm = timm.__version__  # the benchmark's peer (needs torchvision); its rows say so when missing
except Exception as error:
    timm = f'missing ({error})'
print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm,
      'deepspeed', deepspeed.__version__, 'cuDNN', torch.backends.cudnn.version(), 'cuda', torch.cuda.is_available())
" 2>&1 | grep -v "^\[.*real_accelerator" || return 1
    deadline=${BUDGET_S:-480}
    echo "== budget: measurements end by t=${deadline}s (t=${SECONDS}s now)"

    # 1. The targets: backbone against ViTModel and timm at 0.3B bs16 and 2B bs4 (SDPA's own choice, flash, cuDNN),
    #    the pose model (head NCHW and NHWC), torch.compile at 0.3B; the fast-path checks (head dim 60 padded to 64,
    #    bf16 against fp32).
    bench "1 targets" "${STEP1_S:-150}" $((RESERVE_CHECK + RESERVE_PIPELINE)) \
        --mode check,inference --sizes 0.3b,2b --tasks pose --head-formats contiguous,channels_last --compile 0.3b \
        --iters 8 --warmup 2 --out "$out_dir/gpu-1-targets.json"
    # Sapiens-2B pose fine-tuning, plain Trainer against DeepSpeed ZeRO-3 → gpu_check.json
    zero3_check
    # 2. The pose pipeline: crop + model + decode of 16 people in a 1920×1080 photo, 308 keypoints.
    bench "2 pipeline" 60 0 --mode pipeline --sizes 0.3b --attention none --peers none --iters 5 --warmup 1 \
        --out "$out_dir/gpu-2-pipeline.json"
    # 3. Training steps (bf16 autocast, fused AdamW; activation checkpointing for the 2B) against ViTModel.
    bench "3 train" 1000 0 --mode train --sizes 0.3b,2b --tasks pose --peers hf-vit --iters 5 --warmup 2 \
        --out "$out_dir/gpu-3-train.json"
    # 4. The other sizes, and the other task models (head NCHW and NHWC).
    bench "4 sizes" 1000 0 --mode inference --sizes 0.6b,1b --attention sdpa --peers hf-vit --iters 5 --warmup 2 \
        --out "$out_dir/gpu-4-sizes.json"
    bench "5 tasks" 1000 0 --mode inference --sizes 0.3b,2b --attention none --peers none --tasks seg,depth,normal \
        --head-formats contiguous,channels_last --iters 5 --warmup 2 --out "$out_dir/gpu-5-tasks.json"

    if compgen -G "$out_dir/gpu-*.json" > /dev/null; then
        python3 benchmarks/benchmark.py --report "$out_dir"/gpu-*.json > "$out_dir/report.md"
    fi
    if [[ -f $out_dir/gpu_check.json ]]; then
        printf "\n" >> "$out_dir/report.md"
        python3 benchmarks/gpu_check_2b_zero3.py --report "$out_dir/gpu_check.json" >> "$out_dir/report.md"
    fi
    cat "$out_dir/report.md"
    echo "total ${SECONDS}s"
}

main 2>&1 | tee "$out_dir/log.txt"
