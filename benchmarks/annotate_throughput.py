"""Throughput of `sapiens-hf annotate` on this machine, in one run: decoding overlapped by DataLoader workers or not,
1 or 2 processes (`accelerate launch`, gloo on the CPU), and the intra-op threads of each.

    python benchmarks/annotate_throughput.py [--images 96] [--task depth] [--hidden-size 32]
    python benchmarks/annotate_throughput.py --released --images 4     # the 0.3B model: threads × processes

Uses a tiny randomly initialised model (the work per image is then mostly decoding and pre-processing, which is what
the workers overlap), or with `--released` the released 0.3B configuration (random weights; the model is then the
work, and the question is how to share the cores), and JPEG photos of 1280×960. Each process gets the cores divided
among the processes (as accelerate does on the CPU), and "1 process, 1 thread" shows what the second core adds to one
process. Each configuration annotates the same images into a fresh folder;
images/s is from the command's own aggregate line (images over the wall time of the slowest process). Not a unit test; results in
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


CONFIGURATIONS = {  # name: processes, DataLoader workers per process, intra-op threads per process (None: shared out)
    "1 process, no workers": (1, 0, None), "1 process, 1 worker": (1, 1, None), "2 processes, no workers": (2, 0, None),
    "2 processes, 1 worker each": (2, 1, None), "1 process, 1 thread": (1, 0, 1)}
TINY = ("1 process, no workers", "1 process, 1 worker", "2 processes, no workers", "2 processes, 1 worker each")
RELEASED = ("1 process, no workers", "2 processes, no workers", "1 process, 1 thread")  # decoding is not the limit


def run(images: Path, model: Path, task: str, out: Path, processes: int, workers: int, threads: int | None) -> float:
    arguments = ["annotate", str(images), "--task", task, "--model", f"{task}={model}", "--output", str(out),
                 "--workers", str(workers), "--device", "cpu", "--quiet", "--batch-size", "8", "--chunk-size", "16",
                 # the model on whole images: the person detector's and the person mask's costs are measured apart
                 *{"pose": ["--detector", "none"], "depth": ["--no-mask"], "normal": ["--no-mask"]}.get(task, [])]
    if processes == 1:
        command = [sys.executable, "-m", "sapiens_hf.cli", *arguments]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "-m", "sapiens_hf.cli", *arguments]
    # Each process gets the cores divided among the processes, as accelerate does on the CPU.
    threads = threads or max(1, (os.cpu_count() or 1) // processes)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    images, seconds = re.search(r"annotated (\d+) images in ([\d.]+) s", result.stderr).groups()
    return int(images) / float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--task", default="depth")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--released", action="store_true", help="the released 0.3B configuration, not a tiny model")
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

        tiny = {"hidden_size": args.hidden_size, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 4 * args.hidden_size, "decoder_deconv_channels": [16, 16],
                "decoder_conv_channels": [16]}
        config = SapiensConfig.from_preset("0.3b", task.name, **({} if args.released else tiny))
        getattr(modeling, task.model_class)(config).save_pretrained(tmp / "model")
        SapiensImageProcessorPil().save_pretrained(tmp / "model")
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
              f"{args.images} JPEG photos 1280×960, task {task.name}, "
              f"{'the released 0.3B configuration' if args.released else f'hidden size {args.hidden_size}'}, "
              f"1024×768 input, load average {os.getloadavg()}")
        results = {}
        for name in RELEASED if args.released else TINY:
            results[name] = run(tmp / "images", tmp / "model", task.name, tmp / name.replace(" ", "-"),
                                *CONFIGURATIONS[name])
            print(f"{name:28s} {results[name]:.3g} images/s")
        base = results["1 process, no workers"]
        print("ratios to 1 process without workers: " + ", ".join(f"{name}: {value / base:.2f}×"
                                                                   for name, value in results.items()))


if __name__ == "__main__":
    main()
