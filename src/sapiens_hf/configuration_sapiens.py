"""Configuration of Sapiens (v1) models: one config for the backbone, the four task heads and the MAE decoder.

Self-contained (imports only transformers/huggingface_hub) so it can be exported as remote code.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin


# The four released backbones (arXiv 2408.12569 Table 1; facebookresearch/sapiens
# `pretrain/mmpretrain/models/backbones/vision_transformer.py`, `arch_zoo`): hidden size, depth, heads. MLP ratio 4.
SAPIENS_PRESETS = {
    "sapiens-0.3b": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    "sapiens-0.6b": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16},
    "sapiens-1b": {"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24},
    "sapiens-2b": {"hidden_size": 1920, "num_hidden_layers": 48, "num_attention_heads": 32},
}

# Per-task defaults of the released checkpoints (the task configs of facebookresearch/sapiens:
# `pose/configs/sapiens_pose/`, `seg/configs/sapiens_{seg,depth,normal}/`): patch padding, head widths.
TASK_DEFAULTS = {
    "pose": {"patch_embed_padding": 2, "decoder_deconv_channels": [768, 768], "decoder_conv_channels": [768, 768]},
    "segmentation": {
        "patch_embed_padding": 0,
        "decoder_deconv_channels": [768, 768, 768],
        "decoder_conv_channels": [768, 768, 768],
    },
    "depth": {
        "patch_embed_padding": 0,
        "decoder_deconv_channels": [384, 384, 384, 384],
        "decoder_conv_channels": [384, 384],
        "num_labels": 1,
    },
    "normal": {
        "patch_embed_padding": 2,
        "decoder_deconv_channels": [768, 768, 768],
        "decoder_conv_channels": [768, 768, 768],
        "num_labels": 3,
    },
    "pretraining": {"patch_embed_padding": 0, "use_cls_token": True, "image_size": [1024, 1024]},
}


# Counts that must be positive integers, and the most weights a config may describe (45× the largest release):
# larger values come from a damaged or mistyped config.json, and would fill memory before failing.
_POSITIVE_COUNTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                    "num_channels", "ohkm_topk", "decoder_hidden_size", "decoder_num_hidden_layers",
                    "decoder_num_attention_heads", "decoder_intermediate_size")
MAX_PARAMETERS = 100_000_000_000
MAX_LABELS = 65_536  # the most classes a 16-bit label map holds; transformers names each label in memory
MAX_LAYERS = 1024  # transformer blocks (the releases have 24 to 48), each built as its own modules


@strict
class SapiensConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a Sapiens (v1) model: a plain pre-norm ViT (fused qkv with bias, exact GELU, LayerNorm eps 1e-6,
    final LayerNorm, learned absolute position embeddings) with optional task heads and an MAE decoder.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: transformer dimensions.
        hidden_act: MLP activation (`"gelu"` is the exact, erf-based GELU of the original).
        patch_size: patch size of the convolutional patch embedding.
        image_size: `(height, width)` the position-embedding table was trained for (1024×768 for task models,
            1024×1024 for MAE pretraining). Other input sizes work: the table is bicubically resized on the fly.
        num_channels: input channels (RGB).
        patch_embed_padding: symmetric zero padding of the patch-embedding conv. The released pose and normal
            checkpoints use 2, segmentation, depth and pretraining 0.
        qkv_bias: bias on the fused query/key/value projection.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the truncated-normal initialiser.
        use_cls_token: whether the encoder prepends a CLS token (pretraining checkpoints do; task checkpoints don't).
        attention_dropout: dropout on attention probabilities during training.
        decoder_deconv_channels / decoder_conv_channels: widths of the task head's transposed-conv (×2 upsampling)
            and 1×1 conv stages. `None` means the released head of the task model that is built.
        decoder_dropout: Dropout2d before the final 1×1 conv of the dense heads.
        pose_loss: `"mse"` (target-weighted keypoint MSE) or `"ohkm"` (online hard keypoint mining MSE).
        ohkm_topk: number of hardest keypoints averaged by the OHKM loss.
        flip_pairs: `[left, right]` keypoint index pairs mirrored by a horizontal flip.
        class_weights: per-class cross-entropy weights of the segmentation loss.
        semantic_loss_ignore_index: label ignored by the segmentation loss.
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size:
            MAE decoder dimensions.
        mask_ratio: share of patches masked during MAE pretraining, in (0, 1).
        norm_pix_loss: normalise each target patch by its mean and (unbiased) variance in the MAE loss.
        out_features / out_indices: stages returned by [`SapiensBackbone`] (`"stem"` = patch embeddings,
            `"stageN"` = output of block N; the last stage goes through the final LayerNorm).
    """

    model_type = "sapiens"

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    patch_size: int = 16
    image_size: list[int] | tuple[int, int] = (1024, 768)
    num_channels: int = 3
    patch_embed_padding: int = 0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    use_cls_token: bool = False
    attention_dropout: float | int = 0.0

    decoder_deconv_channels: list[int] | None = None
    decoder_conv_channels: list[int] | None = None
    decoder_dropout: float | int = 0.1
    pose_loss: str = "mse"
    ohkm_topk: int = 8
    flip_pairs: list[list[int]] | None = None
    class_weights: list[float] | None = None
    semantic_loss_ignore_index: int = 255

    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True

    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        # Checked before label names and stage names are built from the counts (a `num_labels` of 1e9 would fill
        # memory with label names).
        self._check_sizes(kwargs.get("num_labels") if self.id2label is None else len(self.id2label))
        self.image_size = list(self.image_size)
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    def _check_sizes(self, num_labels: int | None) -> None:
        """Every count is a positive integer and the model they describe has at most `MAX_PARAMETERS` weights, so
        that a damaged or hand-edited config.json is refused before anything is allocated."""
        counts = {name: getattr(self, name) for name in _POSITIVE_COUNTS}
        counts.update({f"image_size[{i}]": size for i, size in enumerate(self.image_size)})
        counts.update({f"decoder_deconv_channels[{i}]": c for i, c in enumerate(self.decoder_deconv_channels or [])})
        counts.update({f"decoder_conv_channels[{i}]": c for i, c in enumerate(self.decoder_conv_channels or [])})
        if num_labels is not None:
            counts["num_labels"] = num_labels
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_labels is not None and num_labels > MAX_LABELS:
            raise ValueError(f"num_labels is {num_labels}; at most {MAX_LABELS} labels (keypoints or classes) are "
                             "supported: check config.json")
        for name in ("num_hidden_layers", "decoder_num_hidden_layers"):
            if getattr(self, name) > MAX_LAYERS:
                raise ValueError(f"{name} is {getattr(self, name)}; at most {MAX_LAYERS} blocks are built (the "
                                 "released models have 24 to 48): check config.json")
        if not isinstance(self.patch_embed_padding, int) or self.patch_embed_padding < 0:
            raise ValueError(f"patch_embed_padding must be an integer ≥ 0, got {self.patch_embed_padding!r}")
        hidden, width = self.hidden_size, self.intermediate_size
        encoder = self.num_hidden_layers * (4 * hidden * hidden + 2 * hidden * width)
        head, channels = 0, hidden
        for out in self.decoder_deconv_channels or []:
            head, channels = head + 16 * channels * out, out
        for out in self.decoder_conv_channels or []:
            head, channels = head + channels * out, out
        head += channels * (num_labels or 0)
        mae = self.decoder_num_hidden_layers * (4 * self.decoder_hidden_size**2
                                                + 2 * self.decoder_hidden_size * self.decoder_intermediate_size)
        parameters = encoder + head + mae + self.num_channels * self.patch_size**2 * hidden
        if parameters > MAX_PARAMETERS:
            raise ValueError(
                f"These sizes describe a model of about {parameters:.2g} weights (the largest Sapiens has 2.2e+09; "
                f"at most {MAX_PARAMETERS:.0e} are built): check num_hidden_layers ({self.num_hidden_layers}), "
                f"hidden_size ({hidden}), intermediate_size ({width}) and num_labels ({num_labels})"
            )

    def validate_architecture(self):
        """Checks that the dimensions fit together (called by `PreTrainedConfig.validate`)."""
        self._check_sizes(self.num_labels)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.decoder_hidden_size % self.decoder_num_attention_heads:
            raise ValueError("decoder_hidden_size must be divisible by decoder_num_attention_heads")
        if len(self.image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {self.image_size}")
        if self.pose_loss not in ("mse", "ohkm"):
            raise ValueError(f"pose_loss must be 'mse' or 'ohkm', got {self.pose_loss!r}")
        if not 0.0 < self.mask_ratio < 1.0:  # no masked patch: nothing to reconstruct, the MAE loss is 0 / 0
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid of the position-embedding table, e.g. (64, 48) at 1024×768 (also with the 2-px padding)."""
        pad, patch = self.patch_embed_padding, self.patch_size
        return tuple((size + 2 * pad - patch) // patch + 1 for size in self.image_size)

    @classmethod
    def from_preset(cls, name: str, task: str | None = None, **kwargs) -> "SapiensConfig":
        """Config of a released size (`"sapiens-0.3b"`, `"-0.6b"`, `"-1b"`, `"-2b"`; the `"sapiens-"` prefix is
        optional), with the defaults of the released `task` checkpoints (`"pose"`, `"segmentation"`, `"depth"`,
        `"normal"`, `"pretraining"`) and any field overridden by keyword."""
        key = name.lower() if name.lower().startswith("sapiens-") else f"sapiens-{name.lower()}"
        if key not in SAPIENS_PRESETS:
            raise ValueError(f"Unknown Sapiens size {name!r}; choose one of {sorted(SAPIENS_PRESETS)}")
        if task is not None and task not in TASK_DEFAULTS:
            raise ValueError(f"Unknown task {task!r}; choose one of {sorted(TASK_DEFAULTS)}")
        preset = dict(SAPIENS_PRESETS[key])
        preset["intermediate_size"] = 4 * preset["hidden_size"]
        preset.update(TASK_DEFAULTS.get(task, {}))
        preset.update(kwargs)
        return cls(**preset)


__all__ = ["SapiensConfig", "SAPIENS_PRESETS", "TASK_DEFAULTS"]
