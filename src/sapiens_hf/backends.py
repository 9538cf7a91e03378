"""Which runtime runs a task model: `torch` (the eager model), `onnxruntime` (its ONNX graph, exported once into the
cache and checked against the eager model) or `auto`, the faster of the two on this machine for this run:

    load_task_pipeline("pose", "facebook/sapiens-pose-0.3b", backend="auto", images=40)

`auto` keeps torch on a GPU (the export runs on the CPU) and for reduced precision (bfloat16 is torch's: onnxruntime
has no bfloat16 kernels for these operators on the CPU). On the CPU in float32 it uses onnxruntime when a checked
export of this model is cached and ran at least `MIN_SPEEDUP` (1.15×) faster than the eager model when it was checked here
(the eager model's first call against the graph's second: onnxruntime's first call warms it up); without one, it exports
only when the run has `MIN_IMAGES` images or more (or no known end: the demo, a streamed dataset), because the export
and its check cost about four eager images of the same model (docs/performance.md). A failed export or check falls
back to torch with a note. `dtype="int8"` runs the statically quantised graph (`export.quantize_int8`), onnxruntime
only.

The cache (`releases.conversion_cache()/exports/`) is keyed by the model's content (its config and every tensor's
bytes, so a Hub id, a local folder and a converted original are the same entry when they hold the same weights), the
input size, int8 and the versions of torch, onnx, onnxruntime and sapiens-hf. An entry is written into a temporary
folder renamed into place, with the sha256 of each file; an entry cut short or changed is named and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .releases import conversion_cache, file_sha256, write_cache_entry
from .runtime import read_manifest


BACKENDS = ("auto", "torch", "onnxruntime")
# The export and its check cost 3.6–4.7 eager `predict` images of the 0.3B models on the 2-core Intel VM; where
# onnxruntime was faster there (the segmentation and depth models alone: 1.38× and 1.74×) each image saves 0.28–0.43
# of an eager one, so a first run of 12 images about pays for it (docs/performance.md, Backends).
MIN_IMAGES = 12
# How much faster the graph must have been in the check (one timed call each) for auto to run it. On the quiet 2-core
# Intel VM one call's ratio strayed from the median of five by -10 % to +3 % (0.3B pose: 0.99-1.13x around 1.10x), so
# a graph no faster than eager is not taken (docs/performance.md, Backends).
MIN_SPEEDUP = 1.15
RECORD = "sapiens-cache.json"  # in each cache entry: its files' sha256 and the check's timings, written last
_EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class BackendError(RuntimeError):
    """The onnxruntime backend, asked for by name or by int8, cannot run this model; the message says why."""


@dataclass(frozen=True)
class Choice:
    """The runtime chosen for a model, the export folder it runs (onnxruntime) and why, in words."""

    backend: str
    reason: str
    folder: Path | None = None

    def __str__(self) -> str:
        return f"backend: {self.backend} ({self.reason})"


def runs_on_cpu(device) -> bool:
    """Whether the pipeline will run on the CPU: `device` "cpu", or None (the default) on a machine without an
    accelerator torch can use."""
    if device is not None:
        return torch.device(device).type == "cpu"
    return not (torch.cuda.is_available() or torch.backends.mps.is_available()
                or (hasattr(torch, "xpu") and torch.xpu.is_available()))


def missing_packages() -> str | None:
    """What the onnxruntime backend needs that is not installed, in words; None when nothing is missing."""
    missing = [name for name in _EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f'{", ".join(missing)}, which {"is" if len(missing) == 1 else "are"} not installed (pip install ' \
           '"sapiens-hf[export]")'


def choose(model, *, backend: str = "auto", device=None, dtype=None, images: int | None = None,
           input_size: tuple[int, int] | None = None, cache_dir=None) -> Choice:
    """The backend for `model` (a loaded Sapiens or Sapiens2 task model in float32) on `device` in `dtype` (a torch dtype, or
    "int8") for a run of `images` images (None: no known end). For onnxruntime the checked export is made (or found)
    in the cache at `input_size` (the processor's). `backend="onnxruntime"` raises what stops it; `auto` falls back to
    torch and says why."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    int8 = dtype == "int8"
    if backend == "torch":
        if int8:
            raise ValueError("int8 runs an onnxruntime graph: use backend='onnxruntime' or 'auto'")
        return Choice("torch", "asked for")
    on_cpu = runs_on_cpu(device)
    if dtype not in (None, torch.float32, "int8"):
        if backend == "onnxruntime":
            raise ValueError(f"onnxruntime runs float32 or int8 graphs here, not {dtype}: use backend='torch'")
        return Choice("torch", f"{str(dtype).removeprefix('torch.')} runs on torch")
    if not on_cpu:
        if backend == "onnxruntime" or int8:
            raise ValueError("the onnxruntime backend runs on the CPU: pass device='cpu' (--device cpu)")
        return Choice("torch", "an accelerator: the ONNX graph would run on the CPU")
    message = missing_packages()
    if message:
        if backend == "onnxruntime" or int8:
            raise BackendError(f"The onnxruntime backend needs {message}")
        return Choice("torch", f"onnxruntime would need {message}")
    key = cache_key(model, input_size, int8)
    entry = exports_cache(cache_dir) / key
    problem = damage(entry)
    cached = problem is None
    damaged = f" (the cached export was damaged: {problem})" if problem not in (None, "missing") else ""
    if not cached and backend == "auto" and not int8 and images is not None and images < MIN_IMAGES:
        return Choice("torch", f"{images} image(s): a first ONNX export costs about 4 eager images, worth it from "
                               f"{MIN_IMAGES} images or once cached{damaged}")
    try:
        folder = entry if cached else write_export(model, entry, input_size, int8)
    except Exception as error:  # noqa: BLE001  (any failure of the export or its check: auto runs torch)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if backend == "onnxruntime" or int8:
            raise BackendError(f"The ONNX export for the onnxruntime backend failed: {type(error).__name__}: {first} "
                               "(--backend torch runs the eager model)") from error
        return Choice("torch", f"the ONNX export failed, running the eager model: {type(error).__name__}: {first}")
    how = "cached export" if cached else "exported and checked against the eager model now" + damaged
    if int8:  # the fp32 graph is held to the eager model; the int8 graph's change is measured, in the task's terms
        change = {key: value for key, value in read_manifest(folder)["int8"].items() if key not in ("file", "size_ratio")}
        measured = ", ".join(f"{key} {value:.3g}" for key, value in change.items())
        return Choice("onnxruntime", f"int8 graph, {how}; against fp32 on the bundled photo: {measured}", folder)
    eager, graph = speeds(folder)
    timing = f"{graph:.3g} s vs {eager:.3g} s per image in the check"
    if backend == "onnxruntime":
        return Choice("onnxruntime", f"asked for; {how}; {timing}", folder)
    if graph * MIN_SPEEDUP <= eager:
        return Choice("onnxruntime", f"{how}: faster than torch here, {timing}", folder)
    return Choice("torch", f"{how}: onnxruntime was not {MIN_SPEEDUP:g}× faster here, {timing}")


def speeds(folder: Path) -> tuple[float, float]:
    """Seconds per image of the eager model and of the graph, as timed on this machine when the export was
    checked."""
    seconds = json.loads((folder / RECORD).read_text())["seconds_per_image"]
    return seconds["eager"], seconds["exported"]


def exports_cache(cache_dir=None) -> Path:
    return conversion_cache(cache_dir) / "exports"


def cache_key(model, input_size, int8: bool) -> str:
    """A sha256 of what the export depends on: the model's config and weights (bytes), the input size, int8 and the
    versions of the libraries that write and run the graph."""
    import onnx
    import onnxruntime

    digest = hashlib.sha256()
    config = model.config.to_dict()
    config.pop("_name_or_path", None)  # where it was loaded from is not what it computes
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "sapiens_hf": __version__}
    digest.update(json.dumps([type(model).__name__, config, input_size, int8, versions], sort_keys=True,
                             default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def damage(entry: Path) -> str | None:
    """What is wrong with a cache entry (missing, cut short, a file changed or removed), or None when it is whole."""
    if not (entry / RECORD).is_file():
        return "no record: not written, or cut short" if entry.exists() else "missing"
    try:
        record = json.loads((entry / RECORD).read_text())
        read_manifest(entry)
        for name, sha256 in record["sha256"].items():
            if not (entry / name).is_file():
                return f"{name} is missing"
            if file_sha256(entry / name) != sha256:
                return f"{name} changed since it was written"
        speeds(entry)
    except (OSError, ValueError, KeyError, TypeError) as error:
        # The runtime's reason, without the folder (named by the caller) and its advice (the cache rebuilds it).
        return str(error).replace(f"{entry}{os.sep}", "").removesuffix(": export the model again")
    return None


def write_export(model, entry: Path, input_size, int8: bool) -> Path:
    """Writes the cache entry `entry` (missing or damaged) with a checked export of `model` and its record
    (`releases.write_cache_entry`: a killed run never leaves an entry that a later run trusts)."""
    from .export import export

    def write(staging: Path) -> str:
        manifest = export(model, staging, input_size=input_size, quantize="int8" if int8 else None, overwrite=True)
        files = sorted(path.name for path in staging.iterdir() if path.is_file())
        record = {"sha256": {name: file_sha256(staging / name) for name in files},
                  "seconds_per_image": manifest["check_seconds"], "model": model.config.name_or_path}
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        return entry.name

    return write_cache_entry(entry.parent, write, damage, prefix=".exporting-")


__all__ = ["BACKENDS", "MIN_IMAGES", "MIN_SPEEDUP", "BackendError", "Choice", "choose", "runs_on_cpu"]
