"""Conversion of Meta's original Sapiens checkpoints (mmengine `.pth`, pretrain `_clean.pth`, TorchScript `.pt2`,
safetensors or in-memory state dicts) into `sapiens_hf` models.

Loading is safe: no code in a checkpoint is ever executed. Pickles are read by torch's weights-only unpickler with
a short allow-list, TorchScript archives by `_TorchScriptReader` (never `torch.jit.load`, which runs the archive's
TorchScript), and every weight must be a floating-point tensor.

Key names and shapes are those of the original code (github.com/facebookresearch/sapiens): the backbone of
`pretrain/mmpretrain/models/backbones/vision_transformer.py`, the heads of
`pose/mmpose/models/heads/heatmap_heads/heatmap_head.py` and `seg/mmseg/models/decode_heads/vit_*head.py`, and the
files written by `pretrain/tools/misc/{pretrain,finetune}_clean_checkpoints.py`.
"""

import difflib
import io
import json
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path

import torch
from transformers.utils import logging

from . import modeling_sapiens
from .configuration_sapiens import SAPIENS_PRESETS, TASK_DEFAULTS, SapiensConfig
from .image_processing_sapiens import SapiensImageProcessorPil
from .modeling_sapiens import WrongModelError, _infer_grid, convert_position_embeddings
from .tasks import ENCODER, TASKS, V1_TASKS, get_task


logger = logging.get_logger(__name__)

# The model class each task converts into (`sapiens_hf.tasks`).
TASK_TO_CLASS = {name: getattr(modeling_sapiens, task.model_class) for name, task in V1_TASKS.items()}

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
# Safe loading: no code in a checkpoint is ever executed
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


class _ScriptObject:
    """Inert stand-in for every `__torch__.*` class of a TorchScript archive: BUILD only stores the pickled state."""

    qualname, state = "", None

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(flat, offset, size, stride, *_):  # requires_grad, backward hooks, metadata: dropped
    return flat.as_strided(size, stride, offset)  # bounds-checked against the storage record


def _first(value, *_):  # `_rebuild_parameter`, `restore_type_tag`, `build_intlist`, ... reduced to what they return
    return value


class _TorchScriptReader(pickle.Unpickler):
    """The parameters and buffers of a TorchScript archive, read without running anything from it.

    `torch.jit.save` writes a zip: `<root>/data.pkl` pickles the module tree (`__torch__.*` objects whose state is
    their attribute dict), `<root>/data/<key>` the raw storages, `<root>/code/` the TorchScript source. Unlike
    `torch.jit.load`, which compiles that source and runs scripted `__setstate__` methods, this unpickler builds
    every `__torch__.*` class as an inert `_ScriptObject`, calls only the functions of `_GLOBALS` and refuses any
    other global (the only way a pickle can call code). `code/` is read as text, for the `__parameters__` and
    `__buffers__` lists of each module class, so the keys (and their order) are those of
    `torch.jit.load(path).state_dict()`. A module with its own `__setstate__` is refused: its weights would only
    exist after running its code.
    """

    _GLOBALS = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _first,
        ("torch._utils", "_rebuild_parameter_with_state"): _first,
        ("torch.jit._pickle", "restore_type_tag"): _first,
        **{("torch.jit._pickle", f"build_{kind}list"): _first for kind in ("int", "double", "bool", "tensor")},
    }
    _STORAGE_DTYPES = torch.storage._storage_type_to_dtype_map()  # {"FloatStorage": torch.float32, ...}

    def __init__(self, archive: zipfile.ZipFile):
        roots = [name[: -len("/data.pkl")] for name in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", name)]
        if len(roots) != 1:
            raise ValueError("Not a TorchScript archive: expected one `<root>/data.pkl`")
        self.archive, self.root, self.names = archive, roots[0], set(archive.namelist())
        self.storages, self.classes, self.declarations = {}, {}, {}
        super().__init__(io.BytesIO(archive.read(f"{self.root}/data.pkl")))

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "__torch__":
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if module == "torch" and name in self._STORAGE_DTYPES:  # `torch.FloatStorage` & co: dtype of a storage record
            return self._STORAGE_DTYPES[name]
        if (module, name) not in self._GLOBALS:
            raise ValueError(f"Refusing to load the TorchScript archive: its data.pkl references {module}.{name}, "
                             "not one of the allowed tensor-rebuilding functions (no code from a checkpoint is run).")
        return self._GLOBALS[module, name]

    def persistent_load(self, pid):  # ('storage', dtype, key, location, numel): record `<root>/data/<key>`
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise ValueError(f"Unexpected persistent id {pid!r} in the TorchScript archive")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:  # storages are shared between tensors (views, tied weights)
            data = self.archive.read(f"{self.root}/data/{key}")
            if len(data) != numel * dtype.itemsize:
                raise ValueError(f"Storage record {key} holds {len(data)} bytes, not {numel} × {dtype}")
            flat = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
            self.storages[key] = torch.empty(0, dtype=dtype).set_(flat)
        return self.storages[key]

    def state_dict(self) -> dict[str, torch.Tensor]:
        root = self.load()
        if not isinstance(root, _ScriptObject):
            raise ValueError("The TorchScript archive does not pickle a module")
        return self._tensors(root, "")

    def _tensors(self, module: _ScriptObject, prefix: str) -> dict:
        if module.qualname not in self.declarations:
            self.declarations[module.qualname] = self._declared(module.qualname)
        declared = self.declarations[module.qualname]
        if declared is None:  # an object of a scripted class, not a submodule: not in `state_dict()`
            return {}
        if not isinstance(module.state, dict):
            raise ValueError(f"Refusing to load {module.qualname} from the TorchScript archive: its custom state "
                             "can only be read by running its TorchScript code.")
        state = module.state
        tensors = {prefix + name: state[name] for name in declared if isinstance(state.get(name), torch.Tensor)}
        for name, value in state.items():
            if isinstance(value, _ScriptObject):
                tensors.update(self._tensors(value, f"{prefix}{name}."))
        return tensors

    def _declared(self, qualname: str) -> list[str] | None:
        """`__parameters__` + `__buffers__` of a module class, read (as text) from its `code/` file; None for a
        scripted class that is no module."""
        path, _, name = qualname.rpartition(".")
        path = f"{self.root}/code/{path.replace('.', '/')}.py"
        source = self.archive.read(path).decode() if path in self.names else ""
        body = ("\n" + source).partition(f"\nclass {name}(Module):\n")[2].split("\nclass ", 1)[0]
        lists = re.match(r"  __parameters__ = \[(.*)\]\n  __buffers__ = \[(.*)\]\n", body)
        if lists is None:
            return None
        if "\n  def __setstate__(" in body:
            raise ValueError(f"Refusing to load {qualname} from the TorchScript archive: it defines its own "
                             "__setstate__, so its weights only exist after running code from the checkpoint.")
        return re.findall(r'"([^"]+)"', lists[1] + lists[2])


def load_original_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """Reads an original checkpoint into a flat state dict. No code in the file is ever executed: pickles go
    through torch's weights-only unpickler (plus the allow-list above), TorchScript archives through
    `_TorchScriptReader` (the tensors only; `torch.jit.load` is never called).

    Accepts a state dict, a `.pth`/`.bin` pickle (`{"state_dict": ..., "meta": ...}` or flat), a `.safetensors`
    file, or a TorchScript archive (`*_torchscript.pt2`, or a `.pth` that is one), read with the key names of its
    `state_dict()`, the original ones.
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
            if not zipfile.is_zipfile(path):
                raise ValueError(f"{path} is not a TorchScript archive (not a zip file)")
            with zipfile.ZipFile(path) as archive:
                state_dict = _TorchScriptReader(archive).state_dict()
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
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


# ---------------------------------------------------------------------------------------------------------------
# Key renaming and detection
# ---------------------------------------------------------------------------------------------------------------


# The dtypes original weights come in; others (integers, bool, float8) are refused rather than cast.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SAFETENSORS_WEIGHT_DTYPES = {"F32", "F16", "BF16", "F64"}  # the same, as safetensors headers name them
_SAFETENSORS_NAMES = dict(zip(WEIGHT_DTYPES, ("F32", "F16", "BF16", "F64")))


def check_saved_weight_dtypes(name_or_path, **hub_kwargs) -> None:
    """Refuses a transformers folder or Hub repo whose saved weights are not floating point (int32, float8, ...):
    `from_pretrained` would cast them into the float model without a word. Reads the safetensors files' headers, or,
    for a checkpoint saved as `pytorch_model.bin` (which `from_pretrained` loads when there is no safetensors file),
    its tensors' dtypes without their data (`torch.load` onto the meta device, weights only); from the folder or the
    Hugging Face cache (`hub_kwargs`: cache_dir, revision, subfolder, token)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def file(name):
        return cached_file(name_or_path, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs)

    def files(index_name, single):
        index = file(index_name)
        names = sorted(set(json.loads(Path(index).read_text())["weight_map"].values())) if index else [single]
        return [path for path in map(file, names) if path]

    def dtypes(path):
        if path.endswith(".safetensors"):
            with safe_open(path, "pt") as weights:
                return [(key, weights.get_slice(key).get_dtype()) for key in weights.keys()]
        state_dict = torch.load(path, map_location="meta", weights_only=True)
        return [(key, _SAFETENSORS_NAMES.get(value.dtype, str(value.dtype).removeprefix("torch.")))
                for key, value in state_dict.items() if isinstance(value, torch.Tensor)]

    # Only the files from_pretrained loaded: the .bin ones when there are no safetensors (no needless download).
    for path in files("model.safetensors.index.json", "model.safetensors") or files("pytorch_model.bin.index.json",
                                                                                    "pytorch_model.bin"):
        for key, dtype in dtypes(path):
            if dtype not in SAFETENSORS_WEIGHT_DTYPES:
                raise WrongModelError(f"Weight {key!r} of {path} is {dtype}, not floating point (F32, F16, BF16, F64): "
                                      "not a Sapiens model as saved by save_pretrained (was it quantised or damaged?)")


def _split_original(state_dict: dict) -> tuple[dict, dict, dict]:
    """Splits original keys into encoder, head and MAE-decoder parts (prefixes removed); all must be float tensors."""
    encoder, head, decoder = {}, {}, {}
    for key, value in state_dict.items():
        if key.startswith(("data_preprocessor.", "auxiliary_head.")):
            continue
        if value.dtype not in WEIGHT_DTYPES:  # would be silently cast (or truncated) into the float model weights
            raise ValueError(f"Weight {key!r} of the checkpoint is {value.dtype}, not one of the dtypes of released "
                             "weights (float32, float16, bfloat16, float64): not a valid Sapiens checkpoint (was it "
                             "quantised or corrupted?)")
        if key.startswith("backbone."):
            encoder[key[len("backbone.") :]] = value
        elif key.startswith(("head.", "decode_head.")):
            head[key.split(".", 1)[1]] = value
        elif key.startswith("neck."):
            decoder[key[len("neck.") :]] = value
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


HEAD_TASKS = tuple(name for name, task in TASKS.items() if task.has_head)
# What `**config_overrides` accepts: the SapiensConfig fields and the init-only arguments it understands.
CONFIG_OVERRIDES = {f.name for f in fields(SapiensConfig)} | {"attn_implementation", "num_labels", "out_features",
                                                               "out_indices"}


def check_config_overrides(overrides: dict) -> None:
    """A misspelt override would otherwise be stored on the config as an unused attribute."""
    for key in overrides:
        if key not in CONFIG_OVERRIDES:
            close = difflib.get_close_matches(key, CONFIG_OVERRIDES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (overrides are SapiensConfig fields)"
            raise TypeError(f"Unknown config override {key!r}{hint}")


def _detect_task(head: dict, decoder: dict) -> str:
    """The task of an original checkpoint: the MAE decoder's, else the one whose head output layer it holds (the
    layer's width tells the dense heads of fixed width apart); the encoder's when it holds neither."""
    if decoder:
        return next(task.name for task in TASKS.values() if task.decoder)
    for task in sorted(V1_TASKS.values(), key=lambda task: task.output_channels is None):  # fixed widths first
        layer = head.get(f"{task.original_head}.weight") if task.original_head else None
        if layer is not None and task.output_channels in (None, layer.shape[0]):
            return task.name
    return ENCODER.name


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
        if TASKS[source_task].encoder_only and not has_cls and "patch_embed_padding" not in overrides:
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
    values.update(TASKS[task].label_metadata(overrides.get("num_labels", values.get("num_labels"))))
    values.update(overrides)
    return SapiensConfig(**values)


def _convert_weights(encoder: dict, head: dict, decoder: dict, model) -> dict:
    """Original (prefix-free) weights → the keys of `model`, with the position table converted to the model's grid
    exactly as the original load hook does."""
    config = model.config
    weights = _rename_encoder(encoder)
    weights["embeddings.position_embeddings"] = convert_position_embeddings(
        weights["embeddings.position_embeddings"], config.grid_size, config.use_cls_token
    )
    if not config.use_cls_token:
        weights.pop("embeddings.cls_token", None)
    if model.base_model is not model:  # the encoder inside a task model or a backbone
        weights = {f"{model.base_model_prefix}.{key}": value for key, value in weights.items()}
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
        **config_overrides: any `SapiensConfig` field (`num_attention_heads`, `patch_embed_padding`, `image_size`, …);
            an unknown name raises a TypeError suggesting the closest field.

    Raises ValueError for a checkpoint whose weights are not floating point or do not fit the model. No code in the
    checkpoint is executed (see `load_original_state_dict`).
    """
    return _convert(checkpoint, task, config_overrides)[0]


def _convert(checkpoint, task: str | None, config_overrides: dict) -> tuple:
    """`(model, names of the weights the checkpoint did not hold)`: a new head for an encoder-only source."""
    check_config_overrides(config_overrides)
    encoder, head, decoder = _split_original(load_original_state_dict(checkpoint))
    found = _detect_task(head, decoder)
    task = get_task(task).name if task is not None else found
    if task not in TASK_TO_CLASS:
        raise ValueError(f"{task} is a Sapiens2 task: its checkpoints (e.g. {TASKS[task].default_checkpoint}) load as "
                         "they are, with nothing to convert")
    if found in HEAD_TASKS and not TASKS[task].encoder_only and task != found:
        raise ValueError(f"This is a {found} checkpoint; it cannot be converted into a {task} model")
    head, decoder = (head, decoder) if task == found else ({}, {})  # only the checkpoint's own task has them
    config = _config_from_weights(encoder, head, decoder, task, found, config_overrides)
    model = TASK_TO_CLASS[task](config)
    fresh = _load_converted(model, _convert_weights(encoder, head, decoder, model), partial=task != found)
    return model.eval(), fresh


def _load_converted(model, weights: dict, partial: bool) -> list[str]:
    """Loads converted weights, failing loudly on unknown keys, wrong shapes or (for a full checkpoint) gaps;
    returns the names of the weights that stay newly initialised."""
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
    return missing


def convert_to_folder(checkpoint, output_dir, task: str | None = None, overwrite: bool = False, **config_overrides):
    """Converts an original checkpoint and writes a transformers-format folder (config.json, model.safetensors,
    preprocessor_config.json: the original pre-processing of every released model). Returns the model. A folder that
    already holds such files is refused unless `overwrite` (other files there are never touched).

    A new head (an encoder-only checkpoint converted for a task) is not saved: `from_pretrained` initialises it, so
    that `num_labels=` and other head settings can still be chosen when the folder is loaded.
    `sapiens_hf.hub.publish_converted` publishes such a folder with its provenance."""
    output_dir = Path(output_dir)
    existing = sorted(path.name for path in output_dir.glob("*") if path.name in ("config.json", "preprocessor_config.json")
                      or (path.name.startswith("model") and ".safetensors" in path.name))
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds {', '.join(existing)}: pass overwrite=True (--overwrite) to "
                              "replace them, or choose another folder")
    model, fresh = _convert(checkpoint, task, config_overrides)
    state_dict = {key: value for key, value in model.state_dict().items() if key not in set(fresh)}
    model.save_pretrained(output_dir, state_dict=state_dict)
    SapiensImageProcessorPil().save_pretrained(output_dir)
    return model


__all__ = ["convert_original_checkpoint", "convert_to_folder", "load_original_state_dict", "TASK_TO_CLASS"]
