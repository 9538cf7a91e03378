"""Throughput of `sapiens-hf annotate` on this machine, in one run: decoding overlapped by DataLoader workers or not,
and 1 or 2 processes (`accelerate launch`, gloo on the CPU).

    python benchmarks/annotate_throughput.py [--images 96] [--task depth] [--hidden-size 32]

Uses a tiny randomly initialised model (the work per image is then mostly decoding and pre-processing, which is what
the workers overlap) and JPEG photos of 1280×960. Each configuration annotates the same images into a fresh folder;
images/s is the command's own aggregate line (all processes, wall time of the slowest). Not a unit test; results in
docs/inference.md, "Millions of images".
"""

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import PIL.Image
import skimage.data
import torch

from sapiens_hf import SapiensConfig, SapiensImageProcessorPil
from sapiens_hf.tasks import get_task


CONFIGURATIONS = [("1 process, no workers", 1, 0), ("1 process, 1 worker", 1, 1), ("2 processes, no workers", 2, 0),
                  ("2 processes, 1 worker each", 2, 1)]


def run(images: Path, model: Path, task: str, out: Path, processes: int, workers: int) -> float:
    arguments = ["annotate", str(images), "--task", task, "--model", f"{task}={model}", "--output", str(out),
                 "--workers", str(workers), "--device", "cpu", "--quiet", "--batch-size", "8", "--chunk-size", "16"]
    if processes == 1:
        command = [sys.executable, "-m", "sapiens_hf.cli", *arguments]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "sapiens_hf.cli", *arguments]
    # Each process gets the cores divided among the processes, as accelerate does on the CPU.
    threads = max(1, (os.cpu_count() or 1) // processes)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    return float(re.search(r"([\d.]+) images/s", result.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--task", default="depth")
    parser.add_argument("--hidden-size", type=int, default=32)
    args = parser.parse_args()
    task = get_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo = PIL.Image.fromarray(skimage.data.astronaut()).resize((1280, 960))
        (tmp / "images").mkdir()
        for index in range(args.images):
            photo.rotate(index % 360).save(tmp / "images" / f"{index:04d}.jpg", quality=90)
        torch.manual_seed(0)
        import sapiens_hf.modeling_sapiens as modeling

        config = SapiensConfig.from_preset("0.3b", task.name, hidden_size=args.hidden_size, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=4 * args.hidden_size,
                                           decoder_deconv_channels=[16, 16], decoder_conv_channels=[16])
        getattr(modeling, task.model_class)(config).save_pretrained(tmp / "model")
        SapiensImageProcessorPil().save_pretrained(tmp / "model")
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
              f"{args.images} JPEG photos 1280×960, task {task.name}, hidden size {args.hidden_size}, 1024×768 input")
        results = {}
        for name, processes, workers in CONFIGURATIONS:
            results[name] = run(tmp / "images", tmp / "model", task.name, tmp / name.replace(" ", "-"), processes,
                                workers)
            print(f"{name:28s} {results[name]:6.2f} images/s")
        base = results["1 process, no workers"]
        print("ratios to 1 process without workers: " + ", ".join(f"{name}: {value / base:.2f}×"
                                                                   for name, value in results.items()))


if __name__ == "__main__":
    main()
