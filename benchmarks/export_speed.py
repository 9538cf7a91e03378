"""CPU speed of the deployment paths, in one run: torch eager, `torch.compile`, onnxruntime fp32 and int8, for the
0.3B encoder and the 0.3B pose model, or other task models (random weights of the released shapes) at 1024×768,
batch 1.

    python benchmarks/export_speed.py [--repeats 3] [--models encoder,pose] [--no-compile] [--no-int8]

Each path gets one warm-up call, then `--repeats` rounds that time every path once in turn (so that a shared
machine whose speed drifts during the run slows all paths alike); the median per path, images/s and the ratio to
eager are printed, with the range of the ratio between single calls of a round (how far the backend check's one
call of each, whose times the export also prints, can stray from the median). The int8 graph's change against fp32
is that of `sapiens-hf export --quantize int8` (the bundled photo); it is static, its ranges measured on the eager
model (docs/deployment.md, Reduced precision). onnxruntime runs as many threads as torch (`OMP_NUM_THREADS=1` times
one core of each). Not a unit test; results in docs/deployment.md.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sapiens_hf.modeling_sapiens as modeling
from sapiens_hf import SapiensConfig, SapiensModel
from sapiens_hf.export import export
from sapiens_hf.runtime import ExportedModel
from sapiens_hf.tasks import get_task


def interleaved(paths: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each call of each path, the paths timed in turn within each round, after one warm-up call each
    (which also compiles)."""
    for function in paths.values():
        function()
    seconds = {name: [] for name in paths}
    for _ in range(repeats):
        for name, function in paths.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="encoder,pose", help="encoder and/or task names (segmentation, depth, ...)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--no-int8", action="store_true", help="leave int8 out (its calibration takes minutes)")
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    pixel_values = torch.randn(1, 3, 1024, 768, generator=torch.Generator().manual_seed(0))
    for name in args.models.split(","):
        torch.manual_seed(0)
        if name == "encoder":
            model = SapiensModel(SapiensConfig.from_preset("0.3b", "pose")).eval()
        else:  # a task model; pose with the 308 keypoints of the released pose models
            config = SapiensConfig.from_preset("0.3b", name, **({"num_labels": 308} if name == "pose" else {}))
            model = getattr(modeling, get_task(name).model_class)(config).eval()
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            manifest = export(model, folder, quantize=None if args.no_int8 else "int8")
            print(f"{name}: export + check{'' if args.no_int8 else ' + int8'} in {time.perf_counter() - started:.0f}"
                  f" s; the check's one call each: {manifest['check_seconds']}; int8 vs fp32: {manifest.get('int8')}")
            size = sum(path.stat().st_size for path in Path(folder).glob("model.onnx*"))
            runners = {label: ExportedModel(folder, int8=int8, threads=torch.get_num_threads()).run
                       for label, int8 in (("onnxruntime fp32", False), ("onnxruntime int8", True))
                       if not (int8 and args.no_int8)}
            feed = pixel_values.numpy()
            compiled = None if args.no_compile else torch.compile(model)
            with torch.inference_mode():
                results = interleaved({
                    "torch eager": lambda model=model: model(pixel_values=pixel_values),
                    **({} if compiled is None else
                       {"torch.compile": lambda compiled=compiled: compiled(pixel_values=pixel_values)}),
                    **{label: lambda run=run, feed=feed: run(feed) for label, run in runners.items()},
                }, args.repeats)
        eager = statistics.median(results["torch eager"])
        print(f"{name} (1×3×1024×768, fp32 graph {size / 2**30:.2f} GiB)")
        for label, calls in results.items():
            seconds = statistics.median(calls)
            # The ratio of single calls timed side by side in each round: how far one call of each (as the backend
            # check times them) can be from the median ratio.
            ratios = [first / other for first, other in zip(results["torch eager"], calls)]
            print(f"  {label:18s} {seconds:7.2f} s/image  {1 / seconds:6.3f} images/s  {eager / seconds:5.2f}× eager"
                  f"  (one call each: {min(ratios):.2f}–{max(ratios):.2f}×; calls {', '.join(f'{c:.2f}' for c in calls)})")
        del model, compiled, runners


if __name__ == "__main__":
    main()
