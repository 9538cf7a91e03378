"""The command-line side of the `examples/run_*.py` scripts: the model arguments, argument parsing with JSON presets
(and the DeepSpeed fix-up on CPU), and loading the model and its image processor.
"""

import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
import transformers
from transformers import HfArgumentParser, Sapiens2Config, TrainingArguments

from ..configuration_sapiens import SapiensConfig
from ..image_processing_sapiens import SapiensImageProcessorPil
from ..releases import ORIGINAL_CHECKPOINTS, find_original_file
from . import sapiens2


# The package's one logger ("sapiens_hf.training"), shared by its modules: `parse_arguments` sets its level for
# every module here.
logger = logging.getLogger(__package__)

# ---------------------------------------------------------------------------------------------------------------
# The example scripts' command line: arguments, JSON presets, model and image processor
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A converted checkpoint folder or Hub id (also Meta's original repos, e.g. "
            "facebook/sapiens-pretrain-1b)."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": "Train from scratch: a size preset (sapiens-0.3b … sapiens-2b, sapiens2-0.4b … sapiens2-5b) or a "
            "config.json path."
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config fields to override, e.g. 'num_hidden_layers=2,hidden_size=64'."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialise checkpoint weights whose shape differs, e.g. a head for another keypoint set."
        },
    )
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor folder or Hub id."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded models."})
    model_revision: str = field(default="main", metadata={"help": "Model revision (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})


def parse_arguments(*dataclass_types, args: list[str] | None = None):
    """`HfArgumentParser` over the dataclasses. A first argument ending in `.json` is a preset (e.g.
    `examples/deepspeed/sapiens_2b_pose.json`) whose values the following command-line arguments override. Also sets
    up logging and the CPU DeepSpeed fix-up. `--bf16` without a GPU exits with a one-line hint (drop it, or add
    `--use_cpu`)."""
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0].endswith(".json"):
        preset = json.loads(Path(args[0]).read_text())
        args = [item for key, value in preset.items() for item in _as_cli(key, value)] + args[1:]
    try:
        parsed = HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=args)
    except ValueError as error:  # TrainingArguments refuses --bf16 without a bf16-capable accelerator
        if "--bf16" not in args or torch.cuda.is_available():
            raise
        raise SystemExit(
            "--bf16 needs a GPU and none was found: on a CPU, drop --bf16 (fp32, also the faster there) or add "
            "--use_cpu to train in bf16 anyway"
        ) from error
    training_args = next(arg for arg in parsed if isinstance(arg, TrainingArguments))
    setup_deepspeed_on_cpu(training_args)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info(f"Training/evaluation parameters {training_args}")
    return parsed


def _as_cli(key: str, value) -> list[str]:
    """A preset entry as command-line arguments (dicts as JSON strings, which TrainingArguments parses)."""
    values = value if isinstance(value, list) else [json.dumps(value) if isinstance(value, dict) else value]
    return [f"--{key}", *map(str, values)]


def setup_deepspeed_on_cpu(training_args: TrainingArguments) -> None:
    """Work around accelerate (≤ 1.15) on CPU-only machines: with DeepSpeed it builds its state without a backend
    and reports one process, so every rank trains on the whole dataset and DeepSpeed's batch-size check fails.
    Rebuilds the state on DeepSpeed's gloo process group. A no-op on GPUs and single-process runs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not training_args.deepspeed or torch.cuda.is_available() or training_args.world_size == world_size:
        return
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    training_args.accelerator_config.use_configured_state = True
    del training_args.__dict__["_setup_devices"]  # cached_property: recompute the device / world size
    if training_args.world_size != world_size:
        raise RuntimeError(f"Could not set up {world_size} DeepSpeed ranks on CPU (got {training_args.world_size})")
    # The "auto" batch sizes were filled for one process: fill them again, as TrainingArguments.__post_init__ does.
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    training_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(training_args.deepspeed)
    training_args.hf_deepspeed_config.trainer_config_process(training_args)
    training_args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=training_args.hf_deepspeed_config)


def load_model(model_class, model_args: ModelArguments, **config_kwargs):
    """A `SapiensFor*` task model from `model_name_or_path` (a checkpoint without this head, e.g. a pretrained
    backbone, gets a new one) or, with `config_name`, freshly initialised; `config_kwargs` set config fields. The
    concrete class, not an Auto class, so that an encoder checkpoint (Meta's pretrain releases, converted once and
    cached) gets this task's head. A Sapiens2 checkpoint or config (transformers' `model_type="sapiens2"`) gives the
    task's `Sapiens2For*` class instead, set up for fine-tuning as the original (`sapiens2.FINE_TUNING`). Build it
    after `TrainingArguments`, so that DeepSpeed ZeRO-3 partitions it while loading."""
    overrides = parse_config_overrides(model_args.config_overrides)
    if model_args.model_name_or_path:
        download = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token}
        if uses_sapiens2(model_args):
            sapiens2.check_overrides(overrides)
            task, model_class = model_class.task, sapiens2.model_class(model_class.task)
            fine_tuning = {key: value for key, value in sapiens2.FINE_TUNING.items() if key not in overrides}
            config, extra = Sapiens2Config.from_pretrained(
                model_args.model_name_or_path,
                **download,
                return_unused_kwargs=True,
                **fine_tuning,
                **overrides,
                **config_kwargs,
            )
            for key, value in extra.items():  # the scripts' fields Sapiens2Config does not declare (class_weights)
                setattr(config, key, value)
            sapiens2.add_task_head(config, task, {**overrides, **config_kwargs}.get("num_labels"))
            config_kwargs, overrides = {"config": config}, {}
        return model_class.from_pretrained(
            model_args.model_name_or_path,
            **download,
            # Only when asked: transformers otherwise reports a head of another size as an error.
            **({"ignore_mismatched_sizes": True} if model_args.ignore_mismatched_sizes else {}),
            **overrides,
            **config_kwargs,
        )
    if not model_args.config_name:
        raise ValueError("Pass --model_name_or_path (fine-tune a checkpoint) or --config_name (train from scratch)")
    name, fields = model_args.config_name, {**overrides, **config_kwargs}
    # Fields go through the constructor (not setattr afterwards) so derived ones, e.g. stage names, follow them.
    if _is_v1_preset(name):
        config = SapiensConfig.from_preset(name, task=model_class.task, **fields)
    elif sapiens2.preset_size(name):
        sapiens2.check_overrides(overrides)
        config = sapiens2.preset_config(name, model_class.task, **fields)
    else:
        values = {
            k: v for k, v in SapiensConfig.get_config_dict(name)[0].items() if k not in ("out_features", "out_indices")
        }
        if sapiens2.is_sapiens2(values):
            sapiens2.check_overrides(overrides)
            values.pop("stage_names", None)  # derived from the depth, which the fields may change
            config = Sapiens2Config.from_dict({**values, **sapiens2.FINE_TUNING, **fields})
        else:
            config = SapiensConfig.from_dict({**values, **fields})
    if sapiens2.is_sapiens2(config):
        task, model_class = model_class.task, sapiens2.model_class(model_class.task)
        sapiens2.add_task_head(config, task, fields.get("num_labels"))
    return model_class._from_config(config)  # as Auto*.from_config: under ZeRO-3 built inside zero.Init


def _is_v1_preset(name: str) -> bool:
    return name.lower().removeprefix("sapiens-") in ("0.3b", "0.6b", "1b", "2b")


def uses_sapiens2(model_args: ModelArguments) -> bool:
    """Whether the arguments name a Sapiens2 model: a checkpoint or config.json whose `model_type` is "sapiens2", or a
    `sapiens2-*` size preset. Meta's original Sapiens releases (converted by the `releases` hook, they have no
    config.json) are not looked up."""
    name = model_args.model_name_or_path or model_args.config_name
    if not model_args.model_name_or_path and (not name or _is_v1_preset(name) or sapiens2.preset_size(name)):
        return bool(name) and not _is_v1_preset(name)
    if any(checkpoint.repo_id == str(name) for checkpoint in ORIGINAL_CHECKPOINTS) or find_original_file(name):
        return False
    try:
        values = SapiensConfig.get_config_dict(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token
        )[0]
    except (OSError, ValueError):  # no config.json: not a transformers folder (a v1 size preset, an original file)
        return False
    return sapiens2.is_sapiens2(values)


def parse_config_overrides(text: str | None) -> dict:
    """'a=1,b=[16,16],c=x' → {'a': 1, 'b': [16, 16], 'c': 'x'} (values parsed as JSON when possible)."""
    overrides = {}
    for item in filter(None, re.split(r",(?=\w+=)", (text or "").replace(" ", ""))):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def load_image_processor(model_args: ModelArguments) -> SapiensImageProcessorPil:
    """The processor saved with the model, or the default 1024×768 one."""
    name = model_args.image_processor_name or model_args.model_name_or_path
    if name and (not os.path.isdir(name) or os.path.isfile(os.path.join(name, "preprocessor_config.json"))):
        try:
            return SapiensImageProcessorPil.from_pretrained(
                name, cache_dir=model_args.cache_dir, token=model_args.token
            )
        except OSError:
            logger.warning(f"No image processor found at {name}; using the default Sapiens processor")
    return SapiensImageProcessorPil()
