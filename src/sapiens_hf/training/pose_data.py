"""Top-down pose training data: COCO-format keypoint files, the original train augmentations (the mmpose defaults of
github.com/facebookresearch/sapiens `pose/configs/sapiens_pose/`: flip, half-body box, box shift/scale/rotation,
photometric distortion, blur, coarse dropout), UDP crops and heatmap targets. The box jitter, half-body crops and
left/right keypoint swaps are written here; the pixel augmentations are albumentations (see `data`).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import datasets
import numpy as np
import torch

from .. import metadata
from ..geometry import (
    generate_udp_heatmaps,
    get_box_center_scale,
    get_udp_warp_matrix,
    rotation_about,
    warp_affine_bilinear,
)
from ..image_processing_sapiens import SapiensImageProcessorPil
from .data import _albumentations, _apply, photometric_distortion, read_image


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
            @ rotation_about(center, rotation)
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
