"""Export for deployment: an ONNX graph (`torch.onnx.export(..., dynamo=True)`, run with onnxruntime) or a
`torch.export` program of the encoder or a task model — a Sapiens model or a Sapiens2 one (transformers' own classes) —
checked against the eager model when it is written.

    sapiens-hf export facebook/sapiens-pose-0.3b out/pose-onnx --format onnx --dynamic-batch --quantize int8

The output folder holds the graph (`model.onnx` / `model.pt2`, and `model.int8.onnx` with `--quantize int8`), the
image processor's `preprocessor_config.json` (the same pre- and post-processing apply), the model's `config.json`
(with which the `sapiens-*` pipelines take the folder as their model) and `sapiens-export.json`: the
task, the model's generation (`family`), input and output names and sizes, labels (keypoint names and flip pairs for pose), dtype, opset, versions, and
the measured differences to the eager model (and, for int8, the accuracy change in the task's own terms).
"""

import ast
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .families import SAPIENS2, check_config_overrides, family_of
from .runtime import DTYPES, FORMATS, MANIFEST, load_graph
from .tasks import task_of_class


# Largest difference to the eager float32 model on the check input that the export accepts, per dtype, relative to
# the output's scale (its largest magnitude, at least 1), as the reference tests compare.
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 2e-1}
# The files an export writes (besides external weight data, `model.onnx.data`), checked before anything is written.
WRITTEN = {"model.onnx", "model.pt2", "model.int8.onnx", "config.json", "preprocessor_config.json", MANIFEST}


class ExportError(ValueError):
    """An export that cannot work as asked; the message says what to do instead."""


class ExportCheckError(RuntimeError):
    """An exported graph that does not compute what the eager model computes; the export's files are removed."""


def _ours(output_dir: Path, since_ns: int) -> list[Path]:
    """The files of an export in `output_dir` written since `since_ns` (what a failed export removes)."""
    return [path for path in output_dir.glob("*") if path.is_file() and path.stat().st_mtime_ns >= since_ns
            and (path.name in WRITTEN or path.name.startswith(("model.onnx", "model.int8.onnx")))]


class _Graph(nn.Module):
    """The model as a function of `pixel_values` alone, returning the outputs its task's post-processing reads
    (`Task.outputs`: the main one, then a pointmap's scales or a matte's foregrounds), as a tuple."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(pixel_values=pixel_values)
        values = [getattr(result, name) for name in self.outputs]
        return tuple(value[-1] if isinstance(value, tuple) else value for value in values)  # a backbone: its last map


class _SubPixelConvTranspose(nn.Module):
    """`ConvTranspose2d(kernel_size=4, stride=2, padding=1)` of the task heads as one 2×2 convolution that computes
    the four output phases (even/odd rows × columns) side by side, interleaved by a pixel shuffle: the same products
    and sums, which onnxruntime's CPU convolution runs faster than its transposed convolution
    (benchmarks/export_speed.py). Output phase `a` of a row takes input rows `m - 1 + a` and `m + a` with kernel rows
    `3 - a` and `1 - a`; likewise for columns."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        kernel = deconv.weight.detach()  # (in, out, 4, 4)
        phases = [kernel[:, :, [3 - a, 1 - a]][:, :, :, [3 - b, 1 - b]] for a in (0, 1) for b in (0, 1)]
        self.register_buffer("weight", torch.cat(phases, dim=1).transpose(0, 1).contiguous())  # (4·out, in, 2, 2)
        self.out_channels = deconv.out_channels

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        height, width = hidden.shape[-2:]
        phases = nn.functional.conv2d(hidden, self.weight, padding=1).unflatten(1, (4, self.out_channels))
        # Phase (a, b) is the window of the padded output that starts at (a, b).
        windows = [phases[:, 2 * a + b, :, a : a + height, b : b + width] for a in (0, 1) for b in (0, 1)]
        return nn.functional.pixel_shuffle(torch.stack(windows, dim=2).flatten(1, 2), 2)


@contextlib.contextmanager
def _transposed_convolutions_as_convolutions(model: nn.Module):
    """Swaps the heads' transposed convolutions for `_SubPixelConvTranspose` while the ONNX graph is traced."""
    swapped = []
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ConvTranspose2d) and child.bias is None and (
                child.kernel_size, child.stride, child.padding, child.output_padding, child.dilation, child.groups
            ) == ((4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1):
                setattr(module, name, _SubPixelConvTranspose(child))
                swapped.append((module, name, child))
    try:
        yield
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)


def _load(model, config_overrides: dict):
    """A Sapiens or Sapiens2 model: an instance, or anything `from_pretrained` takes, loaded through the class it was
    saved as (in its generation: this package's classes, or transformers' Sapiens2 ones)."""
    if isinstance(model, nn.Module):
        return model
    import transformers
    from transformers import AutoConfig

    from . import modeling_sapiens

    config = AutoConfig.from_pretrained(model, **config_overrides)
    check_config_overrides(config_overrides, family_of(config))  # a Sapiens field on a Sapiens2 model, or the reverse
    architecture = (config.architectures or ["SapiensModel"])[0]
    module = transformers if family_of(config) is SAPIENS2 else modeling_sapiens
    if task_of_class(architecture) is None or not hasattr(module, architecture):
        raise ExportError(f"{model} holds a {architecture}, which is not a Sapiens or Sapiens2 model of a task")
    return getattr(module, architecture).from_pretrained(model, config=config)


def _check_dynamic_size(task, dynamic_size: bool) -> None:
    if dynamic_size and task.fixed_input_size:
        raise ExportError("A pointmap model's scale head is a linear layer over the feature map of its input size: "
                          "export one graph per input size (--input-size HxW) without --dynamic-size")


def _check_request(model, task, format: str, dtype: str, quantize: str | None) -> None:
    if format not in FORMATS:
        raise ExportError(f"Unknown format {format!r}; choose one of {FORMATS}")
    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if task is None:
        raise ExportError(f"A {type(model).__name__} is not exported: export a Sapiens or Sapiens2 task model, or the "
                          "Sapiens encoder")
    if task.decoder:
        raise ExportError("MAE pretraining masks patches at random; export its encoder instead (load the checkpoint "
                          "as SapiensModel) or a task model")
    if format == "onnx" and dtype == "bf16":
        raise ExportError("onnxruntime has no bfloat16 kernels for these operators on the CPU: export fp32 (or fp16 "
                          "for a GPU runtime) ONNX, or use --format exported-program for bf16")
    if quantize not in (None, "int8"):
        raise ExportError(f"Unknown quantization {quantize!r}; the option is int8")
    if quantize and (format != "onnx" or dtype != "fp32"):
        raise ExportError("--quantize int8 quantises an fp32 ONNX graph: use --format onnx --dtype fp32")


def export(model, output_dir, *, format: str = "onnx", dtype: str = "fp32", dynamic_batch: bool = False,
           dynamic_size: bool = False, input_size: tuple[int, int] | None = None, quantize: str | None = None,
           opset: int = 23, config_overrides: dict | None = None, overwrite: bool = False) -> dict:
    """Exports `model` (a Sapiens model or anything `from_pretrained` takes) into `output_dir` and returns the
    manifest. The graph takes `pixel_values` `(batch, 3, height, width)` in `dtype` — batch 1, or any batch with
    `dynamic_batch` — at the processor's input size (or `input_size` `(height, width)`), and returns the model's
    main output. Files of an earlier export in `output_dir` are replaced only with `overwrite`, nothing else there is
    touched. A model instance is cast to `dtype` in place. Every export is run against the eager model once;
    `ExportError` when it cannot work as asked, `ExportCheckError` when the graph does not compute what the model
    does (beyond `TOLERANCE`); either way, no file of a failed export is left."""
    existing = [path.name for path in Path(output_dir).glob("*") if path.name in WRITTEN or
                path.name.startswith(("model.onnx", "model.int8.onnx"))] if Path(output_dir).is_dir() else []
    if existing and not overwrite:
        raise ExportError(f"{output_dir} already holds {sorted(existing)}: pass overwrite=True (--overwrite) to "
                          "replace them, or choose another folder")
    if config_overrides:  # a misspelled key is an error, as in predict and convert (the model's own generation below)
        check_config_overrides(config_overrides)
    model = _load(model, config_overrides or {}).eval()
    task = task_of_class(type(model).__name__)
    _check_request(model, task, format, dtype, quantize)
    _check_dynamic_size(task, dynamic_size)
    processor_class = family_of(model.config).image_processor_class()
    try:  # this package's torch-free processor of the model's generation, which the pipelines run
        processor = processor_class.from_pretrained(model.name_or_path)
    except (OSError, ValueError):  # an in-memory model or a folder without a processor: the released settings
        processor = processor_class()
    height, width = input_size or (processor.size["height"], processor.size["width"])
    patch = _patch_size(model.config)
    if height % patch or width % patch:
        raise ExportError(f"The input size {height}×{width} is not a multiple of the patch size {patch}")
    processor.size = {"height": height, "width": width}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time_ns() - 10**9  # file systems keep mtimes coarser than the clock
    try:
        return _export(model, task, processor, output_dir, format, dtype, dynamic_batch, dynamic_size, quantize, opset)
    except BaseException:
        for path in _ours(output_dir, started):  # no half export blocks the next run
            path.unlink()
        raise


def _patch_size(config) -> int:
    """The square patch size (Sapiens2 configs may hold it as `[height, width]`)."""
    patch = config.patch_size
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise ExportError(f"Patches of {patch[0]}×{patch[1]} pixels are not exported: the graph's input sizes are "
                              "multiples of a square patch")
        patch = patch[0]
    return int(patch)


def _export(model, task, processor, output_dir: Path, format, dtype, dynamic_batch, dynamic_size, quantize, opset):
    height, width, patch = processor.size["height"], processor.size["width"], _patch_size(model.config)

    torch_dtype = getattr(torch, DTYPES[dtype])
    graph = _Graph(model.to(torch_dtype), task.outputs).eval()
    example = torch.randn(2 if dynamic_batch else 1, 3, height, width, generator=torch.Generator().manual_seed(0))
    shapes = {}
    if dynamic_batch:
        shapes[0] = torch.export.Dim("batch", min=1, max=1024)
    if dynamic_size:
        shapes[2] = torch.export.Dim("height_patches", min=1, max=256) * patch
        shapes[3] = torch.export.Dim("width_patches", min=1, max=256) * patch
    dynamic_shapes = {"pixel_values": shapes} if shapes else None
    example = example.to(torch_dtype)
    if format == "onnx":
        with _transposed_convolutions_as_convolutions(model):
            program = torch.onnx.export(graph, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, input_names=["pixel_values"],
                                        output_names=list(task.outputs), verbose=False)
        file = output_dir / "model.onnx"
        program.save(str(file), external_data=_size_bytes(model) > 1.5 * 2**30)  # protobuf's 2 GB limit
    else:
        program = torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes)
        file = output_dir / "model.pt2"
        torch.export.save(program, file)
    run = load_graph(file, dtype, outputs=task.outputs)  # the program was just written here: trusted
    processor.save_pretrained(output_dir)
    model.config.save_pretrained(output_dir)  # labels and sizes for `SapiensExportedModel` (the pipelines)

    sizes = [(height, width)] + ([(height + 2 * patch, width + patch)] if dynamic_size else [])
    batches = [1, 3] if dynamic_batch else [1]
    differences, scales, seconds = {}, {}, {}
    for size in sizes:
        for batch in batches:
            pixel_values = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(torch_dtype)
            started = time.perf_counter()
            with torch.no_grad():
                expected = [value.float().numpy() for value in graph(pixel_values)]
            middle = time.perf_counter()
            try:
                actual = run(pixel_values.float().numpy())  # the values in `dtype`, exactly
            except Exception as error:
                if size != sizes[0]:
                    raise ExportError(
                        f"The exported graph does not follow another input size ({size[0]}×{size[1]}): the "
                        "position-embedding resize is fixed when the graph is traced. Export one graph per input "
                        "size instead (--input-size HxW), without --dynamic-size."
                    ) from error
                raise
            if not seconds:  # the first check, at the export's own size: each path's time on this machine
                seconds = {"eager": (middle - started) / batch, "exported": timed(run, pixel_values) / batch}
            for name, got, wanted in zip(task.outputs, actual, expected):  # each output against its own scale
                key = f"{batch}x{size[0]}x{size[1]}" + ("" if name == task.output else f" {name}")
                differences[key] = float(np.abs(got - wanted).max())
                scales[name] = max(scales.get(name, 1.0), float(np.abs(wanted).max()))
    for name in task.outputs:
        worst = max(value for key, value in differences.items() if (key.partition(" ")[2] or task.output) == name)
        if not worst <= TOLERANCE[dtype] * scales[name]:
            raise ExportCheckError(f"The exported graph's {name} differs from the eager model by {worst:.3g}, more than "
                                   f"{TOLERANCE[dtype]:g} × the output's scale {scales[name]:.3g} for {dtype}: nothing "
                                   "was kept; please report it with the model and the command")
    scale = scales[task.output]

    manifest = _manifest(model, task, format, file.name, dtype, opset, (height, width), dynamic_batch, dynamic_size)
    manifest["max_abs_difference_to_eager"] = differences
    manifest["output_scale"] = scale
    if len(task.outputs) > 1:
        manifest["output_scales"] = scales
    manifest["check_seconds"] = seconds  # seconds per image: the eager model's first call, the graph's second
    if quantize:
        manifest["int8"] = quantize_int8(graph, file, output_dir / "model.int8.onnx", task, processor)
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def timed(run, pixel_values: torch.Tensor) -> float:
    """Seconds of a second call of the graph `run`, whose first call warms onnxruntime up (its allocations and packed
    weights: the 0.3B segmentation graph's first call took 28.4 s, its next ones 19.1–19.6 s, on a shared machine).
    The eager model's first call is its speed in a `predict` run (0.3B depth: 29.5 s in the check, 25.5–25.9 s per
    image end to end), so the check's one eager call is its time."""
    started = time.perf_counter()
    run(pixel_values.float().numpy())
    return time.perf_counter() - started


def _size_bytes(model: nn.Module) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def _manifest(model, task, format, file, dtype, opset, input_size, dynamic_batch, dynamic_size) -> dict:
    config = model.config
    manifest = {
        "task": task.name, "family": family_of(config).name, "format": format, "file": file, "dtype": dtype,
        "input": "pixel_values", "output": task.output, "outputs": list(task.outputs), "input_size": list(input_size), "dynamic_batch": dynamic_batch,
        "dynamic_size": dynamic_size, "opset": opset if format == "onnx" else None,
        "model": {"class": type(model).__name__, "name_or_path": config.name_or_path},
        "versions": {"sapiens_hf": __version__, "torch": torch.__version__},
    }
    manifest.update(task.export_labels(config))
    if format == "onnx":
        import onnxruntime

        manifest["versions"]["onnxruntime"] = onnxruntime.__version__
    return manifest


PHOTO = Path(__file__).parent / "data" / "astronaut.jpg"  # the photo shipped with the package


def calibration_inputs(task, processor) -> list[np.ndarray]:
    """The model inputs that int8 calibration runs: the bundled photo whole, mirrored, and its upper 60 % (another
    scale and framing), each pre-processed as the pipelines do (a pose crop of the whole picture)."""
    from .image_io import read_image

    image = read_image(PHOTO)
    inputs = []
    for picture in (image, np.ascontiguousarray(image[:, ::-1]), image[: int(0.6 * image.shape[0])]):
        boxes = {"boxes": [[[0, 0, picture.shape[1], picture.shape[0]]]]} if task.top_down else {}
        inputs.append(processor(picture, return_tensors="pt", **boxes)["pixel_values"].numpy())
    return inputs


def linear_ranges(graph: nn.Module, onnx_file: Path, inputs: list[np.ndarray]) -> tuple[dict, list[str]]:
    """The calibration of `quantize_int8`, measured on the eager model: the min/max over `inputs` of the input and the
    output of every MatMul / Gemm of the ONNX graph traced from `graph` whose weight is an `nn.Linear`'s (the
    exporter records the module each node came from, `pkg.torch.onnx.name_scopes`), by forward hooks on those layers
    — one eager forward's memory, where onnxruntime's calibration session of the 0.3B depth model outgrew 24 GB. A
    MatMul's output is the layer's output without its bias (the graph adds it after). Returns the ranges by tensor
    name, and the MatMul / Gemm nodes that come from no linear layer (products of two activations), left in float."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)  # the nodes only: the weights stay on disk
    weights = {initializer.name for initializer in model.graph.initializer}
    modules = dict(graph.named_modules())
    tensors_of_layer, unmatched = {}, []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        scopes = next((ast.literal_eval(entry.value) for entry in node.metadata_props
                       if entry.key == "pkg.torch.onnx.name_scopes"), [])
        layer = modules.get(scopes[-2]) if len(scopes) >= 2 else None
        if isinstance(layer, nn.Linear) and node.input[1] in weights:
            tensors_of_layer.setdefault(layer, []).append((node.input[0], node.output[0], node.op_type == "MatMul"))
        else:
            unmatched.append(node.name)
    if not tensors_of_layer:  # an exporter that no longer records the modules: nothing would be quantised
        raise ExportError(f"--quantize int8: no MatMul/Gemm of {onnx_file.name} names the linear layer it was traced "
                          "from (pkg.torch.onnx.name_scopes), so there is nothing to calibrate; please report it with "
                          "the versions of torch and onnx")
    ranges = {}

    def widen(name: str, values: torch.Tensor):
        low, high = (float(value) for value in torch.aminmax(values))
        old = ranges.get(name, (low, high))
        ranges[name] = (min(old[0], low), max(old[1], high))

    def record(layer, args, output):
        for input_name, output_name, without_bias in tensors_of_layer[layer]:
            widen(input_name, args[0])
            widen(output_name, output - layer.bias if without_bias and layer.bias is not None else output)

    handles = [layer.register_forward_hook(record) for layer in tensors_of_layer]
    try:
        with torch.no_grad():
            for pixel_values in inputs:
                graph(torch.from_numpy(pixel_values))
    finally:
        for handle in handles:
            handle.remove()
    return ranges, unmatched


def quantize_int8(graph: nn.Module, source: Path, target: Path, task, processor) -> dict:
    """Static int8 quantisation of the fp32 ONNX graph `source` traced from `graph`: int8 weights (per channel) and
    activations of the linear layers whose ranges were calibrated on `calibration_inputs` (min/max, measured on the
    eager model by `linear_ranges`; onnxruntime's `quantize_static`, QDQ format), so that nothing is measured at run
    time; with the change against fp32 on the bundled photo in the task's terms (`Task.int8_change`): keypoint error
    (px), segmentation pixel agreement, depth relative error, normal angular error (degrees), or the output's relative
    error for an encoder."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    inputs = calibration_inputs(task, processor)
    ranges, unmatched = linear_ranges(graph, source, inputs)
    with tempfile.TemporaryDirectory() as folder:
        calibration = Path(folder) / "calibration.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, {
            name: (np.array(low, np.float32), np.array(high, np.float32)) for name, (low, high) in ranges.items()
        }), calibration)
        # The linear layers; onnxruntime's int8 attention (QAttention) does not take opset 23's Attention.
        quantize_static(str(source), str(target), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=unmatched,
                        calibration_cache_path=calibration)
    pixel_values = inputs[0]  # the whole photo
    fp32, int8 = load_graph(source, "fp32")(pixel_values)[0], load_graph(target, "fp32")(pixel_values)[0]
    change = task.int8_change(fp32, int8, (processor.size["width"], processor.size["height"]))
    change["file"] = target.name
    change["size_ratio"] = round(target.stat().st_size / math.fsum(
        path.stat().st_size for path in source.parent.glob(f"{source.name}*")), 3)
    return change
