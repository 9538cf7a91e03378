"""The four example scripts train a tiny model a few steps on tiny datasets made from real photos
(`skimage.data.astronaut()`, `camera()`) and evaluate; an interrupted run resumes to the same weights."""

import json
import sys
from pathlib import Path
from unittest.mock import patch

import cv2
import datasets
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image
from safetensors.torch import load_file
from skimage import data
from transformers import TrainerCallback

from sapiens_hf import (
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
)
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
from sapiens_hf.training import SapiensTrainer


TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "image_size": [128, 96]}
TASK_MODELS = {
    "pose": (SapiensForPoseEstimation, {"num_labels": 17, "patch_embed_padding": 2, "decoder_deconv_channels": [16, 16]}),
    "segmentation": (SapiensForSemanticSegmentation, {"num_labels": 28, "decoder_deconv_channels": [16, 16, 16]}),
    "depth": (SapiensForDepthEstimation, {"num_labels": 1, "decoder_deconv_channels": [16, 16, 16, 16]}),
    "normal": (
        SapiensForNormalEstimation,
        {"num_labels": 3, "patch_embed_padding": 2, "decoder_deconv_channels": [16, 16, 16]},
    ),
}
# Rough COCO-17 keypoints (x, y) of the two photos, for boxes [x, y, w, h].
PEOPLE = {
    "astronaut.jpg": (
        [150, 10, 290, 502],
        [
            [263, 150],
            [285, 127],
            [242, 128],
            [312, 140],
            [220, 147],
            [350, 260],
            [180, 265],
            [400, 400],
            [160, 420],
            [330, 470],
            [200, 480],
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
        ],
    ),
    "camera.png": (
        [150, 40, 220, 440],
        [
            [250, 95],
            [258, 88],
            [241, 88],
            [268, 92],
            [232, 93],
            [292, 150],
            [212, 148],
            [310, 220],
            [190, 215],
            [265, 210],
            [218, 160],
            [282, 300],
            [228, 300],
            [300, 390],
            [205, 385],
            [312, 460],
            [196, 455],
        ],
    ),
}


def save_tiny_model(task: str, path: Path) -> Path:
    model_class, head = TASK_MODELS[task]
    torch.manual_seed(0)
    model_class(SapiensConfig(**TINY, decoder_conv_channels=[16], **head)).save_pretrained(path)
    SapiensImageProcessorPil(size={"height": 128, "width": 96}).save_pretrained(path)
    return path


def photos() -> dict[str, np.ndarray]:
    return {"astronaut.jpg": data.astronaut(), "camera.png": data.camera()}


def make_pose_data(root: Path, copies: int = 1) -> tuple[Path, Path]:
    """A COCO keypoint file with one person per photo (each listed `copies` times) and the image folder."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, image) in enumerate(photos().items(), start=1):
        Image.fromarray(image).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": 512, "width": 512})
        box, keypoints = PEOPLE[name]
        visibility = [[0] if x == y == 0 else [2] for x, y in keypoints]
        flat = np.hstack([np.asarray(keypoints, float), visibility]).flatten().tolist()
        for _ in range(copies):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "bbox": box,
                    "keypoints": flat,
                    "num_keypoints": sum(v[0] > 0 for v in visibility),
                    "area": box[2] * box[3] * 0.6,
                    "iscrowd": 0,
                    "category_id": 1,
                }
            )
    categories = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]
    path = root / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, root / "images"


def dense_targets(image: np.ndarray) -> dict[str, np.ndarray]:
    """Plausible targets from a photo: the dark person region as foreground, labels split left/right, depth and
    normals from the grey levels."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)
    foreground = grey < 110
    columns = np.arange(grey.shape[1])[None] > grey.shape[1] // 2
    labels = np.where(foreground, np.where(columns, 13, 4), 0).astype(np.uint8)  # Left_Foot / Right_Foot
    gradient_y, gradient_x = np.gradient(grey / 255)
    normals = np.dstack([-gradient_x, -gradient_y, np.ones_like(grey)])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {"labels": labels, "depth": 1 + grey / 255, "normals": normals.astype(np.float32), "masks": foreground}


def make_dense_data(root: Path) -> Path:
    """`root/{train,val}/{images,labels,depth,normals,masks}`, one pair per photo (down-scaled to 256 px)."""
    for split in ("train", "val"):
        for name, image in photos().items():
            image = np.ascontiguousarray(image[::2, ::2])
            stem = Path(name).stem
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
            for folder, target in dense_targets(image).items():
                (root / split / folder).mkdir(exist_ok=True)
                if folder in ("labels", "masks"):
                    Image.fromarray(target.astype(np.uint8) * (255 if folder == "masks" else 1)).save(
                        root / split / folder / f"{stem}.png"
                    )
                else:
                    np.save(root / split / folder / f"{stem}.npy", target)
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


def run_example(script: str, args: list[str]) -> None:
    """Runs an example's `main()` in this process, as transformers' example tests do."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "examples" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with patch.object(sys, "argv", [script, *args]):
        module.main()


COMMON = [
    "--do_train",
    "--do_eval",
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--per_device_eval_batch_size",
    "2",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--seed",
    "0",
]


def check_outputs(output_dir: Path, model_class, metric_keys) -> dict:
    results = json.loads((output_dir / "all_results.json").read_text())
    assert np.isfinite(results["train_loss"]) and np.isfinite(results["eval_loss"])
    for key in metric_keys:
        assert np.isfinite(results[f"eval_{key}"]), key
    model = model_class.from_pretrained(output_dir)  # the fine-tuned model and its processor reload
    assert SapiensImageProcessorPil.from_pretrained(output_dir).size == {"height": 128, "width": 96}
    return results | {"model": model}


def test_run_pose(workdir):
    annotations, images = make_pose_data(workdir / "pose_data")
    output_dir = workdir / "pose_out"
    run_example(
        "run_pose",
        [
            "--model_name_or_path",
            str(save_tiny_model("pose", workdir / "pose_model")),
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
def test_run_dense_task(workdir, task, model_class, metric_keys):
    root = workdir / "dense_data"
    if not root.exists():
        make_dense_data(root)
    output_dir = workdir / f"{task}_out"
    run_example(
        f"run_{task}",
        [
            "--model_name_or_path",
            str(save_tiny_model(task, workdir / f"{task}_model")),
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


def test_run_segmentation_from_a_hub_style_dataset(workdir):
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
            str(save_tiny_model("segmentation", workdir / "hub_seg_model")),
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


def test_interrupted_run_resumes_to_the_same_weights(workdir):
    """fp32 on CPU: 6 steps uninterrupted vs. interrupted after step 4 and rerun with the same command (resuming from
    checkpoint-3, in the middle of the second epoch, so the data skip, the restored RNG state and the per-sample
    augmentations all have to line up)."""
    annotations, images = make_pose_data(workdir / "resume_data", copies=2)  # 4 people: 2 steps per epoch
    model = save_tiny_model("pose", workdir / "resume_model")

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
