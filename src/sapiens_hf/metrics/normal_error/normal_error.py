"""Surface-normal angular errors as an `evaluate` module; the implementation is `sapiens_hf.metrics.functional`."""

import datasets
import evaluate
import numpy as np

from sapiens_hf.metrics.functional import normal_metrics


_DESCRIPTION = "Angular error between predicted and reference surface normals, pooled over all valid pixels."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted normal maps (H×W×3, any length).
    references: reference normal maps (H×W×3); pixels with a component ≤ `invalid_value` (the −1000 background of
        Sapiens targets), non-finite or all-zero are not scored.
    invalid_value (optional, -100).
Returns:
    mean_angular_error, median_angular_error (degrees), within_11.25, within_22.5, within_30 (shares of pixels).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NormalError(evaluate.Metric):
    def _info(self):
        normal_map = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": normal_map, "references": normal_map}),
        )

    def _compute(self, predictions, references, invalid_value=-100.0):
        return normal_metrics([np.asarray(p) for p in predictions], [np.asarray(r) for r in references], invalid_value)
