"""`compute_metrics` callables for the `Trainer`, one per task.

They are meant for `TrainingArguments(batch_eval_metrics=True)` (the default of `SapiensTrainingArguments`): the
Trainer then passes every gathered evaluation batch with `compute_result=False` and the last one with
`compute_result=True`, so full-resolution heatmaps / logits / maps are reduced batch by batch instead of being kept
for the whole set. They also accept a single call with everything (`batch_eval_metrics=False`). Batches arrive in
dataset order on every rank (accelerate gathers rank 0's batch, then rank 1's, … and drops the padding duplicates),
which the pose evaluator relies on to find each crop's person.
"""

import numpy as np
import torch
import torch.nn.functional as F

from .functional import (
    NORMAL_THRESHOLDS,
    angular_errors,
    confusion_matrix,
    depth_errors,
    keypoint_ap,
    pck,
    segmentation_scores,
)


def _tensor(value) -> torch.Tensor:
    if isinstance(value, (tuple, list)):  # several model outputs or label tensors: the first is the prediction/label
        value = value[0]
    return torch.as_tensor(value).detach().float().cpu()


class _StreamingMetric:
    def __call__(self, eval_pred, compute_result: bool = True) -> dict:
        self.update(eval_pred.predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        try:
            return self.compute()
        finally:
            self.reset()


class KeypointEvaluator(_StreamingMetric):
    """COCO keypoint AP (OKS, the set's sigmas) and PCK@`pck_threshold` (normalised by the box's longer side) of
    top-down heatmaps, decoded with the image processor's UDP + DARK post-processing (no flip test).

    Args:
        image_processor: the `SapiensImageProcessorPil` that made the crops.
        people: the evaluation set's persons in dataset order, dicts with `image_id`, `bbox` ([x, y, w, h]),
            `keypoints` (K×3 flat or nested, image pixels) and `area`.
        sigmas: OKS sigmas of the K keypoints.
        keypoint_score_threshold: keypoints scoring above it define the person score (mean × box score 1, mmpose's
            `score_mode="bbox_keypoint"`). No OKS-NMS: there is one prediction per ground-truth box.
    """

    def __init__(self, image_processor, people: list[dict], sigmas, pck_threshold=0.05, keypoint_score_threshold=0.2):
        from ..modeling_sapiens import SapiensPoseEstimatorOutput

        self._output_class = SapiensPoseEstimatorOutput
        self.image_processor, self.people, self.sigmas = image_processor, people, sigmas
        self.pck_threshold, self.keypoint_score_threshold = pck_threshold, keypoint_score_threshold
        self.reset()

    def reset(self) -> None:
        self.predictions: list[dict] = []

    def update(self, heatmaps, labels=None) -> None:
        heatmaps = _tensor(heatmaps)
        start = len(self.predictions)
        people = self.people[start : start + len(heatmaps)]
        if len(people) != len(heatmaps):
            raise ValueError(f"Got predictions for more than the {len(self.people)} evaluation people")
        decoded = self.image_processor.post_process_pose_estimation(
            self._output_class(heatmaps=heatmaps), boxes=[[person["bbox"]] for person in people]
        )
        for person, (result,) in zip(people, decoded, strict=True):
            scores = result["scores"].numpy()
            confident = scores[scores > self.keypoint_score_threshold]
            self.predictions.append(
                {
                    "image_id": person["image_id"],
                    "keypoints": result["keypoints"].numpy(),
                    "keypoint_scores": scores,
                    "score": float(confident.mean()) if confident.size else 0.0,
                }
            )

    def compute(self) -> dict:
        if len(self.predictions) != len(self.people):
            raise ValueError(f"Evaluated {len(self.predictions)} crops but the set has {len(self.people)} people")
        metrics = keypoint_ap(self.predictions, self.people, self.sigmas)
        references = np.stack([np.asarray(p["keypoints"], np.float64).reshape(-1, 3) for p in self.people])
        box_sizes = np.array([max(p["bbox"][2], p["bbox"][3]) for p in self.people], dtype=np.float64)
        predicted = np.stack([p["keypoints"] for p in self.predictions])
        metrics["PCK"] = pck(predicted, references[..., :2], references[..., 2], box_sizes, self.pck_threshold)["pck"]
        return metrics


class SegmentationEvaluator(_StreamingMetric):
    """mIoU, mean per-class accuracy and overall accuracy; logits are bilinearly upsampled to the label size before
    the argmax (as the original's inference)."""

    def __init__(self, num_labels: int, ignore_index: int = 255, id2label: dict | None = None):
        self.num_labels, self.ignore_index, self.id2label = num_labels, ignore_index, id2label
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def update(self, logits, labels) -> None:
        logits, labels = _tensor(logits), _tensor(labels).long()
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        self.confusion += confusion_matrix(logits.argmax(1).numpy(), labels.numpy(), self.num_labels, self.ignore_index)

    def compute(self) -> dict:
        scores = segmentation_scores(self.confusion)
        metrics = {key: scores[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        if self.id2label:  # classes absent from references and predictions (NaN) are left out
            iou = scores["per_category_iou"]
            metrics.update({f"iou_{self.id2label[i]}": v for i, v in enumerate(iou) if v == v})
        return metrics


class DepthEvaluator(_StreamingMetric):
    """Image-averaged RMSE, AbsRel and δ<1.25 over pixels with reference depth > `min_depth` (the −1 background of
    Sapiens targets is excluded), after per-image least-squares `alignment` ("scale_shift" by default: the model
    predicts relative depth)."""

    def __init__(self, alignment: str = "scale_shift", min_depth: float = 1e-6):
        self.alignment, self.min_depth = alignment, min_depth
        self.reset()

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def update(self, predicted_depth, labels) -> None:
        predicted_depth, labels = _tensor(predicted_depth), _tensor(labels)
        if predicted_depth.shape[-2:] != labels.shape[-2:]:
            predicted_depth = F.interpolate(predicted_depth[:, None], size=labels.shape[-2:], mode="bilinear")[:, 0]
        for prediction, reference in zip(predicted_depth.numpy(), labels.numpy(), strict=True):
            errors = depth_errors(prediction, reference, alignment=self.alignment, min_depth=self.min_depth)
            if errors is not None:
                self.count += 1
                for key, value in errors.items():
                    self.sums[key] = self.sums.get(key, 0.0) + value

    def compute(self) -> dict:
        if not self.count:
            raise ValueError("No evaluation image has a valid reference depth pixel")
        return {key: value / self.count for key, value in self.sums.items()}


class NormalEvaluator(_StreamingMetric):
    """Mean and median angular error (degrees) and % of pixels within 11.25°, 22.5°, 30°, pooled over the valid
    pixels (reference > −100) of the whole set; predictions are bilinearly upsampled to the label size. The median
    comes from a 0.001° histogram (exact to ±0.0005°)."""

    BIN = 1e-3

    def __init__(self, invalid_value: float = -100.0):
        self.invalid_value = invalid_value
        self.reset()

    def reset(self) -> None:
        self.histogram = np.zeros(int(round(180 / self.BIN)) + 1, dtype=np.int64)
        self.total, self.count = 0.0, 0
        self.within = dict.fromkeys(NORMAL_THRESHOLDS, 0)

    def update(self, normals, labels) -> None:
        normals, labels = _tensor(normals), _tensor(labels)
        normals = F.interpolate(normals, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        for prediction, reference in zip(normals.numpy(), labels.numpy(), strict=True):
            errors = angular_errors(np.moveaxis(prediction, 0, -1), np.moveaxis(reference, 0, -1), self.invalid_value)
            self.histogram += np.bincount(np.rint(errors / self.BIN).astype(np.int64), minlength=len(self.histogram))
            self.total += float(errors.sum())
            self.count += errors.size
            for threshold in NORMAL_THRESHOLDS:
                self.within[threshold] += int((errors < threshold).sum())

    def compute(self) -> dict:
        if not self.count:
            raise ValueError("No evaluation pixel has a valid reference normal")
        cumulative = np.cumsum(self.histogram)
        # np.median convention: mean of the two middle values for an even count.
        middle = [np.searchsorted(cumulative, rank, side="right") for rank in ((self.count - 1) // 2, self.count // 2)]
        metrics = {
            "mean_angular_error": self.total / self.count,
            "median_angular_error": float(np.mean(middle) * self.BIN),
        }
        metrics.update({f"within_{t:g}": self.within[t] / self.count for t in NORMAL_THRESHOLDS})
        return metrics


__all__ = ["KeypointEvaluator", "SegmentationEvaluator", "DepthEvaluator", "NormalEvaluator"]
