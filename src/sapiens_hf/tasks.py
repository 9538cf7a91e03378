"""The Sapiens tasks, each declared once: one `Task` object per task holds everything that differs between tasks —
names, model and Auto classes, pipeline, default checkpoint, the model output and its class, flip-test support,
the result files and visualisation that `predict` and the demo write, the columns `annotate` writes and the
post-processing that fills them, the dense training targets, how a graph's raw output becomes a result in the
torch-free runtime, what an export records and measures, and how Meta's original checkpoints show their task and
labels. Everything else reads these objects; no other module compares a task name
with a literal.

Each task names its model class in both generations: `model_class` (Sapiens, this package's `modeling_sapiens`) and
`v2_model_class` (Sapiens2, transformers' own `models/sapiens2`); a model's config says which generation it is
(`sapiens_hf.families`). Pointmaps and matting exist only in Sapiens2 (`model_class` None).

Adding a task: a `Task` (or a subclass with its result methods) in `TASKS`; its model class and head in
`modeling_sapiens.py`, its head defaults in `configuration_sapiens.TASK_DEFAULTS` and, for a pipeline, its class in
`pipelines.py`. Classes are named, not imported, and the methods import what they draw or write with, so that reading
the table imports neither torch nor transformers (the torch-free runtime reads it).
"""

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


# The person detector of top-down pose when no boxes are given (pipeline, predict, annotate, demo): RT-DETR R50-vd
# pretrained on Objects365 and fine-tuned on COCO (Apache-2.0), the detector transformers' ViTPose documentation
# pairs with top-down pose; "person" is one of its COCO labels. docs/inference.md says why.
DEFAULT_DETECTOR = "PekingU/rtdetr_r50vd_coco_o365"


@dataclass(frozen=True)
class Task:
    """One thing a Sapiens model can be built for.

    `name` is what the converter, `SapiensConfig.from_preset` and the training scripts call it; `aliases` are
    accepted wherever a task name is typed. `model_class` is the `modeling_sapiens` class (None for a task only
    Sapiens2 has), `v2_model_class` transformers' Sapiens2 class (None for a task Sapiens2 lacks) and `auto_class`
    the transformers Auto class they are registered with; `hub_tag` is the Hub `pipeline_tag` of its model cards.
    `pipeline`/`pipeline_class` name its `sapiens-*` pipeline and `default_checkpoint` what that pipeline loads without
    `model=`. `output` is the model output field that carries the prediction (also the exported graph's output),
    `extra_outputs` the other fields post-processing reads (a pointmap's scale), and `output_class` the `ModelOutput`
    holding them. `flip_test`: the task averages with the mirrored input.
    `training_target` is where the dense training scripts find its labels: `(Hub dataset column, folder)`.
    `file_tag` names its results in the files the command line writes (`photo_seg.png`).
    """

    name: str
    model_class: str | None
    auto_class: str
    hub_tag: str
    description: str
    output: str
    output_class: str = "BaseModelOutput"
    aliases: tuple[str, ...] = ()
    pipeline: str | None = None
    pipeline_class: str | None = None
    default_checkpoint: str | None = None
    training_target: tuple[str, str] | None = None
    extra_auto_classes: tuple[str, ...] = ()
    file_tag: str = ""
    flip_test: bool = False
    top_down: bool = False  # boxes in, one crop per person (pose)
    fixed_input_size: bool = False  # its model runs at the trained input size only (no dynamic-size export)
    v2_model_class: str | None = None
    extra_outputs: tuple[str, ...] = ()
    masked: bool = False  # its maps are of the people: masked with the person mask of the segmentation model

    def mask_result(self, result: dict, mask) -> dict:
        """`result` (the post-processed result of one image) with NaN outside the person `mask` `(H, W)` (a bool
        tensor at the result's size), as the original depth and normal demos blank the background."""
        raise NotImplementedError(f"The {self.name} task has no person mask")

    def __post_init__(self):
        if not self.file_tag:
            object.__setattr__(self, "file_tag", self.name)

    @property
    def has_head(self) -> bool:
        """Whether the model ends in a task head that the pipelines and the post-processing read."""
        return self.pipeline is not None

    @property
    def encoder_only(self) -> bool:
        """Whether the model is the encoder alone (features; neither a task head nor the MAE decoder)."""
        return not (self.has_head or self.decoder)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every model output field the post-processing reads."""
        return (self.output, *self.extra_outputs)

    def output_type(self) -> type:
        """The `ModelOutput` class of `output_class` (the package's own, transformers' Sapiens2 ones, else
        transformers' generic ones)."""
        from transformers import modeling_outputs
        from transformers.models.sapiens2 import modeling_sapiens2

        from . import modeling_sapiens

        return next(getattr(module, self.output_class) for module in (modeling_sapiens, modeling_sapiens2,
                                                                       modeling_outputs)
                    if hasattr(module, self.output_class))

    def model_outputs(self, outputs) -> dict:
        """The fields of `outputs` (a model's output) that the post-processing reads, as float32 on the CPU."""
        return {name: None if getattr(outputs, name, None) is None else getattr(outputs, name).float().cpu()
                for name in self.outputs}

    # --- what `predict` and the demo write for one image (`batch.writers.FileWriter`) -------------------------------
    result_suffix: str | None = None  # the machine-readable result file, `<stem>_<file_tag><suffix>`
    visual_suffix: str = ".png"  # the visualisation, `<stem>_<file_tag>_vis<suffix>`
    records_file: str | None = None  # one file for the `record`s of every image (pose: keypoints.json)
    classes: bool = False  # one class of `config.id2label` per pixel (class colours and legend, label targets)

    companion_suffixes: tuple[str, ...] = ()  # more files `save_result` writes beside the result (`.ply`)

    def result_path(self, folder: Path, stem: str) -> Path | None:
        return None if self.result_suffix is None else folder / f"{stem}_{self.file_tag}{self.result_suffix}"

    def result_paths(self, folder: Path, stem: str) -> list[Path]:
        """Every file `save_result` writes for one image: the result and its companions."""
        path = self.result_path(folder, stem)
        return [] if path is None else [path, *(path.with_suffix(suffix) for suffix in self.companion_suffixes)]
    def mask_path(self, folder: Path, stem: str) -> Path:
        """The person mask a masked task's result was cut with: `<stem>_<file_tag>_mask.png` (0 / 255)."""
        return folder / f"{stem}_{self.file_tag}_mask.png"

    def visual_path(self, folder: Path, stem: str, video: bool = False) -> Path:
        return folder / f"{stem}_{self.file_tag}_vis{'.mp4' if video else self.visual_suffix}"

    def save_result(self, result, path: Path) -> None:
        """Writes the machine-readable result of one image to `path` (`result_path`)."""
        raise NotImplementedError(f"The {self.name} task writes no result file")

    def visualize(self, image, result, keypoint_threshold: float = 0.3):
        """The picture of a pipeline result over its `(H, W, 3)` RGB image, as a PIL image."""
        raise NotImplementedError(f"The {self.name} task has no visualisation")

    def record(self, result, image: dict, keypoint_threshold: float) -> dict | None:
        """What `records_file` keeps of one image's result (`image`: its file name and size), if anything."""
        return None

    def records_document(self, records: list[dict], model_config) -> dict:
        raise NotImplementedError(f"The {self.name} task writes no records file")

    # --- people followed through a video (`tracking.PersonTracker`; a top-down task's) -------------------------------
    def track(self, tracker, result, time: float) -> tuple[object, dict]:
        """A video frame's result (at `time` seconds) with its people's track ids (and smoothed points, if the
        tracker smooths), and what `replay` needs besides the frame's `record` to feed the tracker again."""
        raise NotImplementedError(f"The {self.name} task follows no people")

    def replay(self, tracker, kept: dict, time: float) -> None:
        """Feeds `tracker` a recorded frame (its `record` and `track`'s extra) as `track` fed it."""
        raise NotImplementedError(f"The {self.name} task follows no people")
    def results_list(self, document: dict) -> list | None:
        """A second view of `records_document` written beside it as `<records file stem>_results.json` (pose: the
        COCO results list), if any."""
        return None

    # --- dense training (`training.dense_data`) ---------------------------------------------------------------------
    output_channels: int | None = None  # a dense head of fixed width (depth 1, normals 3); None: one per label
    target_argument: str = ""  # the image processor's argument for this task's training targets
    augmentation: tuple[tuple[str, float], ...] = ()  # `DenseAugmentation` fields of the original's train config

    # --- what `annotate` stores for one image (`batch.engine.predict_rows`) ----------------------------------------
    post_process: str = ""  # the image processor's method from `output` to results, as in the task's pipeline

    def prepare(self, processor, image) -> dict:
        """The model input of one `(H, W, 3)` image, with what `post_process_arguments` needs of it."""
        return {"pixel_values": processor(image, return_tensors="pt")["pixel_values"]}

    def post_process_arguments(self, prepared: list[dict], sizes: list, dense_sizes: list) -> dict:
        """`post_process`'s arguments besides the output for a batch: `prepare`'s dicts, the images' `(H, W)` and
        the sizes the dense maps are stored at."""
        return {"target_sizes": dense_sizes}

    def columns(self) -> list:
        """The Parquet columns (name, pyarrow type) that `row` fills."""
        raise NotImplementedError(f"The {self.name} task has no annotate columns")

    def row(self, result, model_config) -> dict:
        """The column values of one image's post-processed result."""
        raise NotImplementedError(f"The {self.name} task has no annotate columns")

    # --- the torch-free runtime (`sapiens_hf.runtime`) ---------------------------------------------------------------
    def decode(self, output: np.ndarray) -> dict:
        """The result of one image from its graph output: a head's maps `(C, H, W)` resized to the image (a top-down
        task's crops are decoded by the runtime), an encoder's output as it is."""
        return {self.output: output}

    # --- exports (`sapiens_hf.export`) -------------------------------------------------------------------------------
    labelled: bool = False  # its output channels have names in `config.id2label` (keypoints, classes, x/y/z)

    def export_labels(self, config) -> dict:
        """What an export's manifest records of the model's labels."""
        return {"labels": [config.id2label[index] for index in range(config.num_labels)]} if self.labelled else {}

    def int8_change(self, fp32: np.ndarray, int8: np.ndarray, input_size: tuple[int, int]) -> dict:
        """The change of the int8 graph's output against the fp32 graph's (batches of the model input size
        `input_size`, width × height) in the task's own terms; here the relative error (an encoder's features)."""
        return {"relative_error_mean": float(np.abs(int8 - fp32).mean() / (np.abs(fp32).mean() + 1e-12))}

    # --- Meta's original checkpoints (`sapiens_hf.convert`, `sapiens_hf.releases`) -----------------------------------
    original_head: str | None = None  # the original head's output layer, whose `<layer>.weight` shows the task
    decoder: bool = False  # the model has the MAE decoder (`neck.*` in the original checkpoints)

    def label_metadata(self, num_labels: int | None) -> dict:
        """The config fields of the released label set with `num_labels` labels (`id2label` and the like) that a
        converted checkpoint gets; none where no released set has that many."""
        return {}


@dataclass(frozen=True)
class PoseTask(Task):
    """Top-down pose: keypoints per person box; its results go to a COCO keypoints file, not one file an image."""

    def visualize(self, image, result, keypoint_threshold=0.3):
        from .visualization import draw_keypoints

        return draw_keypoints(image, result, keypoint_threshold=keypoint_threshold)

    def record(self, result, image, keypoint_threshold):
        """The COCO image and annotations of one image, without the ids (numbered in the document)."""
        from .coco import person_annotation

        formats = {person["keypoint_format"] for person in result if "keypoint_format" in person}
        return {"image": image, "annotations": [person_annotation(person, keypoint_threshold) for person in result],
                **({"keypoint_format": formats.pop()} if formats else {})}

    def records_document(self, records, model_config):
        from .coco import keypoints_document

        return keypoints_document(records, model_config)

    # A person is followed by its box (given or detected; its detector score, 1 for a given box). Smoothing filters
    # its keypoints as predicted, to 1/1000 pixel as keypoints.json writes them: what the record keeps
    # (`raw_keypoints`, besides the smoothed ones) to feed a resumed run's filters exactly the same values.
    def track(self, tracker, result, time):
        import torch

        boxes, scores = self._tracked_boxes([person["bbox_xywh"].tolist() for person in result],
                                            [person["bbox_score"] for person in result])
        raw = [np.round(person["keypoints"].double().numpy(), 3).tolist() for person in result] if tracker.smoothing else None
        ids, smoothed = tracker.update(boxes, scores, time, raw)
        people = [{**person, "track_id": track_id} for person, track_id in zip(result, ids)]
        for person, points in zip(people, smoothed if smoothed is not None else []):
            person["keypoints"] = torch.as_tensor(points, dtype=person["keypoints"].dtype)
        return people, ({"raw_keypoints": raw} if raw is not None else {})

    def replay(self, tracker, kept, time):
        annotations = kept["annotations"]
        boxes, scores = self._tracked_boxes([a["bbox"] for a in annotations], [a["bbox_score"] for a in annotations])
        tracker.update(boxes, scores, time, kept.get("raw_keypoints"))

    @staticmethod
    def _tracked_boxes(boxes, scores):
        return boxes, [1.0 if score is None else score for score in scores]
    def results_list(self, document):
        from .coco import results_list

        return results_list(document)

    def prepare(self, processor, image):
        return {"image": image}  # the pose pipeline finds the people (`batch.engine.predict_rows`)

    def columns(self):
        import pyarrow as pa

        return [("pose_boxes", pa.list_(pa.list_(pa.float32(), 4))),  # (x, y, width, height) per person
                ("pose_keypoints", pa.list_(pa.list_(pa.list_(pa.float32(), 2)))),  # person × keypoint × (x, y)
                ("pose_scores", pa.list_(pa.list_(pa.float32())))]

    def row(self, result, model_config):
        return {"pose_boxes": [person["bbox_xywh"].tolist() for person in result],
                "pose_keypoints": [person["keypoints"].tolist() for person in result],
                "pose_scores": [person["scores"].tolist() for person in result]}

    def export_labels(self, config):
        from .metadata import model_flip_pairs

        return {**super().export_labels(config), "flip_pairs": model_flip_pairs(config)}

    def int8_change(self, fp32, int8, input_size):
        from .geometry import decode_udp_heatmaps

        moved = decode_udp_heatmaps(fp32, input_size)[0] - decode_udp_heatmaps(int8, input_size)[0]
        return {"keypoint_error_px_mean": float(np.linalg.norm(moved, axis=-1).mean())}

    def label_metadata(self, num_labels):
        from . import metadata

        if num_labels not in metadata.KEYPOINT_SET_BY_COUNT:
            return {}
        names = metadata.keypoint_set(num_labels)["keypoint_names"]
        return {"id2label": dict(enumerate(names)), "flip_pairs": metadata.flip_pairs(num_labels)}


@dataclass(frozen=True)
class SegmentationTask(Task):
    background_class: int = 0  # "Background" in the released 28-class set (metadata.SEGMENTATION_CLASSES)

    def person_mask(self, segmentation):
        """The people of a class map `(H, W)`: every pixel of another class than the background, as the original's
        foreground for the depth and normal demos."""
        return segmentation != self.background_class

    def save_result(self, result, path):
        result["label_map"].save(path)  # pixel values = class indices

    def visualize(self, image, result, keypoint_threshold=0.3):
        from .visualization import overlay_segmentation

        # The label map carries the model's class colours (`visualization.class_palette` of its config).
        palette = np.asarray(result["label_map"].getpalette(), np.uint8).reshape(-1, 3)
        return overlay_segmentation(image, result["segmentation"], palette=palette)

    def post_process_arguments(self, prepared, sizes, dense_sizes):
        return {"target_sizes": sizes}  # labels at the image's size

    def columns(self):
        import pyarrow as pa

        return [("segmentation_png", pa.binary())]  # class indices, 8-bit PNG at the image's size

    def row(self, labels, model_config):
        import cv2
        labels = labels.numpy().astype(np.uint8 if model_config.num_labels <= 256 else np.uint16)
        return {"segmentation_png": cv2.imencode(".png", labels)[1].tobytes()}

    def decode(self, output):
        return {"segmentation": output.argmax(axis=0)}

    def int8_change(self, fp32, int8, input_size):
        return {"pixel_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean())}

    def label_metadata(self, num_labels):
        from . import metadata

        if num_labels != len(metadata.SEGMENTATION_CLASSES):
            return {}
        return {"id2label": dict(enumerate(metadata.SEGMENTATION_CLASSES)), "class_weights": list(metadata.CLASS_WEIGHTS)}


@dataclass(frozen=True)
class MapTask(Task):
    """A float32 map per image: `output` is also the key of the post-processed result; stored as `.npy` bytes in
    the column `<name>_npy` at the dense size."""

    def columns(self):
        import pyarrow as pa

        return [(f"{self.name}_npy", pa.binary())]

    def row(self, result, model_config):
        import io

        buffer = io.BytesIO()
        np.save(buffer, result[self.output].numpy().astype(np.float32), allow_pickle=False)
        return {f"{self.name}_npy": buffer.getvalue()}


@dataclass(frozen=True)
class DepthTask(MapTask):
    def mask_result(self, result, mask):
        import torch

        depth = result["predicted_depth"]
        return {**result, "predicted_depth": torch.where(mask.to(depth.device), depth, torch.nan)}

    def save_result(self, result, path):
        np.save(path, result["predicted_depth"].float().numpy())

    def visualize(self, image, result, keypoint_threshold=0.3):
        return result["depth"]

    def decode(self, output):
        return {"predicted_depth": output[0]}

    def int8_change(self, fp32, int8, input_size):
        return {"depth_relative_error_mean": float((np.abs(int8 - fp32) / (np.abs(fp32) + 1e-6)).mean())}


@dataclass(frozen=True)
class NormalTask(MapTask):
    def mask_result(self, result, mask):
        import torch

        normals = result["normals"]
        return {**result, "normals": torch.where(mask.to(normals.device)[None], normals, torch.nan)}

    def save_result(self, result, path):
        np.save(path, result["normals"].float().permute(1, 2, 0).numpy())  # (H, W, 3); annotate keeps (3, H, W)

    def visualize(self, image, result, keypoint_threshold=0.3):
        return result["normal_map"]

    def decode(self, output):
        return {"normals": output / (np.linalg.norm(output, axis=0, keepdims=True) + np.float32(1e-5))}

    def int8_change(self, fp32, int8, input_size):
        a = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
        b = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
        return {"normal_angle_error_deg_mean": float(np.degrees(np.arccos(np.clip((a * b).sum(1), -1, 1))).mean())}


@dataclass(frozen=True)
class PointmapTask(MapTask):
    """XYZ per pixel (Sapiens2): `.npy` `(H, W, 3)` and a PLY point cloud beside it; annotate stores the map and the
    predicted scale."""

    max_points: int = 2_000_000  # a PLY of a large image keeps every n-th pixel in both directions below this

    def save_result(self, result, path):
        import math

        from plyfile import PlyData, PlyElement

        points = result["pointmap"].float().permute(1, 2, 0).numpy()  # (H, W, 3)
        np.save(path, points)
        step = max(1, math.ceil(math.sqrt(points.shape[0] * points.shape[1] / self.max_points)))
        points = points[::step, ::step].reshape(-1, 3)
        points = points[np.isfinite(points).all(axis=1)]
        vertices = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
        vertices["x"], vertices["y"], vertices["z"] = points.T
        PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path.with_suffix(".ply")))

    def visualize(self, image, result, keypoint_threshold=0.3):
        return result["depth"]

    def columns(self):
        import pyarrow as pa

        return [*super().columns(), ("pointmap_scale", pa.float32())]

    def row(self, result, model_config):
        import io

        buffer = io.BytesIO()
        np.save(buffer, result["pointmap"].numpy().astype(np.float32), allow_pickle=False)
        return {"pointmap_npy": buffer.getvalue(), "pointmap_scale": result["scale"]}


@dataclass(frozen=True)
class MattingTask(Task):
    """Alpha matte and foreground (Sapiens2): the alpha as an 8-bit PNG, the cut-out (the predicted foreground colours
    with the alpha) as an RGBA PNG."""

    def save_result(self, result, path):
        import PIL.Image

        PIL.Image.fromarray(_to_uint8(result["alpha"])).save(path)

    def visualize(self, image, result, keypoint_threshold=0.3):
        return cut_out(result)

    def columns(self):
        import pyarrow as pa

        return [("matting_alpha_png", pa.binary()),  # 8-bit alpha at the dense size
                ("matting_foreground_png", pa.binary())]  # RGBA cut-out at the dense size

    def row(self, result, model_config):
        import io

        import cv2

        buffer = io.BytesIO()
        cut_out(result).save(buffer, format="PNG")
        return {"matting_alpha_png": cv2.imencode(".png", _to_uint8(result["alpha"]))[1].tobytes(),
                "matting_foreground_png": buffer.getvalue()}


def _to_uint8(values) -> np.ndarray:
    return np.rint(np.clip(values.float().numpy(), 0, 1) * 255).astype(np.uint8)


def cut_out(result):
    """The RGBA cut-out of a matting result: the model's pre-multiplied foreground divided by the alpha (the colours
    of the person without the background mixed in at soft edges), with the alpha as transparency."""
    import PIL.Image

    alpha = result["alpha"].float().numpy()
    colours = result["foreground"].float().numpy() / np.maximum(alpha, 1 / 255)
    rgba = np.concatenate([colours, alpha[None]]).transpose(1, 2, 0)
    return PIL.Image.fromarray(np.rint(np.clip(rgba, 0, 1) * 255).astype(np.uint8), "RGBA")


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        PoseTask("pose", "SapiensForPoseEstimation", "AutoModelForPoseEstimation", "keypoint-detection",
                 "top-down 2D human pose estimation", output="heatmaps", output_class="SapiensPoseEstimatorOutput",
                 pipeline="sapiens-pose", pipeline_class="SapiensPosePipeline",
                 default_checkpoint="facebook/sapiens-pose-0.3b", flip_test=True, top_down=True,
                 visual_suffix=".jpg", records_file="keypoints.json", post_process="post_process_pose_estimation",
                 labelled=True, original_head="final_layer", v2_model_class="Sapiens2ForPoseEstimation"),
        SegmentationTask("segmentation", "SapiensForSemanticSegmentation", "AutoModelForSemanticSegmentation",
                         "image-segmentation", "body-part segmentation", output="logits",
                         output_class="SemanticSegmenterOutput", aliases=("seg",), file_tag="seg",
                         pipeline="sapiens-segmentation", pipeline_class="SapiensSegmentationPipeline",
                         default_checkpoint="facebook/sapiens-seg-0.3b", training_target=("label", "labels"),
                         result_suffix=".png", visual_suffix=".jpg", classes=True, labelled=True,
                         post_process="post_process_semantic_segmentation", target_argument="segmentation_maps",
                         augmentation=(("background_prob", 0.8), ("rotate_degrees", 45.0)), original_head="conv_seg",
                         v2_model_class="Sapiens2ForSemanticSegmentation"),
        DepthTask("depth", "SapiensForDepthEstimation", "AutoModelForDepthEstimation", "depth-estimation",
                  "relative depth estimation of people", output="predicted_depth",
                  output_class="DepthEstimatorOutput", pipeline="sapiens-depth",
                  pipeline_class="SapiensDepthPipeline", default_checkpoint="facebook/sapiens-depth-0.3b",
                  training_target=("depth", "depth"), flip_test=True, masked=True, result_suffix=".npy",
                  post_process="post_process_depth_estimation", output_channels=1, target_argument="depth_maps",
                  augmentation=(("rotate_degrees", 60.0),), original_head="conv_seg"),
        NormalTask("normal", "SapiensForNormalEstimation", "AutoModelForNormalEstimation", "image-to-image",
                   "surface normal estimation of people", output="normals",
                   output_class="SapiensNormalEstimatorOutput", aliases=("normals",), pipeline="sapiens-normal",
                   pipeline_class="SapiensNormalPipeline", default_checkpoint="facebook/sapiens-normal-0.3b",
                   training_target=("normal", "normals"), masked=True, result_suffix=".npy", labelled=True,
                   post_process="post_process_normal_estimation", output_channels=3, target_argument="normal_maps",
                   original_head="conv_seg", v2_model_class="Sapiens2ForNormalEstimation"),
        PointmapTask("pointmap", None, "AutoModelForPointmapEstimation", "depth-estimation",
                     "3D point per pixel (XYZ in the camera frame, metric with the predicted scale)",
                     output="pointmaps", extra_outputs=("scales",), output_class="Sapiens2PointmapEstimatorOutput",
                     aliases=("pointmaps",), pipeline="sapiens-pointmap", pipeline_class="SapiensPointmapPipeline",
                     default_checkpoint="facebook/sapiens2-pointmap-0.4b", result_suffix=".npy",
                     companion_suffixes=(".ply",), post_process="post_process_pointmap_estimation",
                     v2_model_class="Sapiens2ForPointmapEstimation",
                     # its scale head flattens the last feature map into a linear layer of a fixed width
                     # (`head_config.scale_final_input_size`): the scale exists at the trained input size only
                     fixed_input_size=True),
        MattingTask("matting", None, "AutoModelForImageMatting", "image-segmentation",
                    "alpha matting of people (alpha and foreground colours)", output="alphas",
                    extra_outputs=("foregrounds",), output_class="Sapiens2ImageMattingOutput", aliases=("alpha",),
                    pipeline="sapiens-matting", pipeline_class="SapiensMattingPipeline",
                    default_checkpoint="facebook/sapiens2-matting-1b", result_suffix=".png", visual_suffix=".png",
                    post_process="post_process_image_matting", v2_model_class="Sapiens2ForImageMatting"),
        Task("pretraining", "SapiensForMaskedImageModeling", "AutoModelForMaskedImageModeling",
             "image-feature-extraction", "MAE pretraining (encoder + decoder)", output="logits",
             output_class="SapiensMaskedImageModelingOutput", aliases=("mae", "pretrain"),
             extra_auto_classes=("AutoModelForPreTraining",), decoder=True),
        Task("model", "SapiensModel", "AutoModel", "image-feature-extraction", "human-centric image features",
             output="last_hidden_state", output_class="SapiensModelOutput", aliases=("encoder",)),
        Task("backbone", "SapiensBackbone", "AutoBackbone", "image-feature-extraction",
             "feature maps for dense heads", output="feature_maps", output_class="BackboneOutput"),
    )
}
# The encoder alone: what a checkpoint with neither a task head nor the MAE decoder converts into.
ENCODER = TASKS["model"]
# Body-part segmentation: its model gives the person masks of the masked tasks (depth, normals).
SEGMENTATION = TASKS["segmentation"]
PIPELINE_TASKS: dict[str, Task] = {task.pipeline: task for task in TASKS.values() if task.pipeline}
# The tasks of this package's own (Sapiens) models: what the converter, the registration and the exports cover.
V1_TASKS: dict[str, Task] = {name: task for name, task in TASKS.items() if task.model_class}
DENSE_TASKS = tuple(name for name, task in TASKS.items() if task.training_target)


def get_task(name: str) -> Task:
    """The task called `name` (a task name, an alias or a `sapiens-*` pipeline name); a ValueError that lists the
    choices (and the closest one) for anything else."""
    for task in TASKS.values():
        if name in (task.name, task.pipeline, *task.aliases):
            return task
    names = sorted({alias for task in TASKS.values() for alias in (task.name, *task.aliases)})
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"Unknown task {name!r}{hint}; choose one of {names}")


def task_of_class(class_name: str | None) -> Task | None:
    """The task a Sapiens or Sapiens2 model class (by name, as in `config.architectures`) is built for; None for other
    names."""
    if class_name is None:
        return None
    return next((task for task in TASKS.values() if class_name in (task.model_class, task.v2_model_class)), None)


__all__ = ["DEFAULT_DETECTOR", "DENSE_TASKS", "ENCODER", "PIPELINE_TASKS", "SEGMENTATION", "TASKS", "V1_TASKS", "Task",
           "cut_out", "get_task", "task_of_class"]
