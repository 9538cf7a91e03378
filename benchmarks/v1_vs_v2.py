#!/usr/bin/env python
"""Sapiens v1 against Sapiens2 (transformers' `Sapiens2For*`) at comparable sizes: one forward of each task model at
1024×768, batch 1, random weights at the released configs, the two models resident and called in turn so that the
changing load of a shared machine slows both alike; the ratio is the result.

Sizes: v1 from `SapiensConfig.from_preset`, v2 from `sapiens_hf.training.sapiens2.preset_config` (the original
`arch_zoo` and task heads). The default pair, v1 0.3B and v2 0.4B, have the same width, depth and heads (1024, 24, 16);
v2 differs by SwiGLU MLPs (3 matrices of 4·d instead of 2), grouped-query attention in 8 of its 24 blocks, RMSNorm,
RoPE and 8 register tokens.

    python benchmarks/v1_vs_v2.py --threads 1 --repeats 3 --out benchmarks/results/cpu-v1-vs-v2-pose.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sapiens_hf import (
    SapiensConfig,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
)
from sapiens_hf.training.sapiens2 import model_class as sapiens2_class
from sapiens_hf.training.sapiens2 import preset_config


sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import machine  # noqa: E402  (the machine description of benchmarks/benchmark.py's results)


V1_CLASSES = {
    "pose": SapiensForPoseEstimation,
    "segmentation": SapiensForSemanticSegmentation,
    "normal": SapiensForNormalEstimation,
}
# The released heads' label counts, the same for both families where they share the task (pose: Goliath's 308).
NUM_LABELS = {"pose": 308, "segmentation": None, "normal": 3}


def build(family: str, size: str, task: str):
    torch.manual_seed(0)
    if family == "v1":
        fields = {"num_labels": NUM_LABELS[task]} if NUM_LABELS[task] else {}
        model = V1_CLASSES[task](SapiensConfig.from_preset(f"sapiens-{size}", task=task, **fields))
    else:
        model = sapiens2_class(task)(preset_config(f"sapiens2-{size}", task))
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pose", choices=sorted(V1_CLASSES))
    parser.add_argument("--v1", default="0.3b", help="Sapiens v1 size (0.3b, 0.6b, 1b, 2b)")
    parser.add_argument("--v2", default="0.4b", help="Sapiens2 size (0.4b, 0.8b, 1b, 5b)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns; each calls both models once")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = {f"v1-{args.v1}": build("v1", args.v1, args.task), f"v2-{args.v2}": build("v2", args.v2, args.task)}
    pixels = torch.randn(1, 3, args.height, args.width)
    result = {
        "meta": {**machine(), "argv": sys.argv[1:], "task": args.task, "dtype": "fp32", "batch": 1,
                 "height": args.height, "width": args.width, "load_avg_1min_at_start": os.getloadavg()[0]},
        "models": {name: {"parameters": sum(p.numel() for p in model.parameters()), "seconds": [], "load_avg_1min": []}
                   for name, model in models.items()},
    }

    def forward(model):
        with torch.inference_mode():
            model(pixels)

    for name, model in models.items():  # FLOPs as torch counts them (matmuls, convolutions, attention); a warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            forward(model)
        result["models"][name]["gflops"] = counter.get_total_flops() / 1e9
    names = list(models)
    for turn in range(args.repeats):
        # Alternate which model goes first, so that neither always follows the other's memory traffic.
        for name in names if turn % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            forward(models[name])
            result["models"][name]["seconds"].append(time.perf_counter() - start)
            result["models"][name]["load_avg_1min"].append(os.getloadavg()[0])
            print(f"turn {turn}: {name} {result['models'][name]['seconds'][-1]:.2f} s", flush=True)
    for name, row in result["models"].items():
        row["median_seconds"] = statistics.median(row["seconds"])
        row["gflop_s"] = row["gflops"] / row["median_seconds"]
    v1, v2 = (result["models"][name] for name in names)
    result["v2_over_v1_time"] = v2["median_seconds"] / v1["median_seconds"]
    result["v2_over_v1_per_turn"] = [b / a for a, b in zip(v1["seconds"], v2["seconds"])]
    result["meta"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({name: {k: row[k] for k in ("parameters", "gflops", "median_seconds")}
                      for name, row in result["models"].items()} | {"v2_over_v1_time": result["v2_over_v1_time"]}))


if __name__ == "__main__":
    main()
