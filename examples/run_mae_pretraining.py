#!/usr/bin/env python
"""MAE pretraining of Sapiens (v1) with the Hugging Face `Trainer`, following Meta's original recipe
(`mae_sapiens_*-p16_8xb512-coslr-1600e_humans_300m_test.py`): RandomResizedCrop to 1024² (area scale 0.2–1.0, Pillow
bicubic) and a random horizontal flip; 75 % of the patches masked per sample; MSE on per-patch normalised pixels of the
masked patches; AdamW with betas (0.9, 0.95) and weight decay 0.05 (none on norms, biases, position tables, CLS and
mask tokens); lr = 1.5e-4 × total batch / 256; linear warm-up, then cosine decay; gradient clipping at 1.0.
Writes `reconstructions.png` (original | masked | reconstruction) to the output folder.

    # from scratch, on an image folder
    python examples/run_mae_pretraining.py --config_name sapiens-0.3b --train_dir /data/humans \
        --output_dir outputs/mae-0.3b --do_train --per_device_train_batch_size 64 --num_train_epochs 100 --bf16
    # continued pretraining of a converted checkpoint (a missing MAE decoder is freshly initialised)
    python examples/run_mae_pretraining.py --model_name_or_path ./sapiens-0.3b-pretrain --dataset_name org/images ...
    # Sapiens-2B, sharded with DeepSpeed ZeRO-3
    deepspeed examples/run_mae_pretraining.py --deepspeed examples/deepspeed/zero3_mae_2b.json \
        --config_name sapiens-2b --bf16 ...

On a CPU, drop --bf16 (it needs a GPU; the script stops with a hint): the run is then fp32.

Details, and how the encoder goes on to fine-tuning: docs/pretraining.md.
"""

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from datasets import load_dataset
from transformers import AutoModelForMaskedImageModeling, TrainingArguments, set_seed

from sapiens_hf import SapiensConfig
from sapiens_hf.training import (
    DataCheckArguments,
    ModelArguments,
    SapiensTrainer,
    TransformedDataset,
    load_image_processor,
    load_model,
    parse_arguments,
    parse_config_overrides,
    read_image,
    train_and_evaluate,
)


logger = logging.getLogger(__name__)


@dataclass
class PretrainingArguments(DataCheckArguments):
    """Images (an image folder or a Hub dataset), crop size and masking."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset with an image column."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    train_dir: str | None = field(default=None, metadata={"help": "Image folder for training (searched recursively)."})
    validation_dir: str | None = field(default=None, metadata={"help": "Image folder for evaluation."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    image_size: int = field(default=1024, metadata={"help": "Side of the square crops (and of a new model's grid)."})
    min_crop_scale: float = field(default=0.2, metadata={"help": "Smallest crop area share of RandomResizedCrop."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Share of patches masked per sample."})
    norm_pix_loss: bool = field(default=True, metadata={"help": "Normalise each target patch, as the original."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation set."})
    num_visualizations: int = field(
        default=4, metadata={"help": "Images drawn in reconstructions.png (original | masked | reconstruction)."}
    )


@dataclass
class MAETrainingArguments(TrainingArguments):
    """`TrainingArguments` with the original pretraining recipe as defaults (no layer-wise LR decay)."""

    base_learning_rate: float = field(
        default=1.5e-4, metadata={"help": "learning_rate = base_learning_rate × total batch size / 256."}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on norms, biases, tables)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after the linear warm-up."})
    warmup_steps: float = field(
        default=0.025, metadata={"help": "Warm-up steps, or a share of all steps when < 1 (original: 40 of 1600)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the image column for the transform."})


def random_resized_crop_box(
    width: int, height: int, scale, rng: np.random.Generator, ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a RandomResizedCrop as mmpretrain draws it: up to 10 tries of a random area share
    and log-uniform aspect ratio, else the largest central crop whose aspect ratio is within `ratio`."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w, crop_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1)), crop_w, crop_h
    if width / height < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        crop_w, crop_h = round(height * ratio[1]), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


class MAETransform:
    """Example → `pixel_values` `(3, size, size)`: the original training augmentation, or (evaluation, pictures) the
    largest central square; normalised on the 0–255 scale with the processor's mean/std."""

    def __init__(self, image_processor, column: str, size: int, min_scale: float, train: bool):
        self.column, self.size, self.min_scale, self.train = column, size, min_scale, train
        self.mean = np.asarray(image_processor.image_mean, dtype=np.float32)
        self.std = np.asarray(image_processor.image_std, dtype=np.float32)

    def check(self, example: dict) -> None:
        """Raises if the image of `example` cannot be read (see `TransformedDataset.check`)."""
        read_image(example[self.column])

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image = PIL.Image.fromarray(read_image(example[self.column]))
        if self.train:
            left, top, width, height = random_resized_crop_box(*image.size, (self.min_scale, 1.0), rng)
        else:
            side = min(image.size)
            left, top, width, height = (image.width - side) // 2, (image.height - side) // 2, side, side
        image = image.resize(
            (self.size, self.size), PIL.Image.Resampling.BICUBIC, box=(left, top, left + width, top + height)
        )
        pixels = np.asarray(image, dtype=np.float32)
        if self.train and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        pixels = (pixels - self.mean) / self.std
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))}


def collate_fn(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}


def build_model(model_args: ModelArguments, args: PretrainingArguments):
    """The checkpoint of `--model_name_or_path` (a missing decoder is initialised), or a new model of the
    `--config_name` preset at `image_size`² with `--config_overrides`."""
    masking = {"mask_ratio": args.mask_ratio, "norm_pix_loss": args.norm_pix_loss}
    if model_args.model_name_or_path:
        return load_model(AutoModelForMaskedImageModeling, model_args, **masking)
    if not model_args.config_name:
        raise ValueError("Pass --model_name_or_path (continue from a checkpoint) or --config_name (a size preset)")
    # Overrides go into the constructor: the config derives the backbone stage names from num_hidden_layers.
    config = SapiensConfig.from_preset(
        model_args.config_name,
        task="pretraining",
        image_size=[args.image_size] * 2,
        **masking,
        **parse_config_overrides(model_args.config_overrides),
    )
    # from_config builds the model under DeepSpeed's zero.Init when ZeRO-3 is configured.
    return AutoModelForMaskedImageModeling.from_config(config)


def load_splits(args: PretrainingArguments) -> dict:
    if args.dataset_name:
        return dict(load_dataset(args.dataset_name, args.dataset_config_name))
    data_files = {
        split: os.path.join(folder, "**")
        for split, folder in (("train", args.train_dir), ("validation", args.validation_dir))
        if folder
    }
    if not data_files:
        raise ValueError("Pass --dataset_name or --train_dir / --validation_dir")
    return dict(load_dataset("imagefolder", data_files=data_files))


def _to_uint8(pixels: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised `(3, H, W)` → uint8 `(H, W, 3)`."""
    mean, std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (pixels.float().cpu() * std + mean).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def save_reconstructions(model, pixel_values: torch.Tensor, path, image_mean, image_std, seed: int = 0) -> Path:
    """Draws one row per image: original | masked (removed patches grey) | reconstruction (the predicted masked
    patches with the visible ones pasted back, as in the MAE paper). Masks are drawn from `seed`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    height, width = pixel_values.shape[-2:]
    patch = model.config.patch_size
    noise = torch.rand(
        len(pixel_values), (height // patch) * (width // patch), generator=torch.Generator().manual_seed(seed)
    )
    outputs = model(pixel_values.to(device), noise=noise.to(device))
    model.train(was_training)
    mask = outputs.mask.reshape(-1, 1, height // patch, width // patch).cpu()
    mask = mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    reconstruction = outputs.reconstruction.float().cpu() * mask + pixel_values.float() * (1 - mask)
    rows = []
    for image, recon, image_mask in zip(pixel_values, reconstruction, mask):
        original = _to_uint8(image, image_mean, image_std)
        masked = np.where(image_mask.permute(1, 2, 0).numpy() > 0, np.uint8(128), original)
        rows.append(np.concatenate([original, masked, _to_uint8(recon, image_mean, image_std)], axis=1))
    PIL.Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return Path(path)


def main(argv: list[str] | None = None) -> SapiensTrainer:
    model_args, args, training_args = parse_arguments(
        ModelArguments, PretrainingArguments, MAETrainingArguments, args=argv
    )
    logger.setLevel(training_args.get_process_log_level())
    set_seed(training_args.seed)
    total_batch = training_args.train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    training_args.learning_rate = training_args.base_learning_rate * total_batch / 256
    logger.info(f"Total batch size {total_batch}: learning rate {training_args.learning_rate:.3g}")

    # After TrainingArguments, so that a ZeRO-3 config partitions the model while it is built.
    model = build_model(model_args, args)
    image_processor = load_image_processor(model_args)
    splits = load_splits(args)
    for split, dataset in splits.items():
        if args.image_column not in dataset.column_names:
            raise ValueError(f"Split {split!r} has no column {args.image_column!r} (columns: {dataset.column_names})")

    def make_dataset(split: str, limit: int | None, train: bool) -> TransformedDataset:
        dataset = splits[split]
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        transform = MAETransform(image_processor, args.image_column, args.image_size, args.min_crop_scale, train)
        transformed = TransformedDataset(dataset, transform, seed=training_args.seed)
        if args.check_data:
            transformed.check(split)
        return transformed

    for needed, split in ((training_args.do_train, "train"), (training_args.do_eval, "validation")):
        if needed and split not in splits:
            raise ValueError(f"--do_{'train' if split == 'train' else 'eval'} needs a {split} split")
    trainer = SapiensTrainer(  # layer_decay is unset: plain decay / no-decay AdamW groups, as the MAE recipe
        model=model,
        args=training_args,
        train_dataset=make_dataset("train", args.max_train_samples, True) if training_args.do_train else None,
        eval_dataset=make_dataset("validation", args.max_eval_samples, False) if training_args.do_eval else None,
        data_collator=collate_fn,
    )
    # The MAE loss needs no labels (its targets are the masked pixels): without this, evaluation skips it.
    trainer.can_return_loss = True
    train_and_evaluate(trainer, training_args, image_processor)

    if args.num_visualizations > 0 and trainer.is_world_process_zero():
        if trainer.is_deepspeed_enabled:  # ZeRO-3 holds parameter shards; draw from the saved model instead
            logger.info(
                "Skipping reconstructions.png under DeepSpeed: draw it with --model_name_or_path <output_dir> "
                "and neither --deepspeed nor --do_train"
            )
        else:
            pictures = make_dataset("validation" if "validation" in splits else "train", args.num_visualizations, False)
            pixel_values = collate_fn([pictures[i] for i in range(len(pictures))])["pixel_values"]
            os.makedirs(training_args.output_dir, exist_ok=True)
            path = save_reconstructions(
                trainer.model,
                pixel_values,
                Path(training_args.output_dir) / "reconstructions.png",
                image_processor.image_mean,
                image_processor.image_std,
                seed=training_args.seed,
            )
            logger.info(f"Reconstructions drawn in {path}")
    return trainer


if __name__ == "__main__":
    main()
