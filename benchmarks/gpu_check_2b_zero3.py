#!/usr/bin/env python
"""One-GPU check of Sapiens-2B pose fine-tuning with the `Trainer`: DeepSpeed ZeRO-3 (the persistent-parameter
configuration tuned for a single GPU, and the usual one) against the same Trainer run without DeepSpeed, all with bf16
and activation checkpointing. Reports images/s, model TFLOP/s (3 × forward FLOPs per image), peak GPU memory and each
run's throughput relative to the run without DeepSpeed; the goal is batch ≥ 2 per GPU within 60 GiB at ≥ 90% of it.

    bash benchmarks/gpu_check_2b_zero3.sh               # one H100/H200, about 3–4 minutes (estimate)
    bash benchmarks/run_gpu.sh                          # the same, with the GPU benchmarks, ≤ 8.5 minutes
    python benchmarks/gpu_check_2b_zero3.py --tiny      # CPU dry run of the same code path with a tiny model

Every run is a separate process (fresh DeepSpeed state and memory statistics) training `SapiensForPoseEstimation` at
1024×768 with `SapiensTrainer` (layer-wise LR decay) on synthetic crops and heatmaps, so data loading is not measured.
Results: `<output_dir>/gpu_check.json`, one line per run and a summary. Background: docs/training.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_CONFIGS = {
    "plain": None,  # in order of priority: the default --modes runs them in this order
    "zero3_persistent_params": REPO / "examples/deepspeed/zero3_persistent_params.json",
    "zero3": REPO / "examples/deepspeed/zero3.json",
}
GOAL = {"min_batch_size": 2, "max_peak_gib": 60.0, "min_throughput_ratio": 0.9}
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "image_size": [128, 96],
    "decoder_deconv_channels": [16, 16],
    "decoder_conv_channels": [16],
}


def pose_config(tiny: bool):
    from sapiens_hf import SapiensConfig

    return SapiensConfig.from_preset("sapiens-2b", task="pose", num_labels=17, **(TINY if tiny else {}))


def forward_flops(config) -> int:
    """Multiply-add FLOPs (×2) of one pose forward pass at the config's input size: patch embedding, per block the
    qkv / attention / projection / MLP matmuls, and the head's transposed and 1×1 convolutions (norms, activations and
    biases left out)."""
    height, width = config.image_size
    grid_h, grid_w = config.grid_size
    tokens, dim, patch = grid_h * grid_w, config.hidden_size, config.patch_size
    flops = 2 * tokens * dim * config.num_channels * patch * patch
    flops += config.num_hidden_layers * (
        2 * tokens * dim * (4 * dim + 2 * config.intermediate_size) + 4 * tokens * tokens * dim
    )
    channels, pixels = dim, tokens
    for width_out in config.decoder_deconv_channels:  # ConvTranspose2d(4, 2, 1): 16 taps per input pixel
        flops += 2 * channels * width_out * 16 * pixels
        channels, pixels = width_out, pixels * 4
    for width_out in config.decoder_conv_channels + [config.num_labels]:
        flops += 2 * channels * width_out * pixels
        channels = width_out
    return flops


def worker(mode: str, args) -> dict:
    """One training run; returns its measurements."""
    from transformers import AutoModelForPoseEstimation, TrainerCallback

    from sapiens_hf.training import SapiensTrainer, SapiensTrainingArguments

    cuda = torch.cuda.is_available()
    config = pose_config(args.tiny)
    height, width = config.image_size
    training_args = SapiensTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix=f"gpu_check_{mode}_"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        bf16=cuda,  # the CPU dry run stays fp32 (DeepSpeed refuses bf16 on CPU)
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": False},
        deepspeed=str(DEEPSPEED_CONFIGS[mode]) if DEEPSPEED_CONFIGS[mode] else None,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        save_strategy="no",
        logging_steps=10**6,
        report_to=[],
        dataloader_num_workers=0,  # the dataset hands out one cached batch item: no loading to overlap
        dataloader_pin_memory=cuda,
    )
    started = time.perf_counter()
    if training_args.deepspeed:  # built after TrainingArguments: zero.Init partitions it on the GPU while it is built
        model = AutoModelForPoseEstimation.from_config(config)
    else:  # initialise the 2B weights on the GPU rather than on the CPU
        with torch.device("cuda" if cuda else "cpu"):
            model = AutoModelForPoseEstimation.from_config(config)
    init_s = time.perf_counter() - started

    class Crops(torch.utils.data.Dataset):
        """Fixed random crops, heatmaps and weights: the GPU work of pose fine-tuning without the data pipeline."""

        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.item = {
                "pixel_values": torch.randn(3, height, width, generator=generator),
                "labels": torch.rand(config.num_labels, height // 4, width // 4, generator=generator),
                "label_weights": torch.ones(config.num_labels),
            }

        def __len__(self):
            return 10**6

        def __getitem__(self, index):
            return self.item

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *unused, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *unused, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()
    trainer = SapiensTrainer(model=model, args=training_args, train_dataset=Crops(), callbacks=[timer])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    measured = timer.times[args.warmup_steps :] or timer.times
    step_s = statistics.median(measured)
    flops_per_image = 3 * forward_flops(config)
    return {
        "mode": mode,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": "sapiens-2b pose (17 keypoints)" if not args.tiny else "tiny pose (dry run)",
        "batch_size": args.batch_size,
        "measured_steps": len(measured),
        "step_s": step_s,
        "img_s": args.batch_size / step_s,
        "tflops": flops_per_image * args.batch_size / step_s / 1e12,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "init_s": init_s,
        "train_loss": trainer.state.log_history[-1].get("train_loss"),
    }


def summarize(results: list[dict]) -> dict:
    """Throughput relative to the run without DeepSpeed, and whether each DeepSpeed run meets the goal."""
    plain = next((r for r in results if r["mode"] == "plain" and "img_s" in r), None)
    summary = {"goal": GOAL, "runs": {}}
    for result in results:
        if "img_s" not in result:
            summary["runs"][result["mode"]] = {key: result[key] for key in ("error", "skipped") if key in result}
            continue
        entry = {"img_s": result["img_s"], "peak_allocated_gib": result["peak_allocated_gib"]}
        if plain is not None and result is not plain:
            ratio = result["img_s"] / plain["img_s"]
            entry["throughput_vs_plain"] = ratio
            peak = result["peak_allocated_gib"]
            entry["goal_met"] = (
                None
                if peak is None
                # None: no GPU, no memory figure (dry run)
                else (
                    result["batch_size"] >= GOAL["min_batch_size"]
                    and peak <= GOAL["max_peak_gib"]
                    and ratio >= GOAL["min_throughput_ratio"]
                )
            )
        summary["runs"][result["mode"]] = entry
    return summary


def markdown(report: dict) -> str:
    """The table of a `gpu_check.json` report: one row per run, with the error's or skip's gist where it has no
    numbers (the whole error is in the JSON)."""

    def number(value, digits=2):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        "## Sapiens-2B pose fine-tuning, one GPU: plain Trainer vs DeepSpeed ZeRO-3 (gpu_check.json)",
        "",
        "| mode | img/s | TFLOP/s | step s | peak alloc GiB | peak reserved GiB | × plain | goal met | process s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        run = report["summary"]["runs"].get(result["mode"], {})
        if "img_s" not in result:
            why = (result.get("error") or result.get("skipped") or "").replace("|", "/").strip().splitlines() or [""]
            gist = why[0][:80] + (" … " + why[-1][-200:] if len(why) > 1 else "")
            lines.append(f"| {result['mode']} | {gist} | | | | | | | {number(result.get('wall_s'), 0)} |")
            continue
        cells = [
            number(result["img_s"]),
            number(result["tflops"], 1),
            number(result["step_s"], 3),
            number(result["peak_allocated_gib"], 1),
            number(result["peak_reserved_gib"], 1),
            number(run.get("throughput_vs_plain")),
            run.get("goal_met", "–"),
            number(result.get("wall_s"), 0),
        ]
        lines.append(f"| {result['mode']} | " + " | ".join(str(cell) for cell in cells) + " |")
    done = [result for result in report["results"] if "device" in result]
    device = f"{done[0]['device']}, batch {done[0]['batch_size']}; " if done else ""
    lines += ["", f"{device}goal: {report['summary']['goal']}"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model at 128×96: a CPU dry run of the code path")
    parser.add_argument("--modes", default=",".join(DEEPSPEED_CONFIGS), help="comma-separated runs, in order")
    parser.add_argument("--batch_size", type=int, default=2, help="per-GPU batch size")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--warmup_steps", type=int, default=4, help="first steps left out of the timing")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per run before it is abandoned")
    parser.add_argument(
        "--budget_s",
        type=float,
        help="seconds for all runs together: each run's timeout is cut to what is left, and a run is skipped (and "
        "says so) when less than --min_run_s is left",
    )
    parser.add_argument("--min_run_s", type=float, default=60, help="with --budget_s: least time worth a run")
    parser.add_argument("--output_dir", default=os.environ.get("OUTPUT_DIR", "outputs/gpu_check"))
    parser.add_argument("--report", metavar="GPU_CHECK_JSON", help="print the markdown table of a saved report")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return

    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return

    modes = args.modes.split(",")
    unknown = set(modes) - set(DEEPSPEED_CONFIGS)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {list(DEEPSPEED_CONFIGS)}")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    forwarded = [f"--batch_size={args.batch_size}", f"--steps={args.steps}", f"--warmup_steps={args.warmup_steps}"]
    forwarded += ["--tiny"] if args.tiny else []
    # A single rank without a launcher: DeepSpeed reads the rendezvous from the environment.
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    env.setdefault("MASTER_PORT", "29533")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    results = []
    for mode in modes:
        timeout = args.timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < args.min_run_s:
                result = {"mode": mode, "skipped": f"budget spent: {left:.0f} s left, a run needs {args.min_run_s:.0f}"}
                results.append(result)
                print(json.dumps(result), flush=True)
                continue
            timeout = int(min(timeout, left))
        command = [sys.executable, __file__, f"--worker={mode}", *forwarded]
        started = time.monotonic()
        try:
            run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode == 0 and lines:
                result = json.loads(lines[-1][len("RESULT ") :])
            else:
                result = {"mode": mode, "error": f"exit {run.returncode}: {(run.stderr or run.stdout)[-3000:]}"}
        except subprocess.TimeoutExpired:
            result = {"mode": mode, "error": f"timed out after {timeout} s"}
        result["wall_s"] = time.monotonic() - started  # the whole process: start-up, model, DeepSpeed, all steps
        results.append(result)
        print(json.dumps(result), flush=True)
        # Rewritten after every run: a run cut short by an outer deadline keeps the ones before it.
        report = {"results": results, "summary": summarize(results)}
        (output_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(markdown(report), flush=True)
    if any("error" in result for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
