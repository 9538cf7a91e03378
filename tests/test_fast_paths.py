"""CPU checks of the fast paths: each must give the results of the plain path.

- head-dim padding inside attention (the 2B's 60 → 64 for flash/cuDNN kernels) equals unpadded attention;
- sdpa equals eager attention;
- `torch.compile(fullgraph=True)` traces every model without a graph break and matches eager;
- the task heads in bf16 stay within bf16 rounding of the fp32 heads.
"""

import copy

import helpers
import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from sapiens_hf import (
    SapiensBackbone,
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensModel,
)
from sapiens_hf.modeling_sapiens import SapiensDecodeHead, attention_with_padded_head_dim, eager_attention_forward


IMAGE = (64, 48)  # 4×3 patches: tiny, but not square, as the real 1024×768


def tiny_config(hidden_size=64, heads=4, **overrides) -> SapiensConfig:
    return helpers.tiny_config(size="small", hidden_size=hidden_size, num_attention_heads=heads,
                               intermediate_size=2 * hidden_size, image_size=list(IMAGE), num_labels=5, **overrides)


def build(model_class, attn_implementation="sdpa", **overrides):
    config = tiny_config(**overrides)
    return model_class._from_config(config, attn_implementation=attn_implementation).eval()


def pixel_values(batch=2):
    return torch.randn(batch, 3, *IMAGE)


class _Attention(torch.nn.Module):
    """What the attention interfaces read from their module."""

    is_causal = False


@pytest.mark.parametrize("head_dim", [60, 30])
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_padded_head_dim_equals_plain_attention(head_dim, implementation):
    interface = eager_attention_forward if implementation == "eager" else ALL_ATTENTION_FUNCTIONS[implementation]
    query, key, value = (torch.randn(2, 3, 40, head_dim) for _ in range(3))
    kwargs = {"scaling": head_dim**-0.5, "dropout": 0.0}  # the scale of the unpadded dim, as SapiensAttention passes
    plain, _ = interface(_Attention(), query, key, value, None, **kwargs)
    padded, _ = attention_with_padded_head_dim(interface, _Attention(), query, key, value, **kwargs)
    assert padded.shape == plain.shape == (2, 40, 3, head_dim)
    torch.testing.assert_close(padded, plain, atol=1e-6, rtol=1e-5)


def test_padded_head_dim_equals_plain_attention_in_bf16():
    query, key, value = (torch.randn(1, 2, 64, 60, dtype=torch.bfloat16) for _ in range(3))
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    plain, _ = sdpa(_Attention(), query, key, value, None, scaling=60**-0.5)
    padded, _ = attention_with_padded_head_dim(sdpa, _Attention(), query, key, value, scaling=60**-0.5)
    torch.testing.assert_close(padded.float(), plain.float(), atol=2e-2, rtol=2e-2)  # bf16: 8 significant bits


@pytest.mark.parametrize("hidden_size, heads", [(64, 4), (120, 2), (60, 4)])  # head dims 16, 60 (the 2B's), 15
@pytest.mark.parametrize("model_class", [SapiensModel, SapiensForPoseEstimation])
def test_sdpa_equals_eager(model_class, hidden_size, heads):
    eager = build(model_class, "eager", hidden_size=hidden_size, heads=heads)
    sdpa = build(model_class, "sdpa", hidden_size=hidden_size, heads=heads)
    sdpa.load_state_dict(eager.state_dict())
    x = pixel_values()
    with torch.no_grad():
        expected, actual = eager(x)[0], sdpa(x)[0]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "model_class, call_kwargs",
    [
        (SapiensModel, {"output_hidden_states": True}),
        (SapiensBackbone, {}),
        (SapiensForPoseEstimation, {"flip_pairs": [[1, 2], [3, 4]]}),
        (SapiensForSemanticSegmentation, {}),
        (SapiensForDepthEstimation, {}),
        (SapiensForNormalEstimation, {}),
    ],
)
def test_compiles_without_graph_breaks(model_class, call_kwargs):
    # aot_eager traces exactly as inductor does (fullgraph=True raises on any graph break) but skips code generation.
    torch._dynamo.reset()
    overrides = {"out_indices": [1, 2]} if model_class is SapiensBackbone else {}
    model = build(model_class, **overrides)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = pixel_values()
    with torch.no_grad():
        expected, actual = model(x, **call_kwargs), compiled(x, **call_kwargs)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=1e-6)


def test_inductor_compiled_pose_model_equals_eager():
    # One real compile (backbone + head), the path users take; the graph-break check above covers the other models.
    torch._dynamo.reset()
    model = build(SapiensForPoseEstimation, hidden_size=120, heads=2)
    x = pixel_values()
    with torch.no_grad():
        expected = model(x).heatmaps
        actual = torch.compile(model, fullgraph=True)(x).heatmaps
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_bf16_head_stays_within_bf16_rounding():
    # A pose head at reduced width with weights at the released scale (trunc-normal std 0.02 init, as fine-tuning
    # starts). bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 % per op); through 4 rounded layers the
    # output stays within 3 % of its range (measured ≈ 1 %), and a bf16 InstanceNorm adds nothing to that.
    torch.manual_seed(0)
    head = SapiensDecodeHead(128, [64, 64], [64, 64], out_channels=17, dropout=0.0).eval()
    for module in head.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
    feature_map = torch.randn(2, 128, 16, 12)
    with torch.no_grad():
        reference = head(feature_map)
        bf16 = copy.deepcopy(head).to(torch.bfloat16)(feature_map.bfloat16()).float()
    assert (bf16 - reference).abs().max() <= 3e-2 * reference.abs().max()


def test_bf16_instance_norm_is_as_exact_as_fp32_on_the_same_input():
    # The head's normalisation in bf16 loses nothing beyond the rounding of its input and output.
    x = (torch.randn(2, 8, 256, 192) * 0.5 + 10.0).bfloat16()
    in_bf16 = F.instance_norm(x).float()
    in_fp32 = F.instance_norm(x.float()).bfloat16().float()
    assert (in_bf16 - in_fp32).abs().max() <= 2**-5  # one bf16 ulp at the output's magnitude (|y| < 8)


@pytest.mark.slow
def test_benchmark_cli_smoke(tmp_path):
    # The benchmark of docs/performance.md at the "tiny" size, so that the CLI keeps working between GPU runs.
    import importlib.util
    import json

    from helpers import REPO_ROOT

    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "benchmarks" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "bench.json"
    benchmark.main(
        ["--device", "cpu", "--mode", "check,inference,train", "--sizes", "tiny", "--height", "64", "--width", "48"]
        + ["--batch", "1", "--tasks", "pose", "--peers", "hf-vit", "--iters", "1", "--warmup", "0", "--out", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    timed = {(row["mode"], row["model"]) for row in rows if row.get("img_s", 0) > 0}
    assert {("inference", "sapiens-backbone"), ("inference", "hf-vit"), ("inference", "sapiens-pose")} <= timed
    assert {("train", "sapiens-backbone"), ("train", "sapiens-pose"), ("train", "hf-vit")} <= timed
    checks = [row for row in rows if row["mode"] == "check" and "max_rel_diff" in row]
    assert checks and all(row["max_rel_diff"] < 1e-5 for row in checks)  # fp32 on CPU
