"""Running an exported ONNX graph (`sapiens_hf.export`) without torch or transformers: NumPy, OpenCV, Pillow and
onnxruntime, with the original's pre- and post-processing from `geometry` — the results of the `sapiens-*` pipelines.

    from sapiens_hf.runtime import ExportedModel

    pose = ExportedModel("out/pose-onnx")            # model.onnx (int8=True: model.int8.onnx)
    people = pose("photo.jpg", boxes=[[x, y, w, h]])  # [{"keypoints": (K, 2), "scores": (K,), "bbox_xywh": (4,)}]
    depth = ExportedModel("out/depth-onnx")("photo.jpg")["predicted_depth"]  # (H, W) float32

Images are 8-bit: a path (EXIF orientation applied, converted to RGB as the pipelines do for 8-bit files) or a uint8
RGB array `(H, W, 3)`. Pose takes `boxes` (COCO x, y, width, height; none: the whole image). Dense outputs are
resized to the image with OpenCV's bilinear resize, which the pipelines do with torch's (the same sampling, float
rounding aside: tests/test_export.py compares them).
"""

import json
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps

from .geometry import check_boxes, decode_udp_heatmaps, get_box_center_scale, get_udp_warp_matrix, warp_affine_bilinear


class ExportedModel:
    def __init__(self, folder: str | Path, int8: bool = False, providers: list[str] | None = None):
        import onnxruntime

        folder = Path(folder)
        self.manifest = json.loads((folder / "sapiens-export.json").read_text())
        if self.manifest["format"] != "onnx":
            raise ValueError(f"{folder} holds a {self.manifest['format']} export; this runner runs ONNX graphs")
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        self.task = self.manifest["task"]
        self.size = (processor["size"]["width"], processor["size"]["height"])
        self.mean = np.asarray(processor["image_mean"], np.float32)
        self.std = np.asarray(processor["image_std"], np.float32)
        self.box_padding = processor.get("box_padding", 1.25)
        if int8 and "int8" not in self.manifest:
            raise ValueError(f"{folder} has no int8 graph: export the model with --quantize int8")
        file = self.manifest["int8"]["file"] if int8 else self.manifest["file"]
        self.session = onnxruntime.InferenceSession(str(folder / file), providers=providers or ["CPUExecutionProvider"])

    def __call__(self, image, boxes=None, kernel_size: int = 11):
        image = _rgb(image)
        if self.task == "pose":
            return self._pose(image, boxes, kernel_size)
        if boxes is not None:
            raise ValueError(f"boxes apply to pose; this is a {self.task} model")
        resized = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        output = self.run(self._normalize([resized]))[0]
        if self.task == "model":
            return {"last_hidden_state": output}
        maps = _resize_twice(output if output.ndim == 3 else output[None], self.size[::-1], image.shape[:2])
        if self.task == "segmentation":
            return {"segmentation": maps.argmax(axis=0)}
        if self.task == "depth":
            return {"predicted_depth": maps[0]}
        return {"normals": maps / (np.linalg.norm(maps, axis=0, keepdims=True) + np.float32(1e-5))}

    def _pose(self, image: np.ndarray, boxes, kernel_size: int) -> list[dict]:
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
        """The graph's output (float32) for normalised `pixel_values` `(batch, 3, height, width)`; a graph exported
        without `--dynamic-batch` runs one image at a time."""
        graph_input = self.session.get_inputs()[0]
        pixel_values = pixel_values.astype(np.float16 if "float16" in graph_input.type else np.float32)
        batches = np.split(pixel_values, len(pixel_values)) if graph_input.shape[0] == 1 else [pixel_values]
        outputs = [self.session.run(None, {graph_input.name: batch})[0] for batch in batches]
        return np.concatenate(outputs).astype(np.float32, copy=False)


def _rgb(image) -> np.ndarray:
    if isinstance(image, (str, Path)):
        with PIL.Image.open(image) as opened:
            return np.asarray(PIL.ImageOps.exif_transpose(opened).convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def _resize_twice(maps: np.ndarray, input_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """`(C, h, w)` maps resized bilinearly to the model input, then to the image, as the image processor does."""
    def resize(array, size):  # OpenCV resizes (H, W, C) with up to 512 channels
        resized = cv2.resize(np.ascontiguousarray(array.transpose(1, 2, 0)), (size[1], size[0]),
                             interpolation=cv2.INTER_LINEAR)
        return resized.reshape(size[0], size[1], -1).transpose(2, 0, 1)

    return resize(resize(maps.astype(np.float32), input_size), image_size)
