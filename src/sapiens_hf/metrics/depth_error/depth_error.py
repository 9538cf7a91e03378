"""Depth RMSE / AbsRel / δ<1.25 as an `evaluate` module; the implementation is `sapiens_hf.metrics.functional`."""

import datasets
import evaluate
import numpy as np

from sapiens_hf.metrics.functional import depth_metrics


_DESCRIPTION = "Depth errors per image (optionally after least-squares scale / scale+shift alignment), averaged."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted depth maps (H×W).
    references: reference depth maps of the same sizes; pixels ≤ `min_depth` or non-finite are not scored.
    alignment (optional, "none"): "scale" or "scale_shift" fits the prediction to the reference per image first
        (for relative depth, such as the Sapiens models' foreground-normalised output).
    min_depth (optional, 1e-6): smallest valid reference depth; predictions are clamped to it for the ratios.
Returns:
    rmse, abs_rel, delta1 (share of pixels with max(p/g, g/p) < 1.25), num_images.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DepthError(evaluate.Metric):
    def _info(self):
        depth_map = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": depth_map, "references": depth_map}),
        )

    def _compute(self, predictions, references, alignment="none", min_depth=1e-6):
        return depth_metrics(
            [np.asarray(p) for p in predictions], [np.asarray(r) for r in references], None, alignment, min_depth
        )
