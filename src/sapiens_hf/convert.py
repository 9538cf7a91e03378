"""Conversion of Meta's original Sapiens checkpoints (mmengine `.pth`, pretrain `_clean.pth`, TorchScript `.pt2`,
safetensors or in-memory state dicts) into `sapiens_hf` models, with safe unpickling and the table of released files.

Key names and shapes are those of the original code (github.com/facebookresearch/sapiens): the backbone of
`pretrain/mmpretrain/models/backbones/vision_transformer.py`, the heads of
`pose/mmpose/models/heads/heatmap_heads/heatmap_head.py` and `seg/mmseg/models/decode_heads/vit_*head.py`, and the
files written by `pretrain/tools/misc/{pretrain,finetune}_clean_checkpoints.py`.
"""

import re
from collections import OrderedDict
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_sapiens import SAPIENS_PRESETS, TASK_DEFAULTS, SapiensConfig
from .modeling_sapiens import (
    SapiensBackbone,
    SapiensForDepthEstimation,
    SapiensForMaskedImageModeling,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensModel,
    _infer_grid,
    convert_position_embeddings,
)

logger = logging.get_logger(__name__)

TASK_TO_CLASS = {
    "pose": SapiensForPoseEstimation,
    "segmentation": SapiensForSemanticSegmentation,
    "depth": SapiensForDepthEstimation,
    "normal": SapiensForNormalEstimation,
    "pretraining": SapiensForMaskedImageModeling,
    "model": SapiensModel,
    "backbone": SapiensBackbone,
}
TASK_ALIASES = {"seg": "segmentation", "mae": "pretraining", "pretrain": "pretraining"}

# Number of attention heads is not visible in the weights: it comes from the released size with that width.
HEADS_BY_WIDTH = {preset["hidden_size"]: preset["num_attention_heads"] for preset in SAPIENS_PRESETS.values()}

# Original key → ours, applied in order to a key without its `backbone.` / `head.` / ... prefix.
_BLOCK_RENAMES = [
    (r"\.ln1\.", ".layernorm_before."),
    (r"\.ln2\.", ".layernorm_after."),
    (r"\.attn\.qkv\.", ".attention.qkv."),
    (r"\.attn\.proj\.", ".attention.proj."),
    (r"\.ffn\.layers\.0\.0\.", ".mlp.fc1."),
    (r"\.ffn\.layers\.1\.", ".mlp.fc2."),
]
_ENCODER_RENAMES = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.projection.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.projection.bias": "embeddings.patch_embeddings.projection.bias",
    "ln1.weight": "layernorm.weight",
    "ln1.bias": "layernorm.bias",
}
_DECODER_RENAMES = {
    "decoder_embed.weight": "embed.weight",
    "decoder_embed.bias": "embed.bias",
    "mask_token": "mask_token",
    "decoder_pos_embed": "position_embeddings",
    "ln1.weight": "layernorm.weight",
    "ln1.bias": "layernorm.bias",
    "decoder_pred.weight": "pred.weight",
    "decoder_pred.bias": "pred.bias",
}


# ---------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------


def _pickle_allow_list() -> list:
    """The exact globals released Sapiens `.pth` files pickle besides tensors: mmengine's ConfigDict and numpy
    arrays/scalars in `meta`. ConfigDict is read as a plain OrderedDict (the weights-only unpickler fills only exact
    dict types), so no mmengine code is imported or run. Everything else is refused by `weights_only=True`."""
    import numpy as np

    allowed = [
        (OrderedDict, "mmengine.config.config.ConfigDict"),
        (OrderedDict, "mmengine.config.ConfigDict"),
        np.ndarray,
        np.dtype,
    ]
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(np._core.multiarray._reconstruct, f"{core}._reconstruct"), (np._core.multiarray.scalar, f"{core}.scalar")]
    allowed += [dtype for dtype in vars(np.dtypes).values() if isinstance(dtype, type) and issubclass(dtype, np.dtype)]
    return allowed


def load_original_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """Reads an original checkpoint into a flat state dict, never unpickling arbitrary objects.

    Accepts a state dict, a `.pth`/`.bin` pickle (`{"state_dict": ..., "meta": ...}` or flat), a `.safetensors`
    file, or a TorchScript archive (`*_torchscript.pt2`, whose `state_dict()` keeps the original key names).
    """
    if isinstance(checkpoint, dict):
        state_dict = checkpoint
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"No checkpoint file at {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(path)
        elif path.suffix == ".pt2" or _is_torchscript(path):
            state_dict = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            try:
                with torch.serialization.safe_globals(_pickle_allow_list()):
                    state_dict = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # torch raises UnpicklingError subclasses or RuntimeError by version
                raise ValueError(
                    f"Refusing to load {path}: it is not a plain tensor checkpoint or it pickles objects outside the "
                    f"allow-list of released Sapiens files (arbitrary objects are never unpickled).\n{error}"
                ) from error
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError("The checkpoint holds no tensors")
    return tensors


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


# ---------------------------------------------------------------------------------------------------------------
# Key renaming and detection
# ---------------------------------------------------------------------------------------------------------------


def _split_original(state_dict: dict) -> tuple[dict, dict, dict]:
    """Splits original keys into encoder, head and MAE-decoder parts (prefixes removed)."""
    encoder, head, decoder = {}, {}, {}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            encoder[key[len("backbone.") :]] = value
        elif key.startswith(("head.", "decode_head.")):
            head[key.split(".", 1)[1]] = value
        elif key.startswith("neck."):
            decoder[key[len("neck.") :]] = value
        elif key.startswith(("data_preprocessor.", "auxiliary_head.")):
            continue
        else:
            encoder[key] = value  # flat pretrain `_clean` layout
    if not encoder:
        raise ValueError("No Sapiens backbone weights found (expected `backbone.*` or flat `patch_embed.*` keys)")
    if "patch_embed.projection.weight" not in encoder:
        raise ValueError(
            "Not an original Sapiens checkpoint: `patch_embed.projection.weight` is missing "
            f"(first keys: {sorted(state_dict)[:5]})"
        )
    return encoder, head, decoder


def _rename_block(key: str) -> str:
    for pattern, replacement in _BLOCK_RENAMES:
        key = re.sub(pattern, replacement, "." + key)[1:]
    return key


def _rename_encoder(encoder: dict) -> dict:
    renamed = {}
    for key, value in encoder.items():
        if key in _ENCODER_RENAMES:
            renamed[_ENCODER_RENAMES[key]] = value
        elif key.startswith("layers."):
            renamed[_rename_block(key)] = value
        else:
            raise ValueError(f"Unexpected backbone key {key!r} in the checkpoint")
    return renamed


def _rename_decoder(decoder: dict) -> dict:
    renamed = {}
    for key, value in decoder.items():
        if key in _DECODER_RENAMES:
            renamed[_DECODER_RENAMES[key]] = value
        elif key.startswith("decoder_blocks."):
            renamed[_rename_block("layers." + key[len("decoder_blocks.") :])] = value
        else:
            raise ValueError(f"Unexpected MAE decoder key {key!r} in the checkpoint")
    return renamed


HEAD_TASKS = ("pose", "segmentation", "depth", "normal")


def _detect_task(head: dict, decoder: dict) -> str:
    """The task of an original checkpoint from its head keys; `"model"` when it holds an encoder only."""
    if decoder:
        return "pretraining"
    if "final_layer.weight" in head:
        return "pose"
    if "conv_seg.weight" in head:
        return {1: "depth", 3: "normal"}.get(head["conv_seg.weight"].shape[0], "segmentation")
    return "model"


def _config_from_weights(
    encoder: dict, head: dict, decoder: dict, task: str, source_task: str, overrides: dict
) -> SapiensConfig:
    hidden_size = encoder["patch_embed.projection.weight"].shape[0]
    layer_ids = {int(key.split(".")[1]) for key in encoder if key.startswith("layers.")}
    num_layers = max(layer_ids) + 1 if layer_ids else 0
    if layer_ids != set(range(num_layers)) or num_layers == 0:
        raise ValueError(f"Incomplete checkpoint: transformer blocks {sorted(layer_ids)} are not 0…{num_layers - 1}")
    for required in ("pos_embed", "layers.0.ffn.layers.0.0.weight"):
        if required not in encoder:
            raise ValueError(f"Incomplete checkpoint: backbone weight {required!r} is missing")
    # Encoder-only targets keep the checkpoint's own layout (padding of its task, CLS token, grid).
    values = dict(TASK_DEFAULTS.get(task if task in TASK_DEFAULTS else source_task, {}))
    values.update(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        intermediate_size=encoder["layers.0.ffn.layers.0.0.weight"].shape[0],
        patch_size=encoder["patch_embed.projection.weight"].shape[-1],
        num_channels=encoder["patch_embed.projection.weight"].shape[1],
        qkv_bias="layers.0.attn.qkv.bias" in encoder,
    )
    if hidden_size in HEADS_BY_WIDTH:
        values["num_attention_heads"] = HEADS_BY_WIDTH[hidden_size]
    elif "num_attention_heads" not in overrides:
        raise ValueError(
            f"Hidden size {hidden_size} is not a released Sapiens size ({sorted(HEADS_BY_WIDTH)}): "
            "pass num_attention_heads=... to convert it"
        )
    if task not in HEAD_TASKS:
        has_cls = "cls_token" in encoder
        if source_task == "model" and not has_cls and "patch_embed_padding" not in overrides:
            logger.warning(
                "A headless fine-tuned backbone does not show its patch padding: assuming 0 (segmentation/depth). "
                "Pass patch_embed_padding=2 for a pose or normal backbone."
            )
        grid = _infer_grid(encoder["pos_embed"].shape[1] - int(has_cls))
        patch = values["patch_size"]
        values.update(use_cls_token=has_cls, image_size=[grid[0] * patch, grid[1] * patch])
    if head:
        deconvs = sorted((int(k.split(".")[1]), v) for k, v in head.items() if k.startswith("deconv_layers."))
        convs = sorted(
            (int(k.split(".")[1]), v) for k, v in head.items() if k.startswith("conv_layers.") and k.endswith(".weight")
        )
        values["decoder_deconv_channels"] = [weight.shape[1] for _, weight in deconvs]
        values["decoder_conv_channels"] = [weight.shape[0] for _, weight in convs]
        values["num_labels"] = head.get("final_layer.weight", head.get("conv_seg.weight")).shape[0]
    if decoder:
        values.update(
            decoder_hidden_size=decoder["decoder_embed.weight"].shape[0],
            decoder_num_hidden_layers=len({k.split(".")[1] for k in decoder if k.startswith("decoder_blocks.")}),
            decoder_intermediate_size=decoder["decoder_blocks.0.ffn.layers.0.0.weight"].shape[0],
        )
    values.update(_label_metadata(task, overrides.get("num_labels", values.get("num_labels"))))
    values.update(overrides)
    return SapiensConfig(**values)


def _label_metadata(task: str, num_labels: int | None) -> dict:
    """id2label (and flip pairs for pose) of the released label sets."""
    from . import metadata

    if task == "pose" and num_labels in metadata.KEYPOINT_SET_BY_COUNT:
        keypoints = metadata.keypoint_set(num_labels)
        return {
            "id2label": dict(enumerate(keypoints["keypoint_names"])),
            "flip_pairs": metadata.flip_pairs(num_labels),
        }
    if task == "segmentation" and num_labels == len(metadata.SEGMENTATION_CLASSES):
        return {"id2label": dict(enumerate(metadata.SEGMENTATION_CLASSES)), "class_weights": list(metadata.CLASS_WEIGHTS)}
    return {}


def _convert_weights(encoder: dict, head: dict, decoder: dict, config: SapiensConfig, task: str) -> dict:
    """Original (prefix-free) weights → the keys of `TASK_TO_CLASS[task]`, with the position table converted to
    the model's grid exactly as the original load hook does."""
    weights = _rename_encoder(encoder)
    weights["embeddings.position_embeddings"] = convert_position_embeddings(
        weights["embeddings.position_embeddings"], config.grid_size, config.use_cls_token
    )
    if not config.use_cls_token:
        weights.pop("embeddings.cls_token", None)
    if task != "model":
        weights = {f"model.{key}": value for key, value in weights.items()}
    weights.update({"decode_head." + key.replace("conv_seg.", "final_layer."): value for key, value in head.items()})
    weights.update({f"decoder.{key}": value for key, value in _rename_decoder(decoder).items()})
    return weights


def convert_original_checkpoint(checkpoint, task: str | None = None, **config_overrides):
    """Converts an original Sapiens checkpoint into the matching `sapiens_hf` model (in eval mode).

    Args:
        checkpoint: path (`.pth`, `_clean.pth`, `*_torchscript.pt2`, `.safetensors`) or an in-memory state dict.
        task: `"pose"`, `"segmentation"`, `"depth"`, `"normal"`, `"pretraining"` (MAE), `"model"` (encoder only) or
            `"backbone"`; detected from the keys when `None`. An encoder-only or MAE checkpoint converts into any
            task model with a freshly initialised head; a task checkpoint only into its own task or an encoder.
        **config_overrides: any `SapiensConfig` field (`num_attention_heads`, `patch_embed_padding`, `image_size`, …).
    """
    encoder, head, decoder = _split_original(load_original_state_dict(checkpoint))
    found = _detect_task(head, decoder)
    task = TASK_ALIASES.get(task, task) if task is not None else found
    if task not in TASK_TO_CLASS:
        raise ValueError(f"Unknown task {task!r}; choose one of {sorted(TASK_TO_CLASS)}")
    if found in HEAD_TASKS and task in HEAD_TASKS + ("pretraining",) and task != found:
        raise ValueError(f"This is a {found} checkpoint; it cannot be converted into a {task} model")
    head = head if task == found else {}
    decoder = decoder if task == found == "pretraining" else {}
    config = _config_from_weights(encoder, head, decoder, task, found, config_overrides)
    model = TASK_TO_CLASS[task](config)
    _load_converted(model, _convert_weights(encoder, head, decoder, config, task), partial=task != found)
    return model.eval()


def _load_converted(model, weights: dict, partial: bool) -> None:
    """Loads converted weights, failing loudly on unknown keys, wrong shapes or (for a full checkpoint) gaps."""
    expected = model.state_dict()
    for key, value in weights.items():
        if key not in expected:
            raise ValueError(f"Converted key {key!r} does not exist in {type(model).__name__}")
        if value.shape != expected[key].shape:
            raise ValueError(
                f"Shape mismatch for {key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}. "
                "Is it a checkpoint of another size, or were the overrides wrong?"
            )
    missing = sorted(set(expected) - set(weights))
    if missing and not partial:
        raise ValueError(f"Incomplete checkpoint: {len(missing)} weights missing, e.g. {missing[:5]}")
    if missing:
        logger.warning(f"Newly initialised (not in the checkpoint): {missing}")
    model.load_state_dict(weights, strict=False)


def convert_to_folder(checkpoint, output_dir, task: str | None = None, push_to: str | None = None, **config_overrides):
    """Converts an original checkpoint and writes a transformers-format folder (config.json, model.safetensors,
    preprocessor_config.json); with `push_to="org/name"` also publishes it on the Hub. Returns the model."""
    model = convert_original_checkpoint(checkpoint, task=task, **config_overrides)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    from .image_processing_sapiens import SapiensImageProcessorPil

    SapiensImageProcessorPil().save_pretrained(output_dir)
    if push_to is not None:
        from .hub import publish_converted

        publish_converted(output_dir, push_to, source=checkpoint)
    return model


__all__ = ["convert_original_checkpoint", "convert_to_folder", "load_original_state_dict", "TASK_TO_CLASS"]
