"""The Sapiens tasks, each declared once: one `Task` object per task holds everything that differs between tasks —
names, model and Auto classes, pipeline, default checkpoint, the model output and its class, flip-test support,
the result files and visualisation that `predict` and the demo write, the columns `annotate` writes and the
post-processing that fills them, the dense training targets, how a graph's raw output becomes a result in the
torch-free runtime, what an export records and measures, and how Meta's original checkpoints show their task and
labels. Everything else reads these objects; no other module compares a task name
with a literal.

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
    accepted wherever a task name is typed. `model_class` is the `modeling_sapiens` class and `auto_class` the
    transformers Auto class it is registered with; `hub_tag` is the Hub `pipeline_tag` of its model cards.
    `pipeline`/`pipeline_class` name its `sapiens-*` pipeline and `default_checkpoint` what that pipeline loads without
    `model=`. `output` is the model output field that carries the prediction (also the exported graph's output) and
    `output_class` the `ModelOutput` holding it. `flip_test`: the task averages with the mirrored input.
    `training_target` is where the dense training scripts find its labels: `(Hub dataset column, folder)`.
    `file_tag` names its results in the files the command line writes (`photo_seg.png`).
    """

    name: str
    model_class: str
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

    def output_type(self) -> type:
        """The `ModelOutput` class of `output_class` (the package's own, else transformers')."""
        from transformers import modeling_outputs

        from . import modeling_sapiens

        return getattr(modeling_sapiens, self.output_class, None) or getattr(modeling_outputs, self.output_class)

    # --- what `predict` and the demo write for one image (`batch.writers.FileWriter`) -------------------------------
    result_suffix: str | None = None  # the machine-readable result file, `<stem>_<file_tag><suffix>`
    visual_suffix: str = ".png"  # the visualisation, `<stem>_<file_tag>_vis<suffix>`
    records_file: str | None = None  # one file for the `record`s of every image (pose: keypoints.json)
    classes: bool = False  # one class of `config.id2label` per pixel (class colours and legend, label targets)

    def result_path(self, folder: Path, stem: str) -> Path | None:
        return None if self.result_suffix is None else folder / f"{stem}_{self.file_tag}{self.result_suffix}"

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

        return {"image": image, "annotations": [person_annotation(person, keypoint_threshold) for person in result]}

    def records_document(self, records, model_config):
        from .coco import keypoints_document

        return keypoints_document(records, model_config)

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

        return overlay_segmentation(image, result["segmentation"])

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


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        PoseTask("pose", "SapiensForPoseEstimation", "AutoModelForPoseEstimation", "keypoint-detection",
                 "top-down 2D human pose estimation", output="heatmaps", output_class="SapiensPoseEstimatorOutput",
                 pipeline="sapiens-pose", pipeline_class="SapiensPosePipeline",
                 default_checkpoint="facebook/sapiens-pose-0.3b", flip_test=True, top_down=True,
                 visual_suffix=".jpg", records_file="keypoints.json", post_process="post_process_pose_estimation",
                 labelled=True, original_head="final_layer"),
        SegmentationTask("segmentation", "SapiensForSemanticSegmentation", "AutoModelForSemanticSegmentation",
                         "image-segmentation", "body-part segmentation", output="logits",
                         output_class="SemanticSegmenterOutput", aliases=("seg",), file_tag="seg",
                         pipeline="sapiens-segmentation", pipeline_class="SapiensSegmentationPipeline",
                         default_checkpoint="facebook/sapiens-seg-0.3b", training_target=("label", "labels"),
                         result_suffix=".png", visual_suffix=".jpg", classes=True, labelled=True,
                         post_process="post_process_semantic_segmentation", target_argument="segmentation_maps",
                         augmentation=(("background_prob", 0.8), ("rotate_degrees", 45.0)), original_head="conv_seg"),
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
                   original_head="conv_seg"),
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
    """The task a Sapiens model class (by name, as in `config.architectures`) is built for; None for other names."""
    return next((task for task in TASKS.values() if task.model_class == class_name), None)


__all__ = ["DEFAULT_DETECTOR", "DENSE_TASKS", "ENCODER", "SEGMENTATION", "PIPELINE_TASKS", "TASKS", "Task", "get_task", "task_of_class"]
