"""The original fine-tuning recipe's optimiser and the Hugging Face `Trainer` that uses it: parameter groups with
layer-wise LR decay and no weight decay on norms/biases/position embeddings (the original layer-decay optimiser
constructors, github.com/facebookresearch/sapiens: `pose/mmpose/engine/optim_wrappers/layer_decay_optim_wrapper.py`,
`seg/mmseg/engine/optimizers/layer_decay_optim_wrapper.py`), `TrainingArguments` with the recipe's defaults and its
multi-step LR schedule, and the end of every example script (resume from the last complete checkpoint, train, save,
evaluate).
"""

import json
import logging
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, SchedulerType

from .sapiens2 import is_sapiens2, loss_for


# The package's one logger ("sapiens_hf.training"), shared by its modules: `parse_arguments` sets its level for
# every module here.
logger = logging.getLogger(__package__)

# ---------------------------------------------------------------------------------------------------------------
# Optimiser: parameter groups with layer-wise LR decay (the original LayerDecayOptimWrapperConstructor)
# ---------------------------------------------------------------------------------------------------------------

# Never weight-decayed besides 1-D tensors and biases: the original skips `pos_embed` (fine-tuning) and MAE also
# `cls_token` / `mask_token`. Sapiens2's original optimiser skips only 1-D tensors and biases (it has no position
# table; its CLS and register tokens are decayed).
NO_DECAY_NAMES = ("position_embeddings", "cls_token", "mask_token")


def _encoder_prefix(model: torch.nn.Module) -> str:
    """Name prefix of the encoder's parameters: "" for a bare `SapiensModel` / `Sapiens2Model`, else
    `"<base_model_prefix>."`."""
    from transformers import Sapiens2Model

    from ..modeling_sapiens import SapiensModel

    return "" if isinstance(model, (SapiensModel, Sapiens2Model)) else f"{model.base_model_prefix}."


# Where the transformer blocks are: `layers.<i>` in Sapiens, `model.layer.<i>` in transformers' Sapiens2.
_BLOCKS = ("layers.", "model.layer.")


def layer_id(name: str, num_layers: int, encoder_prefix: str = "model.") -> int:
    """Depth of a parameter for layer-wise LR decay, as the original: 0 for the embeddings (patch embedding, position
    table, CLS and register tokens), i + 1 for transformer block i, `num_layers + 1` for everything above (final norm,
    heads, MAE decoder)."""
    if name.startswith(encoder_prefix + "embeddings."):
        return 0
    for blocks in _BLOCKS:
        if name.startswith(encoder_prefix + blocks):
            return int(name[len(encoder_prefix + blocks) :].split(".")[0]) + 1
    return num_layers + 1


def parameter_groups(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float | None = None
) -> list[dict]:
    """Optimiser parameter groups of a Sapiens model, as the original optimiser constructors build them.

    No weight decay for 1-D tensors (norms), biases and (Sapiens v1) position embeddings and CLS/mask tokens. With `layer_decay`,
    parameters at depth `layer_id` get `lr = learning_rate * layer_decay ** (num_layers + 1 - layer_id)` (groups
    `layer_{id}_decay` / `layer_{id}_no_decay`); with `None` (the MAE pretraining recipe) every group has
    `learning_rate` (groups `decay` / `no_decay`). Frozen parameters are left out. Works on ZeRO-3-partitioned models
    (shapes are read from `ds_shape`). Each group carries `lr`, `weight_decay`, `lr_scale` and `name`.
    """
    num_layers = model.config.num_hidden_layers
    prefix = _encoder_prefix(model)
    no_decay_names = () if is_sapiens2(model.config) else NO_DECAY_NAMES
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        shape = getattr(param, "ds_shape", param.shape)  # ZeRO-3 leaves local shards of shape (0,)
        no_decay = len(shape) == 1 or name.endswith(".bias") or any(key in name for key in no_decay_names)
        kind = "no_decay" if no_decay else "decay"
        if layer_decay is None:
            group_name, scale = kind, 1.0
        else:
            depth = layer_id(name, num_layers, prefix)
            group_name, scale = f"layer_{depth}_{kind}", layer_decay ** (num_layers + 1 - depth)
        if group_name not in groups:
            groups[group_name] = {
                "name": group_name,
                "params": [],
                "lr": learning_rate * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[group_name]["params"].append(param)
    return list(groups.values())


@dataclass
class SapiensTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults of the original fine-tuning recipe and its layer-wise LR decay."""

    layer_decay: float | None = field(
        default=0.85,
        metadata={"help": "Layer-wise LR decay rate (0.85 in the original recipe; 1.0 turns it off)."},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak AdamW learning rate of the top layers."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (not applied to norms/biases)."})
    batch_eval_metrics: bool = field(
        default=True,
        metadata={"help": "Update the metrics batch by batch instead of keeping every full-resolution output."},
    )
    lr_milestones: list[float] | None = field(
        default=None,
        metadata={
            "help": "The original pose schedule (mmengine MultiStepLR): epochs after which the LR is multiplied by "
            "`lr_milestone_gamma`, e.g. 170 200 of 210 epochs. Goes with --lr_scheduler_type constant_with_warmup, "
            "whose warm-up comes first."
        },
    )
    lr_milestone_gamma: float = field(default=0.1, metadata={"help": "LR factor applied at each of `lr_milestones`."})

    def __post_init__(self):
        super().__post_init__()
        if self.lr_milestones and SchedulerType(self.lr_scheduler_type) != SchedulerType.CONSTANT_WITH_WARMUP:
            raise ValueError(
                f"lr_milestones step the LR down after a constant warm-up: use --lr_scheduler_type "
                f"constant_with_warmup, not {SchedulerType(self.lr_scheduler_type).value}"
            )


class SapiensTrainer(Trainer):
    """`Trainer` that builds the optimiser from `parameter_groups` (layer-wise LR decay from `args.layer_decay`),
    tells datasets with a `set_epoch` method which epoch starts, so their per-sample augmentations stay reproducible,
    and computes the original fine-tuning loss of transformers' Sapiens2 models (`sapiens2.loss_for`; Sapiens v1
    models compute theirs in `forward`).

    Under DeepSpeed the config must not have an `optimizer` block (refused): only without one does the Trainer call
    `create_optimizer`; with one, DeepSpeed would build a single flat group and lose the decay.
    """

    # Both families' losses are per-batch means: the Trainer divides them by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.original_loss = loss_for(self.accelerator.unwrap_model(self.model))
        if self.original_loss is not None:
            self.model_accepts_loss_kwargs = False  # the loss is not normalised by a token count
        deepspeed_config = getattr(self.args, "hf_deepspeed_config", None)
        if (
            getattr(self.args, "layer_decay", None) is not None
            and deepspeed_config
            and "optimizer" in deepspeed_config.config
        ):
            raise ValueError(
                "The DeepSpeed config has an `optimizer` block, so DeepSpeed would build one parameter group and drop "
                "the layer-wise LR decay: remove the block (the Trainer then builds AdamW with the decay groups)"
            )
        self.add_callback(_EpochCallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.original_loss is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels, label_weights = inputs.pop("labels"), inputs.pop("label_weights", None)
        outputs = model(**inputs)
        loss = self.original_loss(outputs, labels, label_weights)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs) or not isinstance(optimizer_cls, type):
                raise ValueError(
                    f"optim={self.args.optim!r} builds its own parameter groups, which would drop the layer-wise LR "
                    "decay; use a standard optimizer such as adamw_torch or adamw_torch_fused"
                )
            groups = parameter_groups(
                opt_model, self.args.learning_rate, self.args.weight_decay, getattr(self.args, "layer_decay", None)
            )
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """transformers' schedules, plus `lr_milestones`: the warm-up of `constant_with_warmup`, then ×gamma from the
        first optimizer step of each milestone epoch on (transformers has no multi-step schedule)."""
        milestones = getattr(self.args, "lr_milestones", None)
        if self.lr_scheduler is None and milestones:
            steps_per_epoch = num_training_steps / (self.state.num_train_epochs or self.args.num_train_epochs)
            milestone_steps = sorted(round(epoch * steps_per_epoch) for epoch in milestones)
            warmup_steps = self.args.get_warmup_steps(num_training_steps)
            gamma = self.args.lr_milestone_gamma

            def factor(step: int) -> float:
                return min(1.0, step / max(1, warmup_steps)) * gamma ** bisect_right(milestone_steps, step)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)


class _EpochCallback(TrainerCallback):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        dataset = self.trainer.train_dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(state.epoch))  # exact: epochs advance by whole steps_in_epoch / steps_in_epoch


# ---------------------------------------------------------------------------------------------------------------
# Training runs of the example scripts: resuming from the last complete checkpoint, the final save and evaluation
# ---------------------------------------------------------------------------------------------------------------


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` that the Trainer finished writing, or None.

    The Trainer writes a checkpoint in place, `trainer_state.json` last (after the weights, optimizer, scheduler and
    RNG states), so a folder without a readable one was cut off mid-save, e.g. by a killed job. Such folders are
    skipped with a warning and left as they are (the resumed run overwrites them when it reaches their step)."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    folders = Path(output_dir).iterdir() if os.path.isdir(output_dir) else ()
    steps = {int(match[1]): path for path in folders if path.is_dir() and (match := pattern.match(path.name))}
    for step in sorted(steps, reverse=True):
        try:
            json.loads((steps[step] / TRAINER_STATE_NAME).read_text())
            return str(steps[step])
        except (OSError, ValueError):
            logger.warning(
                f"Skipping the incomplete checkpoint {steps[step]}: it has no readable {TRAINER_STATE_NAME}, which "
                "the Trainer writes last (the run was probably stopped while saving it)"
            )
    return None


# The work a run's checkpoints belong to, kept in its output folder: a rerun resumes them only for the same work.
RUN_RECORD = "sapiens-hf-run.json"
# The training arguments that change what is learnt (the others — logging, saving, evaluation — do not; nor does
# the length of the run, num_train_epochs / max_steps: a longer run of the same work continues from its checkpoint).
_WORK_ARGUMENTS = (
    "learning_rate", "weight_decay", "layer_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "optim", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "lr_milestones",
    "lr_milestone_gamma", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed", "bf16",
    "fp16",
)


def run_record(trainer: Trainer) -> dict:
    """What defines a training run's work: the model's configuration (labels, classes, sizes and the checkpoint it
    starts from), the training data (the `datasets` fingerprint of the rows and their count) and the arguments that
    change what is learnt. JSON-safe, as read back from `RUN_RECORD`."""
    data = getattr(trainer.train_dataset, "dataset", trainer.train_dataset)
    config = trainer.model.config.to_dict()
    config.pop("transformers_version", None)
    record = {
        "model": config,
        "train_data": {"rows": len(data), "fingerprint": getattr(data, "_fingerprint", None)},
        "training": {name: getattr(trainer.args, name, None) for name in _WORK_ARGUMENTS},
    }
    return json.loads(json.dumps(record, default=str))


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [item for key in sorted(set(old) | set(new), key=str)
                for item in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} → {new!r}"]


def _check_same_work(output_dir: str | os.PathLike, checkpoint: str, record: dict) -> None:
    """Raises unless `output_dir`'s run record shows that its checkpoints were made for the same work."""
    path = Path(output_dir) / RUN_RECORD
    try:
        earlier = json.loads(path.read_text())
    except FileNotFoundError:
        earlier = None
    except ValueError:
        earlier = {}
    if earlier == record:
        return
    if earlier is None:
        reason = f"there is no {RUN_RECORD} to show what it was trained on"
    else:
        changes = _differences(earlier, record)
        listed = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        reason = f"it was made for other work ({listed})"
    raise ValueError(
        f"{output_dir} holds {checkpoint}, which this run will not resume: {reason}. Use another --output_dir, or "
        f"pass --resume_from_checkpoint {checkpoint} to continue from it anyway"
    )


def _train(trainer: Trainer, checkpoint: str | None):
    """`trainer.train`, with a checkpoint of another model's shapes named in the error."""
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    except RuntimeError as error:
        if checkpoint is None or "size mismatch" not in str(error):
            raise
        raise ValueError(f"{checkpoint} holds weights of other shapes than this model (other labels, classes or "
                         f"sizes?): {str(error).splitlines()[0]}") from error


def train_and_evaluate(trainer: Trainer, training_args: TrainingArguments, image_processor=None) -> dict:
    """The end of every example script: train (resuming from `--resume_from_checkpoint`, or from the last checkpoint
    in `output_dir` when it was made for the same work, see `run_record`), save the model (consolidated under
    ZeRO-3) and processor, evaluate, log and save the metrics."""
    metrics = {}
    if training_args.do_train:
        checkpoint, record = training_args.resume_from_checkpoint, run_record(trainer)
        if checkpoint is None:
            checkpoint = last_complete_checkpoint(training_args.output_dir)
            if checkpoint is not None:
                _check_same_work(training_args.output_dir, checkpoint, record)
                logger.info(f"Resuming training from {checkpoint}")
        if trainer.is_world_process_zero():
            Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(training_args.output_dir) / RUN_RECORD).write_text(json.dumps(record, indent=1))
        result = _train(trainer, checkpoint)
        trainer.save_model()
        if image_processor is not None and trainer.is_world_process_zero():
            image_processor.save_pretrained(training_args.output_dir)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    return metrics
