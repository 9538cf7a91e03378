"""Label metadata of the released Sapiens checkpoints, parsed from the original dataset configs:
keypoint sets (COCO 17, COCO-WholeBody 133, Goliath 308) with their drawing colours, and the 28 Goliath body-part
classes with their palette."""

import json
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

KEYPOINT_SET_BY_COUNT = {17: "coco", 133: "coco_wholebody", 308: "goliath"}

# Class weights of the original body-part segmentation loss (seg/configs/sapiens_seg/goliath).
CLASS_WEIGHTS = tuple(
    float(w) for w in (0.1, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1, 10, 10, 10, 10, 10)
)


@lru_cache
def _keypoint_sets() -> dict:
    sets = json.loads((DATA_DIR / "keypoint_sets.json").read_text())
    colors = json.loads((DATA_DIR / "keypoint_colors.json").read_text())
    return {name: {**sets[name], **colors[name]} for name in sets}


@lru_cache
def _seg_classes() -> dict:
    return json.loads((DATA_DIR / "seg_classes.json").read_text())


def keypoint_set(num_keypoints: int) -> dict:
    """Names, flip indices, skeleton links, OKS sigmas, keypoint/link colours (RGB), ... of the released set with that
    many keypoints. The returned dict is shared: copy it before changing it."""
    if num_keypoints not in KEYPOINT_SET_BY_COUNT:
        raise ValueError(
            f"No released keypoint set has {num_keypoints} keypoints (known: {sorted(KEYPOINT_SET_BY_COUNT)})"
        )
    return _keypoint_sets()[KEYPOINT_SET_BY_COUNT[num_keypoints]]


def flip_pairs(num_keypoints: int) -> list[list[int]]:
    """(left, right) index pairs swapped by a horizontal flip, from the set's flip indices."""
    flip_indices = keypoint_set(num_keypoints)["flip_indices"]
    return [[i, j] for i, j in enumerate(flip_indices) if i < j]


SEGMENTATION_CLASSES = tuple(_seg_classes()["classes"])
SEGMENTATION_PALETTE = tuple(tuple(color) for color in _seg_classes()["palette"])
