"""Every original checkpoint format converts to the same model: task `.pth` (state dict under `state_dict`),
flat `_clean.pth`, TorchScript `*_torchscript.pt2`, safetensors and in-memory dicts."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import sapiens_hf
from golden_utils import arch, golden_weights, load_golden


def _torchscript_archive(weights: dict, path):
    """A traced archive whose state_dict keeps the original key names, as the released `*_torchscript.pt2`."""

    class Root(nn.Module):
        def forward(self, x):
            return x * 2

    root = Root()
    for key, value in weights.items():
        *path_parts, name = key.split(".")
        module = root
        for part in path_parts:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(value))
    torch.jit.trace(root, torch.zeros(1)).save(str(path))


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "torchscript"])
def test_file_formats_convert_identically(tmp_path, fmt):
    weights = golden_weights("seg")
    path = {"pth": tmp_path / "seg.pth", "safetensors": tmp_path / "seg.safetensors"}.get(
        fmt, tmp_path / "seg_torchscript.pt2"
    )
    if fmt == "pth":
        torch.save({"state_dict": weights, "meta": {"epoch": 194}}, path)
    elif fmt == "safetensors":
        save_file(weights, path)
    else:
        _torchscript_archive(weights, path)
    heads = arch("seg")["H"]
    from_file = sapiens_hf.convert_original_checkpoint(path, num_attention_heads=heads)
    in_memory = sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=heads)
    assert isinstance(from_file, sapiens_hf.SapiensForSemanticSegmentation)
    assert from_file.config.id2label[3] == "Hair" and from_file.config.num_labels == 28
    for (name, a), (_, b) in zip(from_file.state_dict().items(), in_memory.state_dict().items()):
        assert torch.equal(a, b), name


def test_flat_clean_pretrain_checkpoint_becomes_a_1024_square_feature_extractor(tmp_path):
    checkpoint = load_golden("case2_pretrain_checkpoint.safetensors")
    torch.save(checkpoint, tmp_path / "sapiens_tiny_epoch_1_clean.pth")
    model = sapiens_hf.convert_original_checkpoint(tmp_path / "sapiens_tiny_epoch_1_clean.pth", num_attention_heads=2)
    assert isinstance(model, sapiens_hf.SapiensModel)
    assert model.config.use_cls_token and model.config.image_size == [1024, 1024]
    assert torch.equal(model.embeddings.position_embeddings, checkpoint["pos_embed"])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256))
    assert out.last_hidden_state.shape == (1, 1 + 16 * 16, 64) and out.feature_map.shape == (1, 64, 16, 16)


def test_missing_file_and_non_tensor_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        sapiens_hf.convert_original_checkpoint(tmp_path / "nope.pth")
    torch.save({"state_dict": {"epoch": 3}}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="no tensors"):
        sapiens_hf.convert_original_checkpoint(tmp_path / "empty.pth")
