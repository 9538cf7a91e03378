"""Dense-task training data (segmentation, depth, normals): image/target folders or Hub datasets, the original train
augmentations (github.com/facebookresearch/sapiens `seg/configs/sapiens_{seg,depth,normal}/`: random background,
rescale, crop, rotation, flip with left/right label swaps, photometric distortion) and the targets of
`GenerateDepthTarget` / `GenerateNormalTarget`.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import datasets
import numpy as np

from ..image_processing_sapiens import SapiensImageProcessorPil
from ..tasks import DENSE_TASKS, TASKS
from .data import (
    IMAGE_EXTENSIONS,
    DataCheckArguments,
    _albumentations,
    _apply,
    photometric_distortion,
    read_array,
    read_image,
)


# ---------------------------------------------------------------------------------------------------------------
# Dense tasks: folders / Hub datasets, the original train augmentations, targets
# ---------------------------------------------------------------------------------------------------------------



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
        """The settings of the task's original train config (`Task.augmentation`; the normal configs do not rotate)."""
        return cls(**dict(TASKS[task].augmentation))


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
        self.task, self.processor, self.train, self.ignore_index = TASKS[task], processor, train, ignore_index
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
            fill_mask = ignore_index if self.task.classes else 0
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
        self.read(example)

    def read(self, example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image, target and foreground mask (uint8, 1 = person) with checked shapes and values."""
        image = read_image(example["image"])
        target = read_array(example["target"], f"{self.task.name} target")
        if self.task.classes:
            target = self._class_indices(target, example["target"])
            foreground = ((target != 0) & (target != self.ignore_index)).astype(np.uint8)
        elif self.task.output_channels == 1:  # depth
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
            raise ValueError(f"Image {image.shape[:2]} and {self.task.name} target {target.shape[:2]} differ in size")
        if example.get("mask") is not None:
            mask = read_array(example["mask"], "mask")
            mask = mask[..., 0] if mask.ndim == 3 else mask
            if mask.shape != image.shape[:2]:
                raise ValueError(f"Image {image.shape[:2]} and mask {mask.shape} differ in size")
            foreground &= (mask > 0).astype(np.uint8)
        if not self.task.classes:
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
        image, target, foreground = self.read(example)
        if self.train:
            if self.background_images and rng.random() < self.aug.background_prob:
                image = self._random_background(image, foreground, rng)
            out = _apply(self.spatial, rng, image=image, mask=foreground, target=target)
            image, foreground, target = out["image"], out["mask"], out["target"]
            if any(name == "HorizontalFlip" for name, _ in out["applied_transforms"]):
                if self.task.classes:
                    target = self.label_map[target]
                elif self.task.output_channels == 3:  # normals: x points the other way
                    target = target * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
            image = _apply(self.photometric, rng, image=image)["image"]
        data = self.processor(
            images=image, **{self.task.target_argument: self._target(target, foreground)}, return_tensors="pt"
        )
        return {"pixel_values": data["pixel_values"][0], "labels": data["labels"][0]}

    def _target(self, target: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        if self.task.classes:
            return target
        if self.task.output_channels == 1:  # GenerateDepthTarget
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


# Where each dense task's labels are by default: (Hub dataset column, folder next to the images).
DEFAULT_TARGETS = {name: TASKS[name].training_target for name in DENSE_TASKS}


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
