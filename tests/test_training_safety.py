"""Training runs that go wrong: a job killed while it writes a checkpoint, bad files in the training data, MAE
evaluation and mixed precision on a CPU machine."""

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
from helpers import COMMON, MAE_TINY, REPO_ROOT, config_overrides, make_dense_data, make_pose_data, run_example
from PIL import Image
from skimage import data

from sapiens_hf.training import (
    SapiensTrainer,
    SapiensTrainingArguments,
    last_complete_checkpoint,
    parse_arguments,
    read_array,
)


# ---------------------------------------------------------------------------------------------------------------
# Resuming after a job was killed mid-save
# ---------------------------------------------------------------------------------------------------------------


def pose_args(workdir: Path, output_dir: Path, model: Path) -> list[str]:
    annotations, images = make_pose_data(
        workdir / "data", copies=2
    )  # 4 people: 2 steps per epoch
    return [
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
        "4",
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--report_to",
        "none",
        "--seed",
        "0",
    ]


def rerun_resumes_from(args: list[str], caplog) -> str:
    """Reruns the command as docs/training.md says; returns the checkpoint it resumed from."""
    with (
        patch.object(
            SapiensTrainer, "train", autospec=True, side_effect=SapiensTrainer.train
        ) as train,
        caplog.at_level(logging.WARNING, logger="sapiens_hf.training"),
    ):
        run_example("run_pose", args)
    return train.call_args.kwargs["resume_from_checkpoint"]


def assert_finished(output_dir: Path) -> None:
    assert (
        json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 4
    )
    assert (output_dir / "model.safetensors").is_file()


def test_last_complete_checkpoint_skips_folders_cut_off_mid_save(tmp_path, caplog):
    for step, state in (
        (2, "{}"),
        (9, "{}"),
        (10, None),
        (11, '{"global_st'),
    ):  # 10: no state, 11: half-written
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-12.tmp").mkdir()  # not a checkpoint name
    with caplog.at_level(logging.WARNING, logger="sapiens_hf.training"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-9")
    assert "checkpoint-11" in caplog.text and "checkpoint-10" in caplog.text
    assert sorted(p.name for p in (tmp_path / "checkpoint-10").iterdir()) == [
        "config.json"
    ]  # left untouched
    assert last_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.slow
def test_rerun_skips_a_checkpoint_left_with_only_its_config(tmp_path, caplog, example_model):
    """checkpoint-4 truncated to config.json, as a SIGKILL right after the Trainer started it leaves it: the rerun
    resumes from checkpoint-2 (instead of failing with "Can't find a valid checkpoint") and finishes."""
    output_dir = tmp_path / "out"
    args = pose_args(tmp_path, output_dir, example_model("pose"))
    run_example("run_pose", args)
    checkpoint = output_dir / "checkpoint-4"
    for path in checkpoint.iterdir():
        if path.name != "config.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name in (
        "model.safetensors",
        "trainer_state.json",
    ):  # the run never got past the checkpoint
        (output_dir / name).unlink()

    assert rerun_resumes_from(args, caplog) == str(output_dir / "checkpoint-2")
    assert f"Skipping the incomplete checkpoint {checkpoint}" in caplog.text
    assert_finished(output_dir)


KILL_WHILE_SAVING = """
import os, runpy, signal, sys
from transformers import Trainer
save = Trainer._save_optimizer_and_scheduler
def killed_at_step_4(self, output_dir):  # the weights of checkpoint-4 are written, its optimizer state not yet
    if self.state.global_step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, output_dir)
Trainer._save_optimizer_and_scheduler = killed_at_step_4
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_rerun_after_sigkill_during_a_checkpoint_save(tmp_path, caplog, example_model):
    output_dir = tmp_path / "out"
    args = pose_args(tmp_path, output_dir, example_model("pose"))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_WHILE_SAVING,
            str(REPO_ROOT / "examples" / "run_pose.py"),
            *args,
        ],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (output_dir / "checkpoint-4" / "model.safetensors").is_file()
    assert not (output_dir / "checkpoint-4" / "trainer_state.json").exists()

    assert rerun_resumes_from(args, caplog) == str(output_dir / "checkpoint-2")
    assert_finished(output_dir)


# ---------------------------------------------------------------------------------------------------------------
# Bad training data is found before the first step
# ---------------------------------------------------------------------------------------------------------------


def run_segmentation_on(root: Path, tmp_path: Path, model: Path) -> None:
    """run_segmentation on `root/{train,val}`, failing the test if training starts."""
    args = [
        "--model_name_or_path",
        str(model),
        "--train_dir",
        str(root / "train"),
        "--validation_dir",
        str(root / "val"),
        "--output_dir",
        str(tmp_path / "out"),
        *COMMON,
    ]
    with patch.object(
        SapiensTrainer, "train", side_effect=AssertionError("training started")
    ):
        run_example("run_segmentation", args)


@pytest.fixture
def seg_data(tmp_path) -> Path:
    return make_dense_data(tmp_path / "data")


def test_colour_label_png_is_refused_naming_the_file(seg_data, tmp_path, example_model):
    label = seg_data / "train" / "labels" / "camera.png"
    classes = np.asarray(Image.open(label))
    colours = np.array(
        [[0, 0, 0]] + [[40 * i % 256, 90, 200 - i] for i in range(1, 28)], np.uint8
    )
    Image.fromarray(colours[classes]).save(
        label
    )  # a colour-coded label, as label tools export them
    with pytest.raises(ValueError, match="cannot be used") as error:
        run_segmentation_on(seg_data, tmp_path, example_model("segmentation"))
    assert f"The segmentation label {label} is a colour image" in str(error.value)


def test_out_of_range_label_is_refused_naming_the_file_and_value(seg_data, tmp_path, example_model):
    label = seg_data / "val" / "labels" / "astronaut.png"
    classes = np.asarray(Image.open(label)).copy()
    classes[:5, :5], classes[-5:, -5:] = (
        40,
        255,
    )  # 40: not one of the 28 classes; 255: ignored, fine
    Image.fromarray(classes).save(label)
    with pytest.raises(
        ValueError, match="1 of 2 validation samples cannot be used"
    ) as error:
        run_segmentation_on(seg_data, tmp_path, example_model("segmentation"))
    message = str(error.value)
    assert (
        f"The segmentation label {label} has the value(s) 40 outside the 28 classes 0-27"
        in message
    )
    assert "255," not in message


def test_truncated_image_is_refused_before_the_first_step(seg_data, tmp_path, example_model):
    png = seg_data / "train" / "images" / "astronaut.png"
    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    jpeg.write_bytes(
        jpeg.read_bytes()[: jpeg.stat().st_size // 2]
    )  # a copy cut off half-way
    png.unlink()
    with pytest.raises(
        ValueError, match="1 of 2 train samples cannot be used"
    ) as error:
        run_segmentation_on(seg_data, tmp_path, example_model("segmentation"))
    assert str(jpeg) in str(error.value) and "truncated" in str(error.value)


def test_palette_label_png_reads_as_class_indices(tmp_path):
    classes = (np.arange(12 * 8).reshape(12, 8) % 28).astype(np.uint8)
    image = Image.fromarray(classes, mode="P")
    image.putpalette(
        np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist()
    )
    image.save(tmp_path / "label.png")
    np.testing.assert_array_equal(read_array(tmp_path / "label.png", "label"), classes)


# ---------------------------------------------------------------------------------------------------------------
# MAE evaluation loss; bf16 on a CPU machine
# ---------------------------------------------------------------------------------------------------------------


def test_mae_pretraining_eval_reports_a_finite_eval_loss(tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((96, 96))
        image.save(tmp_path / "photos" / f"{name}.png")
    overrides = config_overrides(MAE_TINY)
    args = [
        "--config_name",
        "sapiens-0.3b",
        "--config_overrides",
        overrides,
        "--image_size",
        "64",
    ]
    args += [
        "--train_dir",
        str(tmp_path / "photos"),
        "--validation_dir",
        str(tmp_path / "photos"),
    ]
    args += [
        "--output_dir",
        str(tmp_path / "out"),
        "--do_train",
        "--do_eval",
        "--max_steps",
        "1",
    ]
    args += ["--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--save_strategy", "no"]
    args += ["--report_to", "none", "--num_visualizations", "0"]
    spec = importlib.util.spec_from_file_location(
        "run_mae_pretraining", REPO_ROOT / "examples" / "run_mae_pretraining.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = (
        module  # the Trainer pickles the script's TrainingArguments subclass
    )
    spec.loader.exec_module(module)
    module.main(args)
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert np.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0, metrics


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="bf16 is available on this machine"
)
def test_bf16_without_a_gpu_exits_with_a_hint(tmp_path):
    with pytest.raises(SystemExit, match="drop --bf16 .* or add --use_cpu"):
        parse_arguments(
            SapiensTrainingArguments, args=["--output_dir", str(tmp_path), "--bf16"]
        )
    training_args = parse_arguments(
        SapiensTrainingArguments,
        args=["--output_dir", str(tmp_path), "--bf16", "--use_cpu"],
    )[0]
    assert training_args.bf16 and training_args.use_cpu


# ---------------------------------------------------------------------------------------------------------------
# A rerun resumes only the same work
# ---------------------------------------------------------------------------------------------------------------


def test_a_rerun_on_other_data_or_labels_does_not_resume_the_old_checkpoint(tmp_path, caplog, example_model):
    """The finished run's checkpoint-4 is resumed by the same command only: with other training data, or another
    seed, the rerun stops before training and names the checkpoint, what differs and the two ways
    on; `--resume_from_checkpoint` continues from it on purpose."""
    output_dir = tmp_path / "out"
    args = pose_args(tmp_path, output_dir, example_model("pose"))
    run_example("run_pose", args)
    record = json.loads((output_dir / "sapiens-hf-run.json").read_text())
    assert rerun_resumes_from(args, caplog) == str(output_dir / "checkpoint-4")

    annotations, images = make_pose_data(tmp_path / "other", copies=3)  # other rows, same layout
    other_data = [*args]
    other_data[other_data.index("--train_annotation_file") + 1] = str(annotations)
    other_data[other_data.index("--train_image_dir") + 1] = str(images)
    with patch.object(SapiensTrainer, "train") as train, pytest.raises(ValueError) as refused:
        run_example("run_pose", other_data)
    train.assert_not_called()
    message = str(refused.value)
    assert str(output_dir / "checkpoint-4") in message and "train_data.rows: 4 → 6" in message
    assert "--output_dir" in message and f"--resume_from_checkpoint {output_dir / 'checkpoint-4'}" in message
    assert json.loads((output_dir / "sapiens-hf-run.json").read_text()) == record  # the record is kept

    other_seed = [*args]
    other_seed[other_seed.index("--seed") + 1] = "1"
    with patch.object(SapiensTrainer, "train") as train, pytest.raises(ValueError, match=r"training\.seed: 0 → 1"):
        run_example("run_pose", other_seed)
    train.assert_not_called()

    on_purpose = [*other_data, "--resume_from_checkpoint", str(output_dir / "checkpoint-4"), "--max_steps", "6"]
    assert rerun_resumes_from(on_purpose, caplog) == str(output_dir / "checkpoint-4")


def test_checkpoints_without_a_run_record_are_not_resumed(tmp_path, example_model):
    output_dir = tmp_path / "out"
    args = pose_args(tmp_path, output_dir, example_model("pose"))
    run_example("run_pose", args)
    (output_dir / "sapiens-hf-run.json").unlink()
    with patch.object(SapiensTrainer, "train") as train, pytest.raises(ValueError, match="no sapiens-hf-run.json"):
        run_example("run_pose", args)
    train.assert_not_called()
