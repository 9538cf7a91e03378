"""PyTorch Sapiens (v1) models: backbone, task heads (pose, body-part segmentation, depth, normals) and MAE.

Architecture as Meta's original (arXiv 2408.12569, `facebookresearch/sapiens`): a plain pre-norm ViT with a fused
qkv projection, exact GELU, LayerNorm eps 1e-6 and a final LayerNorm; task heads are stacks of
ConvTranspose2d(4, 2, 1) → InstanceNorm2d → SiLU and 1×1 Conv → InstanceNorm2d → SiLU.

This file only imports torch, transformers and its sibling config, so it can be exported as remote code.
"""

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    DepthEstimatorOutput,
    ModelOutput,
    SemanticSegmenterOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils.generic import TransformersKwargs, can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_sapiens import TASK_DEFAULTS, SapiensConfig


class WrongModelError(Exception):
    """A model that cannot be the one asked for: a checkpoint or export of another task (or without a task head, or
    in another dtype) where a task model is wanted, weights that are not floating point. Not a
    ValueError or OSError on purpose: transformers' `pipeline()` tries every candidate model class and folds those into
    one long "Could not load model ... with any of the following classes" message; this error reaches the user as it
    is, one line saying what to load instead."""


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SapiensModelOutput(ModelOutput):
    """
    last_hidden_state: `(batch, tokens, hidden)` after the final LayerNorm (CLS first when the model has one).
    feature_map: the patch tokens of `last_hidden_state` as a `(batch, hidden, H/16, W/16)` map.
    """

    last_hidden_state: torch.Tensor | None = None
    feature_map: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SapiensPoseEstimatorOutput(ModelOutput):
    """heatmaps: `(batch, num_keypoints, H/4, W/4)` keypoint heatmaps."""

    loss: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SapiensNormalEstimatorOutput(ModelOutput):
    """normals: `(batch, 3, H/2, W/2)` raw (not unit-length) camera-space surface normals."""

    loss: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SapiensMaskedImageModelingOutput(ModelOutput):
    """
    loss: MSE over masked patches (of per-patch normalised pixels when `config.norm_pix_loss`).
    reconstruction: `(batch, 3, H, W)` prediction in the (normalised) input space; with `norm_pix_loss` each patch is
        de-normalised with the mean/std of the corresponding input patch.
    logits: `(batch, num_patches, patch_size**2 * 3)` raw decoder prediction.
    mask: `(batch, num_patches)`, 1 for masked (removed) patches, 0 for visible ones.
    ids_restore: `(batch, num_patches)` permutation that undoes the shuffle.
    """

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# The keyword arguments transformers passes to a model's forward: `TransformersKwargs`, and those its decorators add
# or read (`return_dict`; `merge_with_config_defaults` adds config fields such as `use_cache`, which the Trainer sets
# with gradient checkpointing, and reads `debug_io`...).
TRANSFORMERS_KWARGS = frozenset(TransformersKwargs.__annotations__) | {
    "return_dict",
    "use_cache",
    "vision_feature_layer",
    "vision_feature_select_strategy",
    "vision_aspect_ratio",
    "debug_io",
    "debug_io_dir",
    "prune_layers",
}


def check_kwargs(model: nn.Module, kwargs: dict) -> None:
    """A TypeError for keyword arguments that `forward` would otherwise ignore silently (transformers models take a
    bare `**kwargs`), e.g. the processor's `crop_center` in `model(**processor(image, boxes=...))`."""
    unexpected = [key for key in kwargs if key not in TRANSFORMERS_KWARGS]
    if unexpected:
        raise TypeError(
            f"{type(model).__name__}.forward() got unexpected keyword arguments {', '.join(map(repr, unexpected))}; "
            f"besides its named arguments it takes only transformers' {sorted(TRANSFORMERS_KWARGS)}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Position embeddings
# ---------------------------------------------------------------------------------------------------------------


def resize_position_embeddings(
    position_embeddings: torch.Tensor, source_grid: Sequence[int], target_grid: Sequence[int], num_prefix_tokens: int
) -> torch.Tensor:
    """Bicubically resizes a `(1, prefix + h*w, C)` table from `source_grid` to `target_grid` (align_corners False,
    in float32), as the original `resize_pos_embed`. Prefix (CLS) rows are kept as they are."""
    if tuple(source_grid) == tuple(target_grid):
        return position_embeddings
    prefix, grid = position_embeddings[:, :num_prefix_tokens], position_embeddings[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(target_grid), mode="bicubic", align_corners=False)
    grid = grid.flatten(2).transpose(1, 2).to(position_embeddings.dtype)
    return torch.cat([prefix, grid], dim=1)


def _infer_grid(num_tokens: int) -> tuple[int, int]:
    """Grid of a flattened position table: square (pretraining), else 4:3 portrait (1024×768 fine-tuning)."""
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    width = math.isqrt(num_tokens * 3 // 4)
    if width * width * 4 == num_tokens * 3:
        return num_tokens // width, width
    raise ValueError(f"Cannot infer the patch grid of a position-embedding table with {num_tokens} tokens")


def convert_position_embeddings(
    position_embeddings: torch.Tensor, target_grid: Sequence[int], target_has_cls: bool
) -> torch.Tensor:
    """Converts a checkpoint's position table to a model's, as the original load hook `_prepare_pos_embed` does:
    a pretraining table (CLS + 64×64 = 4097 rows) loses its CLS row (dropped when the row count is the target's + 1
    or odd) and is bicubically squashed to the target grid in float32 (64×64 → 64×48 for 1024×768)."""
    num_target = target_grid[0] * target_grid[1]
    table = position_embeddings
    if target_has_cls:
        if table.shape[1] % 2 == 0:
            raise ValueError("A model with a CLS token needs a position table with a CLS row (odd length)")
        cls_row, table = table[:, :1], table[:, 1:]
    elif table.shape[1] == num_target + 1 or table.shape[1] % 2 == 1:
        table = table[:, 1:]
    table = resize_position_embeddings(table, _infer_grid(table.shape[1]), target_grid, num_prefix_tokens=0)
    return torch.cat([cls_row, table], dim=1) if target_has_cls else table


def sincos_position_embeddings(grid: Sequence[int], dim: int, with_cls: bool) -> torch.Tensor:
    """Fixed 2-D sin-cos table of MAE pretraining: [sin(r·ω), cos(r·ω), sin(c·ω), cos(c·ω)] for patch row r and
    column c (the original's layout on square grids), with an all-zero CLS row first when `with_cls`."""
    if dim % 4:
        raise ValueError(f"The sin-cos position embedding needs a hidden size divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float32), torch.arange(grid[1], dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / (10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    out_r = rows.flatten()[:, None] * omega[None]
    out_c = cols.flatten()[:, None] * omega[None]
    table = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), table], dim=1) if with_cls else table


class SapiensPositionEmbeddingsConversion(ConversionOps):
    """`from_pretrained` step for every `*position_embeddings` tensor. A table saved by another Sapiens model is
    converted to the layout of the model being loaded as the original load hook does (an MAE checkpoint's
    CLS + 64×64 table → the 64×48 table of a 1024×768 task model, see `convert_position_embeddings`), and the
    target parameter's `requires_grad` is kept: the loader would otherwise make the MAE's fixed sin-cos tables
    trainable."""

    def convert(
        self, input_dict, source_patterns, target_patterns, model=None, config=None, full_layer_name=None, **kwargs
    ):
        table = next(iter(input_dict.values()))
        table = table[0] if isinstance(table, list) else table
        target = model.get_parameter(full_layer_name)
        num_rows = getattr(target, "ds_shape", target.shape)[1]  # ZeRO-3 partitions parameters down to shape (0,)
        if table.shape[1] != num_rows:
            grid = config.grid_size
            table = convert_position_embeddings(table, grid, target_has_cls=num_rows == grid[0] * grid[1] + 1)
        return {target_patterns[0]: nn.Parameter(table, requires_grad=target.requires_grad)}

    @property
    def reverse_op(self) -> ConversionOps:
        return _SaveUnchanged()


class _SaveUnchanged(ConversionOps):
    """Saving counterpart of `SapiensPositionEmbeddingsConversion`: a model always saves its own table as it is."""

    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        return {target_patterns[0]: next(iter(input_dict.values()))}

    @property
    def reverse_op(self) -> ConversionOps:
        return SapiensPositionEmbeddingsConversion()


# Registered by model type, so it applies to every Sapiens class, also when this file runs as remote code.
register_checkpoint_conversion_mapping(
    "sapiens",
    [WeightConverter("position_embeddings", "position_embeddings", [SapiensPositionEmbeddingsConversion()])],
    overwrite=True,
)


# ---------------------------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------------------------


class SapiensPatchEmbeddings(nn.Module):
    """Conv patch embedding; `patch_embed_padding` is a symmetric zero padding (2 px for pose/normal checkpoints)."""

    def __init__(self, config: SapiensConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            padding=config.patch_embed_padding,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be a 4-D (batch, channels, height, width) tensor, got shape {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] != self.num_channels:
            hint = " (RGB): convert grayscale/RGBA images to RGB first (the image processor does this)"
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects {self.num_channels}"
                + (hint if self.num_channels == 3 else "")
            )
        return self.projection(pixel_values)


class SapiensEmbeddings(nn.Module):
    """Patch embeddings + learned absolute position embeddings (+ CLS token for pretraining models)."""

    def __init__(self, config: SapiensConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = SapiensPatchEmbeddings(config)
        self.grid_size = config.grid_size
        self.num_prefix_tokens = int(config.use_cls_token)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size)) if config.use_cls_token else None
        num_positions = self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens
        self.position_embeddings = nn.Parameter(torch.empty(1, num_positions, config.hidden_size))

    def position_embeddings_for(self, grid: Sequence[int]) -> torch.Tensor:
        """The position table for a patch grid; bicubically resized when the input size is not the native one."""
        return resize_position_embeddings(self.position_embeddings, self.grid_size, grid, self.num_prefix_tokens)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        patches = self.patch_embeddings(pixel_values)
        grid = (patches.shape[2], patches.shape[3])
        tokens = patches.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position_embeddings_for(grid), grid


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def attention_with_padded_head_dim(
    attention_interface: Callable, module: nn.Module, query, key, value, multiple: int = 8, **kwargs
):
    """Runs `attention_interface` with the head dim zero-padded to a multiple of `multiple` (e.g. 60 → 64 for
    Sapiens-2B) so that flash / cuDNN SDPA kernels apply. Zero query/key columns leave q·kᵀ unchanged, zero value
    columns only add output columns that are sliced off; the caller passes the scale of the unpadded dim."""
    head_dim = query.shape[-1]
    pad = -head_dim % multiple
    if pad:
        query, key, value = (F.pad(t, (0, pad)) for t in (query, key, value))
    attn_output, attn_weights = attention_interface(module, query, key, value, None, **kwargs)
    return attn_output[..., :head_dim], attn_weights


class SapiensAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection whose rows are ordered [q; k; v]."""

    def __init__(self, config: SapiensConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        implementation = self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attention_kwargs = {"dropout": self.config.attention_dropout if self.training else 0.0, "scaling": self.scaling}
        if query.is_cuda and self.head_dim % 8 and implementation != "eager":
            # Fused GPU kernels need head dims that are multiples of 8 (2B has 60).
            attn_output, attn_weights = attention_with_padded_head_dim(
                attention_interface, self, query, key, value, **attention_kwargs, **kwargs
            )
        else:
            attn_output, attn_weights = attention_interface(
                self, query, key, value, None, **attention_kwargs, **kwargs
            )
        return self.proj(attn_output.reshape(batch, tokens, -1)), attn_weights


class SapiensMLP(nn.Module):
    def __init__(self, config: SapiensConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class SapiensLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: SapiensConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SapiensAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SapiensMLP(config)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        attn_output, _ = self.attention(self.layernorm_before(hidden_states), **kwargs)
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.layernorm_after(hidden_states))


# ---------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------


class SapiensDecodeHead(nn.Module):
    """The original task heads: N × [ConvTranspose2d(4, 2, 1, no bias) → InstanceNorm2d → SiLU] (each doubles the
    resolution), M × [Conv2d 1×1 → InstanceNorm2d → SiLU], optional Dropout2d, then a 1×1 conv to `out_channels`.
    InstanceNorm has no affine parameters and no running statistics, so Sequential indices step by 3."""

    def __init__(
        self, in_channels: int, deconv_channels: list[int], conv_channels: list[int], out_channels: int, dropout: float
    ):
        super().__init__()
        deconv_layers, channels = [], in_channels
        for width in deconv_channels:
            deconv_layers += [
                nn.ConvTranspose2d(channels, width, kernel_size=4, stride=2, padding=1, bias=False),
                nn.InstanceNorm2d(width),
                nn.SiLU(),
            ]
            channels = width
        conv_layers = []
        for width in conv_channels:
            conv_layers += [nn.Conv2d(channels, width, kernel_size=1), nn.InstanceNorm2d(width), nn.SiLU()]
            channels = width
        self.deconv_layers = nn.Sequential(*deconv_layers)
        self.conv_layers = nn.Sequential(*conv_layers)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.final_layer = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.dropout(self.conv_layers(self.deconv_layers(feature_map))))


# ---------------------------------------------------------------------------------------------------------------
# Losses (as the original mmpose / mmseg / mmpretrain losses; facebookresearch/sapiens
# `pose/mmpose/models/losses/`, `seg/mmseg/models/losses/`, `pretrain/mmpretrain/models/heads/mae_head.py`)
# ---------------------------------------------------------------------------------------------------------------


def keypoint_mse_loss(heatmaps: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
    """mmpose `KeypointMSELoss(use_target_weight=True)`: mean over all elements of w[b, k]·(pred − target)²."""
    squared_error = (heatmaps - labels) ** 2
    if label_weights is not None:
        squared_error = squared_error * label_weights.reshape(*label_weights.shape[:2], 1, 1)
    return squared_error.mean()


def keypoint_ohkm_loss(
    heatmaps: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None, topk: int
) -> torch.Tensor:
    """mmpose `KeypointOHKMMSELoss`: per-keypoint MSE of the weighted maps, mean of the `topk` largest per sample."""
    if label_weights is not None:
        weights = label_weights.reshape(*label_weights.shape[:2], 1, 1)
        heatmaps, labels = heatmaps * weights, labels * weights
    if topk > heatmaps.shape[1]:
        raise ValueError(f"ohkm_topk ({topk}) exceeds the number of keypoints ({heatmaps.shape[1]})")
    per_keypoint = ((heatmaps - labels) ** 2).mean(dim=(2, 3))
    return per_keypoint.topk(topk, dim=1).values.mean()


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: list[float] | None, ignore_index: int
) -> torch.Tensor:
    """mmseg cross-entropy as configured for Sapiens: logits bilinearly upsampled to the label size, per-pixel
    class-weighted CE, mean over *all* pixels (ignored ones count as zeros, weights are not normalised)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    weight = None if class_weights is None else logits.new_tensor(class_weights)
    return F.cross_entropy(logits, labels.long(), weight=weight, ignore_index=ignore_index, reduction="none").mean()


def silog_loss(predicted_depth: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """mmseg `SiLogLoss`: per image over pixels with target > eps, sqrt(mean(d²) − 0.5·mean(d)²) with
    d = log(target) − log(max(pred, eps)); predictions bilinearly upsampled to the target size; mean over images."""
    labels = labels.reshape(labels.shape[0], 1, *labels.shape[-2:])
    pred = F.interpolate(predicted_depth[:, None], size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = (labels > eps).float()
    diff = (torch.log(labels.clamp(min=eps)) - torch.log(pred.clamp(min=eps))) * valid
    count = valid.sum(dim=(1, 2, 3)).clamp(min=1)
    mean_sq = (diff**2).sum(dim=(1, 2, 3)) / count
    mean = diff.sum(dim=(1, 2, 3)) / count
    return torch.sqrt(mean_sq - 0.5 * mean**2).mean()


def normal_loss(normals: torch.Tensor, labels: torch.Tensor, invalid_value: float = -100.0) -> torch.Tensor:
    """mmseg `CosineSimilarityLoss` + `L1Loss` of the Sapiens normal head, both over pixels whose target is
    > `invalid_value` (background is −1000): Σ(1 − cos) / #valid + Σ_channels |pred − target| / #valid."""
    pred = F.interpolate(normals, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = (labels[:, :1] > invalid_value).float()
    count = valid.sum().clamp(min=1)
    cosine = (F.normalize(pred, dim=1, eps=1e-6) * F.normalize(labels, dim=1, eps=1e-6)).sum(dim=1, keepdim=True)
    loss_cosine = ((1 - cosine) * valid).sum() / count
    loss_l1 = ((pred - labels).abs() * valid).sum() / count
    return loss_cosine + loss_l1


# ---------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------


class SapiensPreTrainedModel(PreTrainedModel):
    config: SapiensConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SapiensEmbeddings", "SapiensLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": SapiensLayer, "attentions": SapiensAttention}
    # The losses are plain means (as the original), so the Trainer must scale them for gradient accumulation itself.
    accepts_loss_kwargs = False
    task: str | None = None  # the task the model is trained for (`TASK_DEFAULTS`); None: no task head

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SapiensEmbeddings):
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, std=std)
            if self.config.use_cls_token:  # pretraining: fixed sin-cos table, as MAE
                table = sincos_position_embeddings(module.grid_size, self.config.hidden_size, with_cls=True)
                init.copy_(module.position_embeddings, table)
            else:
                init.trunc_normal_(module.position_embeddings, std=std)
        elif isinstance(module, SapiensMAEDecoder):
            init.normal_(module.mask_token, std=std)
            table = sincos_position_embeddings(module.grid_size, module.position_embeddings.shape[-1], with_cls=True)
            init.copy_(module.position_embeddings, table)
            # `from_pretrained` re-creates a table missing from the checkpoint as a trainable parameter.
            module.position_embeddings.requires_grad_(False)

    def _feature_map(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        patches = tokens[:, int(self.config.use_cls_token) :]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])


class SapiensModel(SapiensPreTrainedModel):
    """The Sapiens ViT encoder: patch + position embeddings, pre-norm blocks, final LayerNorm."""

    def __init__(self, config: SapiensConfig):
        super().__init__(config)
        self.embeddings = SapiensEmbeddings(config)
        self.layers = nn.ModuleList([SapiensLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def encode(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        """Runs the blocks and the final LayerNorm on a token sequence (used by MAE on the visible tokens)."""
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        return self.layernorm(hidden_states)

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> SapiensModelOutput:
        """pixel_values: `(batch, 3, height, width)` normalised RGB (1024×768 native; other sizes resize the
        position table)."""
        check_kwargs(self, kwargs)
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states, grid = self.embeddings(pixel_values)
        last_hidden_state = self.encode(hidden_states, **kwargs)
        return SapiensModelOutput(last_hidden_state=last_hidden_state, feature_map=self._feature_map(last_hidden_state, grid))


class SapiensBackbone(BackboneMixin, SapiensPreTrainedModel):
    """Feature maps `(batch, hidden, H/16, W/16)` of any stages (`"stem"`, `"stage1"` … `"stageL"`). Intermediate
    stages are raw block outputs; the last stage has the final LayerNorm applied, as the original backbone."""

    def __init__(self, config: SapiensConfig):
        super().__init__(config)
        self.model = SapiensModel(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        check_kwargs(self, kwargs)
        kwargs["output_hidden_states"] = True
        outputs = self.model(pixel_values, **kwargs)
        grid = outputs.feature_map.shape[-2:]
        stage_outputs = list(outputs.hidden_states)
        stage_outputs[-1] = outputs.last_hidden_state
        feature_maps = tuple(
            self._feature_map(hidden, grid)
            for name, hidden in zip(self.stage_names, stage_outputs)
            if name in self.out_features
        )
        return BackboneOutput(feature_maps=feature_maps, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class SapiensTaskModel(SapiensPreTrainedModel):
    """Encoder + one of the original decode heads; `task` picks the released head widths when the config has none."""

    task: str
    head_out_channels: Callable[[SapiensConfig], int]
    head_dropout: bool = True

    def __init__(self, config: SapiensConfig):
        super().__init__(config)
        self._refuse_another_tasks_head(config)
        defaults = TASK_DEFAULTS[self.task]
        if config.use_cls_token:
            # A pretraining (MAE) config: fine-tune in the original layout — no CLS token, a 1024×768 table and the
            # task's patch padding; `from_pretrained` converts the pretrained table (SapiensPositionEmbeddingsConversion).
            config.use_cls_token = False
            config.image_size = [1024, 768]
            config.patch_embed_padding = defaults["patch_embed_padding"]
        if config.decoder_deconv_channels is None:
            config.decoder_deconv_channels = list(defaults["decoder_deconv_channels"])
        if config.decoder_conv_channels is None:
            config.decoder_conv_channels = list(defaults["decoder_conv_channels"])
        self.model = SapiensModel(config)
        self.decode_head = SapiensDecodeHead(
            config.hidden_size,
            config.decoder_deconv_channels,
            config.decoder_conv_channels,
            out_channels=type(self).head_out_channels(config),
            dropout=config.decoder_dropout if self.head_dropout else 0.0,
        )
        self.post_init()

    def _refuse_another_tasks_head(self, config: SapiensConfig) -> None:
        """A config saved from another task's head model (`architectures`) would give this head that task's labels
        (a pose model's 17 keypoints as 17 segmentation classes) and a new, untrained head: transformers' built-in
        pipelines would then answer with it. An encoder checkpoint (pretraining, backbone) is what fine-tuning starts
        from and passes; `architectures=None` passes too, for a new head started from another task's encoder."""
        saved_as = next((cls for cls in SapiensTaskModel.__subclasses__()
                         if cls.__name__ == (config.architectures or [None])[0]), None)
        if saved_as is not None and saved_as.task != self.task:
            raise WrongModelError(
                f"This is the configuration of a {saved_as.task} model ({saved_as.__name__}), not of a "
                f"{type(self).__name__}: load it with {saved_as.__name__} or pipeline(\"sapiens-{saved_as.task}\", ...); "
                f"to fine-tune a new {self.task} head from its encoder, pass architectures=None, the new head's "
                f"num_labels and id2label, and ignore_mismatched_sizes=True"
            )

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def _run(self, pixel_values: torch.Tensor, **kwargs) -> tuple[torch.Tensor, SapiensModelOutput]:
        outputs = self.model(pixel_values, **kwargs)
        return self.decode_head(outputs.feature_map), outputs


class SapiensForPoseEstimation(SapiensTaskModel):
    """Top-down heatmap pose estimation (17 COCO, 133 COCO-WholeBody or 308 Goliath keypoints = `num_labels`)."""

    task = "pose"
    head_dropout = False

    @staticmethod
    def head_out_channels(config):
        return config.num_labels

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        flip_pairs: torch.Tensor | list | None = None,
        labels: torch.Tensor | None = None,
        label_weights: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SapiensPoseEstimatorOutput:
        r"""
        flip_pairs: `(num_pairs, 2)` mirrored keypoint pairs. When given, `pixel_values` are taken to be horizontally
            flipped crops, and the heatmaps are flipped back and their left/right channels swapped (test-time flip).
        labels: `(batch, num_keypoints, H/4, W/4)` target heatmaps. label_weights: `(batch, num_keypoints)` weights.
        """
        check_kwargs(self, kwargs)
        heatmaps, outputs = self._run(pixel_values, **kwargs)
        if flip_pairs is not None:
            heatmaps = flip_back(heatmaps, flip_pairs)
        loss = None
        if labels is not None:
            if self.config.pose_loss == "ohkm":
                loss = keypoint_ohkm_loss(heatmaps, labels, label_weights, self.config.ohkm_topk)
            else:
                loss = keypoint_mse_loss(heatmaps, labels, label_weights)
        return SapiensPoseEstimatorOutput(
            loss=loss, heatmaps=heatmaps, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


def flip_back(heatmaps: torch.Tensor, flip_pairs: torch.Tensor | list) -> torch.Tensor:
    """Undoes a horizontal flip of the input: mirrors the heatmaps along W and swaps each (left, right) pair."""
    pairs = torch.as_tensor(flip_pairs, device=heatmaps.device, dtype=torch.long).reshape(-1, 2)
    index = torch.arange(heatmaps.shape[1], device=heatmaps.device)
    index[pairs[:, 0]], index[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    return heatmaps.flip(-1)[:, index]


class SapiensForSemanticSegmentation(SapiensTaskModel):
    """Body-part segmentation (28 Goliath classes by default); logits at half the input resolution."""

    task = "segmentation"

    @staticmethod
    def head_out_channels(config):
        return config.num_labels

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> SemanticSegmenterOutput:
        r"""labels: `(batch, height, width)` class indices, 255 (`semantic_loss_ignore_index`) ignored."""
        check_kwargs(self, kwargs)
        logits, outputs = self._run(pixel_values, **kwargs)
        loss = None
        if labels is not None:
            loss = segmentation_loss(logits, labels, self.config.class_weights, self.config.semantic_loss_ignore_index)
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SapiensForDepthEstimation(SapiensTaskModel):
    """Relative depth (larger = farther, foreground-normalised in training) at the input resolution."""

    task = "depth"

    @staticmethod
    def head_out_channels(config):
        return 1

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> DepthEstimatorOutput:
        r"""labels: `(batch, height, width)` target depth; pixels ≤ 1e-6 (e.g. background −1) are ignored."""
        check_kwargs(self, kwargs)
        depth, outputs = self._run(pixel_values, **kwargs)
        predicted_depth = depth.squeeze(1)
        loss = silog_loss(predicted_depth, labels) if labels is not None else None
        return DepthEstimatorOutput(
            loss=loss, predicted_depth=predicted_depth, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SapiensForNormalEstimation(SapiensTaskModel):
    """Camera-space surface normals (3 channels, not unit length) at half the input resolution."""

    task = "normal"

    @staticmethod
    def head_out_channels(config):
        return 3

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> SapiensNormalEstimatorOutput:
        r"""labels: `(batch, 3, height, width)` target normals; background pixels set to −1000 are ignored."""
        check_kwargs(self, kwargs)
        normals, outputs = self._run(pixel_values, **kwargs)
        loss = normal_loss(normals, labels) if labels is not None else None
        return SapiensNormalEstimatorOutput(
            loss=loss, normals=normals, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# ---------------------------------------------------------------------------------------------------------------
# MAE pretraining
# ---------------------------------------------------------------------------------------------------------------


class SapiensMAEDecoder(nn.Module):
    """MAE decoder: embed visible tokens, insert mask tokens, unshuffle, add a fixed sin-cos table, transformer
    blocks, LayerNorm, linear prediction of the patch pixels."""

    def __init__(self, config: SapiensConfig):
        super().__init__()
        decoder_config = copy.deepcopy(config)
        decoder_config.hidden_size = config.decoder_hidden_size
        decoder_config.num_attention_heads = config.decoder_num_attention_heads
        decoder_config.intermediate_size = config.decoder_intermediate_size
        self.grid_size = config.grid_size
        self.embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.empty(1, 1, config.decoder_hidden_size))
        num_positions = self.grid_size[0] * self.grid_size[1] + 1
        self.position_embeddings = nn.Parameter(torch.empty(1, num_positions, config.decoder_hidden_size))
        self.layers = nn.ModuleList([SapiensLayer(decoder_config) for _ in range(config.decoder_num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: Sequence[int], **kwargs) -> torch.Tensor:
        hidden = self.embed(latent)
        num_masked = ids_restore.shape[1] + 1 - hidden.shape[1]
        patches = torch.cat([hidden[:, 1:], self.mask_token.expand(hidden.shape[0], num_masked, -1)], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, hidden.shape[-1]))
        hidden = torch.cat([hidden[:, :1], patches], dim=1)
        hidden = hidden + resize_position_embeddings(self.position_embeddings, self.grid_size, grid, 1)
        for layer in self.layers:
            hidden = layer(hidden, **kwargs)
        return self.pred(self.layernorm(hidden))[:, 1:]


class SapiensForMaskedImageModeling(SapiensPreTrainedModel):
    """Sapiens MAE pretraining model (encoder with CLS token and frozen sin-cos positions + MAE decoder).

    Masking is per-sample random (ratio `config.mask_ratio`); pass `noise` `(batch, num_patches)` to make it
    deterministic (the patches with the smallest noise are kept) or `bool_masked_pos` (True = masked; the same
    number of masked patches in every sample) as `AutoModelForMaskedImageModeling` models take it.
    `hidden_states` / `attentions` are the encoder's, as in ViTMAE.
    """

    task = "pretraining"
    # The encoder (a `SapiensModel`) records its own layers; these recorders only have to match none of the decoder's.
    _can_record_outputs = {
        "hidden_states": OutputRecorder(SapiensLayer, layer_name="model.layers"),
        "attentions": OutputRecorder(SapiensAttention, index=1, layer_name="model.layers"),
    }

    def __init__(self, config: SapiensConfig):
        if not config.use_cls_token:
            raise ValueError("MAE pretraining uses a CLS token: build the config with use_cls_token=True")
        super().__init__(config)
        self.model = SapiensModel(config)
        self.decoder = SapiensMAEDecoder(config)
        self.post_init()
        # Fixed (sin-cos) position tables, as the original MAE.
        self.model.embeddings.position_embeddings.requires_grad_(False)
        self.decoder.position_embeddings.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` → `(B, num_patches, p·p·C)`, pixels of a patch in (row, column, channel) order."""
        p = self.config.patch_size
        batch, channels, height, width = pixel_values.shape
        if height % p or width % p:
            raise ValueError(f"MAE needs an input size divisible by the patch size {p}, got {height}×{width}")
        patches = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
        return torch.einsum("nchpwq->nhwpqc", patches).reshape(batch, (height // p) * (width // p), p * p * channels)

    def unpatchify(self, patches: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        p, channels = self.config.patch_size, self.config.num_channels
        patches = patches.reshape(patches.shape[0], grid[0], grid[1], p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", patches).reshape(patches.shape[0], channels, grid[0] * p, grid[1] * p)

    def _num_kept(self, batch: int, num_patches: int, noise, bool_masked_pos) -> int:
        """Checks the masking arguments (before any work) and returns the number of visible patches. Masking no patch
        is an error: there is nothing to reconstruct, and the loss (a mean over the masked patches) would be NaN."""
        if noise is not None and bool_masked_pos is not None:
            raise ValueError("Pass either noise or bool_masked_pos, not both")
        for name, value in (("noise", noise), ("bool_masked_pos", bool_masked_pos)):
            if value is not None and value.shape != (batch, num_patches):
                raise ValueError(f"{name} must have shape {(batch, num_patches)}, got {tuple(value.shape)}")
        if bool_masked_pos is None:
            num_keep = int(num_patches * (1 - self.config.mask_ratio))
            if num_keep == num_patches:
                raise ValueError(f"mask_ratio {self.config.mask_ratio} masks none of the {num_patches} patches")
            return num_keep
        counts = bool_masked_pos.sum(dim=1)
        if bool(counts.min() != counts.max()):
            raise ValueError("bool_masked_pos must mask the same number of patches in every sample")
        if int(counts[0]) == 0:
            raise ValueError("bool_masked_pos masks no patch: there is nothing to reconstruct")
        return num_patches - int(counts[0])

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SapiensMaskedImageModelingOutput:
        check_kwargs(self, kwargs)
        # Targets and loss in float32 also for a bf16 model (ZeRO-3 training): the per-patch variance needs it.
        target = self.patchify(pixel_values.float())
        batch, num_patches = target.shape[:2]
        num_keep = self._num_kept(batch, num_patches, noise, bool_masked_pos)
        pixel_values = pixel_values.to(self.model.embeddings.patch_embeddings.projection.weight.dtype)
        tokens, grid = self.model.embeddings(pixel_values)
        # Patch order with the kept patches first (ascending noise, as the original `random_masking`).
        if bool_masked_pos is not None:
            noise = bool_masked_pos.float()
        elif noise is None:
            noise = torch.rand(batch, num_patches, device=tokens.device)
        ids_shuffle = torch.argsort(noise, dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :num_keep]
        visible = torch.gather(tokens[:, 1:], 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        latent = self.model.encode(torch.cat([tokens[:, :1], visible], dim=1), **kwargs)

        logits = self.decoder(latent, ids_restore, grid, **kwargs)
        mask = torch.ones(batch, num_patches, device=tokens.device)
        mask[:, :num_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)

        reconstruction = logits.float()
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
            reconstruction = reconstruction * (var + 1.0e-6) ** 0.5 + mean
        per_patch = ((logits.float() - target) ** 2).mean(dim=-1)
        loss = (per_patch * mask).sum() / mask.sum()
        return SapiensMaskedImageModelingOutput(
            loss=loss,
            reconstruction=self.unpatchify(reconstruction, grid),
            logits=logits,
            mask=mask,
            ids_restore=ids_restore,
        )


__all__ = [
    "WrongModelError",
    "SapiensPreTrainedModel",
    "SapiensModel",
    "SapiensBackbone",
    "SapiensForPoseEstimation",
    "SapiensForSemanticSegmentation",
    "SapiensForDepthEstimation",
    "SapiensForNormalEstimation",
    "SapiensForMaskedImageModeling",
    "flip_back",
    "convert_position_embeddings",
    "resize_position_embeddings",
]
