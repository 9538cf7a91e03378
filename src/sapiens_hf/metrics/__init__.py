"""Metrics of the four Sapiens tasks: numpy functions (`functional`), streaming `compute_metrics` callables for the
`Trainer` (`evaluators`), and `evaluate` modules in the sub-folders, loadable offline with
`evaluate.load(sapiens_hf.metrics.metric_path("mean_iou"))`."""

from pathlib import Path

from .evaluators import DepthEvaluator, KeypointEvaluator, NormalEvaluator, SegmentationEvaluator
from .functional import (
    angular_errors,
    confusion_matrix,
    depth_errors,
    depth_metrics,
    keypoint_ap,
    mean_iou,
    normal_metrics,
    pck,
    segmentation_scores,
)


METRIC_NAMES = ("keypoint_ap", "pck", "mean_iou", "depth_error", "normal_error")


def metric_path(name: str) -> str:
    """Folder of the `evaluate` module `name` (one of `METRIC_NAMES`), for `evaluate.load`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {METRIC_NAMES}")
    return str(Path(__file__).parent / name)


__all__ = [
    "METRIC_NAMES",
    "metric_path",
    "KeypointEvaluator",
    "SegmentationEvaluator",
    "DepthEvaluator",
    "NormalEvaluator",
    "keypoint_ap",
    "pck",
    "confusion_matrix",
    "segmentation_scores",
    "mean_iou",
    "depth_errors",
    "depth_metrics",
    "angular_errors",
    "normal_metrics",
]
