"""Parity of converted original checkpoints with the original implementation's outputs (tests/fixtures)."""

import pytest
import torch
from golden_utils import (
    TASK_OF,
    arch,
    assert_matches_golden,
    batch_for,
    fullwidth_weights,
    golden_weights,
    load_golden,
    pose_batch,
    seg_batch,
)

import sapiens_hf


def _convert(weights, name, **overrides):
    return sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=arch(name)["H"], **overrides)


def _raw_output(model, pixel_values):
    with torch.no_grad():
        out = model(pixel_values)
    if isinstance(model, sapiens_hf.SapiensForPoseEstimation):
        return out.heatmaps
    if isinstance(model, sapiens_hf.SapiensForSemanticSegmentation):
        return out.logits
    if isinstance(model, sapiens_hf.SapiensForDepthEstimation):
        return out.predicted_depth[:, None]
    return out.normals


@pytest.mark.parametrize("name", ["pose17", "pose308", "seg", "depth", "normal"])
def test_task_model_matches_original(name):
    model = _convert(golden_weights(name), name)
    assert type(model) is sapiens_hf.convert.TASK_TO_CLASS[TASK_OF[name]]
    assert model.config.patch_embed_padding == (2 if name in ("pose17", "pose308", "normal") else 0)
    assert_matches_golden(_raw_output(model, batch_for(name)), "case1_task_outputs.safetensors", name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pose17", "pose308", "seg", "depth", "normal"])
def test_full_width_heads_match_original(name):
    model = _convert(fullwidth_weights(name), name)
    assert_matches_golden(_raw_output(model, batch_for(name)), "case1_fullwidth_outputs.safetensors", name)


@pytest.mark.parametrize(
    "name, key, batch, padding",
    [("seg", "seg_backbone_featmap", seg_batch, 0), ("pose308", "pose308_backbone_featmap", pose_batch, 2)],
)
def test_backbone_only_matches_original(name, key, batch, padding):
    # The padding of a headless fine-tuned backbone is not visible in its weights: the caller names it.
    backbone_weights = {k: v for k, v in golden_weights(name).items() if k.startswith("backbone.")}
    model = _convert(backbone_weights, name, task="model", patch_embed_padding=padding)
    assert isinstance(model, sapiens_hf.SapiensModel)
    with torch.no_grad():
        feature_map = model(batch()).feature_map
    assert_matches_golden(feature_map, "case1_backbone_outputs.safetensors", key)


def test_pretrain_checkpoint_position_embedding_conversion():
    """Case 2: a flat `_clean` pretrain checkpoint (CLS + 64×64 sin-cos table) into a 1024×768 pose backbone."""
    checkpoint = load_golden("case2_pretrain_checkpoint.safetensors")
    expected = load_golden("case2_outputs.safetensors")
    model = _convert(checkpoint, "pretrain", task="pose")
    assert model.config.patch_embed_padding == 2 and not model.config.use_cls_token
    pos = model.model.embeddings.position_embeddings.detach()
    torch.testing.assert_close(pos, expected["pos_embed_converted"], atol=1e-6, rtol=0)
    with torch.no_grad():
        feature_map = model.model(pose_batch()).feature_map
    assert_matches_golden(feature_map, "case2_outputs.safetensors", "featmap")
