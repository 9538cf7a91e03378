#!/usr/bin/env python
"""Fine-tunes a Sapiens model for camera-space surface-normal estimation with the original recipe: background −1000,
random background / rescale / crop / flip (x negated) / photometric augmentations, cosine + L1 loss, AdamW with
layer-wise LR decay. Evaluates mean / median angular error and the share of pixels within 11.25°, 22.5° and 30°.
Fine-tunes Sapiens v1 (`SapiensForNormalEstimation`) or Sapiens2 (transformers' `Sapiens2ForNormalEstimation`, with
the original sapiens2 cosine + L1 + gradient loss) checkpoints alike.

Data: image + normal-map (+ foreground mask) folders or a Hub dataset; see docs/training.md.

    python examples/run_normal.py \
        --model_name_or_path facebook/sapiens-normal-0.3b \
        --train_dir data/normal/train --validation_dir data/normal/val \
        --output_dir outputs/normal --do_train --do_eval --per_device_train_batch_size 2 --bf16

On a CPU, drop --bf16 (it needs a GPU; the script stops with a hint): the run is then fp32.
"""

from transformers import set_seed

from sapiens_hf import SapiensForNormalEstimation
from sapiens_hf.metrics import NormalEvaluator
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


def main():
    model_args, data_args, training_args = parse_arguments(ModelArguments, DenseDataArguments, SapiensTrainingArguments)
    set_seed(training_args.seed)

    image_processor = load_image_processor(model_args)
    model = load_model(SapiensForNormalEstimation, model_args)
    backgrounds = list_images(data_args.background_dir)
    train_dataset, eval_dataset = prepare_datasets(
        load_dense_splits(data_args, "normal", model_args.cache_dir),
        lambda train: DenseTransform("normal", image_processor, train, background_images=backgrounds),
        data_args,
        training_args,
    )
    trainer = SapiensTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=NormalEvaluator(),
    )
    train_and_evaluate(trainer, training_args, image_processor)


if __name__ == "__main__":
    main()
