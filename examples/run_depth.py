#!/usr/bin/env python
"""Fine-tunes a Sapiens model for relative depth estimation with the original recipe: foreground depth normalised to
[0, 1] per image (background −1), random background / rescale / crop / ±60° rotation / flip / photometric
augmentations, scale-invariant log loss, AdamW with layer-wise LR decay. Evaluates RMSE, AbsRel and δ<1.25.

Data: image + depth (+ foreground mask) folders or a Hub dataset; see docs/training.md.

    python examples/run_depth.py \
        --model_name_or_path facebook/sapiens-depth-0.3b \
        --train_dir data/depth/train --validation_dir data/depth/val \
        --output_dir outputs/depth --do_train --do_eval --per_device_train_batch_size 2 --bf16

On a CPU, drop --bf16 (it needs a GPU; the script stops with a hint): the run is then fp32.
"""

from dataclasses import dataclass, field

from transformers import set_seed

from sapiens_hf import SapiensForDepthEstimation
from sapiens_hf.metrics import DepthEvaluator
from sapiens_hf.training import (
    DenseDataArguments,
    DenseTransform,
    ModelArguments,
    SapiensTrainer,
    SapiensTrainingArguments,
    list_images,
    load_dense_splits,
    load_image_processor,
    load_model,
    parse_arguments,
    prepare_datasets,
    train_and_evaluate,
)


@dataclass
class DepthArguments:
    """How predictions are compared with the (foreground-normalised) reference depth."""

    depth_alignment: str = field(
        default="scale_shift",
        metadata={"help": "Per-image least-squares alignment before scoring: none, scale or scale_shift."},
    )


def main():
    model_args, data_args, depth_args, training_args = parse_arguments(
        ModelArguments, DenseDataArguments, DepthArguments, SapiensTrainingArguments
    )
    set_seed(training_args.seed)

    image_processor = load_image_processor(model_args)
    model = load_model(SapiensForDepthEstimation, model_args)
    backgrounds = list_images(data_args.background_dir)
    train_dataset, eval_dataset = prepare_datasets(
        load_dense_splits(data_args, "depth", model_args.cache_dir),
        lambda train: DenseTransform("depth", image_processor, train, background_images=backgrounds),
        data_args,
        training_args,
    )
    trainer = SapiensTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=DepthEvaluator(depth_args.depth_alignment),
    )
    train_and_evaluate(trainer, training_args, image_processor)


if __name__ == "__main__":
    main()
