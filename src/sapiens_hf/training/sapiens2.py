"""Fine-tuning Sapiens2 (transformers' own `models/sapiens2`) with the same example scripts and data as Sapiens v1.

The models are transformers' `Sapiens2For*` classes, unchanged, so a fine-tuned folder loads with stock transformers.
What the original fine-tuning (github.com/facebookresearch/sapiens2: `sapiens/pose/configs/keypoints308/`,
`sapiens/dense/configs/{seg,normal}/`) adds and transformers does not have lives here:

- the release sizes (`sapiens/backbones/sapiens2.py` `arch_zoo`) and each task's head, as `--config_name` presets;
- the original losses. transformers' pose loss is `Σ w·(pred − target)² / Σ w` (no ×10, and the weights must be
  full heatmap-sized), its segmentation loss plain cross-entropy, and its normal head raises on labels, so the
  trainer computes these instead (`loss_for`):
  pose `KeypointMSELoss(use_target_weight=True, loss_weight=10)`, segmentation class-weighted `CrossEntropyLoss` +
  `DiceLoss`, normals `NormalCosineSimilarityLoss` ×10 + `L1Loss` + `NormalGradL1Loss` ×10.
"""

import dataclasses

import torch
import torch.nn.functional as F
from transformers import (
    Sapiens2Config,
    Sapiens2ForNormalEstimation,
    Sapiens2ForPoseEstimation,
    Sapiens2ForSemanticSegmentation,
    Sapiens2HeadConfig,
)

from ..modeling_sapiens import keypoint_mse_loss, segmentation_loss


def is_sapiens2(config) -> bool:
    """Whether a config (or a config dict) is a Sapiens2 one (transformers' `model_type="sapiens2"`)."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type == "sapiens2"


# The example scripts' tasks that Sapiens2 has a head for (it has no depth head; pointmap and matting: docs/training.md).
MODEL_CLASSES = {
    "pose": Sapiens2ForPoseEstimation,
    "segmentation": Sapiens2ForSemanticSegmentation,
    "normal": Sapiens2ForNormalEstimation,
}


def model_class(task: str):
    """The Sapiens2 model class for one of the example scripts' tasks."""
    if task not in MODEL_CLASSES:
        raise ValueError(f"Sapiens2 has no {task} head (it has {', '.join(MODEL_CLASSES)} in these scripts)")
    return MODEL_CLASSES[task]


# ---------------------------------------------------------------------------------------------------------------
# Release sizes and heads (`--config_name sapiens2-0.4b` …)
# ---------------------------------------------------------------------------------------------------------------

# `arch_zoo` of the original backbone: width, depth, heads; SwiGLU width 4·d; grouped-query attention with half the
# heads as key/value heads except in the first and last 8 blocks; 8 register tokens; RMSNorm; RoPE.
SIZES = {
    "0.4b": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "0.8b": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16},
    "1b": {"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24},
    "5b": {"hidden_size": 2432, "num_hidden_layers": 56, "num_attention_heads": 32},
}
# `layer_decay_rate` of the original fine-tuning configs (the same for every task at a size).
LAYER_DECAY = {"0.4b": 0.8, "0.8b": 0.85, "1b": 0.9, "5b": 0.94}


def _head(size: str, task: str) -> tuple[dict, int]:
    """The head config and label count of a task's original config at a size."""
    if task == "pose":  # PoseHeatmapHead: 2 deconvolutions (×4), 3 1×1 convolutions; Goliath's 308 keypoints
        upsample, conv = ([1536, 1024], [768, 512, 256]) if size == "1b" else ([1024, 768], [512, 512, 256])
        return {"upsample_out_channels": upsample, "conv_out_channels": conv, "conv_kernel_size": 1}, 308
    if task == "segmentation":  # SegHead: 4 deconvolutions (×16), 2 1×1 convolutions; 29 classes
        return {"upsample_out_channels": [512, 256, 128, 64], "conv_out_channels": [64, 64], "conv_kernel_size": 1}, 29
    if task == "normal":  # NormalHead: 3×3 input conv, 4 pixel-shuffle ×2 blocks, 3 3×3 convolutions
        upsample, conv = ([1536, 768, 512, 256], [128, 64, 32]) if size == "5b" else ([768, 512, 256, 128], [64, 32, 16])
        head = {"upsample_out_channels": upsample, "upsample_kernel_size": 3, "use_pixel_shuffle": True}
        return head | {"conv_out_channels": conv, "conv_kernel_size": 3}, 3
    raise ValueError(f"Sapiens2 has no {task} head (it has {', '.join(MODEL_CLASSES)} in these scripts)")


def preset_size(name: str) -> str | None:
    """'sapiens2-0.4b' → '0.4b'; None for a name that is not a Sapiens2 size preset."""
    size = name.lower().removeprefix("sapiens2-")
    return size if name.lower().startswith("sapiens2-") and size in SIZES else None


def preset_config(name: str, task: str, **fields) -> Sapiens2Config:
    """A Sapiens2 config at a release size (`sapiens2-0.4b` … `sapiens2-5b`) with the task's original head, for a
    1024×768 input; `fields` override any config field."""
    size = preset_size(name)
    if size is None:
        raise ValueError(f"{name!r} is not a Sapiens2 size (sapiens2-{', sapiens2-'.join(SIZES)})")
    dims = SIZES[size]
    head, num_labels = _head(size, task)
    values = {
        **dims,
        "intermediate_size": 4 * dims["hidden_size"],
        "num_key_value_attention_heads": dims["num_attention_heads"] // 2,
        "num_first_full_attention_layers": 8,
        "num_last_full_attention_layers": 8,
        "num_register_tokens": 8,
        "image_size": [1024, 768],
        "patch_size": 16,
        "layerscale_value": 1e-4,  # the original's initial layer scale
        "num_labels": num_labels,
        "head_config": head,
        **FINE_TUNING,
    }
    head_fields = fields.pop("head_config", None) or {}
    values.update(fields)
    values["head_config"] = {**values["head_config"], **head_fields}
    return Sapiens2Config(**values)


def check_overrides(overrides: dict) -> None:
    """Refuses `--config_overrides` keys that are no Sapiens2Config field (its strict config would keep a typo as an
    unused attribute)."""
    known = {field.name for field in dataclasses.fields(Sapiens2Config)} | {"num_labels", "out_features", "out_indices"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"--config_overrides: Sapiens2Config has no field {', '.join(map(repr, unknown))}")


def add_task_head(config: Sapiens2Config, task: str, num_labels: int | None = None) -> None:
    """Gives a backbone's config (a pretraining checkpoint's: no head, or transformers' empty default one) the task's original head at the
    nearest release size (by width), and the task's label count unless `num_labels` is given."""
    if config.head_config is not None and config.head_config.upsample_out_channels is not None:
        return
    size = min(SIZES, key=lambda name: abs(SIZES[name]["hidden_size"] - config.hidden_size))
    head, default_labels = _head(size, task)
    config.head_config = Sapiens2HeadConfig(**head)
    config.num_labels = num_labels or default_labels


# The original fine-tuning builds the backbone without RoPE coordinate augmentation (no `pos_embed_rope_*_coords`);
# transformers' config defaults `pos_embed_rescale` to 2.0, which in training mode rescales the coordinates randomly.
FINE_TUNING = {"pos_embed_shift": None, "pos_embed_jitter": None, "pos_embed_rescale": None}


# ---------------------------------------------------------------------------------------------------------------
# The original losses
# ---------------------------------------------------------------------------------------------------------------

POSE_LOSS_WEIGHT = 10.0  # KeypointMSELoss(use_target_weight=True, loss_weight=10.0)
NORMAL_COSINE_WEIGHT, NORMAL_GRADIENT_WEIGHT = 10.0, 10.0  # L1Loss has weight 1


def pose_loss(heatmaps: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None) -> torch.Tensor:
    """`KeypointMSELoss(use_target_weight=True, loss_weight=10)`: 10 · mean over all elements of w[b, k]·(pred −
    target)²."""
    return POSE_LOSS_WEIGHT * keypoint_mse_loss(heatmaps, labels, label_weights)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255, eps: float = 1e-3) -> torch.Tensor:
    """The original `DiceLoss(activate=True, use_sigmoid=False, include_background=False, naive_dice=False)` with
    `reduction="none"`, averaged over the batch as the runner does: per image, the softmax's Dice
    `(2·Σ p·g + eps) / (Σ p² + Σ g² + eps)` over the non-ignored pixels for every class but 0 present in the labels,
    averaged over those classes; the loss is 1 − that, 0 for an image with no such class; mean over the batch."""
    probabilities = logits.softmax(dim=1)
    valid = (labels != ignore_index).unsqueeze(1).to(probabilities.dtype)
    classes = torch.where(labels == ignore_index, torch.zeros_like(labels), labels).clamp(0, logits.shape[1] - 1)
    one_hot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    pred, target = (probabilities * valid)[:, 1:], (one_hot * valid)[:, 1:]
    intersection = (pred * target).sum(dim=(2, 3))
    dice = (2 * intersection + eps) / ((pred * pred).sum(dim=(2, 3)) + (target * target).sum(dim=(2, 3)) + eps)
    present = (target.sum(dim=(2, 3)) > 0).to(dice.dtype)
    per_image = (dice * present).sum(dim=1) / present.sum(dim=1).clamp(min=1)
    return ((1 - per_image) * (present.sum(dim=1) > 0).to(dice.dtype)).mean()


def segmentation_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: list[float] | None, ignore_index: int
) -> torch.Tensor:
    """The original `SegHead` loss: class-weighted cross-entropy (mean over all pixels, as v1's) + `dice_loss`, on
    logits bilinearly resized to the labels."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    labels = labels.long()
    return segmentation_loss(logits, labels, class_weights, ignore_index) + dice_loss(logits, labels, ignore_index)


def normal_gradient_loss(normals: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`NormalGradL1Loss` (a squared error despite its name): the mean squared difference of horizontal and of
    vertical finite differences, each over the pixel pairs that are both valid, summed."""
    loss = normals.new_zeros(())
    for dim in (3, 2):
        length = normals.shape[dim] - 1
        pred = normals.narrow(dim, 1, length) - normals.narrow(dim, 0, length)
        target = labels.narrow(dim, 1, length) - labels.narrow(dim, 0, length)
        pair_valid = valid.narrow(dim, 1, length) * valid.narrow(dim, 0, length)
        loss = loss + ((pred - target) ** 2 * pair_valid).sum() / pair_valid.sum().clamp(min=1)
    return loss


def sapiens2_normal_loss(normals: torch.Tensor, labels: torch.Tensor, invalid_value: float = -100.0) -> torch.Tensor:
    """The original `NormalHead` loss: 10 · cosine + L1 + 10 · gradient loss over the pixels whose target is >
    `invalid_value` (background −1000, as v1's targets), on predictions bilinearly resized to the labels; 0 (with a
    gradient) when no pixel is valid, and NaN/∞ set to 0 as the original."""
    normals = F.interpolate(normals, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = (labels[:, :1] > invalid_value).to(normals.dtype)
    if not valid.any():
        return 0.0 * normals.sum()
    count = valid.sum()
    cosine = (F.normalize(normals, dim=1, eps=1e-6) * F.normalize(labels, dim=1, eps=1e-6)).sum(dim=1, keepdim=True)
    terms = (
        NORMAL_COSINE_WEIGHT * ((1 - cosine) * valid).sum() / count,
        ((normals - labels).abs() * valid).sum() / count,
        NORMAL_GRADIENT_WEIGHT * normal_gradient_loss(normals, labels, valid),
    )
    return sum(torch.nan_to_num(term, nan=0.0, posinf=0.0, neginf=0.0) for term in terms)


def loss_for(model):
    """`loss(outputs, labels, label_weights)` of the original fine-tuning for a Sapiens2 task model, None for any
    other model (Sapiens v1 models compute the original losses in their `forward`)."""
    config = model.config
    if not is_sapiens2(config):
        return None
    if isinstance(model, Sapiens2ForPoseEstimation):
        return lambda outputs, labels, weights: pose_loss(outputs.heatmaps, labels, weights)
    if isinstance(model, Sapiens2ForSemanticSegmentation):
        class_weights = getattr(config, "class_weights", None)
        return lambda outputs, labels, weights: segmentation_dice_loss(
            outputs.logits, labels, class_weights, config.semantic_loss_ignore_index
        )
    if isinstance(model, Sapiens2ForNormalEstimation):
        return lambda outputs, labels, weights: sapiens2_normal_loss(outputs.normals, labels)
    raise ValueError(f"No fine-tuning loss for {type(model).__name__} (see docs/training.md)")
