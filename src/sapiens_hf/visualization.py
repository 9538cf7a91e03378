"""Drawing helpers for Sapiens predictions. Every function takes RGB images (PIL, or `(H, W, 3)` uint8 arrays) and
tensors/arrays as the post-processors and pipelines return them, and returns a PIL image."""

import cv2
import numpy as np
import PIL.Image
import torch

from . import metadata
from .keypoint_formats import keypoint_format
from .metadata import KEYPOINT_SET_BY_COUNT, SEGMENTATION_PALETTE, keypoint_set


# Colour of keypoints and links of keypoint sets without a released colour table, and of person boxes.
_DEFAULT_COLOR = (51, 153, 255)
_BOX_COLOR = (0, 255, 0)
_BACKGROUND = (100, 100, 100)  # the original depth/normal demos' grey background


def _rgb_array(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, PIL.Image.Image) else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected an RGB PIL image or a (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def _numpy(values) -> np.ndarray:
    return values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def draw_keypoints(
    image,
    people: list[dict],
    keypoint_threshold: float = 0.3,
    num_keypoints: int | None = None,
    radius: int | None = None,
    thickness: int | None = None,
    draw_boxes: bool = True,
) -> PIL.Image.Image:
    """Draws each person's skeleton (links and keypoints in the colours of the released keypoint set, or of the
    person's `keypoint_format` where the pipeline converted it) and box.

    Args:
        image: the image the keypoints refer to.
        people: dicts with `keypoints` `(K, 2)`, `scores` `(K,)` and optionally `labels` (keypoint indices, needed when
            the keypoints were thresholded) and `bbox_xywh` `(x, y, width, height)`, as `post_process_pose_estimation` and the
            `sapiens-pose` pipeline return them.
        keypoint_threshold: keypoints scoring at or below it (and links touching them) are not drawn.
        num_keypoints: size of the keypoint set; defaults to the number of keypoints (pass it for thresholded ones).
        radius, thickness: keypoint radius and link width in pixels; by default they grow with the image size.
    """
    canvas = _rgb_array(image).copy()
    size = max(canvas.shape[:2])
    radius = radius or max(2, round(size / 200))
    thickness = thickness or max(1, radius // 2)
    for person in people:
        keypoints, scores = _numpy(person["keypoints"]), _numpy(person["scores"])
        labels = _numpy(person["labels"]).astype(int) if "labels" in person else np.arange(len(keypoints))
        count = num_keypoints or (int(labels.max()) + 1 if len(labels) else 0)
        full = np.full((count, 2), np.nan)
        full[labels] = keypoints
        visible = np.zeros(count, dtype=bool)
        visible[labels] = (scores > keypoint_threshold) & np.isfinite(keypoints).all(axis=1)
        if person.get("keypoint_format") is not None:  # converted (keypoint_formats): that format's skeleton
            converted = keypoint_format(person["keypoint_format"])
            links, link_colors = converted.skeleton_links, converted.link_colors
            keypoint_colors = converted.keypoint_colors
        elif count in KEYPOINT_SET_BY_COUNT:
            released = keypoint_set(count)
            links, link_colors = released["skeleton_links"], released["link_colors"]
            keypoint_colors = released["keypoint_colors"]
        else:
            links, link_colors, keypoint_colors = [], [], [_DEFAULT_COLOR] * count
        if draw_boxes and person.get("bbox_xywh") is not None:
            x, y, width, height = _numpy(person["bbox_xywh"])
            cv2.rectangle(canvas, (round(x), round(y)), (round(x + width), round(y + height)), _BOX_COLOR, thickness,
                          cv2.LINE_AA)
            if person.get("track_id") is not None:  # a person followed through a video: its id over the box
                cv2.putText(canvas, f"#{person['track_id']}", (round(x) + thickness, round(y) + 4 * radius + thickness),
                            cv2.FONT_HERSHEY_SIMPLEX, radius / 5, _BOX_COLOR, thickness, cv2.LINE_AA)
        for (start, end), color in zip(links, link_colors):
            if visible[start] and visible[end]:
                points = [tuple(round(v) for v in full[index]) for index in (start, end)]
                cv2.line(canvas, points[0], points[1], tuple(color), thickness, cv2.LINE_AA)
        for index in np.flatnonzero(visible):
            center = tuple(round(v) for v in full[index])
            cv2.circle(canvas, center, radius, tuple(keypoint_colors[index]), -1, cv2.LINE_AA)
    return PIL.Image.fromarray(canvas)


def segmentation_palette(num_classes: int) -> np.ndarray:
    """`(num_classes, 3)` uint8 colours: the Goliath palette, extended with fixed random colours for more classes."""
    palette = np.array(SEGMENTATION_PALETTE, dtype=np.uint8)
    if num_classes > len(palette):
        extra = np.random.default_rng(0).integers(0, 256, size=(num_classes - len(palette), 3), dtype=np.uint8)
        palette = np.concatenate([palette, extra])
    return palette[:num_classes]


def class_palette(id2label: dict) -> np.ndarray:
    """`(num_classes, 3)` uint8 colours of a model's classes (`config.id2label`): each known class its own colour, by
    name (so Sapiens' 28 and Sapiens2's 29 classes share colours), any other class a fixed random one. Labels without
    names (transformers' LABEL_0, …) of a released set's size (28 or 29) are that set's classes."""
    names = [str(id2label[index]) for index in range(len(id2label))]
    released = {len(classes): classes for classes in (metadata.SEGMENTATION_CLASSES, metadata.SEGMENTATION_CLASSES_29)}
    if not set(names) & set(metadata.CLASS_COLOURS) and len(names) in released:
        names = list(released[len(names)])
    extra = np.random.default_rng(0).integers(0, 256, size=(len(names), 3), dtype=np.uint8)
    colours = [metadata.CLASS_COLOURS.get(name, extra[index]) for index, name in enumerate(names)]
    return np.array(colours, dtype=np.uint8)


def _class_map(segmentation) -> np.ndarray:
    segmentation = _numpy(segmentation)
    if segmentation.ndim != 2 or segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
        raise ValueError("A segmentation must be a (H, W) map of class indices in [0, 255]")
    return segmentation.astype(np.uint8)


def segmentation_to_image(segmentation, palette: np.ndarray | None = None) -> PIL.Image.Image:
    """The class-index map as a palettised ("P") image: pixel values are the class indices (a lossless label PNG),
    shown in the palette's colours."""
    classes = _class_map(segmentation)
    palette = segmentation_palette(int(classes.max()) + 1) if palette is None else np.asarray(palette, np.uint8)
    image = PIL.Image.frombytes("P", classes.shape[::-1], classes.tobytes())
    image.putpalette(palette.ravel().tolist())
    return image


def overlay_segmentation(image, segmentation, alpha: float = 0.5, palette: np.ndarray | None = None) -> PIL.Image.Image:
    """Blends the palette colour of each pixel's class over the image (`alpha` = opacity of the colours)."""
    canvas = _rgb_array(image)
    classes = _class_map(segmentation)
    if classes.shape != canvas.shape[:2]:
        raise ValueError(f"Segmentation {classes.shape} and image {canvas.shape[:2]} sizes differ")
    palette = segmentation_palette(int(classes.max()) + 1) if palette is None else np.asarray(palette, np.uint8)
    blended = (1 - alpha) * canvas.astype(np.float32) + alpha * palette[classes].astype(np.float32)
    return PIL.Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def _foreground(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = _numpy(mask).astype(bool)
    if mask.shape != shape:
        raise ValueError(f"Mask {mask.shape} and map {shape} sizes differ")
    return mask


def visualize_depth(depth, mask=None, colormap: int = cv2.COLORMAP_INFERNO) -> PIL.Image.Image:
    """Relative depth `(H, W)` as a colour map normalised over the foreground `mask` (e.g. the person pixels of a
    segmentation; default all pixels), near = bright, as the original demo; background grey."""
    depth = _numpy(depth).astype(np.float32)
    if depth.ndim != 2:
        raise ValueError(f"Depth must be a (H, W) map, got shape {depth.shape}")
    foreground = _foreground(mask, depth.shape) & np.isfinite(depth)
    canvas = np.empty((*depth.shape, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND
    if foreground.any():
        values = depth[foreground]
        low, high = values.min(), values.max()
        inverted = 1 - (values - low) / (high - low) if high > low else np.zeros_like(values)
        colored = cv2.applyColorMap((inverted * 255).astype(np.uint8)[:, None], colormap)[:, 0, ::-1]  # BGR → RGB
        canvas[foreground] = colored
    return PIL.Image.fromarray(canvas)


def visualize_normals(normals, mask=None) -> PIL.Image.Image:
    """Unit normals `(3, H, W)` or `(H, W, 3)` as RGB = ((x, y, z) + 1) / 2 · 255, as the original demo; pixels outside
    `mask` grey."""
    normals = _numpy(normals).astype(np.float32)
    if normals.ndim == 3 and normals.shape[0] == 3 and normals.shape[-1] != 3:
        normals = normals.transpose(1, 2, 0)
    if normals.ndim != 3 or normals.shape[-1] != 3:
        raise ValueError(f"Normals must be (3, H, W) or (H, W, 3), got shape {normals.shape}")
    canvas = np.clip((np.nan_to_num(normals) + 1) / 2 * 255, 0, 255).astype(np.uint8)
    canvas[~_foreground(mask, normals.shape[:2])] = _BACKGROUND
    return PIL.Image.fromarray(canvas)


__all__ = [
    "class_palette",
    "draw_keypoints",
    "overlay_segmentation",
    "segmentation_palette",
    "segmentation_to_image",
    "visualize_depth",
    "visualize_normals",
]
