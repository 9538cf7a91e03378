"""The task losses against the original mmpose/mmseg losses (golden case 6), values and gradients."""

import torch
from golden_utils import load_golden
from helpers import tiny_config

from sapiens_hf.metadata import CLASS_WEIGHTS
from sapiens_hf.modeling_sapiens import (
    keypoint_mse_loss,
    keypoint_ohkm_loss,
    normal_loss,
    segmentation_loss,
    silog_loss,
)


GOLDEN = "case6_losses.safetensors"


def _check(loss_fn, prefix, pred_key="pred", loss_key="loss", **inputs):
    golden = load_golden(GOLDEN)
    pred = golden[f"{prefix}.{pred_key}"].double().requires_grad_(True)
    loss = loss_fn(pred, **{name: golden[f"{prefix}.{key}"].double() for name, key in inputs.items()})
    loss.backward()
    torch.testing.assert_close(loss.reshape(1), golden[f"{prefix}.{loss_key}"].double(), rtol=1e-5, atol=0)
    grad = golden[f"{prefix}.grad"].double()
    torch.testing.assert_close(pred.grad, grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item())


def test_keypoint_mse_loss():
    _check(lambda p, **k: keypoint_mse_loss(p, k["labels"], k["weights"]), "mse", labels="target", weights="target_weights")


def test_keypoint_ohkm_loss():
    _check(
        lambda p, **k: keypoint_ohkm_loss(p, k["labels"], k["weights"], topk=128),
        "ohkm",
        labels="target",
        weights="target_weights",
    )


def test_segmentation_loss_counts_ignored_pixels_and_uses_class_weights():
    golden = load_golden(GOLDEN)
    assert (golden["seg_ce.labels"] == 255).any(), "the case must contain ignored pixels"
    _check(
        lambda p, **k: segmentation_loss(p, k["labels"][:, 0], list(CLASS_WEIGHTS), ignore_index=255),
        "seg_ce",
        pred_key="logits",
        labels="labels",
    )


def test_silog_loss():
    _check(lambda p, **k: silog_loss(p[:, 0], k["labels"]), "silog", labels="target")


def test_normal_loss():
    _check(lambda p, **k: normal_loss(p, k["labels"]), "normal", loss_key="loss_total", labels="target")


def test_model_forward_returns_the_configured_pose_loss():
    import sapiens_hf

    config = tiny_config(num_labels=17, image_size=[64, 48])
    model = sapiens_hf.SapiensForPoseEstimation(config)
    pixels = torch.randn(2, 3, 64, 48)
    labels, weights = torch.rand(2, 17, 16, 12), torch.rand(2, 17)
    out = model(pixels, labels=labels, label_weights=weights)
    torch.testing.assert_close(out.loss, keypoint_mse_loss(out.heatmaps, labels, weights))
    model.config.pose_loss, model.config.ohkm_topk = "ohkm", 4
    out = model(pixels, labels=labels, label_weights=weights)
    torch.testing.assert_close(out.loss, keypoint_ohkm_loss(out.heatmaps, labels, weights, topk=4))
