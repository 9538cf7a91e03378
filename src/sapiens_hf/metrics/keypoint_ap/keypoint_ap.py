"""COCO keypoint AP/AR (OKS protocol) as an `evaluate` module; the implementation is `sapiens_hf.metrics.functional`."""

import datasets
import evaluate

from sapiens_hf.metadata import keypoint_set
from sapiens_hf.metrics.functional import keypoint_ap


_DESCRIPTION = "COCO keypoint AP/AR: detections matched to ground-truth people by object keypoint similarity (OKS)."

_KWARGS_DESCRIPTION = """
Args:
    predictions: per predicted person a dict with `image_id` (int), `keypoints` (K×2 or K×3 image coordinates) and
        `score` (instance confidence).
    references: per ground-truth person a dict with `image_id`, `keypoints` (K×3: x, y, visibility; 0 = unlabelled),
        `area` (the OKS scale) and `bbox` ([x, y, width, height]).
    sigmas (optional): the K OKS sigmas; by default those of the released set with K keypoints (17, 133 or 308).
Returns:
    AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl (pycocotools `COCOeval(iouType="keypoints")`).
Example:
    >>> metric = evaluate.load(sapiens_hf.metrics.metric_path("keypoint_ap"))
    >>> metric.compute(predictions=[{"image_id": 1, "keypoints": kps, "score": 1.0}],
    ...                references=[{"image_id": 1, "keypoints": gt, "area": 5000.0, "bbox": [0, 0, 50, 100]}])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KeypointAP(evaluate.Metric):
    def _info(self):
        keypoints = datasets.Sequence(datasets.Sequence(datasets.Value("float64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("int64"),
                        "keypoints": keypoints,
                        "score": datasets.Value("float64"),
                    },
                    "references": {
                        "image_id": datasets.Value("int64"),
                        "keypoints": keypoints,
                        "area": datasets.Value("float64"),
                        "bbox": datasets.Sequence(datasets.Value("float64")),
                    },
                }
            ),
        )

    def _compute(self, predictions, references, sigmas=None):
        if sigmas is None:
            sigmas = keypoint_set(len(references[0]["keypoints"]))["sigmas"]
        return keypoint_ap(predictions, references, sigmas)
