"""Every original checkpoint format converts to the same model: task `.pth` (state dict under `state_dict`),
flat `_clean.pth`, TorchScript `*_torchscript.pt2`, safetensors and in-memory dicts."""

import pytest
import torch
from golden_utils import arch, golden_weights, load_golden
from safetensors.torch import save_file
from torch import nn

import sapiens_hf
from sapiens_hf.convert import load_original_state_dict


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
def test_file_formats_convert_identically(tmp_path, monkeypatch, fmt):
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
        monkeypatch.setattr(torch.jit, "load", None)  # read without running the archive's TorchScript
    heads = arch("seg")["H"]
    from_file = sapiens_hf.convert_original_checkpoint(path, num_attention_heads=heads)
    in_memory = sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=heads)
    assert isinstance(from_file, sapiens_hf.SapiensForSemanticSegmentation)
    assert from_file.config.id2label[3] == "Hair" and from_file.config.num_labels == 28
    for (name, a), (_, b) in zip(from_file.state_dict().items(), in_memory.state_dict().items()):
        assert torch.equal(a, b), name


@torch.jit.script
class _Holder:  # an object of a scripted class (not a module) held as an attribute: not in state_dict()
    def __init__(self, value: torch.Tensor):
        self.value = value


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)
        self.norm = nn.BatchNorm1d(4)  # int64 `num_batches_tracked`
        self.register_buffer("table", torch.arange(8.0))
        self.register_buffer("row", self.table.view(2, 4)[1])  # shares the storage of `table`
        self.register_buffer("scratch", torch.ones(1), persistent=False)  # TorchScript keeps it in state_dict()
        self.plain = torch.zeros(3)  # a tensor attribute, neither parameter nor buffer
        self.sizes: list[int] = [1, 2]
        self.holder = _Holder(torch.ones(2))

    def forward(self, x):
        x = self.norm(self.proj(x)) + self.row + self.scratch + self.plain.sum() + self.holder.value.sum()
        return x * self.sizes[0]


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Sequential(nn.Linear(4, 2), nn.ReLU())

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x * self.scale.float())


@pytest.mark.parametrize("kind", ["traced", "scripted"])
def test_torchscript_reader_matches_jit_state_dict(tmp_path, kind):
    path = tmp_path / "model_torchscript.pt2"
    if kind == "traced":
        _torchscript_archive(golden_weights("seg"), path)
    else:
        torch.manual_seed(0)
        torch.jit.script(_Nested().eval()).save(str(path))
    expected = torch.jit.load(str(path), map_location="cpu").state_dict()
    loaded = load_original_state_dict(path)
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    if kind == "scripted":
        assert "blocks.0.plain" not in loaded and "blocks.0.scratch" in loaded
        row, table = loaded["blocks.1.row"], loaded["blocks.1.table"]
        assert row.untyped_storage().data_ptr() == table.untyped_storage().data_ptr()  # one storage record, shared


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
