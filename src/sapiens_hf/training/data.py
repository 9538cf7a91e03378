"""What the pose and dense training data share: `TransformedDataset`, which applies a transform to every sample with
randomness drawn from a generator seeded by (seed, epoch, index), so augmentations are reproducible across dataloader
workers and resumed runs; the readers of image and target columns; the check that reads every sample once before
training; the albumentations helpers; and the image files of a folder.

Augmentations are built on albumentations (photometric distortion, blur, coarse dropout, resize/crop/rotate/flip of
dense targets) and on the image processor (UDP crops, heatmap targets); what no library does (top-down box jitter,
half-body crops, left/right label swaps, random backgrounds) is written in `pose_data` and `dense_data`.
"""

import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import datasets
import numpy as np
import PIL.Image
import torch
from transformers import TrainingArguments

from ..image_io import read_image  # noqa: F401  (image columns: path, PIL image or array)


# ---------------------------------------------------------------------------------------------------------------
# Datasets with reproducible per-sample randomness, the readers of their columns, the check before training
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
# Image files of a folder
# ---------------------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(directory: str | os.PathLike | None) -> list[str]:
    """Image files of a folder (e.g. the non-human backgrounds of `RandomBackground`)."""
    if directory is None:
        return []
    paths = sorted(str(p) for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"No images in {directory}")
    return paths
