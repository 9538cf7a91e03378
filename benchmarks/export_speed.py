"""CPU speed of the deployment paths, in one run: torch eager, `torch.compile`, onnxruntime fp32 and int8, for the
0.3B encoder and the 0.3B pose model (random weights of the released shapes) at 1024×768, batch 1.

    python benchmarks/export_speed.py [--repeats 3] [--models encoder,pose]

Each path gets one warm-up call, then `--repeats` rounds that time every path once in turn (so that a shared
machine whose speed drifts during the run slows all paths alike); the median per path, images/s and the ratio to
eager are printed. The int8 graph's keypoint change against fp32 is that of `sapiens-hf export --quantize int8` (the
bundled photo); it is static now, whose calibration of the 0.3B model needs more than 18 GB of memory
(docs/deployment.md, Reduced precision). Not a unit test; results in docs/deployment.md.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sapiens_hf import SapiensConfig, SapiensForPoseEstimation, SapiensModel
from sapiens_hf.export import export
from sapiens_hf.runtime import ExportedModel


def interleaved(paths: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each path, the paths timed in turn within each round, after one warm-up call each
    (which also compiles)."""
    for function in paths.values():
        function()
    seconds = {name: [] for name in paths}
    for _ in range(repeats):
        for name, function in paths.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="encoder,pose")
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    pixel_values = torch.randn(1, 3, 1024, 768, generator=torch.Generator().manual_seed(0))
    for name in args.models.split(","):
        torch.manual_seed(0)
        if name == "encoder":
            model = SapiensModel(SapiensConfig.from_preset("0.3b", "pose")).eval()
        else:
            model = SapiensForPoseEstimation(SapiensConfig.from_preset("0.3b", "pose", num_labels=308)).eval()
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            manifest = export(model, folder, quantize="int8")
            print(f"{name}: export + check + int8 in {time.perf_counter() - started:.0f} s; "
                  f"int8 vs fp32: {manifest['int8']}")
            size = sum(path.stat().st_size for path in Path(folder).glob("model.onnx*"))
            runners = {label: ExportedModel(folder, int8=int8).run
                       for label, int8 in (("onnxruntime fp32", False), ("onnxruntime int8", True))}
            feed = pixel_values.numpy()
            compiled = torch.compile(model)
            with torch.inference_mode():
                results = interleaved({
                    "torch eager": lambda model=model: model(pixel_values=pixel_values),
                    "torch.compile": lambda compiled=compiled: compiled(pixel_values=pixel_values),
                    **{label: lambda run=run, feed=feed: run(feed) for label, run in runners.items()},
                }, args.repeats)
        eager = results["torch eager"]
        print(f"{name} (1×3×1024×768, fp32 graph {size / 2**30:.2f} GiB)")
        for label, seconds in results.items():
            print(f"  {label:18s} {seconds:7.2f} s/image  {1 / seconds:6.3f} images/s  {eager / seconds:5.2f}× eager")
        del model, compiled, runners


if __name__ == "__main__":
    main()
