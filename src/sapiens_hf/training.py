"""Fine-tuning Sapiens with the Hugging Face `Trainer`: the original recipe's optimiser (layer-wise LR decay, no weight
decay on norms/biases/position embeddings), its data augmentations, dataset loaders and the shared plumbing of the
`examples/run_*.py` scripts. The recipe is that of the original task configs (github.com/facebookresearch/sapiens:
`pose/configs/sapiens_pose/`, `seg/configs/sapiens_{seg,depth,normal}/`) and their layer-decay optimiser constructors
(`pose/mmpose/engine/optim_wrappers/layer_decay_optim_wrapper.py`,
`seg/mmseg/engine/optimizers/layer_decay_optim_wrapper.py`).

Augmentations are built on albumentations (photometric distortion, blur, coarse dropout, resize/crop/rotate/flip of
dense targets) and on the image processor (UDP crops, heatmap targets); what no library does (top-down box jitter,
half-body crops, left/right label swaps, random backgrounds) is written here. Every sample draws its randomness from a
generator seeded by (seed, epoch, index), so augmentations are reproducible across dataloader workers and resumed runs.
"""

import json
import logging
import math
import os
import random
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import datasets
import numpy as np
import PIL.Image
import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SchedulerType

from . import metadata
from .configuration_sapiens import SapiensConfig
from .image_processing_sapiens import (
    SapiensImageProcessorPil,
    generate_udp_heatmaps,
    get_box_center_scale,
    get_udp_warp_matrix,
    load_image,
    to_rgb_uint8,
    warp_affine_bilinear,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Optimiser: parameter groups with layer-wise LR decay (the original LayerDecayOptimWrapperConstructor)
# ---------------------------------------------------------------------------------------------------------------

# Never weight-decayed besides 1-D tensors and biases: the original skips `pos_embed` (fine-tuning) and MAE also
# `cls_token` / `mask_token`.
NO_DECAY_NAMES = ("position_embeddings", "cls_token", "mask_token")


def _encoder_prefix(model: torch.nn.Module) -> str:
    """Name prefix of the Sapiens encoder's parameters: "" for a bare `SapiensModel`, else `"<base_model_prefix>."`."""
    from .modeling_sapiens import SapiensModel

    return "" if isinstance(model, SapiensModel) else f"{model.base_model_prefix}."


def layer_id(name: str, num_layers: int, encoder_prefix: str = "model.") -> int:
    """Depth of a parameter for layer-wise LR decay, as the original: 0 for the embeddings (patch embedding, position
    table, CLS token), i + 1 for transformer block i, `num_layers + 1` for everything above (final norm, heads, MAE
    decoder)."""
    if name.startswith(encoder_prefix + "embeddings."):
        return 0
    if name.startswith(encoder_prefix + "layers."):
        return int(name[len(encoder_prefix) :].split(".")[1]) + 1
    return num_layers + 1


def parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float | None = None
) -> list[dict]:
    """Optimiser parameter groups of a Sapiens model, as the original optimiser constructors build them.

    No weight decay for 1-D tensors (norms), biases, position embeddings and CLS/mask tokens. With `layer_decay`,
    parameters at depth `layer_id` get `lr = learning_rate * layer_decay ** (num_layers + 1 - layer_id)` (groups
    `layer_{id}_decay` / `layer_{id}_no_decay`); with `None` (the MAE pretraining recipe) every group has
    `learning_rate` (groups `decay` / `no_decay`). Frozen parameters are left out. Works on ZeRO-3-partitioned models
    (shapes are read from `ds_shape`). Each group carries `lr`, `weight_decay`, `lr_scale` and `name`.
    """
    num_layers = model.config.num_hidden_layers
    prefix = _encoder_prefix(model)
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        shape = getattr(param, "ds_shape", param.shape)  # ZeRO-3 leaves local shards of shape (0,)
        no_decay = len(shape) == 1 or name.endswith(".bias") or any(key in name for key in NO_DECAY_NAMES)
        kind = "no_decay" if no_decay else "decay"
        if layer_decay is None:
            group_name, scale = kind, 1.0
        else:
            depth = layer_id(name, num_layers, prefix)
            group_name, scale = f"layer_{depth}_{kind}", layer_decay ** (num_layers + 1 - depth)
        if group_name not in groups:
            groups[group_name] = {
                "name": group_name,
                "params": [],
                "lr": learning_rate * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[group_name]["params"].append(param)
    return list(groups.values())


@dataclass
class SapiensTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of the original fine-tuning recipe and its layer-wise LR decay."""

    layer_decay: float | None = field(
        default=0.85,
        metadata={"help": "Layer-wise LR decay rate (0.85 in the original recipe; 1.0 turns it off)."},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak AdamW learning rate of the top layers."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (not applied to norms/biases)."})
    batch_eval_metrics: bool = field(
        default=True,
        metadata={"help": "Update the metrics batch by batch instead of keeping every full-resolution output."},
    )
    lr_milestones: list[float] | None = field(
        default=None,
        metadata={
            "help": "The original pose schedule (mmengine MultiStepLR): epochs after which the LR is multiplied by "
            "`lr_milestone_gamma`, e.g. 170 200 of 210 epochs. Goes with --lr_scheduler_type constant_with_warmup, "
            "whose warm-up comes first."
        },
    )
    lr_milestone_gamma: float = field(default=0.1, metadata={"help": "LR factor applied at each of `lr_milestones`."})

    def __post_init__(self):
        super().__post_init__()
        if self.lr_milestones and SchedulerType(self.lr_scheduler_type) != SchedulerType.CONSTANT_WITH_WARMUP:
            raise ValueError(
                f"lr_milestones step the LR down after a constant warm-up: use --lr_scheduler_type "
                f"constant_with_warmup, not {SchedulerType(self.lr_scheduler_type).value}"
            )


class SapiensTrainer(Trainer):
    """`Trainer` that builds the optimiser from `parameter_groups` (layer-wise LR decay from `args.layer_decay`) and
    tells datasets with a `set_epoch` method which epoch starts, so their per-sample augmentations stay reproducible.

    Under DeepSpeed the config must not have an `optimizer` block (refused): only without one does the Trainer call
    `create_optimizer`; with one, DeepSpeed would build a single flat group and lose the decay.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        deepspeed_config = getattr(self.args, "hf_deepspeed_config", None)
        if (
            getattr(self.args, "layer_decay", None) is not None
            and deepspeed_config
            and "optimizer" in deepspeed_config.config
        ):
            raise ValueError(
                "The DeepSpeed config has an `optimizer` block, so DeepSpeed would build one parameter group and drop "
                "the layer-wise LR decay: remove the block (the Trainer then builds AdamW with the decay groups)"
            )
        self.add_callback(_EpochCallback(self))

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs) or not isinstance(optimizer_cls, type):
                raise ValueError(
                    f"optim={self.args.optim!r} builds its own parameter groups, which would drop the layer-wise LR "
                    "decay; use a standard optimizer such as adamw_torch or adamw_torch_fused"
                )
            groups = parameter_groups(
                opt_model, self.args.learning_rate, self.args.weight_decay, getattr(self.args, "layer_decay", None)
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """transformers' schedules, plus `lr_milestones`: the warm-up of `constant_with_warmup`, then ×gamma from the
        first optimizer step of each milestone epoch on (transformers has no multi-step schedule)."""
        milestones = getattr(self.args, "lr_milestones", None)
        if self.lr_scheduler is None and milestones:
            steps_per_epoch = num_training_steps / (self.state.num_train_epochs or self.args.num_train_epochs)
            milestone_steps = sorted(round(epoch * steps_per_epoch) for epoch in milestones)
            warmup_steps = self.args.get_warmup_steps(num_training_steps)
            gamma = self.args.lr_milestone_gamma

            def factor(step: int) -> float:
                return min(1.0, step / max(1, warmup_steps)) * gamma ** bisect_right(milestone_steps, step)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)


class _EpochCallback(TrainerCallback):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(state.epoch))  # exact: epochs advance by whole steps_in_epoch / steps_in_epoch


# ---------------------------------------------------------------------------------------------------------------
# Datasets with reproducible per-sample randomness
# ---------------------------------------------------------------------------------------------------------------


class TransformedDataset(torch.utils.data.Dataset):
    """Applies `transform(example, rng)` to the examples of a (`datasets`) dataset. `rng` is a numpy `Generator`
    seeded by (seed, epoch, index): the same sample gets the same augmentation in any worker and after a resume, and
    a new one every epoch (the Trainer calls `set_epoch`)."""

    def __init__(self, dataset, transform: Callable[[dict, np.random.Generator], dict], seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.transform(self.dataset[index], np.random.default_rng([self.seed, self.epoch, index]))

    def check(self, split: str, max_listed: int = 10) -> None:
        """Reads every sample once with the transform's `check(example)` (in threads, without augmentation) and
        raises one error that counts and names the unusable ones, so that a corrupt image or an invalid label stops
        the run before its first step rather than in the middle of an epoch."""

        def failure(index: int) -> str | None:
            try:
                self.transform.check(self.dataset[index])  # Hub image columns decode here
            except Exception as error:  # noqa: BLE001 - every reason a sample cannot be used is reported
                files = self._files(index)
                return f"sample {index}{f' ({files})' if files else ''}: {error}"
            return None

        failures = []
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for start in range(0, len(self), 1024):
                failures += filter(None, pool.map(failure, range(start, min(start + 1024, len(self)))))
        if failures:
            listed = "\n  ".join(failures[:max_listed]) + ("\n  ..." if len(failures) > max_listed else "")
            raise ValueError(
                f"{len(failures)} of {len(self)} {split} samples cannot be used (fix or remove them; "
                f"--check_data false skips this check):\n  {listed}"
            )

    def _files(self, index: int) -> str:
        """The file names in sample `index`, read without decoding its images."""
        if not isinstance(self.dataset, datasets.Dataset):
            return ""
        row = self.dataset.with_format("arrow")[index].to_pylist()[0]
        values = [value.get("path") if isinstance(value, dict) else value for value in row.values()]
        return ", ".join(value for value in values if isinstance(value, str) and value)


def read_image(value) -> np.ndarray:
    """An image column value (path, PIL image or array) as uint8 RGB `(H, W, 3)`."""
    if isinstance(value, (str, os.PathLike)):
        value = load_image(value)
    return to_rgb_uint8(value)


def read_array(value, what: str) -> np.ndarray:
    """A target column value as a numpy array: a `.npy` file, any image file (read unchanged, so 16-bit PNGs and
    float TIFFs keep their values; colour channels in RGB order), a PIL image or an array-like."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"The {what} file {path} does not exist")
        if path.suffix == ".npy":
            return np.load(path)
        if _is_palette_image(path):  # OpenCV would expand the palette indices (class labels) to their colours
            with PIL.Image.open(path) as image:
                return np.asarray(image)
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise ValueError(f"Cannot read the {what} file {path}")
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if array.ndim == 3 and array.shape[2] == 3 else array
    if value is None:
        raise ValueError(f"The {what} is missing")
    return np.asarray(value)


def _is_palette_image(path: Path) -> bool:
    try:
        with PIL.Image.open(path) as image:
            return image.mode == "P"
    except (PIL.UnidentifiedImageError, OSError):
        return False


@dataclass
class DataCheckArguments:
    """Whether the example scripts read every sample once before training (`TransformedDataset.check`)."""

    check_data: bool = field(
        default=True,
        metadata={
            "help": "Read every image and target once before training and stop with a list of the unreadable or "
            "invalid ones (e.g. colour or out-of-range segmentation labels, truncated images)."
        },
    )


# ---------------------------------------------------------------------------------------------------------------
# Photometric augmentations (albumentations)
# ---------------------------------------------------------------------------------------------------------------


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import otherwise asks PyPI for a newer version
    import albumentations

    return albumentations


def photometric_distortion(p: float = 0.5) -> list:
    """mmcv's `PhotoMetricDistortion` as albumentations transforms, each applied with probability `p`: brightness
    ±32 (additive), contrast ×[0.5, 1.5] (multiplicative, as mmcv), saturation ×[0.5, 1.5], hue ±18 (OpenCV units).
    Saturation blends with the grey image instead of scaling the HSV S channel; mmcv's random contrast-last order is
    not reproduced."""
    A = _albumentations()
    return [
        A.RandomBrightnessContrast(brightness_limit=(-32 / 255, 32 / 255), contrast_limit=0.0, p=p),
        A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=(-0.5, 0.5), p=p),
        A.ColorJitter(brightness=0.0, contrast=0.0, saturation=(0.5, 1.5), hue=0.0, p=p),
        A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=0, val_shift_limit=0, p=p),
    ]


def _apply(compose, rng: np.random.Generator, **data) -> dict:
    """Runs an albumentations `Compose` with randomness drawn from `rng` (shared by all its transforms)."""
    compose.set_random_state(rng, random.Random(int(rng.integers(2**63))))
    return compose(**data)


# ---------------------------------------------------------------------------------------------------------------
# Top-down pose: COCO-format data, the original train augmentations, UDP crops and heatmap targets
# ---------------------------------------------------------------------------------------------------------------


def load_coco_keypoints(
    annotation_file: str | os.PathLike, image_dir: str | os.PathLike
) -> tuple[datasets.Dataset, int]:
    """One row per annotated person of a COCO-format keypoint file: `image` (path), `image_id`, `bbox` ([x, y, w, h]),
    `keypoints` (K×3 flat: x, y, visibility), `area`. Crowd annotations, people without a labelled keypoint and
    degenerate boxes are skipped. Returns the dataset and K (17, 133 or 308, from the category definition)."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"No COCO annotation file at {annotation_file}")
    coco = json.loads(annotation_file.read_text())
    for key in ("images", "annotations"):
        if key not in coco:
            raise ValueError(f"{annotation_file} is not a COCO keypoint file: the {key!r} list is missing")
    categories = [c for c in coco.get("categories", []) if c.get("keypoints")]
    if len({len(c["keypoints"]) for c in categories}) > 1:
        raise ValueError(f"{annotation_file}: categories define different keypoint counts")
    num_keypoints = len(categories[0]["keypoints"]) if categories else None
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    rows = []
    for annotation in coco["annotations"]:
        keypoints = np.asarray(annotation.get("keypoints", []), dtype=np.float64)
        if num_keypoints is None:
            num_keypoints = len(keypoints) // 3
        if keypoints.size != 3 * num_keypoints:
            raise ValueError(
                f"{annotation_file}: annotation {annotation.get('id')} has {keypoints.size} keypoint values, "
                f"expected {3 * num_keypoints} (x, y, visibility for {num_keypoints} keypoints)"
            )
        bbox = np.asarray(annotation.get("bbox", []), dtype=np.float64)
        if bbox.shape != (4,):
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} needs a [x, y, width, height] bbox")
        if not np.isfinite(keypoints).all() or not np.isfinite(bbox).all():
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} has NaN/infinite values")
        x, y, width, height = bbox.tolist()
        if annotation.get("iscrowd", 0) or (keypoints[2::3] > 0).sum() == 0 or width <= 0 or height <= 0:
            continue
        if annotation["image_id"] not in files:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} refers to unknown image_id")
        rows.append(
            {
                "image": str(image_dir / files[annotation["image_id"]]),
                "image_id": int(annotation["image_id"]),
                "bbox": [float(x), float(y), float(width), float(height)],
                "keypoints": keypoints.tolist(),
                "area": float(annotation.get("area", width * height)),
            }
        )
    if not rows:
        raise ValueError(f"{annotation_file} has no person with a labelled keypoint")
    metadata.keypoint_set(num_keypoints)  # clear error for a keypoint count no released model has
    missing = sorted({row["image"] for row in rows if not os.path.isfile(row["image"])})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images of {annotation_file} are missing in {image_dir}, e.g. {missing[0]}"
        )
    return datasets.Dataset.from_list(rows), num_keypoints


def _truncated_normal(rng: np.random.Generator, size=None) -> np.ndarray:
    """Standard normal truncated to [−1, 1] (mmpose's `_truncnorm`)."""
    from scipy.stats import truncnorm

    return truncnorm.rvs(-1.0, 1.0, size=size, random_state=rng)


def _rotation_about(center: np.ndarray, degrees: float) -> np.ndarray:
    """3×3 rotation by `degrees` about `center` with mmpose's sign convention (x' = cos·x − sin·y)."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = float(center[0]), float(center[1])
    return np.array([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy], [0.0, 0.0, 1.0]])


@dataclass
class PoseAugmentation:
    """Parameters of the original top-down training augmentations (mmpose defaults used by the Sapiens configs)."""

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    half_body_upper_prob: float = 0.7
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    photometric_prob: float = 0.5
    blur_prob: float = 0.1
    median_blur_prob: float = 0.1
    dropout_size: tuple[float, float] = (0.2, 0.4)
    dropout_prob: float = 1.0


class PoseTransform:
    """COCO person row → `pixel_values` (normalised UDP crop), `labels` (UDP Gaussian heatmaps) and `label_weights`.

    Evaluation: the processor's own crop of the box (1.25 padding, aspect fixed). Training, as the original pipeline:
    random flip (keypoints mirrored and left/right swapped), half-body box, box shift/scale/rotation, the UDP affine
    crop, photometric distortion, blur, median blur and one coarse-dropout hole.
    """

    def __init__(
        self,
        processor: SapiensImageProcessorPil,
        num_keypoints: int,
        train: bool,
        augmentation: PoseAugmentation | None = None,
    ):
        self.processor, self.num_keypoints, self.train = processor, num_keypoints, train
        self.aug = augmentation or PoseAugmentation()
        keypoint_set = metadata.keypoint_set(num_keypoints)
        self.flip_indices = np.asarray(keypoint_set["flip_indices"])
        self.upper_body_ids = list(keypoint_set["upper_body_ids"])
        self.lower_body_ids = list(keypoint_set["lower_body_ids"])
        self.input_size = (processor.size["width"], processor.size["height"])
        factor = processor.keypoint_heatmap_downscale_factor
        self.heatmap_size = (self.input_size[0] // factor, self.input_size[1] // factor)
        if train:
            A = _albumentations()
            self.pixel_augment = A.Compose(
                photometric_distortion(self.aug.photometric_prob)
                + [
                    A.Blur(p=self.aug.blur_prob),
                    A.MedianBlur(p=self.aug.median_blur_prob),
                    A.CoarseDropout(
                        num_holes_range=(1, 1),
                        hole_height_range=self.aug.dropout_size,
                        hole_width_range=self.aug.dropout_size,
                        p=self.aug.dropout_prob,
                    ),
                ]
            )

    def check(self, example: dict) -> None:
        """Raises if the image of `example` cannot be read (see `TransformedDataset.check`)."""
        read_image(example["image"])

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image = read_image(example["image"])
        keypoints = np.asarray(example["keypoints"], dtype=np.float32).reshape(-1, 3)
        if len(keypoints) != self.num_keypoints:
            raise ValueError(f"A person has {len(keypoints)} keypoints, the model predicts {self.num_keypoints}")
        if not self.train:
            data = self.processor(
                images=[image], boxes=[[example["bbox"]]], keypoints=[[keypoints]], return_tensors="pt"
            )
            return {
                "pixel_values": data["pixel_values"][0],
                "labels": data["labels"][0],
                "label_weights": data["label_weights"][0],
            }

        x, y, width, height = example["bbox"]
        center = np.array([x + width / 2, y + height / 2], dtype=np.float32)
        scale = np.array([width, height], dtype=np.float32) * self.processor.box_padding
        if rng.random() < self.aug.flip_prob:
            image, keypoints, center = self._flip(image, keypoints, center)
        if rng.random() < self.aug.half_body_prob:
            center, scale = self._half_body(keypoints, center, scale, rng)
        center, scale, rotation = self._jitter_box(center, scale, rng)
        # The crop: the box widened to the input aspect ratio, then the UDP warp rotated about the box centre.
        box = np.concatenate([center - scale / 2, scale])[None]
        center, scale = (value[0] for value in get_box_center_scale(box, self.input_size, padding=1.0))
        matrix = (
            np.vstack([get_udp_warp_matrix(center, scale, self.input_size), [0, 0, 1]])
            @ _rotation_about(center, rotation)
        )[:2]
        crop = warp_affine_bilinear(image, matrix.astype(np.float32), self.input_size)
        crop = _apply(self.pixel_augment, rng, image=crop)["image"]
        in_crop = cv2.transform(np.ascontiguousarray(keypoints[None, :, :2]), matrix)[0]
        heatmaps, weights = generate_udp_heatmaps(
            in_crop,
            np.minimum(1, keypoints[:, 2]),
            self.input_size,
            self.heatmap_size,
            self.processor.keypoint_heatmap_sigma,
        )
        pixel_values = self.processor(images=crop, do_resize=False, return_tensors="pt")["pixel_values"][0]
        return {
            "pixel_values": pixel_values,
            "labels": torch.from_numpy(heatmaps),
            "label_weights": torch.from_numpy(weights),
        }

    def _flip(self, image, keypoints, center):
        """mmpose `RandomFlip`: x → W − 1 − x for keypoints and box centre, left/right keypoints swapped."""
        width = image.shape[1]
        keypoints = keypoints[self.flip_indices].copy()
        keypoints[:, 0] = width - 1 - keypoints[:, 0]
        return np.ascontiguousarray(image[:, ::-1]), keypoints, np.array([width - 1 - center[0], center[1]], np.float32)

    def _half_body(self, keypoints, center, scale, rng):
        """mmpose `RandomHalfBody`: a box around the visible upper- (preferred with p 0.7) or lower-body keypoints."""
        visible = keypoints[:, 2] > 0
        if visible.sum() < self.aug.half_body_min_keypoints:
            return center, scale
        upper = [i for i in self.upper_body_ids if visible[i]]
        lower = [i for i in self.lower_body_ids if visible[i]]
        prefer_upper = rng.random() < self.aug.half_body_upper_prob
        enough_upper, enough_lower = (
            len(upper) >= self.aug.half_body_min_upper,
            len(lower) >= self.aug.half_body_min_lower,
        )
        if not enough_upper and not enough_lower:
            return center, scale
        ids = upper if not enough_lower or (enough_upper and prefer_upper) else lower
        points = keypoints[ids, :2]
        extent = points.max(axis=0) - points.min(axis=0)
        if not extent.any():  # coincident keypoints give no box
            return center, scale
        return points.mean(axis=0), extent * self.aug.half_body_padding

    def _jitter_box(self, center, scale, rng):
        """mmpose `RandomBBoxTransform`: truncated-normal shift (× box size), scale and rotation (degrees)."""
        aug = self.aug
        if rng.random() < aug.shift_prob:
            center = center + _truncated_normal(rng, 2) * aug.shift_factor * scale
        low, high = aug.scale_range
        if rng.random() < aug.scale_prob:
            scale = scale * (_truncated_normal(rng) * (high - low) / 2 + (high + low) / 2)
        rotation = _truncated_normal(rng) * aug.rotate_factor if rng.random() < aug.rotate_prob else 0.0
        return center.astype(np.float32), scale.astype(np.float32), float(rotation)


# ---------------------------------------------------------------------------------------------------------------
# Dense tasks: folders / Hub datasets, the original train augmentations, targets
# ---------------------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DENSE_TASKS = ("segmentation", "depth", "normal")


def load_dense_folder(
    directory: str | os.PathLike, target_dir: str, mask_dir: str | None = "masks"
) -> datasets.Dataset:
    """`directory/images/<name>.<ext>` paired by file stem with `directory/<target_dir>/<name>.*` (and, when
    `directory/<mask_dir>` exists, a foreground mask `directory/<mask_dir>/<name>.*`). Columns `image`, `target` and
    `mask` hold file paths."""
    directory = Path(directory)
    image_dir, targets_dir = directory / "images", directory / target_dir
    for folder in (image_dir, targets_dir):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Expected a folder {folder} (layout: {directory}/images, {directory}/{target_dir})"
            )
    masks_dir = directory / mask_dir if mask_dir else None
    if masks_dir is not None and not masks_dir.is_dir():
        masks_dir = None

    def by_stem(folder: Path) -> dict[str, Path]:
        return {path.stem: path for path in sorted(folder.iterdir()) if path.is_file()}

    images = {stem: path for stem, path in by_stem(image_dir).items() if path.suffix.lower() in IMAGE_EXTENSIONS}
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    targets, masks = by_stem(targets_dir), by_stem(masks_dir) if masks_dir else {}
    missing = sorted(set(images) - set(targets))
    if missing:
        raise FileNotFoundError(f"{len(missing)} images have no file in {targets_dir}, e.g. {missing[0]!r}")
    if masks_dir and (missing := sorted(set(images) - set(masks))):
        raise FileNotFoundError(f"{len(missing)} images have no mask in {masks_dir}, e.g. {missing[0]!r}")
    rows = [
        {"image": str(path), "target": str(targets[stem]), "mask": str(masks[stem]) if masks else None}
        for stem, path in images.items()
    ]
    return datasets.Dataset.from_list(rows)


def segmentation_flip_pairs(id2label: dict) -> list[list[int]]:
    """Label pairs swapped by a horizontal flip, matched by name (`Left_X` ↔ `Right_X`, case-insensitive); for the 28
    Goliath classes this is the original's table (4, 13), (5, 14), …, (11, 20)."""
    by_name = {str(name).lower(): int(index) for index, name in id2label.items()}
    return [
        [index, by_name[name.replace("left", "right", 1)]]
        for name, index in sorted(by_name.items(), key=lambda item: item[1])
        if name.startswith("left") and name.replace("left", "right", 1) in by_name
    ]


@dataclass
class DenseAugmentation:
    """Parameters of the original dense-task training augmentations (seg / depth / normal configs)."""

    background_prob: float = 0.5
    scale_range: tuple[float, float] = (0.2, 2.0)
    rotate_degrees: float = 0.0
    rotate_prob: float = 0.5
    flip_prob: float = 0.5
    photometric_prob: float = 0.5

    @classmethod
    def for_task(cls, task: str) -> "DenseAugmentation":
        return {
            "segmentation": cls(background_prob=0.8, rotate_degrees=45.0),
            "depth": cls(rotate_degrees=60.0),
            "normal": cls(),  # the normal configs do not rotate
        }[task]


class DenseTransform:
    """Image + target row → `pixel_values` and `labels` for segmentation (`(H, W)` class indices), depth (`(H, W)`,
    foreground depth min-max normalised to [0, 1], background −1, as `GenerateDepthTarget`) or normals (`(3, H, W)`,
    background −1000, as `GenerateNormalTarget`).

    Evaluation: image and target resized to the model input (targets nearest-neighbour). Training, as the original
    pipelines: random background (when `background_images` are given), random rescale (0.2–2× the input-fitting
    scale), random crop of the input size, rotation (segmentation ±45°, depth ±60°), horizontal flip (segmentation
    swaps left/right labels, normals negate x) and photometric distortion. Deviation: an image rescaled below the
    input size is padded (labels ignored / background) instead of stretched back to it.
    """

    def __init__(
        self,
        task: str,
        processor: SapiensImageProcessorPil,
        train: bool,
        augmentation: DenseAugmentation | None = None,
        background_images: Sequence[str] | None = None,
        flip_pairs: Sequence[Sequence[int]] = (),
        ignore_index: int = 255,
        num_labels: int | None = None,
    ):
        if task not in DENSE_TASKS:
            raise ValueError(f"task must be one of {DENSE_TASKS}, got {task!r}")
        self.task, self.processor, self.train, self.ignore_index = task, processor, train, ignore_index
        self.num_labels = num_labels  # segmentation labels are checked to be < num_labels (or ignore_index)
        self.aug = augmentation or DenseAugmentation.for_task(task)
        self.background_images = list(background_images or [])
        self.label_map = np.arange(256, dtype=np.uint8)
        for left, right in flip_pairs:
            self.label_map[left], self.label_map[right] = right, left
        if train:
            A = _albumentations()
            height, width = processor.size["height"], processor.size["width"]
            # Padding of small images: ignored label for segmentation, background (mask 0) for depth/normals.
            fill_mask = ignore_index if task == "segmentation" else 0
            low, high = self.aug.scale_range
            spatial = [
                A.LongestMaxSize(max_size_hw=(height, width), p=1.0),
                A.RandomScale(scale_limit=(low - 1, high - 1), p=1.0),
                A.PadIfNeeded(min_height=height, min_width=width, position="random", fill=0, fill_mask=fill_mask),
                A.RandomCrop(height=height, width=width),
            ]
            if self.aug.rotate_degrees:
                # The original pads rotated segmentation maps with 0 (background); depth/normal masks with 0.
                spatial.append(A.Rotate(limit=self.aug.rotate_degrees, fill=0, fill_mask=0, p=self.aug.rotate_prob))
            spatial.append(A.HorizontalFlip(p=self.aug.flip_prob))
            self.spatial = A.Compose(spatial, additional_targets={"target": "mask"}, save_applied_params=True)
            self.photometric = A.Compose(photometric_distortion(self.aug.photometric_prob))

    def check(self, example: dict) -> None:
        """Raises if the image, target or mask of `example` cannot be read or is invalid (see
        `TransformedDataset.check`)."""
        self._read(example)

    def _read(self, example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, target and foreground mask (uint8, 1 = person) with checked shapes and values."""
        image = read_image(example["image"])
        target = read_array(example["target"], f"{self.task} target")
        if self.task == "segmentation":
            target = self._class_indices(target, example["target"])
            foreground = ((target != 0) & (target != self.ignore_index)).astype(np.uint8)
        elif self.task == "depth":
            target = target.astype(np.float32)
            if target.ndim == 3:
                target = target[..., 0]
            foreground = (np.isfinite(target) & (target > 0)).astype(np.uint8)
        else:
            if target.ndim != 3 or target.shape[-1] != 3:
                raise ValueError(f"Normal maps must be (height, width, 3) arrays, got shape {target.shape}")
            if target.dtype == np.uint8:  # an 8-bit RGB encoding of [-1, 1]
                target = target / np.float32(127.5) - 1
            target = target.astype(np.float32)
            foreground = (np.isfinite(target).all(-1) & (np.abs(target).sum(-1) > 0)).astype(np.uint8)
        if target.shape[:2] != image.shape[:2]:
            raise ValueError(f"Image {image.shape[:2]} and {self.task} target {target.shape[:2]} differ in size")
        if example.get("mask") is not None:
            mask = read_array(example["mask"], "mask")
            mask = mask[..., 0] if mask.ndim == 3 else mask
            if mask.shape != image.shape[:2]:
                raise ValueError(f"Image {image.shape[:2]} and mask {mask.shape} differ in size")
            foreground &= (mask > 0).astype(np.uint8)
        if self.task != "segmentation":
            target = np.where(foreground[..., None] if target.ndim == 3 else foreground, target, 0).astype(np.float32)
        return image, target, foreground

    def _class_indices(self, target: np.ndarray, source) -> np.ndarray:
        """A segmentation label as uint8 class indices, checked against `num_labels` and `ignore_index`."""
        label = f"The segmentation label {source}" if isinstance(source, (str, os.PathLike)) else "A segmentation label"
        if target.ndim == 3:  # a label PNG saved as RGB(A): usable only with equal colour channels
            if not (target[..., :3] == target[..., :1]).all():
                raise ValueError(
                    f"{label} is a colour image: labels must be single-channel class indices (a greyscale or "
                    "palette PNG), not colours"
                )
            target = target[..., 0]
        if not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"{label} has {target.dtype} values: labels must be integer class indices")
        out_of_range = (target < 0) | ((target >= (self.num_labels or 256)) & (target != self.ignore_index))
        invalid = np.unique(target[out_of_range])
        if invalid.size:
            classes = f"the {self.num_labels} classes 0-{self.num_labels - 1}" if self.num_labels else "0-255"
            raise ValueError(
                f"{label} has the value(s) {', '.join(map(str, invalid[:10]))} outside {classes} "
                f"(and {self.ignore_index} = ignore)"
            )
        return target.astype(np.uint8)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image, target, foreground = self._read(example)
        if self.train:
            if self.background_images and rng.random() < self.aug.background_prob:
                image = self._random_background(image, foreground, rng)
            out = _apply(self.spatial, rng, image=image, mask=foreground, target=target)
            image, foreground, target = out["image"], out["mask"], out["target"]
            if any(name == "HorizontalFlip" for name, _ in out["applied_transforms"]):
                if self.task == "segmentation":
                    target = self.label_map[target]
                elif self.task == "normal":
                    target = target * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
            image = _apply(self.photometric, rng, image=image)["image"]
        kwargs = {"segmentation": "segmentation_maps", "depth": "depth_maps", "normal": "normal_maps"}
        data = self.processor(
            images=image, **{kwargs[self.task]: self._target(target, foreground)}, return_tensors="pt"
        )
        return {"pixel_values": data["pixel_values"][0], "labels": data["labels"][0]}

    def _target(self, target: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        if self.task == "segmentation":
            return target
        if self.task == "depth":  # GenerateDepthTarget
            target = target.copy()
            values = target[foreground > 0]
            if values.size and values.max() > values.min():
                target = (target - values.min()) / (values.max() - values.min())
            target[foreground == 0] = -1.0
            return target
        target = target.copy()  # GenerateNormalTarget
        target[foreground == 0] = -1000.0
        return target

    def _random_background(self, image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Background pixels replaced by a random non-human image resized to the image (`RandomBackground`)."""
        background = read_image(self.background_images[int(rng.integers(len(self.background_images)))])
        background = cv2.resize(background, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.where(foreground[..., None] > 0, image, background)


@dataclass
class DenseDataArguments(DataCheckArguments):
    """Data of the dense tasks: folders (`<dir>/images` + `<dir>/<target_folder>` [+ `<dir>/masks`]) or a Hub
    dataset with an image column, a target column and optionally a mask column."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id or local dataset folder."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    train_dir: str | None = field(default=None, metadata={"help": "Training folder (images/, targets, masks/)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation folder, same layout."})
    image_column: str = field(default="image", metadata={"help": "Image column of the Hub dataset."})
    target_column: str | None = field(
        default=None, metadata={"help": "Target column (default: label / depth / normal)."}
    )
    mask_column: str | None = field(default="mask", metadata={"help": "Foreground-mask column, used if present."})
    target_folder: str | None = field(
        default=None, metadata={"help": "Target sub-folder of train_dir (default: labels / depth / normals)."}
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of the training data held out when there is no validation split."}
    )
    background_dir: str | None = field(
        default=None, metadata={"help": "Folder of people-free images for the random-background augmentation."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set."})


DEFAULT_TARGETS = {"segmentation": ("label", "labels"), "depth": ("depth", "depth"), "normal": ("normal", "normals")}


def load_dense_splits(data_args: DenseDataArguments, task: str, cache_dir: str | None = None) -> dict:
    """`train` / `validation` datasets with `image`, `target` and `mask` columns from folders or a Hub dataset."""
    column, folder = DEFAULT_TARGETS[task]
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
        target_column = data_args.target_column or column
        splits = {}
        for split, dataset in raw.items():
            missing = {data_args.image_column, target_column} - set(dataset.column_names)
            if missing:
                raise ValueError(f"Split {split!r} of {data_args.dataset_name} lacks the columns {sorted(missing)}")
            columns = {data_args.image_column: "image", target_column: "target"}
            if data_args.mask_column in dataset.column_names:
                columns[data_args.mask_column] = "mask"
            splits[split] = dataset.select_columns(list(columns)).rename_columns(columns)
        if "validation" not in splits and "train" in splits and data_args.train_val_split > 0:
            held_out = splits["train"].train_test_split(data_args.train_val_split, seed=0)
            splits["train"], splits["validation"] = held_out["train"], held_out["test"]
    else:
        target_folder = data_args.target_folder or folder
        splits = {
            split: load_dense_folder(directory, target_folder)
            for split, directory in (("train", data_args.train_dir), ("validation", data_args.validation_dir))
            if directory
        }
    if not splits:
        raise ValueError("Pass --dataset_name or --train_dir / --validation_dir")
    return splits


def prepare_datasets(
    splits: dict, make_transform: Callable[[bool], Callable], data_args, training_args: TrainingArguments
) -> tuple[TransformedDataset | None, TransformedDataset | None]:
    """The training and evaluation datasets the Trainer needs (checked against `do_train` / `do_eval`), truncated to
    `max_*_samples`, wrapped with the train / eval transform (`make_transform(train)`) and, unless
    `data_args.check_data` is false, checked sample by sample (`TransformedDataset.check`)."""
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    prepared = []
    for split, needed, limit, train in (
        ("train", training_args.do_train, data_args.max_train_samples, True),
        ("validation", training_args.do_eval, data_args.max_eval_samples, False),
    ):
        if not needed:
            prepared.append(None)
            continue
        if split not in splits:
            raise ValueError(f"--do_{'train' if train else 'eval'} needs a {split} split")
        dataset = splits[split]
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        prepared.append(TransformedDataset(dataset, make_transform(train), seed))
        if getattr(data_args, "check_data", True):
            prepared[-1].check(split)
    return prepared[0], prepared[1]


def list_images(directory: str | os.PathLike | None) -> list[str]:
    """Image files of a folder (e.g. the non-human backgrounds of `RandomBackground`)."""
    if directory is None:
        return []
    paths = sorted(str(p) for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"No images in {directory}")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Shared plumbing of the example scripts
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A converted checkpoint folder or Hub id (also Meta's original repos, e.g. "
            "facebook/sapiens-pretrain-1b)."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Train from scratch: a size preset (sapiens-0.3b … sapiens-2b) or a config.json path."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config fields to override, e.g. 'num_hidden_layers=2,hidden_size=64'."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialise checkpoint weights whose shape differs, e.g. a head for another keypoint set."
        },
    )
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor folder or Hub id."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded models."})
    model_revision: str = field(default="main", metadata={"help": "Model revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})


def parse_arguments(*dataclass_types, args: list[str] | None = None):
    """`HfArgumentParser` over the dataclasses. A first argument ending in `.json` is a preset (e.g.
    `examples/deepspeed/sapiens_2b_pose.json`) whose values the following command-line arguments override. Also sets
    up logging and the CPU DeepSpeed fix-up. `--bf16` without a GPU exits with a one-line hint (drop it, or add
    `--use_cpu`)."""
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0].endswith(".json"):
        preset = json.loads(Path(args[0]).read_text())
        args = [item for key, value in preset.items() for item in _as_cli(key, value)] + args[1:]
    try:
        parsed = HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=args)
    except ValueError as error:  # TrainingArguments refuses --bf16 without a bf16-capable accelerator
        if "--bf16" not in args or torch.cuda.is_available():
            raise
        raise SystemExit(
            "--bf16 needs a GPU and none was found: on a CPU, drop --bf16 (fp32, also the faster there) or add "
            "--use_cpu to train in bf16 anyway"
        ) from error
    training_args = next(arg for arg in parsed if isinstance(arg, TrainingArguments))
    setup_deepspeed_on_cpu(training_args)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(f"Training/evaluation parameters {training_args}")
    return parsed


def _as_cli(key: str, value) -> list[str]:
    """A preset entry as command-line arguments (dicts as JSON strings, which TrainingArguments parses)."""
    values = value if isinstance(value, list) else [json.dumps(value) if isinstance(value, dict) else value]
    return [f"--{key}", *map(str, values)]


def setup_deepspeed_on_cpu(training_args: TrainingArguments) -> None:
    """Work around accelerate (≤ 1.15) on CPU-only machines: with DeepSpeed it builds its state without a backend
    and reports one process, so every rank trains on the whole dataset and DeepSpeed's batch-size check fails.
    Rebuilds the state on DeepSpeed's gloo process group. A no-op on GPUs and single-process runs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not training_args.deepspeed or torch.cuda.is_available() or training_args.world_size == world_size:
        return
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    training_args.accelerator_config.use_configured_state = True
    del training_args.__dict__["_setup_devices"]  # cached_property: recompute the device / world size
    if training_args.world_size != world_size:
        raise RuntimeError(f"Could not set up {world_size} DeepSpeed ranks on CPU (got {training_args.world_size})")
    # The "auto" batch sizes were filled for one process: fill them again, as TrainingArguments.__post_init__ does.
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    training_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(training_args.deepspeed)
    training_args.hf_deepspeed_config.trainer_config_process(training_args)
    training_args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=training_args.hf_deepspeed_config)


def load_model(model_class, model_args: ModelArguments, **config_kwargs):
    """A `SapiensFor*` task model from `model_name_or_path` (a checkpoint without this head, e.g. a pretrained
    backbone, gets a new one) or, with `config_name`, freshly initialised; `config_kwargs` set config fields. The
    concrete class, not an Auto class: its `from_pretrained` also converts Meta's original repos, which have no
    config.json. Build it after `TrainingArguments`, so that DeepSpeed ZeRO-3 partitions it while loading."""
    overrides = parse_config_overrides(model_args.config_overrides)
    if model_args.model_name_or_path:
        return model_class.from_pretrained(
            model_args.model_name_or_path,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=model_args.token,
            # Only when asked: Meta's original repos (converted on load) take no such option.
            **({"ignore_mismatched_sizes": True} if model_args.ignore_mismatched_sizes else {}),
            **overrides,
            **config_kwargs,
        )
    if not model_args.config_name:
        raise ValueError("Pass --model_name_or_path (fine-tune a checkpoint) or --config_name (train from scratch)")
    name, fields = model_args.config_name, {**overrides, **config_kwargs}
    # Fields go through the constructor (not setattr afterwards) so derived ones, e.g. stage names, follow them.
    if name.lower().removeprefix("sapiens-") in ("0.3b", "0.6b", "1b", "2b"):
        config = SapiensConfig.from_preset(name, task=model_class.task, **fields)
    else:
        values = {
            k: v for k, v in SapiensConfig.get_config_dict(name)[0].items() if k not in ("out_features", "out_indices")
        }
        config = SapiensConfig.from_dict({**values, **fields})
    return model_class._from_config(config)  # as Auto*.from_config: under ZeRO-3 built inside zero.Init


def parse_config_overrides(text: str | None) -> dict:
    """'a=1,b=[16,16],c=x' → {'a': 1, 'b': [16, 16], 'c': 'x'} (values parsed as JSON when possible)."""
    overrides = {}
    for item in filter(None, re.split(r",(?=\w+=)", (text or "").replace(" ", ""))):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def load_image_processor(model_args: ModelArguments) -> SapiensImageProcessorPil:
    """The processor saved with the model, or the default 1024×768 one."""
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name and (not os.path.isdir(name) or os.path.isfile(os.path.join(name, "preprocessor_config.json"))):
        try:
            return SapiensImageProcessorPil.from_pretrained(
                name, cache_dir=model_args.cache_dir, token=model_args.token
            )
        except OSError:
            logger.warning(f"No image processor found at {name}; using the default Sapiens processor")
    return SapiensImageProcessorPil()


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` that the Trainer finished writing, or None.

    The Trainer writes a checkpoint in place, `trainer_state.json` last (after the weights, optimizer, scheduler and
    RNG states), so a folder without a readable one was cut off mid-save, e.g. by a killed job. Such folders are
    skipped with a warning and left as they are (the resumed run overwrites them when it reaches their step)."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    folders = Path(output_dir).iterdir() if os.path.isdir(output_dir) else ()
    steps = {int(match[1]): path for path in folders if path.is_dir() and (match := pattern.match(path.name))}
    for step in sorted(steps, reverse=True):
        try:
            json.loads((steps[step] / TRAINER_STATE_NAME).read_text())
            return str(steps[step])
        except (OSError, ValueError):
            logger.warning(
                f"Skipping the incomplete checkpoint {steps[step]}: it has no readable {TRAINER_STATE_NAME}, which "
                "the Trainer writes last (the run was probably stopped while saving it)"
            )
    return None


def train_and_evaluate(trainer: Trainer, training_args: TrainingArguments, image_processor=None) -> dict:
    """The end of every example script: train (resuming from `--resume_from_checkpoint` or the last checkpoint in
    `output_dir`), save the model (consolidated under ZeRO-3) and processor, evaluate, log and save the metrics."""
    metrics = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint
        if checkpoint is None:
            checkpoint = last_complete_checkpoint(training_args.output_dir)
            if checkpoint is not None:
                logger.info(f"Resuming training from {checkpoint}")
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        if image_processor is not None and trainer.is_world_process_zero():
            image_processor.save_pretrained(training_args.output_dir)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics


__all__ = [
    "parameter_groups",
    "layer_id",
    "SapiensTrainingArguments",
    "SapiensTrainer",
    "TransformedDataset",
    "PoseAugmentation",
    "PoseTransform",
    "DenseAugmentation",
    "DenseTransform",
    "load_coco_keypoints",
    "load_dense_folder",
    "DenseDataArguments",
    "DataCheckArguments",
    "load_dense_splits",
    "prepare_datasets",
    "segmentation_flip_pairs",
    "photometric_distortion",
    "ModelArguments",
    "parse_arguments",
    "setup_deepspeed_on_cpu",
    "load_model",
    "load_image_processor",
    "last_complete_checkpoint",
    "train_and_evaluate",
]
