"""Hardening of `sapiens_hf.convert`: no code in a checkpoint is ever run on load (TorchScript archives included),
non-float weights and misspelt config overrides are errors instead of silent casts or no-ops."""

import functools
import importlib
import os
import pickle
import subprocess
import zipfile

import pytest
import torch
from golden_utils import arch, golden_weights
from safetensors.torch import save_file
from torch import nn

import sapiens_hf
from sapiens_hf.convert import convert_to_folder, load_original_state_dict


class _Hostile(nn.Module):
    """A scripted module whose TorchScript `__setstate__` has a visible side effect when `torch.jit.load` runs it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("EXECUTED")
        self.weight = state[0]
        self.training = state[1]


class _Checkpoint(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 8, 4)
        self.hostile = _Hostile()

    def forward(self, x):
        return self.hostile(self.patch_embed(x))


@pytest.mark.parametrize("name", ["model_torchscript.pt2", "model.pth"])  # a `.pth` that is a TorchScript zip too
def test_torchscript_setstate_is_never_run(tmp_path, capfd, name):
    path = tmp_path / name
    torch.jit.script(_Checkpoint()).save(str(path))
    capfd.readouterr()
    with pytest.raises(ValueError, match="__setstate__"):
        load_original_state_dict(path)
    with pytest.raises(ValueError, match="__setstate__"):
        sapiens_hf.convert_original_checkpoint(path, num_attention_heads=2)
    assert "EXECUTED" not in capfd.readouterr().out
    torch.jit.load(str(path))  # what the reader avoids
    assert "EXECUTED" in capfd.readouterr().out


class _Call:
    def __reduce__(self):
        return print, ("EXECUTED",)


@pytest.mark.parametrize("name", ["evil_torchscript.pt2", "evil.pth"])
def test_torchscript_data_pkl_calling_anything_else_is_refused(tmp_path, capfd, name):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weight": _Call()}, protocol=2))
        archive.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(ValueError, match=r"Refusing.*\bprint\b"):
        load_original_state_dict(path)
    assert "EXECUTED" not in capfd.readouterr().out


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8, torch.float8_e4m3fn])
def test_non_float_weight_is_an_error_before_any_model_is_built(tmp_path, monkeypatch, dtype):
    weights = golden_weights("seg")
    key = "backbone.layers.0.attn.qkv.weight"
    weights[key] = weights[key].to(dtype)
    save_file(weights, tmp_path / "seg.safetensors")

    def no_model(*args, **kwargs):
        raise AssertionError("a config or model was built")

    monkeypatch.setattr("sapiens_hf.convert._config_from_weights", no_model)
    with pytest.raises(ValueError, match=rf"{key}.*{dtype}"):
        sapiens_hf.convert_original_checkpoint(tmp_path / "seg.safetensors", num_attention_heads=arch("seg")["H"])


def test_unknown_config_override_names_the_closest_field(tmp_path):
    weights, heads = golden_weights("seg"), arch("seg")["H"]
    with pytest.raises(TypeError, match="'patch_embed_paddin'.*'patch_embed_padding'"):
        sapiens_hf.convert_original_checkpoint(weights, num_attention_heads=heads, patch_embed_paddin=0)
    with pytest.raises(TypeError, match="'frobnicate'"):
        convert_to_folder(weights, tmp_path / "out", num_attention_heads=heads, frobnicate=1)
    assert not (tmp_path / "out").exists()
    model = sapiens_hf.convert_original_checkpoint(
        weights, num_attention_heads=heads, patch_embed_padding=2, attn_implementation="eager"
    )
    assert model.config.patch_embed_padding == 2


@pytest.mark.parametrize("call", [print, os.system, eval, exec, subprocess.call, importlib.import_module, getattr,
                                  torch.load, pickle.loads, functools.partial])
def test_a_pickled_checkpoint_never_calls_a_dangerous_global(tmp_path, capfd, call):
    """A `.pth` (torch.save's zip) whose pickle calls any global outside the tensor-rebuilding allow-list is refused
    before that global is called."""

    class Reduce:
        def __reduce__(self):
            return call, ("EXECUTED",) if call is not functools.partial else (print, "EXECUTED")

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"backbone.patch_embed.projection.weight": torch.zeros(1), "x": Reduce()}}, path)
    capfd.readouterr()
    with pytest.raises(ValueError, match="Refusing to load"):
        load_original_state_dict(path)
    assert "EXECUTED" not in capfd.readouterr().out
