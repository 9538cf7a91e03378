"""Metrics checked against hand-computed cases: keypoint AP (OKS), PCK, mIoU / accuracy, depth and normal errors,
the streaming Trainer evaluators and the offline `evaluate` modules."""

import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from sapiens_hf.geometry import generate_udp_heatmaps, get_box_center_scale
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
from sapiens_hf.metadata import keypoint_set
from sapiens_hf.metrics import (
    METRIC_NAMES,
    DepthEvaluator,
    KeypointEvaluator,
    NormalEvaluator,
    SegmentationEvaluator,
    depth_metrics,
    keypoint_ap,
    mean_iou,
    metric_path,
    normal_metrics,
    pck,
)


SIGMAS = np.asarray(keypoint_set(17)["sigmas"])


def person(image_id=1, offset=(100.0, 50.0), area=20000.0, seed=0):
    keypoints = np.random.default_rng(seed).uniform(0, 120, (17, 2)) + offset
    return {
        "image_id": image_id,
        "keypoints": np.c_[keypoints, np.full(17, 2.0)],
        "area": area,
        "bbox": [offset[0], offset[1], 120.0, 120.0],
    }


def shifted_to_oks(reference: dict, oks: float) -> np.ndarray:
    """Keypoints displaced along x so that every keypoint's similarity, hence the OKS, equals `oks`:
    exp(−d² / (2 · area · (2σ)²)) = oks (pycocotools' formula)."""
    distance = np.sqrt(-2 * math.log(oks) * reference["area"] * (2 * SIGMAS) ** 2)
    return reference["keypoints"][:, :2] + np.c_[distance, np.zeros(17)]


# ---------------------------------------------------------------------------------------------------------------
# Keypoint AP / PCK
# ---------------------------------------------------------------------------------------------------------------


def test_keypoint_ap_perfect_prediction():
    reference = person()
    metrics = keypoint_ap(
        [{"image_id": 1, "keypoints": reference["keypoints"][:, :2], "score": 0.9}], [reference], SIGMAS
    )
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    assert metrics["APl"] == pytest.approx(1.0) and metrics["APm"] == -1  # area 20000 > 96²: large only


def test_keypoint_ap_at_oks_0_82_matches_7_of_10_thresholds():
    # OKS 0.82 matches at thresholds 0.50, 0.55, …, 0.80 (7 of 10) and misses at 0.85–0.95: AP = AR = 0.7.
    reference = person()
    prediction = {"image_id": 1, "keypoints": shifted_to_oks(reference, 0.82), "score": 1.0}
    metrics = keypoint_ap([prediction], [reference], SIGMAS)
    assert metrics["AP"] == pytest.approx(0.7) and metrics["AR"] == pytest.approx(0.7)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)
    prediction["keypoints"] = shifted_to_oks(reference, 0.72)  # 5 of 10, and AP75 now misses
    metrics = keypoint_ap([prediction], [reference], SIGMAS)
    assert metrics["AP"] == pytest.approx(0.5) and metrics["AP75"] == pytest.approx(0.0)


def test_keypoint_ap_unlabelled_keypoints_do_not_count_and_missed_people_lower_recall():
    reference = person()
    reference["keypoints"][:5, 2] = 0  # unlabelled: a wild prediction there must not matter
    keypoints = reference["keypoints"][:, :2].copy()
    keypoints[:5] += 500
    other = person(image_id=1, offset=(300.0, 300.0), seed=1)
    metrics = keypoint_ap([{"image_id": 1, "keypoints": keypoints, "score": 1.0}], [reference, other], SIGMAS)
    # Precision 1 up to recall 0.5, nothing beyond: 51 of the 101 COCO recall points.
    assert metrics["AP"] == pytest.approx(51 / 101)
    assert metrics["AR"] == pytest.approx(0.5)


def test_keypoint_ap_rejects_bad_input():
    reference = person()
    with pytest.raises(ValueError, match="expected \\(17"):
        keypoint_ap([{"image_id": 1, "keypoints": np.zeros((16, 2)), "score": 1.0}], [reference], SIGMAS)
    with pytest.raises(ValueError, match="non-finite"):
        keypoint_ap([{"image_id": 1, "keypoints": np.full((17, 2), np.nan), "score": 1.0}], [reference], SIGMAS)


def test_pck_hand_computed():
    references = np.zeros((2, 3, 2))
    predictions = np.array([[[1.0, 0], [0, 6.0], [3.0, 4.0]], [[0, 0.5], [20.0, 0], [0, 0]]])
    visible = np.array([[1, 1, 1], [1, 1, 0]])
    # Normalised by 100 (person 0) and 10 (person 1), threshold 0.06: distances 0.01, 0.06, 0.05 / 0.05, 2.0, –.
    result = pck(predictions, references, visible, np.array([100.0, 10.0]), threshold=0.06)
    assert result["per_keypoint"] == [1.0, 0.0, 1.0]
    assert result["pck"] == pytest.approx(2 / 3)
    result = pck(predictions, references, np.array([[0, 0, 0], [0, 0, 0]]), np.array([1.0, 1.0]))
    assert result == {"pck": 0.0, "per_keypoint": [-1.0, -1.0, -1.0]}


# ---------------------------------------------------------------------------------------------------------------
# Segmentation / depth / normals
# ---------------------------------------------------------------------------------------------------------------


def test_mean_iou_hand_computed():
    prediction = np.array([[0, 1, 1], [2, 2, 0]])
    reference = np.array([[0, 1, 255], [2, 1, 1]])  # one ignored pixel; class 3 absent everywhere
    result = mean_iou([prediction], [reference], num_labels=4)
    # class 0: TP 1, FP 1, FN 0 → IoU 1/2, acc 1; class 1: TP 1, FP 0, FN 2 → 1/3, 1/3; class 2: TP 1, FP 1 → 1/2, 1.
    np.testing.assert_allclose(result["per_category_iou"][:3], [1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(result["per_category_accuracy"][:3], [1, 1 / 3, 1])
    assert math.isnan(result["per_category_iou"][3])
    assert result["mean_iou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert result["mean_accuracy"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert result["overall_accuracy"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="reference labels"):
        mean_iou([prediction], [np.full((2, 3), 7)], num_labels=4)


def test_depth_metrics_hand_computed_and_alignment():
    reference = np.array([[1.0, 2.0], [4.0, -1.0]])  # −1: background, not scored
    prediction = np.array([[1.0, 2.0], [2.0, 9.0]])
    result = depth_metrics([prediction], [reference])
    assert result["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert result["abs_rel"] == pytest.approx(0.5 / 3)
    assert result["delta1"] == pytest.approx(2 / 3)
    # An affine prediction is exact after scale+shift alignment, a proportional one after scale alignment.
    exact = depth_metrics([3 * reference + 1], [reference], alignment="scale_shift")
    assert exact["rmse"] == pytest.approx(0, abs=1e-9) and exact["delta1"] == 1.0
    exact = depth_metrics([0.5 * reference], [reference], alignment="scale")
    assert exact["abs_rel"] == pytest.approx(0, abs=1e-9)
    assert depth_metrics([0.5 * reference], [reference])["abs_rel"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="NaN"):
        depth_metrics([np.full((2, 2), np.nan)], [reference])


def test_normal_metrics_hand_computed():
    reference = np.array([[[0, 0, 1.0], [0, 0, 1.0], [0, 0, 1.0], [-1000, -1000, -1000]]])
    prediction = np.array([[[0, 0, 2.0], [1.0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]])  # 0°, 45°, 90°, background
    result = normal_metrics([prediction], [reference])
    assert result["mean_angular_error"] == pytest.approx(45.0)
    assert result["median_angular_error"] == pytest.approx(45.0)
    assert result["within_11.25"] == pytest.approx(1 / 3)
    assert result["within_30"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------------------------
# Streaming evaluators (what the example scripts pass as compute_metrics)
# ---------------------------------------------------------------------------------------------------------------


def test_segmentation_evaluator_streams_batches_like_the_functional_metric():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (4, 8, 6))
    labels[0, 0, 0] = 255
    logits = torch.from_numpy(rng.normal(size=(4, 3, 4, 3))).float()  # half resolution, as the model's logits
    evaluator = SegmentationEvaluator(3, id2label={0: "a", 1: "b", 2: "c"})
    assert evaluator(EvalPrediction(logits[:2], torch.from_numpy(labels[:2])), compute_result=False) == {}
    metrics = evaluator(EvalPrediction(logits[2:], torch.from_numpy(labels[2:])), compute_result=True)
    upsampled = torch.nn.functional.interpolate(logits, size=(8, 6), mode="bilinear", align_corners=False)
    expected = mean_iou(list(upsampled.argmax(1).numpy()), list(labels), 3)
    assert metrics["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert metrics["iou_b"] == pytest.approx(expected["per_category_iou"][1])
    assert evaluator.confusion.sum() == 0  # reset for the next evaluation


def test_depth_and_normal_evaluators_match_the_functional_metrics():
    rng = np.random.default_rng(1)
    reference = rng.uniform(0.1, 1.0, (3, 8, 6)).astype(np.float32)
    reference[:, :2] = -1
    prediction = (2 * reference + rng.normal(0, 0.05, reference.shape)).astype(np.float32)
    evaluator = DepthEvaluator("scale_shift")
    evaluator(EvalPrediction(torch.from_numpy(prediction[:1]), torch.from_numpy(reference[:1])), compute_result=False)
    metrics = evaluator(EvalPrediction(torch.from_numpy(prediction[1:]), torch.from_numpy(reference[1:])))
    expected = depth_metrics(list(prediction), list(reference), alignment="scale_shift")
    for key in ("rmse", "abs_rel", "delta1"):
        assert metrics[key] == pytest.approx(expected[key])

    normals = rng.normal(size=(3, 3, 4, 3)).astype(np.float32)  # (B, 3, H/2, W/2)
    labels = rng.normal(size=(3, 3, 8, 6)).astype(np.float32)
    labels[:, :, :3] = -1000
    evaluator = NormalEvaluator()
    evaluator(EvalPrediction(torch.from_numpy(normals[:2]), torch.from_numpy(labels[:2])), compute_result=False)
    metrics = evaluator(EvalPrediction(torch.from_numpy(normals[2:]), torch.from_numpy(labels[2:])))
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(normals), size=(8, 6), mode="bilinear").numpy()
    expected = normal_metrics(list(np.moveaxis(upsampled, 1, -1)), list(np.moveaxis(labels, 1, -1)))
    assert metrics["mean_angular_error"] == pytest.approx(expected["mean_angular_error"])
    assert metrics["median_angular_error"] == pytest.approx(expected["median_angular_error"], abs=5e-4)
    for key in ("within_11.25", "within_22.5", "within_30"):
        assert metrics[key] == pytest.approx(expected[key])


def test_keypoint_evaluator_decodes_heatmaps_in_dataset_order():
    """Heatmaps rendered at the ground-truth keypoints of each person's crop decode back to them: AP = PCK = 1;
    a shifted order of people scores ≈ 0."""
    processor = SapiensImageProcessorPil(size={"height": 128, "width": 96})
    input_size, heatmap_size = (96, 128), (24, 32)
    people = [person(image_id=i // 2 + 1, offset=(40.0 + 150 * i, 60.0), seed=i) for i in range(3)]
    heatmaps = []
    for p in people:
        center, scale = get_box_center_scale(np.asarray([p["bbox"]]), input_size)
        in_crop = (p["keypoints"][:, :2] - center + scale / 2) / scale * np.asarray(input_size)
        maps, _ = generate_udp_heatmaps(in_crop, np.ones(17), input_size, heatmap_size, sigma=2.0)
        heatmaps.append(maps)
    heatmaps = torch.from_numpy(np.stack(heatmaps))
    evaluator = KeypointEvaluator(processor, [dict(p, keypoints=p["keypoints"].tolist()) for p in people], SIGMAS)
    assert evaluator(EvalPrediction(heatmaps[:2], None), compute_result=False) == {}
    metrics = evaluator(EvalPrediction(heatmaps[2:], None), compute_result=True)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["PCK"] == pytest.approx(1.0)
    metrics = evaluator(EvalPrediction(heatmaps.roll(1, 0), None))  # each crop scored against another person
    assert metrics["AP"] < 0.05 and metrics["PCK"] < 0.1
    with pytest.raises(ValueError, match="more than the 3"):
        evaluator(EvalPrediction(torch.cat([heatmaps, heatmaps]), None))


# ---------------------------------------------------------------------------------------------------------------
# evaluate modules, offline
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def evaluate_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import evaluate

    return evaluate


def test_evaluate_modules_load_offline_and_agree_with_the_functions(evaluate_offline):
    load = evaluate_offline.load
    assert set(METRIC_NAMES) == {"keypoint_ap", "pck", "mean_iou", "depth_error", "normal_error"}

    reference = person()
    prediction = {"image_id": 1, "keypoints": shifted_to_oks(reference, 0.82).tolist(), "score": 1.0}
    as_reference = dict(reference, keypoints=reference["keypoints"].tolist())
    result = load(metric_path("keypoint_ap")).compute(predictions=[prediction], references=[as_reference])
    assert result["AP"] == pytest.approx(0.7)

    result = load(metric_path("pck")).compute(
        predictions=[prediction["keypoints"]],
        references=[{"keypoints": as_reference["keypoints"], "bbox": [0, 0, 1e4, 1]}],
    )
    assert result["pck"] == pytest.approx(1.0)

    metric = load(metric_path("mean_iou"))
    metric.add_batch(predictions=[[[0, 1, 1], [2, 2, 0]]], references=[[[0, 1, 255], [2, 1, 1]]])
    assert metric.compute(num_labels=4)["mean_iou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)

    result = load(metric_path("depth_error")).compute(
        predictions=[[[1.0, 2.0], [2.0, 9.0]]], references=[[[1.0, 2.0], [4.0, -1.0]]]
    )
    assert result["abs_rel"] == pytest.approx(0.5 / 3) and result["num_images"] == 1

    result = load(metric_path("normal_error")).compute(
        predictions=[[[[0, 0, 2.0], [1.0, 0, 1.0], [0, 1.0, 0]]]], references=[[[[0, 0, 1.0]] * 3]]
    )
    assert result["mean_angular_error"] == pytest.approx(45.0, abs=1e-4)
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_path("accuracy")
