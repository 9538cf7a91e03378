"""Mean IoU / per-class accuracy as an `evaluate` module; the implementation is `sapiens_hf.metrics.functional`."""

import datasets
import evaluate
import numpy as np

from sapiens_hf.metrics.functional import mean_iou


_DESCRIPTION = "Semantic segmentation IoU and accuracy per class over the whole set (mmseg's IoUMetric)."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted label maps (H×W class indices).
    references: reference label maps of the same sizes.
    num_labels: number of classes.
    ignore_index (optional, 255): reference label that is not scored.
Returns:
    mean_iou, mean_accuracy (classes absent from references and predictions left out), overall_accuracy,
    per_category_iou, per_category_accuracy (NaN for absent classes).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("uint16")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255):
        return mean_iou(
            [np.asarray(p) for p in predictions], [np.asarray(r) for r in references], num_labels, ignore_index
        )
