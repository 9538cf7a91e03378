"""The one runner of export folders (`sapiens-hf export`): `ExportedModel` reads the manifest, makes the checks and
runs the graph — onnxruntime for ONNX; torch, imported only then, for a `torch.export` program — with the original's
pre- and post-processing in NumPy/OpenCV (`geometry`): the results of the `sapiens-*` pipelines, without torch or
transformers for an ONNX graph. The pipelines take an export folder through `exported_model.SapiensExportedModel`, a
layer over this class; `export` writes the folders with this module's manifest name and dtype names.

    from sapiens_hf.runtime import ExportedModel

    pose = ExportedModel("out/pose-onnx")            # model.onnx (int8=True: model.int8.onnx)
    people = pose("photo.jpg", boxes=[[x, y, w, h]])  # [{"keypoints": (K, 2), "scores": (K,), "bbox_xywh": (4,)}]
    depth = ExportedModel("out/depth-onnx")("photo.jpg")["predicted_depth"]  # (H, W) float32

Images are read as the pipelines read them (`image_io.read_image`: paths, URLs, bytes, PIL images, arrays; EXIF
orientation, 16-bit and grey images handled alike). Pose takes `boxes` (COCO x, y, width, height; none: the whole image). Dense outputs are
resized to the image with OpenCV's bilinear resize, which the pipelines do with torch's (the same sampling, float
rounding aside: tests/test_export.py compares them).

The processing here is Sapiens' (uint8 UDP warps, two bilinear resizes). A Sapiens2 export (manifest `family`
"Sapiens2") runs through the pipelines (`SapiensExportedModel`, with the Sapiens2 processor); here its `run` gives the
raw graph outputs, and calling it on an image is refused rather than processed the Sapiens way.
"""

import json
from pathlib import Path

import cv2
import numpy as np

from .geometry import check_boxes, decode_udp_heatmaps, get_box_center_scale, get_udp_warp_matrix, warp_affine_bilinear
from .image_io import DEFAULT_MAX_IMAGE_PIXELS, read_image
from .tasks import TASKS


MANIFEST = "sapiens-export.json"
# The dtypes an export is written in, by their manifest names: the names of the torch (and NumPy) dtypes.
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
FORMATS = ("onnx", "exported-program")
FAMILIES = ("Sapiens", "Sapiens2")  # the generations an export can hold (`families.Family.name`)


def is_export_folder(path) -> bool:
    return isinstance(path, (str, Path)) and (Path(path) / MANIFEST).is_file()


def pipeline_export_problem(path) -> str | None:
    """Why the pipelines cannot take the export folder `path`, in one line; None for any other path and for an export
    they take. An export written before exports carried the model's `config.json`, which the pipelines (and
    transformers' loaders) read the labels and sizes from, is named as such; this runner needs only the manifest."""
    if is_export_folder(path) and not (Path(path) / "config.json").is_file():
        return f"{path} is an export written by an older sapiens-hf without config.json: export the model again"
    return None


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an export folder, checked: a known task, format and dtype, and graph files that are plain
    names inside the folder. OSError for any other folder, ValueError for a damaged or edited manifest."""
    if not is_export_folder(folder):
        raise OSError(f"{folder} is not a folder written by sapiens-hf export (no {MANIFEST})")
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = [manifest["file"]] + ([manifest["int8"]["file"]] if "int8" in manifest else [])
        problem = next((f"unknown {key} {manifest[key]!r}" for key, known in
                        (("task", TASKS), ("format", FORMATS), ("dtype", DTYPES)) if manifest[key] not in known), None)
        problem = problem or next((f"the graph file {file!r} is not a file name in the folder" for file in files
                                   if not isinstance(file, str) or Path(file).name != file or file in ("", ".", "..")),
                                  None)
        task = TASKS[manifest["task"]] if problem is None else None
        if problem is None and manifest["output"] != task.output:
            problem = f"a {task.name} model's output is {task.output}, not {manifest['output']}"
        if problem is None and tuple(manifest.get("outputs", [task.output])) not in ((task.output,), task.outputs):
            problem = f"a {task.name} model's outputs are {list(task.outputs)}, not {manifest['outputs']}"
        if problem is None and manifest.get("family", FAMILIES[0]) not in FAMILIES:
            problem = f"unknown family {manifest['family']!r}"
    except (ValueError, KeyError, TypeError) as error:
        problem = f"{type(error).__name__}: {error}"
    if problem:
        raise ValueError(f"{path} is damaged or was edited ({problem}): export the model again")
    return manifest


def load_graph(path: Path, dtype: str, providers: list[str] | None = None, outputs: tuple[str, ...] | None = None,
               threads: int | None = None):
    """The graph in `path` as a function from float32 pixel values to the tuple of its outputs in float32 (NumPy
    arrays), the input cast to the graph's `dtype` (a manifest name): onnxruntime for `.onnx` (with `providers`,
    default the CPU; its outputs must be named `outputs` when given: another task's graph is refused; `threads`: its
    intra-op threads, default onnxruntime's, one per physical core), torch for a `torch.export` program, whose
    loading can run code from the file: load only files you trust."""
    if not path.is_file():
        raise ValueError(f"{path} is missing: the export folder is incomplete; export the model again")
    if path.suffix == ".onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        name, input_dtype = session.get_inputs()[0].name, np.dtype(DTYPES[dtype])
        names = tuple(output.name for output in session.get_outputs())
        if outputs is not None and names != tuple(outputs):
            raise ValueError(f"{path} computes {list(names)}, not {list(outputs)}: it is another task's graph; export "
                             "the model again")

        def run(pixel_values: np.ndarray) -> tuple[np.ndarray, ...]:
            values = session.run(None, {name: pixel_values.astype(input_dtype, copy=False)})
            return tuple(value.astype(np.float32, copy=False) for value in values)

        return run
    import torch

    module, input_dtype = torch.export.load(path).module(), getattr(torch, DTYPES[dtype])

    def run(pixel_values: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            values = module(torch.from_numpy(pixel_values).to(input_dtype))
        return tuple(value.float().numpy() for value in (values if isinstance(values, tuple) else (values,)))

    return run


class ExportedModel:
    """The graph of an export folder with the pipelines' pre- and post-processing (see the module docstring).

    `int8` runs the int8 graph of `--quantize int8`; `providers` are onnxruntime's, `threads` its intra-op threads.
    A `torch.export` program can hold pickled objects, which run code when loaded, so it is loaded (with torch) only
    with `trust_remote_code=True`; ONNX graphs carry no code."""

    def __init__(self, folder: str | Path, int8: bool = False, providers: list[str] | None = None,
                 trust_remote_code: bool = False, threads: int | None = None):
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.task = TASKS[self.manifest["task"]]
        file = self.manifest["file"]
        if self.manifest["format"] != "onnx":
            if not trust_remote_code:
                raise ValueError(f"{folder} holds a torch.export program, whose loading can run code from the file "
                                 "(pickled objects): from Python, pass trust_remote_code=True if you trust it; or "
                                 "export ONNX, which predict, annotate and the demo take")
            if int8:
                raise ValueError(f"{folder} holds a torch.export program; int8 graphs are ONNX (--quantize int8)")
        elif int8:
            if "int8" not in self.manifest:
                raise ValueError(f"{folder} has no int8 graph: export the model with --quantize int8")
            file = self.manifest["int8"]["file"]
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        self.size = (processor["size"]["width"], processor["size"]["height"])
        self.mean = np.asarray(processor["image_mean"], np.float32)
        self.std = np.asarray(processor["image_std"], np.float32)
        self.box_padding = processor.get("box_padding", 1.25)
        self.outputs = tuple(self.manifest.get("outputs", [self.task.output]))
        self._graph = load_graph(folder / file, self.manifest["dtype"], providers, self.outputs, threads)

    def __call__(self, image, boxes=None, kernel_size: int = 11):
        family = self.manifest.get("family", FAMILIES[0])
        if family != FAMILIES[0]:  # before the image is read: Sapiens' processing would give wrong results silently
            raise ValueError(f"This is a {family} export, whose pre- and post-processing the torch-free runtime does "
                             f"not have: run it with the sapiens-{self.task.name} pipeline or sapiens-hf predict")
        image = _rgb(image)
        if self.task.top_down:
            return self._top_down(image, boxes, kernel_size)
        if boxes is not None:
            raise ValueError(f"boxes apply to pose; this is a {self.task.name} model")
        resized = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        output = self.run(self._normalize([resized]))[0]
        if self.task.has_head:
            output = _resize_twice(output if output.ndim == 3 else output[None], self.size[::-1], image.shape[:2])
        return self.task.decode(output)

    def _top_down(self, image: np.ndarray, boxes, kernel_size: int) -> list[dict]:
        boxes = check_boxes(boxes, *image.shape[:2])
        center, scale = get_box_center_scale(boxes, self.size, self.box_padding)
        crops = [warp_affine_bilinear(image, get_udp_warp_matrix(c, s, self.size), self.size)
                 for c, s in zip(center, scale)]
        heatmaps = self.run(self._normalize(crops))
        keypoints, scores = decode_udp_heatmaps(heatmaps, self.size, kernel_size)
        center, scale = center.astype(np.float64), scale.astype(np.float64)
        keypoints = keypoints / np.asarray(self.size) * scale[:, None] + center[:, None] - 0.5 * scale[:, None]
        return [{"keypoints": keypoints[i].astype(np.float32), "scores": scores[i], "bbox_xywh": boxes[i]}
                for i in range(len(boxes))]

    def _normalize(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 HWC → float32 NCHW, `(x − mean) / std` in float32, as the image processor."""
        pixels = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray((pixels - self.mean[:, None, None]) / self.std[:, None, None])

    def run(self, pixel_values: np.ndarray) -> np.ndarray:
        """The graph's main output (float32) for normalised float32 `pixel_values` `(batch, 3, height, width)`."""
        return self.run_outputs(pixel_values)[self.task.output]

    def run_outputs(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph (the main one, a pointmap's scales, a matte's foregrounds) by name; a graph
        exported without `--dynamic-batch` runs one image at a time."""
        if self.manifest["dynamic_batch"]:
            return dict(zip(self.outputs, self._graph(pixel_values)))
        runs = [self._graph(batch) for batch in np.split(pixel_values, len(pixel_values))]
        return {name: np.concatenate([values[index] for values in runs]) for index, name in enumerate(self.outputs)}


def _rgb(image) -> np.ndarray:
    return read_image(image, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)


def _resize_twice(maps: np.ndarray, input_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """`(C, h, w)` maps resized bilinearly to the model input, then to the image, as the image processor does."""
    def resize(array, size):  # OpenCV resizes (H, W, C) with up to 512 channels
        resized = cv2.resize(np.ascontiguousarray(array.transpose(1, 2, 0)), (size[1], size[0]),
                             interpolation=cv2.INTER_LINEAR)
        return resized.reshape(size[0], size[1], -1).transpose(2, 0, 1)

    return resize(resize(maps.astype(np.float32), input_size), image_size)


__all__ = ["DTYPES", "FAMILIES", "MANIFEST", "ExportedModel", "is_export_folder", "load_graph", "read_manifest"]
