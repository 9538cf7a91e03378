"""Keypoint formats: a pose model's keypoints re-expressed in another keypoint convention, by keypoint *name*.

    native           the model's own keypoints (Goliath 308, COCO-WholeBody 133, COCO 17, or a fine-tuned set)
    coco             COCO 17 (`metadata.KEYPOINT_SETS["coco"]`)
    coco-wholebody   COCO-WholeBody 133 (`metadata.KEYPOINT_SETS["coco_wholebody"]`)
    openpose         OpenPose 18, the body format of ControlNet's OpenPose conditioning: COCO 17 plus a neck, in
                     OpenPose order (lllyasviel/ControlNet `annotator/openpose/util.py`, `draw_bodypose`)

A target keypoint is taken from the source keypoint of the same name; where the two sets name the same joint
differently, `ALIASES` says so (checked against both sets' skeletons); `neck` of OpenPose is derived as the midpoint
of the shoulders with the lower of their two scores (OpenPose's neck is that interpolation, not an anatomical point).
A target keypoint that the source lacks is *missing*: NaN coordinates and score 0 (never drawn; 0, 0, 0 in COCO
files). A conversion that could only add blank points to what the source already has (COCO 17 → COCO-WholeBody 133),
or that shares no keypoint with the source, is refused. The coverage of each conversion is in
docs/keypoint-formats.md. NumPy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metadata import KEYPOINT_SETS


NATIVE = "native"


class KeypointFormatError(ValueError):
    """A keypoint format that a model's keypoints cannot give (or that does not exist)."""


# OpenPose 18 in OpenPose order, its limbs (ControlNet's `limbSeq`) by name and its 18 colours (RGB; keypoint i and
# limb i take colour i, as `draw_bodypose` does).
_OPENPOSE_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
_OPENPOSE_LIMBS = (
    ("neck", "right_shoulder"), ("neck", "left_shoulder"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("neck", "left_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("neck", "nose"), ("nose", "right_eye"),
    ("right_eye", "right_ear"), ("nose", "left_eye"), ("left_eye", "left_ear"),
)
_OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
    (255, 0, 255), (255, 0, 85), (255, 0, 170),
)

# Points computed from two source points: the midpoint, scored with the lower score.
DERIVED = {"neck": ("left_shoulder", "right_shoulder")}

# Target name → the source name of the same joint where the sets name it differently. COCO-WholeBody's hand root is
# the wrist, and its finger joints run 1 (at the palm) to 4 (the tip), where Goliath's run third_joint, 2, 3, 4: in
# both sets' skeletons the chain is wrist/hand_root → 1/third_joint → 2 → 3 → 4.
ALIASES = {
    f"{side}_{target}": f"{side}_{source}"
    for side in ("left", "right")
    for target, source in [("hand_root", "wrist")] + [
        (f"{finger}1", f"{finger}_third_joint")
        for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    ]
}


@dataclass(frozen=True)
class KeypointFormat:
    """A keypoint convention: names in order, skeleton links (index pairs), keypoint and link colours (RGB) and,
    where the set has them, OKS sigmas."""

    name: str
    keypoint_names: tuple[str, ...]
    skeleton_links: tuple[tuple[int, int], ...]
    keypoint_colors: tuple[tuple[int, int, int], ...]
    link_colors: tuple[tuple[int, int, int], ...]
    sigmas: tuple[float, ...] | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)


def _released(name: str, key: str) -> KeypointFormat:
    values = KEYPOINT_SETS[key]
    return KeypointFormat(name, tuple(values["keypoint_names"]), tuple(map(tuple, values["skeleton_links"])),
                          tuple(map(tuple, values["keypoint_colors"])), tuple(map(tuple, values["link_colors"])),
                          tuple(values["sigmas"]))


def _openpose() -> KeypointFormat:
    index = {name: position for position, name in enumerate(_OPENPOSE_NAMES)}
    links = tuple((index[a], index[b]) for a, b in _OPENPOSE_LIMBS)
    return KeypointFormat("openpose", _OPENPOSE_NAMES, links, _OPENPOSE_COLORS, _OPENPOSE_COLORS[: len(links)])


FORMATS: dict[str, KeypointFormat] = {
    "coco": _released("coco", "coco"),
    "coco-wholebody": _released("coco-wholebody", "coco_wholebody"),
    "openpose": _openpose(),
}
FORMAT_NAMES = (NATIVE, *FORMATS)


def keypoint_format(name: str) -> KeypointFormat:
    if not isinstance(name, str) or name not in FORMATS:
        raise KeypointFormatError(f"Unknown keypoint format {name!r}; choose one of {', '.join(FORMAT_NAMES)}")
    return FORMATS[name]


@dataclass(frozen=True)
class Conversion:
    """From a source set (names in order) to `target`: per target point, the source indices it is made of (none:
    missing; one: copied; two: their midpoint)."""

    target: KeypointFormat
    sources: tuple[tuple[int, ...], ...]

    @property
    def missing(self) -> list[str]:
        return [name for name, used in zip(self.target.keypoint_names, self.sources) if not used]

    @property
    def derived(self) -> list[str]:
        return [name for name, used in zip(self.target.keypoint_names, self.sources) if len(used) == 2]

    def apply(self, keypoints, scores) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints `(..., K, 2)` and scores `(..., K)` of the source → `(..., T, 2)` and `(..., T)` of the target
        (float32; missing points NaN with score 0)."""
        keypoints, scores = np.asarray(keypoints, np.float32), np.asarray(scores, np.float32)
        # A copied point is the midpoint of itself and itself ((a + a) / 2 == a exactly in floating point).
        first = [used[0] if used else 0 for used in self.sources]
        last = [used[-1] if used else 0 for used in self.sources]
        missing = np.array([not used for used in self.sources])
        out_points = (keypoints[..., first, :] + keypoints[..., last, :]) / np.float32(2)
        out_scores = np.minimum(scores[..., first], scores[..., last])
        out_points[..., missing, :], out_scores[..., missing] = np.nan, 0
        return out_points, out_scores

    def person(self, person: dict) -> dict:
        """One person of a pose result (`keypoints`, `scores` as tensors or arrays, and the rest) in the target
        format: `labels` are the target's indices and `keypoint_format` names it. Thresholding comes after."""
        keypoints, scores = person["keypoints"], person["scores"]
        tensors = hasattr(keypoints, "detach")
        if tensors:
            keypoints, scores = keypoints.detach().float().cpu().numpy(), scores.detach().float().cpu().numpy()
        keypoints, scores = self.apply(keypoints, scores)
        labels = np.arange(len(self.sources))
        if tensors:
            import torch

            keypoints, scores, labels = torch.from_numpy(keypoints), torch.from_numpy(scores), torch.from_numpy(labels)
        return {**person, "keypoints": keypoints, "scores": scores, "labels": labels,
                "keypoint_format": self.target.name}


def conversion(source_names, format_name: str) -> Conversion | None:
    """The conversion from keypoints named `source_names` (in order, e.g. a model's `id2label` values) to the format
    `format_name`; None for `native`. A KeypointFormatError for an unknown format and for a conversion that is refused (see
    the module's docstring)."""
    if format_name == NATIVE:
        return None
    target, source_names = keypoint_format(format_name), list(source_names)
    index = {name: position for position, name in enumerate(source_names)}
    sources = []
    for name in target.keypoint_names:
        if name in DERIVED and all(part in index for part in DERIVED[name]):  # also over a source's own `neck`
            sources.append(tuple(index[part] for part in DERIVED[name]))
        elif name in index:
            sources.append((index[name],))
        elif ALIASES.get(name) in index:
            sources.append((index[ALIASES[name]],))
        else:
            sources.append(())
    result = Conversion(target, tuple(sources))
    used = {position for parts in sources for position in parts}
    source = f"the model's {len(source_names)} keypoints"
    if not used:
        raise KeypointFormatError(f"Cannot convert {source} to {format_name}: they share no keypoint name with it")
    if result.missing and len(used) == len(source_names):
        raise KeypointFormatError(f"Cannot convert {source} to {format_name} ({target.num_keypoints} keypoints): it would only "
                         f"add {len(result.missing)} keypoints they do not have; use a model with more keypoints "
                         "(e.g. the 308-keypoint Goliath release) or a smaller format")
    return result


__all__ = ["ALIASES", "DERIVED", "FORMATS", "FORMAT_NAMES", "NATIVE", "Conversion", "KeypointFormat",
           "KeypointFormatError", "conversion", "keypoint_format"]
