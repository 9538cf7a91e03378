"""The four example scripts train a tiny model a few steps on tiny datasets made from real photos
(`skimage.data.astronaut()`, `camera()`) and evaluate; an interrupted run resumes to the same weights."""

import json
from pathlib import Path
from unittest.mock import patch

import datasets
import numpy as np
import pytest
import torch
from helpers import COMMON, dense_targets, make_dense_data, make_pose_data, photos, run_example
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback

from sapiens_hf import (
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
)
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
from sapiens_hf.training import SapiensTrainer


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


def check_outputs(output_dir: Path, model_class, metric_keys) -> dict:
    results = json.loads((output_dir / "all_results.json").read_text())
    assert np.isfinite(results["train_loss"]) and np.isfinite(results["eval_loss"])
    for key in metric_keys:
        assert np.isfinite(results[f"eval_{key}"]), key
    model = model_class.from_pretrained(output_dir)  # the fine-tuned model and its processor reload
    assert SapiensImageProcessorPil.from_pretrained(output_dir).size == {"height": 128, "width": 96}
    return results | {"model": model}


def test_run_pose(workdir, example_model):
    annotations, images = make_pose_data(workdir / "pose_data")
    output_dir = workdir / "pose_out"
    run_example(
        "run_pose",
        [
            "--model_name_or_path",
            str(example_model("pose")),
            "--train_annotation_file",
            str(annotations),
            "--train_image_dir",
            str(images),
            "--validation_annotation_file",
            str(annotations),
            "--validation_image_dir",
            str(images),
            "--output_dir",
            str(output_dir),
            *COMMON,
        ],
    )
    results = check_outputs(output_dir, SapiensForPoseEstimation, ["AP", "AP50", "AR", "PCK"])
    assert 0 <= results["eval_AP"] <= 1 and results["model"].config.flip_pairs[0] == [1, 2]


@pytest.mark.parametrize(
    "task, model_class, metric_keys",
    [
        (
            "segmentation",
            SapiensForSemanticSegmentation,
            ["mean_iou", "mean_accuracy", "overall_accuracy", "iou_Left_Foot"],
        ),
        ("depth", SapiensForDepthEstimation, ["rmse", "abs_rel", "delta1"]),
        (
            "normal",
            SapiensForNormalEstimation,
            ["mean_angular_error", "median_angular_error", "within_11.25", "within_30"],
        ),
    ],
)
def test_run_dense_task(workdir, task, model_class, metric_keys, example_model):
    root = workdir / "dense_data"
    if not root.exists():
        make_dense_data(root)
    output_dir = workdir / f"{task}_out"
    run_example(
        f"run_{task}",
        [
            "--model_name_or_path",
            str(example_model(task)),
            "--train_dir",
            str(root / "train"),
            "--validation_dir",
            str(root / "val"),
            "--output_dir",
            str(output_dir),
            *COMMON,
        ],
    )
    check_outputs(output_dir, model_class, metric_keys)


def test_run_segmentation_from_a_hub_style_dataset(workdir, example_model):
    """`--dataset_name` with `image` / `label` columns (here a local parquet dataset, as the Hub serves them)."""
    rows = {"image": [], "label": []}
    for image in photos().values():
        image = np.ascontiguousarray(image[::2, ::2])
        rows["image"].append(Image.fromarray(image))
        rows["label"].append(Image.fromarray(dense_targets(image)["labels"]))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    folder = workdir / "hub_seg" / "data"
    folder.mkdir(parents=True)
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.to_parquet(folder / "train-00000-of-00001.parquet")
    dataset.to_parquet(folder / "validation-00000-of-00001.parquet")
    output_dir = workdir / "hub_seg_out"
    run_example(
        "run_segmentation",
        [
            "--model_name_or_path",
            str(example_model("segmentation")),
            "--dataset_name",
            str(folder.parent),
            "--class_names",
            ",".join(
                ["Background"]
                + [f"c{i}" for i in range(1, 4)]
                + ["Left_Foot"]
                + [f"c{i}" for i in range(5, 13)]
                + ["Right_Foot"]
                + [f"c{i}" for i in range(14, 28)]
            ),
            "--output_dir",
            str(output_dir),
            *COMMON,
        ],
    )
    results = check_outputs(output_dir, SapiensForSemanticSegmentation, ["mean_iou"])
    assert results["model"].config.class_weights is None and results["model"].config.id2label[4] == "Left_Foot"


# ---------------------------------------------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised from inside the training loop, like a Ctrl-C or a failed node: nothing is saved on the way out."""


class InterruptAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(workdir, example_model):
    """fp32 on CPU: 6 steps uninterrupted vs. interrupted after step 4 and rerun with the same command (resuming from
    checkpoint-3, in the middle of the second epoch, so the data skip, the restored RNG state and the per-sample
    augmentations all have to line up)."""
    annotations, images = make_pose_data(workdir / "resume_data", copies=2)  # 4 people: 2 steps per epoch
    model = example_model("pose")

    def train(output_dir: Path) -> None:
        run_example(
            "run_pose",
            [
                "--model_name_or_path",
                str(model),
                "--train_annotation_file",
                str(annotations),
                "--train_image_dir",
                str(images),
                "--output_dir",
                str(output_dir),
                "--do_train",
                "--max_steps",
                "6",
                "--save_steps",
                "3",
                "--per_device_train_batch_size",
                "2",
                "--report_to",
                "none",
                "--seed",
                "0",
                "--logging_steps",
                "1",
            ],
        )

    train(workdir / "uninterrupted")
    init = SapiensTrainer.__init__

    def init_with_interrupt(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(InterruptAfter(4))

    with patch.object(SapiensTrainer, "__init__", init_with_interrupt), pytest.raises(Interrupted):
        train(workdir / "interrupted")
    assert (workdir / "interrupted" / "checkpoint-3").is_dir()
    assert not (workdir / "interrupted" / "model.safetensors").exists()
    with patch.object(SapiensTrainer, "train", autospec=True, side_effect=SapiensTrainer.train) as trainer_train:
        train(workdir / "interrupted")
    assert trainer_train.call_args.kwargs["resume_from_checkpoint"].endswith("checkpoint-3")

    expected = load_file(workdir / "uninterrupted" / "model.safetensors")
    actual = load_file(workdir / "interrupted" / "model.safetensors")
    initial = load_file(model / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
    assert any(not torch.equal(expected[key], initial[key]) for key in expected)  # it did train

    def losses(output_dir: Path) -> dict:
        history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
        return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}

    assert losses(workdir / "interrupted") == losses(workdir / "uninterrupted")
    assert sorted(losses(workdir / "uninterrupted")) == [1, 2, 3, 4, 5, 6]
