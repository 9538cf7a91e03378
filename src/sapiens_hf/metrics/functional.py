"""Evaluation metrics of the four Sapiens tasks as plain numpy functions (plus pycocotools for keypoint AP).

These are the single implementation behind both the `evaluate` modules in this folder and the streaming
`compute_metrics` callables of `sapiens_hf.metrics.evaluators`.
"""

import contextlib
import io
import math

import numpy as np


# ---------------------------------------------------------------------------------------------------------------
# Pose
# ---------------------------------------------------------------------------------------------------------------

COCO_AP_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def keypoint_ap(predictions: list[dict], references: list[dict], sigmas) -> dict[str, float]:
    """COCO keypoint AP/AR by the OKS protocol (pycocotools `COCOeval(iouType="keypoints")`).

    Args:
        predictions: one dict per predicted person: `image_id`, `keypoints` (K×2 or K×3 image coordinates; a third
            column is ignored), `score` (instance confidence used to rank detections).
        references: one dict per ground-truth person: `image_id`, `keypoints` (K×3: x, y, visibility; visibility 0
            means unlabelled), `area` (segment area, the OKS scale), `bbox` ([x, y, w, h]) and optionally `iscrowd`.
        sigmas: the K per-keypoint OKS sigmas of the keypoint set (`sapiens_hf.metadata.keypoint_set(K)["sigmas"]`).

    Returns `AP`, `AP50`, `AP75`, `APm`, `APl`, `AR`, `AR50`, `AR75`, `ARm`, `ARl` (−1 where a size range is empty).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sigmas = np.asarray(sigmas, dtype=np.float64)
    num_keypoints = len(sigmas)
    gt_annotations = []
    for index, reference in enumerate(references):
        keypoints = _keypoint_array(reference["keypoints"], num_keypoints, "reference", with_visibility=True)
        gt_annotations.append(
            {
                "id": index + 1,
                "image_id": int(reference["image_id"]),
                "category_id": 1,
                "keypoints": keypoints.flatten().tolist(),
                "num_keypoints": int((keypoints[:, 2] > 0).sum()),
                "area": float(reference["area"]),
                "bbox": [float(v) for v in reference["bbox"]],
                "iscrowd": int(reference.get("iscrowd", 0)),
            }
        )
    image_ids = sorted({a["image_id"] for a in gt_annotations} | {int(p["image_id"]) for p in predictions})
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": image_id} for image_id in image_ids],
        "annotations": gt_annotations,
        "categories": [{"id": 1, "name": "person"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    if not predictions:
        return dict.fromkeys(COCO_AP_NAMES, 0.0)
    detections = []
    for prediction in predictions:
        keypoints = _keypoint_array(prediction["keypoints"], num_keypoints, "prediction", with_visibility=False)[:, :2]
        score = float(prediction["score"])
        if not math.isfinite(score):
            raise ValueError(f"Prediction score is not finite: {score}")
        # pycocotools reads (x, y, v) triplets; v is unused for detections.
        triplets = np.concatenate([keypoints, np.ones((num_keypoints, 1))], axis=1)
        detections.append(
            {
                "image_id": int(prediction["image_id"]),
                "category_id": 1,
                "keypoints": triplets.flatten().tolist(),
                "score": score,
            }
        )
    with contextlib.redirect_stdout(io.StringIO()):
        results = ground_truth.loadRes(detections)
        evaluator = COCOeval(ground_truth, results, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_AP_NAMES, evaluator.stats, strict=True)}


def _keypoint_array(keypoints, num_keypoints: int, what: str, with_visibility: bool) -> np.ndarray:
    """(K, 2|3) float64 keypoints from a flat or nested list, with a clear error for a wrong count or NaNs."""
    array = np.asarray(keypoints, dtype=np.float64)
    if array.ndim == 1 and array.size in (2 * num_keypoints, 3 * num_keypoints):
        array = array.reshape(num_keypoints, -1)
    columns = (3,) if with_visibility else (2, 3)
    if array.ndim != 2 or array.shape[0] != num_keypoints or array.shape[1] not in columns:
        raise ValueError(
            f"A {what} has keypoints of shape {array.shape}; "
            f"expected ({num_keypoints}, {' or '.join(map(str, columns))})"
            " for this keypoint set"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"A {what} has non-finite keypoint coordinates")
    return array


def pck(
    predictions: np.ndarray,
    references: np.ndarray,
    visible: np.ndarray,
    normalizers: np.ndarray,
    threshold: float = 0.05,
) -> dict:
    """Percentage of Correct Keypoints, as mmpose `keypoint_pck_accuracy`.

    A keypoint is correct when its distance to the reference, divided per axis by the instance's normaliser, is below
    `threshold`. Accuracy is computed per keypoint over the instances where it is visible, then averaged over the
    keypoints that are visible at least once.

    Args:
        predictions, references: `(N, K, 2)` coordinates. visible: `(N, K)`, > 0 where the reference is labelled.
        normalizers: `(N,)` or `(N, 2)` per-instance scale, e.g. `max(w, h)` of the box (mmpose's `norm_item="bbox"`).
    Returns `pck` (mean over keypoints) and `per_keypoint` (K values; −1 for keypoints never visible).
    """
    predictions, references = np.asarray(predictions, np.float64), np.asarray(references, np.float64)
    if predictions.shape != references.shape or predictions.ndim != 3 or predictions.shape[-1] != 2:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} must both be (N, K, 2)")
    normalizers = np.asarray(normalizers, np.float64)
    normalizers = np.repeat(normalizers[:, None], 2, axis=1) if normalizers.ndim == 1 else normalizers
    mask = (np.asarray(visible) > 0) & (normalizers > 0).all(axis=1, keepdims=True)
    distances = np.linalg.norm((predictions - references) / normalizers[:, None, :], axis=-1)
    per_keypoint = np.full(predictions.shape[1], -1.0)
    for k in range(predictions.shape[1]):
        if mask[:, k].any():
            per_keypoint[k] = float((distances[mask[:, k], k] < threshold).mean())
    valid = per_keypoint[per_keypoint >= 0]
    return {"pck": float(valid.mean()) if valid.size else 0.0, "per_keypoint": per_keypoint.tolist()}


# ---------------------------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------------------------


def confusion_matrix(
    predictions: np.ndarray, references: np.ndarray, num_labels: int, ignore_index: int = 255
) -> np.ndarray:
    """`(num_labels, num_labels)` pixel counts, rows = reference class, columns = predicted class; pixels whose
    reference is `ignore_index` are skipped."""
    predictions, references = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    if predictions.shape != references.shape:
        raise ValueError(f"predictions and references differ in size: {predictions.size} vs {references.size}")
    keep = references != ignore_index
    predictions, references = predictions[keep].astype(np.int64), references[keep].astype(np.int64)
    if references.size and (references.min() < 0 or references.max() >= num_labels):
        raise ValueError(f"reference labels must be in [0, {num_labels}) or {ignore_index}, got {references.max()}")
    if predictions.size and (predictions.min() < 0 or predictions.max() >= num_labels):
        raise ValueError(f"predicted labels must be in [0, {num_labels}), got {predictions.max()}")
    return np.bincount(references * num_labels + predictions, minlength=num_labels**2).reshape(num_labels, num_labels)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """mIoU, mean per-class accuracy and overall accuracy from a confusion matrix, as mmseg `IoUMetric`:
    per class IoU = TP / (TP + FP + FN) and accuracy = TP / (TP + FN) over the whole set; classes absent from both
    references and predictions (NaN) are left out of the means."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    reference_area, predicted_area = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = true_positive / (reference_area + predicted_area - true_positive)
        accuracy = true_positive / reference_area
    total = confusion.sum()
    return {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
        "overall_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "per_category_iou": iou.tolist(),
        "per_category_accuracy": accuracy.tolist(),
    }


def mean_iou(predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
    """`segmentation_scores` of a list of predicted / reference label maps (each pair of the same shape)."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    for prediction, reference in zip(predictions, references, strict=True):
        confusion += confusion_matrix(prediction, reference, num_labels, ignore_index)
    return segmentation_scores(confusion)


# ---------------------------------------------------------------------------------------------------------------
# Depth
# ---------------------------------------------------------------------------------------------------------------

DEPTH_ALIGNMENTS = ("none", "scale", "scale_shift")


def align_depth(prediction: np.ndarray, reference: np.ndarray, valid: np.ndarray, alignment: str) -> np.ndarray:
    """Least-squares alignment of a prediction to the reference on the valid pixels: `scale` fits s·p, `scale_shift`
    fits s·p + t (the usual protocol for relative depth)."""
    if alignment not in DEPTH_ALIGNMENTS:
        raise ValueError(f"alignment must be one of {DEPTH_ALIGNMENTS}, got {alignment!r}")
    if alignment == "none":
        return prediction
    p, g = prediction[valid].astype(np.float64), reference[valid].astype(np.float64)
    if alignment == "scale":
        denominator = float(p @ p)
        scale = float(p @ g) / denominator if denominator > 0 else 1.0
        return prediction * scale
    design = np.stack([p, np.ones_like(p)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, g, rcond=None)
    return prediction * scale + shift


def depth_errors(
    prediction: np.ndarray,
    reference: np.ndarray,
    valid: np.ndarray | None = None,
    alignment: str = "none",
    min_depth: float = 1e-6,
) -> dict[str, float] | None:
    """RMSE, AbsRel and δ<1.25 of one depth map over pixels where the reference is > `min_depth` (and `valid`).

    The prediction is aligned first when `alignment` is `scale`/`scale_shift`, and clamped to `min_depth` for the
    ratio-based scores. Returns None when the image has no valid pixel."""
    prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} depth maps differ in shape")
    if not np.isfinite(prediction).all():
        raise ValueError("The predicted depth contains NaN or infinite values")
    mask = np.isfinite(reference) & (reference > min_depth)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if not mask.any():
        return None
    prediction = align_depth(prediction, reference, mask, alignment)
    p, g = prediction[mask], reference[mask]
    ratio_p = np.maximum(p, min_depth)
    return {
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "delta1": float(np.mean(np.maximum(ratio_p / g, g / ratio_p) < 1.25)),
    }


def depth_metrics(predictions, references, masks=None, alignment: str = "none", min_depth: float = 1e-6) -> dict:
    """`depth_errors` averaged over images (each image weighs the same); images without valid pixels are skipped."""
    masks = masks if masks is not None else [None] * len(predictions)
    per_image = [
        errors
        for prediction, reference, mask in zip(predictions, references, masks, strict=True)
        if (errors := depth_errors(prediction, reference, mask, alignment, min_depth)) is not None
    ]
    if not per_image:
        raise ValueError("No image has a valid reference depth pixel")
    return {key: float(np.mean([errors[key] for errors in per_image])) for key in per_image[0]} | {
        "num_images": len(per_image)
    }


# ---------------------------------------------------------------------------------------------------------------
# Surface normals
# ---------------------------------------------------------------------------------------------------------------

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


def angular_errors(prediction: np.ndarray, reference: np.ndarray, invalid_value: float = -100.0) -> np.ndarray:
    """Angles in degrees between predicted and reference normals (`(..., 3)`, channels last; neither needs unit
    length) on the pixels whose reference is valid: all components finite, > `invalid_value` (the −1000 background
    of Sapiens targets) and not all zero."""
    prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    if prediction.shape != reference.shape or prediction.shape[-1] != 3:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} must both be (..., 3)")
    if not np.isfinite(prediction).all():
        raise ValueError("The predicted normals contain NaN or infinite values")
    valid = np.isfinite(reference).all(-1) & (reference > invalid_value).all(-1) & (np.abs(reference).sum(-1) > 0)
    p, g = prediction[valid], reference[valid]
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    g = g / np.linalg.norm(g, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((p * g).sum(-1), -1.0, 1.0)))


def normal_scores(errors: np.ndarray) -> dict[str, float]:
    """Mean and median angular error and the share of pixels within 11.25°, 22.5° and 30° (pooled over pixels)."""
    errors = np.asarray(errors, np.float64)
    if errors.size == 0:
        raise ValueError("No valid reference normal pixel")
    scores = {"mean_angular_error": float(errors.mean()), "median_angular_error": float(np.median(errors))}
    scores.update({f"within_{t:g}": float((errors < t).mean()) for t in NORMAL_THRESHOLDS})
    return scores


def normal_metrics(predictions, references, invalid_value: float = -100.0) -> dict[str, float]:
    """`normal_scores` over all valid pixels of a list of `(H, W, 3)` prediction / reference pairs."""
    errors = [angular_errors(p, r, invalid_value) for p, r in zip(predictions, references, strict=True)]
    return normal_scores(np.concatenate(errors) if errors else np.zeros(0))


__all__ = [
    "keypoint_ap",
    "pck",
    "confusion_matrix",
    "segmentation_scores",
    "mean_iou",
    "align_depth",
    "depth_errors",
    "depth_metrics",
    "angular_errors",
    "normal_scores",
    "normal_metrics",
]
