#!/usr/bin/env python
"""Fine-tunes a Sapiens model for top-down human pose estimation on COCO-format keypoints (17 COCO, 133
COCO-WholeBody or 308 Goliath keypoints) with the original recipe: UDP crops and heatmaps, flip / half-body / box
jitter / photometric / blur / coarse-dropout augmentations, AdamW with layer-wise LR decay. Evaluates COCO keypoint AP
(OKS) and PCK on the ground-truth boxes of the validation set. Fine-tunes Sapiens v1 (`SapiensForPoseEstimation`) or
Sapiens2 (transformers' `Sapiens2ForPoseEstimation`, with the original sapiens2 loss) checkpoints alike.

Data format and launch commands: docs/training.md.

    python examples/run_pose.py \
        --model_name_or_path facebook/sapiens-pose-0.3b \
        --train_annotation_file coco/annotations/person_keypoints_train2017.json --train_image_dir coco/train2017 \
        --validation_annotation_file coco/annotations/person_keypoints_val2017.json \
        --validation_image_dir coco/val2017 \
        --output_dir outputs/pose --do_train --do_eval --per_device_train_batch_size 4 --bf16

On a CPU, drop --bf16 (it needs a GPU; the script stops with a hint): the run is then fp32.
"""

from dataclasses import dataclass, field

from transformers import set_seed

from sapiens_hf import SapiensForPoseEstimation, metadata
from sapiens_hf.metrics import KeypointEvaluator
from sapiens_hf.training import (
    DataCheckArguments,
    ModelArguments,
    PoseTransform,
    SapiensTrainer,
    SapiensTrainingArguments,
    load_coco_keypoints,
    load_image_processor,
    load_model,
    parse_arguments,
    prepare_datasets,
    train_and_evaluate,
)


@dataclass
class DataTrainingArguments(DataCheckArguments):
    """COCO-format keypoint annotation files and their image folders."""

    train_annotation_file: str | None = field(default=None, metadata={"help": "COCO keypoint JSON for training."})
    train_image_dir: str | None = field(default=None, metadata={"help": "Folder of the training images."})
    validation_annotation_file: str | None = field(
        default=None, metadata={"help": "COCO keypoint JSON for evaluation."}
    )
    validation_image_dir: str | None = field(default=None, metadata={"help": "Folder of the validation images."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training people."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the validation people."})


def main():
    model_args, data_args, training_args = parse_arguments(
        ModelArguments, DataTrainingArguments, SapiensTrainingArguments
    )
    set_seed(training_args.seed)

    splits, counts = {}, set()
    for split, annotations, images in (
        ("train", data_args.train_annotation_file, data_args.train_image_dir),
        ("validation", data_args.validation_annotation_file, data_args.validation_image_dir),
    ):
        if annotations:
            splits[split], num_keypoints = load_coco_keypoints(annotations, images or ".")
            counts.add(num_keypoints)
    if len(counts) != 1:
        raise ValueError(f"Pass annotation files with one keypoint count (got {sorted(counts) or 'none'})")
    num_keypoints = counts.pop()
    names = metadata.keypoint_set(num_keypoints)["keypoint_names"]

    image_processor = load_image_processor(model_args)
    model = load_model(
        SapiensForPoseEstimation,
        model_args,
        num_labels=num_keypoints,
        id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
        flip_pairs=metadata.flip_pairs(num_keypoints),
    )
    train_dataset, eval_dataset = prepare_datasets(
        splits, lambda train: PoseTransform(image_processor, num_keypoints, train), data_args, training_args
    )
    compute_metrics = None
    if eval_dataset is not None:
        people = eval_dataset.dataset.remove_columns("image").to_list()
        compute_metrics = KeypointEvaluator(image_processor, people, metadata.keypoint_set(num_keypoints)["sigmas"])

    trainer = SapiensTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        compute_metrics=compute_metrics,
    )
    train_and_evaluate(trainer, training_args, image_processor)


if __name__ == "__main__":
    main()
