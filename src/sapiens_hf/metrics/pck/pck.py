"""Percentage of Correct Keypoints as an `evaluate` module; the implementation is `sapiens_hf.metrics.functional`."""

import datasets
import evaluate
import numpy as np

from sapiens_hf.metrics.functional import pck


_DESCRIPTION = "PCK: share of labelled keypoints closer to the reference than `threshold` × the box's longer side."

_KWARGS_DESCRIPTION = """
Args:
    predictions: per person the predicted keypoints, K×2 (or K×3; the third column is ignored), image pixels.
    references: per person a dict with `keypoints` (K×3: x, y, visibility; 0 = unlabelled) and `bbox`
        ([x, y, width, height]; max(width, height) normalises the distances, as mmpose's `norm_item="bbox"`).
    threshold (optional, 0.05): normalised distance below which a keypoint is correct.
Returns:
    pck (mean of the per-keypoint accuracies over keypoints labelled at least once),
    per_keypoint (−1 for keypoints never labelled).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PCK(evaluate.Metric):
    def _info(self):
        keypoints = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": keypoints,
                    "references": {"keypoints": keypoints, "bbox": datasets.Sequence(datasets.Value("float64"))},
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.05):
        predicted = np.asarray([np.asarray(p, np.float64)[:, :2] for p in predictions])
        reference = np.asarray([r["keypoints"] for r in references], np.float64)
        box_sizes = np.asarray([max(r["bbox"][2], r["bbox"][3]) for r in references], np.float64)
        return pck(predicted, reference[..., :2], reference[..., 2], box_sizes, threshold)
