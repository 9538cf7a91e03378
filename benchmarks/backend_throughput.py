"""End-to-end `sapiens-hf predict` throughput on a folder of images for each backend, in one interleaved run: torch
eager (fp32), `--backend auto`, onnxruntime fp32, and the opt-in reduced precisions, torch bfloat16 (`--dtype
bfloat16 --backend torch`) and onnxruntime static int8 (`--dtype int8`); with each one's difference to eager fp32.

    python benchmarks/backend_throughput.py --images 3 --repeats 1            # ~15 min for the 0.3B pose model
    python benchmarks/backend_throughput.py --task depth --images 8 --repeats 3

The model has random weights in the released configuration (`SapiensConfig.from_preset(--size, --task)`, 308
keypoints for pose; no download); the images are the bundled photo and the reference inputs of tests/fixtures/images,
cycled to `--images`. The fp32 and int8 exports are made first into a fresh cache (their one-time cost is reported:
what `auto` weighs against the run's length), so that every timed run is the steady state of a cached export. Each
round runs every backend's whole `predict` command once in turn (loading, reading, pre- and post-processing, writing
the results), so a shared machine whose speed drifts slows all alike; the median per backend, images/s and the ratio
to eager are printed and written with the machine, the thread counts and the load average to
benchmarks/results/<date>-predict-backends-<task>-<size>.json. The differences to eager fp32 are those of the result
files: keypoints (pixels), segmentation labels (agreement), depth and normals (mean absolute / angle). With random
weights the heatmaps are nearly flat, so reduced precision moves their argmax far: the keypoint figures bound the
numeric change, not the accuracy of released weights.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {  # name: predict's arguments
    "torch": ["--backend", "torch"],
    "auto": ["--backend", "auto"],
    "onnxruntime": ["--backend", "onnxruntime"],
    "torch-bf16": ["--backend", "torch", "--dtype", "bfloat16"],
    "onnxruntime-int8": ["--backend", "onnxruntime", "--dtype", "int8"],
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_inputs(folder: Path, count: int) -> None:
    sources = [ROOT / "src" / "sapiens_hf" / "data" / "astronaut.jpg",
               *sorted((ROOT / "tests" / "fixtures" / "images").glob("*.png"))]
    folder.mkdir(parents=True)
    for index in range(count):
        source = sources[index % len(sources)]
        shutil.copy(source, folder / f"{index:03d}_{source.name}")


def make_model(folder: Path, task: str, size: str, overrides: dict) -> None:
    import sapiens_hf.modeling_sapiens as modeling
    from sapiens_hf import SapiensConfig, SapiensImageProcessorPil
    from sapiens_hf.tasks import TASKS, get_task

    task = get_task(task)
    config = SapiensConfig.from_preset(size, task.name, **({"num_labels": 308} if task.top_down else {}), **overrides)
    torch.manual_seed(0)
    getattr(modeling, TASKS[task.name].model_class)(config).save_pretrained(folder)
    SapiensImageProcessorPil().save_pretrained(folder)


def predict(model: Path, inputs: Path, output: Path, task: str, arguments: list[str]) -> float:
    from sapiens_hf.cli import main

    # The model alone on each whole image: no person detector (pose) or person mask (depth, normals), whose own
    # costs are measured apart (docs/performance.md) and would be the same for every backend.
    whole = {"pose": ["--detector", "none"], "depth": ["--no-mask"], "normal": ["--no-mask"]}.get(task, [])
    started = time.perf_counter()
    code = main(["predict", "--task", task, "--model", str(model), str(inputs), "--output", str(output), "--quiet",
                 "--overwrite", *whole, *arguments])
    if code:
        raise SystemExit(f"predict {' '.join(arguments)} failed with exit code {code}")
    return time.perf_counter() - started


def differences(task: str, reference: Path, other: Path) -> dict:
    """The results in `other` against those in `reference` (eager fp32), in the task's terms."""
    if task == "pose":
        def points(folder):
            document = json.loads((folder / "keypoints.json").read_text())
            return np.array([annotation["keypoints"] for annotation in document["annotations"]]).reshape(-1, 3)[:, :2]

        moved = np.linalg.norm(points(reference) - points(other), axis=-1)
        return {"keypoint_px_mean": float(moved.mean()), "keypoint_px_max": float(moved.max())}
    if task == "segmentation":
        from PIL import Image

        pairs = [(np.asarray(Image.open(path)), np.asarray(Image.open(other / path.name)))
                 for path in sorted(reference.glob("*_seg.png"))]
        return {"label_agreement": float(np.mean([np.mean(a == b) for a, b in pairs]))}
    pairs = [(np.load(path), np.load(other / path.name)) for path in sorted(reference.glob("*.npy"))]
    if task == "depth":
        return {"depth_abs_mean": float(np.mean([np.abs(a - b).mean() for a, b in pairs])),
                "depth_abs_mean_relative": float(np.mean([np.abs(a - b).mean() / np.abs(a).mean() for a, b in pairs]))}
    angles = [np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1))).mean() for a, b in pairs]
    return {"normal_angle_deg_mean": float(np.mean(angles))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="pose", choices=("pose", "segmentation", "depth", "normal"))
    parser.add_argument("--size", default="0.3b")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, of " + ", ".join(BACKENDS))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override (VALUE read as JSON), e.g. num_hidden_layers=2 for a quick try")
    args = parser.parse_args()
    backends = args.backends.split(",")
    import onnxruntime

    from sapiens_hf.backends import choose
    from sapiens_hf.pipelines import load_task_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["SAPIENS_HF_CACHE"] = str(scratch / "cache")  # a fresh export cache, the exports timed below
        overrides = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.config)}
        make_model(scratch / "model", args.task, args.size, overrides)
        make_inputs(scratch / "images", args.images)
        report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}",
                  "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
                  "torch_threads": torch.get_num_threads(), "task": args.task, "size": args.size,
                  "images": args.images, "repeats": args.repeats, "config": args.config,
                  "load_average_before": os.getloadavg()}
        print(report)
        exports = {}
        for dtype in [None, "int8"] if "onnxruntime-int8" in backends else [None]:
            pipe = load_task_pipeline(args.task, scratch / "model", device="cpu", backend="torch")
            started = time.perf_counter()
            choice = choose(pipe.model, backend="onnxruntime", device="cpu", dtype=dtype,
                            input_size=(pipe.image_processor.size["height"], pipe.image_processor.size["width"]))
            exports[dtype or "fp32"] = {"seconds": time.perf_counter() - started, "reason": choice.reason}
            del pipe
        report["exports"] = exports
        print("exports:", exports)
        seconds = {name: [] for name in backends}
        for _ in range(args.repeats):
            for name in backends:
                seconds[name].append(predict(scratch / "model", scratch / "images", scratch / name, args.task,
                                             BACKENDS[name]))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
        eager = statistics.median(seconds["torch"]) if "torch" in seconds else None
        report["results"] = {
            name: {"seconds": statistics.median(values), "all_seconds": values,
                   "images_per_second": args.images / statistics.median(values),
                   "speedup_vs_eager": eager / statistics.median(values) if eager else None,
                   "difference_to_eager": differences(args.task, scratch / "torch", scratch / name)
                   if eager and name != "torch" else None}
            for name, values in seconds.items()}
        report["load_average_after"] = os.getloadavg()
    for name, result in report["results"].items():
        print(f"{name:18s} {result['seconds']:8.1f} s  {result['images_per_second']:.3f} images/s  "
              f"{result['speedup_vs_eager'] or 0:.2f}×  {result['difference_to_eager'] or ''}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{time.strftime('%Y-%m-%d')}-predict-backends-{args.task}-{args.size}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
