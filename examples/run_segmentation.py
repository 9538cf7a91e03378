#!/usr/bin/env python
"""Fine-tunes a Sapiens model for body-part segmentation (the 28 Goliath classes by default) with the original recipe:
random background / rescale / crop / rotation / flip with left-right label swaps / photometric augmentations,
class-weighted cross-entropy (+ Dice for Sapiens2), AdamW with layer-wise LR decay. Evaluates mIoU and per-class
accuracy. Fine-tunes Sapiens v1 (`SapiensForSemanticSegmentation`) or Sapiens2 (transformers'
`Sapiens2ForSemanticSegmentation`, 29 classes) checkpoints alike.

Data: image + label-mask folders or a Hub dataset with `image` / `label` columns; see docs/training.md.

    python examples/run_segmentation.py \
        --model_name_or_path facebook/sapiens-seg-0.3b \
        --train_dir data/seg/train --validation_dir data/seg/val \
        --output_dir outputs/seg --do_train --do_eval --per_device_train_batch_size 2 --bf16

On a CPU, drop --bf16 (it needs a GPU; the script stops with a hint): the run is then fp32.
"""

from dataclasses import dataclass, field

from transformers import set_seed

from sapiens_hf import SapiensForSemanticSegmentation, metadata
from sapiens_hf.metrics import SegmentationEvaluator
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
    segmentation_flip_pairs,
    train_and_evaluate,
    uses_sapiens2,
)


@dataclass
class SegmentationArguments:
    """Label set of the segmentation data."""

    class_names: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated class names (index order). Default: the 28 Goliath body-part classes (29 with "
            "Eyeglass for a Sapiens2 model) with the original class weights. Names `Left_X` / `Right_X` are swapped "
            "by horizontal flips."
        },
    )
    ignore_index: int = field(default=255, metadata={"help": "Label value excluded from loss and metrics."})


def main():
    model_args, data_args, seg_args, training_args = parse_arguments(
        ModelArguments, DenseDataArguments, SegmentationArguments, SapiensTrainingArguments
    )
    set_seed(training_args.seed)

    if seg_args.class_names:
        names, class_weights = [name.strip() for name in seg_args.class_names.split(",")], None
    elif uses_sapiens2(model_args):
        names, class_weights = list(metadata.SEGMENTATION_CLASSES_29), list(metadata.SAPIENS2_CLASS_WEIGHTS)
    else:
        names, class_weights = list(metadata.SEGMENTATION_CLASSES), list(metadata.CLASS_WEIGHTS)
    id2label = dict(enumerate(names))

    image_processor = load_image_processor(model_args)
    model = load_model(
        SapiensForSemanticSegmentation,
        model_args,
        num_labels=len(names),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        class_weights=class_weights,
        semantic_loss_ignore_index=seg_args.ignore_index,
    )
    backgrounds = list_images(data_args.background_dir)
    train_dataset, eval_dataset = prepare_datasets(
        load_dense_splits(data_args, "segmentation", model_args.cache_dir),
        lambda train: DenseTransform(
            "segmentation",
            image_processor,
            train,
            background_images=backgrounds,
            flip_pairs=segmentation_flip_pairs(id2label),
            ignore_index=seg_args.ignore_index,
            num_labels=len(names),
        ),
        data_args,
        training_args,
    )
    trainer = SapiensTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=SegmentationEvaluator(len(names), seg_args.ignore_index, id2label),
    )
    train_and_evaluate(trainer, training_args, image_processor)


if __name__ == "__main__":
    main()
