"""Core model behaviour: presets, save/load round trips, Auto classes, checkpointing, attention backends, errors."""

import sys
import types

import helpers
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForPoseEstimation

import sapiens_hf
from sapiens_hf import SapiensBackbone, SapiensConfig, SapiensForPoseEstimation, SapiensModel
from sapiens_hf.convert import load_original_state_dict


def tiny_config(**overrides) -> SapiensConfig:
    """The tiny pose config with two layers (stages, out_indices) at 64×48."""
    return helpers.tiny_config(**{"num_hidden_layers": 2, "image_size": [64, 48], "num_labels": 17, **overrides})


@pytest.mark.parametrize(
    "size, millions", [("sapiens-0.3b", 306.2), ("sapiens-0.6b", 634.6), ("sapiens-1b", 1139.2), ("sapiens-2b", 2131.9)]
)
def test_preset_parameter_counts_on_meta_device(size, millions):
    config = SapiensConfig.from_preset(size)
    assert config.image_size == [1024, 768] and not config.use_cls_token
    with torch.device("meta"):
        model = SapiensModel(config)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) / millions < 5e-4, count


def test_preset_names_and_task_defaults():
    assert SapiensConfig.from_preset("2b").head_dim == 60
    assert SapiensConfig.from_preset("0.3b", task="pose").patch_embed_padding == 2
    assert SapiensConfig.from_preset("0.3b", task="depth").decoder_deconv_channels == [384] * 4
    assert SapiensConfig.from_preset("1b", num_hidden_layers=3).num_hidden_layers == 3
    with pytest.raises(ValueError, match="Unknown Sapiens size"):
        SapiensConfig.from_preset("sapiens-5b")
    with pytest.raises(StrictDataclassClassValidationError, match="divisible"):
        SapiensConfig(hidden_size=100, num_attention_heads=3)


def test_save_and_auto_load_round_trips_are_bit_exact(tmp_path):
    model = SapiensForPoseEstimation(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sapiens"
    for loader in (SapiensForPoseEstimation, AutoModelForPoseEstimation):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert type(reloaded) is SapiensForPoseEstimation
        for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
            assert torch.equal(a, b), name
    pixels = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(model(pixels).heatmaps, reloaded(pixels).heatmaps)
    base = AutoModel.from_pretrained(tmp_path)  # the encoder of a task checkpoint
    assert type(base) is SapiensModel
    assert torch.equal(base.layers[0].attention.qkv.weight, model.model.layers[0].attention.qkv.weight)


def test_backbone_and_head_only_checkpoints_report_missing_keys(tmp_path):
    encoder = SapiensModel(tiny_config())
    encoder.save_pretrained(tmp_path / "encoder")
    pose, info = SapiensForPoseEstimation.from_pretrained(tmp_path / "encoder", output_loading_info=True)
    assert info["missing_keys"] and all(key.startswith("decode_head.") for key in info["missing_keys"])
    assert torch.equal(pose.model.embeddings.position_embeddings, encoder.embeddings.position_embeddings)

    from safetensors.torch import save_file

    head_only = {k: v.contiguous() for k, v in pose.state_dict().items() if k.startswith("decode_head.")}
    (tmp_path / "head").mkdir()
    pose.config.save_pretrained(tmp_path / "head")
    save_file(head_only, tmp_path / "head" / "model.safetensors", metadata={"format": "pt"})
    _, info = SapiensForPoseEstimation.from_pretrained(tmp_path / "head", output_loading_info=True)
    assert info["missing_keys"] and all(key.startswith("model.") for key in info["missing_keys"])


def test_backbone_returns_any_stages_with_final_norm_on_the_last():
    config = tiny_config(out_features=["stem", "stage1", "stage2"])
    backbone = SapiensBackbone(config).eval()
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        maps = backbone(pixels).feature_maps
        base = backbone.model(pixels, output_hidden_states=True)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 3)] * 3
    assert torch.equal(maps[-1], base.feature_map)
    stage1 = base.hidden_states[1].transpose(1, 2).reshape(2, 32, 4, 3)
    assert torch.equal(maps[1], stage1)
    assert AutoBackbone.from_config(config).__class__ is SapiensBackbone


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = SapiensForPoseEstimation(tiny_config()).train()
    model.config.decoder_dropout = 0.0
    pixels, labels = torch.randn(2, 3, 64, 48), torch.rand(2, 17, 16, 12)

    def grads():
        model.zero_grad()
        model(pixels, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=0, msg=name)


def test_sdpa_and_eager_agree_and_attentions_are_returned():
    sdpa = SapiensModel(tiny_config()).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = SapiensModel._from_config(tiny_config(), attn_implementation="eager").eval()
    eager.load_state_dict(sdpa.state_dict())
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        out_sdpa = sdpa(pixels).last_hidden_state
        out_eager = eager(pixels, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(out_sdpa, out_eager.last_hidden_state, atol=1e-5, rtol=1e-5)
    assert len(out_eager.attentions) == 2 and out_eager.attentions[0].shape == (2, 2, 12, 12)
    assert len(out_eager.hidden_states) == 3


def test_other_input_sizes_resize_the_position_table_bicubically():
    model = SapiensModel(tiny_config()).eval()
    table = model.embeddings.position_embeddings
    assert model.embeddings.position_embeddings_for((4, 3)) is table
    resized = model.embeddings.position_embeddings_for((6, 6))
    grid = table.reshape(1, 4, 3, 32).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.flatten(2).transpose(1, 2))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).feature_map.shape == (1, 32, 6, 6)


def test_wrong_inputs_raise_clear_errors():
    model = SapiensModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="4 channels but the model expects 3"):
        model(torch.randn(1, 4, 64, 48))
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(3, 64, 48))


def _original_weights(model: SapiensForPoseEstimation) -> dict:
    """A tiny model's weights in the original key layout (the converter's inverse, for tests)."""
    from sapiens_hf import convert

    inverse_encoder = {v: k for k, v in convert._ENCODER_RENAMES.items()}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("model."):
            key = key[len("model.") :]
            if key in inverse_encoder:
                key = inverse_encoder[key]
            else:
                for old, new in (
                    ("layernorm_before", "ln1"), ("layernorm_after", "ln2"), ("attention.qkv", "attn.qkv"),
                    ("attention.proj", "attn.proj"), ("mlp.fc1", "ffn.layers.0.0"), ("mlp.fc2", "ffn.layers.1"),
                ):
                    key = key.replace(old, new)
            out["backbone." + key] = value
        else:
            out["head." + key[len("decode_head.") :]] = value
    return out


def test_conversion_rejects_wrong_task_size_and_incomplete_checkpoints():
    weights = _original_weights(SapiensForPoseEstimation(tiny_config(image_size=[1024, 768])))
    model = sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=2)
    assert isinstance(model, SapiensForPoseEstimation) and model.config.num_labels == 17
    assert model.config.id2label[0] == "nose" and [1, 2] in model.config.flip_pairs
    with pytest.raises(ValueError, match="pose checkpoint; it cannot be converted into a depth model"):
        sapiens_hf.convert_original_checkpoint(weights, task="depth", num_attention_heads=2)
    with pytest.raises(ValueError, match="not a released Sapiens size"):
        sapiens_hf.convert_original_checkpoint(weights)
    with pytest.raises(ValueError, match="Shape mismatch"):  # e.g. a config of another size
        sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=2, intermediate_size=128)
    other_grid = sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=2, image_size=[512, 512])
    assert other_grid.model.embeddings.position_embeddings.shape == (1, 32 * 32, 32)  # the table is resized
    incomplete = {k: v for k, v in weights.items() if not k.startswith("backbone.layers.0.")}
    with pytest.raises(ValueError, match="Incomplete checkpoint"):
        sapiens_hf.convert_original_checkpoint(incomplete, num_attention_heads=2)
    with pytest.raises(ValueError, match="Not an original Sapiens checkpoint"):
        sapiens_hf.convert_original_checkpoint({"backbone.foo": torch.zeros(1)})


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pose_pth_with_mmengine_meta_loads_safely_and_other_globals_are_refused(tmp_path):
    # A released pose .pth pickles mmengine's ConfigDict and numpy objects in `meta`: recreate one without mmengine.
    module = types.ModuleType("mmengine.config.config")

    class ConfigDict(dict):  # pickles like mmengine's ConfigDict (an addict.Dict)
        def __getstate__(self):
            return self

        def __setstate__(self, state):
            self.update(state)

    ConfigDict.__module__, ConfigDict.__qualname__ = "mmengine.config.config", "ConfigDict"
    module.ConfigDict = ConfigDict
    import numpy as np

    fake_modules = {"mmengine": types.ModuleType("mmengine"), "mmengine.config": types.ModuleType("mmengine.config")}
    fake_modules["mmengine.config.config"] = module
    sys.modules.update(fake_modules)
    try:
        weights = {"backbone.patch_embed.projection.weight": torch.ones(2, 3, 16, 16)}
        checkpoint = {
            "state_dict": weights,
            "meta": {"cfg": ConfigDict(a=1, b=ConfigDict(c=[1, 2])), "seed": np.int64(3), "hist": np.arange(3.0)},
        }
        torch.save(checkpoint, tmp_path / "pose.pth")
        torch.save({"state_dict": weights, "meta": {"x": _Evil()}}, tmp_path / "evil.pth")
    finally:
        for name in fake_modules:
            del sys.modules[name]
    loaded = load_original_state_dict(tmp_path / "pose.pth")
    assert list(loaded) == ["backbone.patch_embed.projection.weight"]
    with pytest.raises(ValueError, match="Refusing to load"):
        load_original_state_dict(tmp_path / "evil.pth")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num_labels": 10**9}, "at most 65536 labels"),  # a name for each would fill memory
        ({"hidden_size": 2**20}, "about 1.1e\\+14 weights.*hidden_size \\(1048576\\)"),
        ({"num_labels": 1e9}, "num_labels must be a positive integer"),
        ({"num_hidden_layers": 200_000}, "num_hidden_layers is 200000; at most 1024 blocks"),
        ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),  # not "modulo by zero"
        ({"hidden_size": -8}, "hidden_size must be a positive integer"),
        ({"image_size": [1024, 0]}, "image_size\\[1\\] must be a positive integer"),
        ({"patch_embed_padding": -1}, "patch_embed_padding must be an integer ≥ 0"),
        ({"decoder_conv_channels": [768, 0]}, "decoder_conv_channels\\[1\\] must be a positive integer"),
    ],
)
def test_a_config_json_with_absurd_sizes_is_refused_before_anything_is_built(tmp_path, edit, message):
    import json
    import time

    SapiensConfig(hidden_size=64, num_attention_heads=2, intermediate_size=128).save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    if "num_labels" in edit:
        values.pop("id2label", None), values.pop("label2id", None)
    (tmp_path / "config.json").write_text(json.dumps({**values, **edit}))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        SapiensForPoseEstimation.from_pretrained(tmp_path)
    assert time.perf_counter() - started < 5  # refused from the numbers, not after allocating
