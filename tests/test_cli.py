"""`sapiens-hf predict` on a folder (with an unreadable file) and a short generated video, with tiny saved models;
the `convert` subcommand's wiring; the message when a model cannot be loaded; `--help` without torch/transformers."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch

from sapiens_hf import (
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensImageProcessorPil,
)
from sapiens_hf.cli import SAMPLE_IMAGE, main
from sapiens_hf.metadata import keypoint_set

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "decoder_deconv_channels": [8, 8],
    "decoder_conv_channels": [8],
    "image_size": [128, 96],
}
MODELS = {
    "pose": (
        SapiensForPoseEstimation,
        {"num_labels": 17, "id2label": dict(enumerate(keypoint_set(17)["keypoint_names"]))},
    ),
    "seg": (SapiensForSemanticSegmentation, {"num_labels": 28}),
    "depth": (SapiensForDepthEstimation, {}),
    "normal": (SapiensForNormalEstimation, {}),
}
VIDEO_FRAMES = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with two photos (one grayscale, in a sub-folder), an unreadable file and a 3-frame video."""
    folder = tmp_path_factory.mktemp("inputs")
    PIL.Image.fromarray(skimage.data.astronaut()).resize((160, 160)).save(folder / "astronaut.jpg")
    (folder / "more").mkdir()
    PIL.Image.fromarray(skimage.data.camera()).resize((120, 90)).save(folder / "more" / "camera.png")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    video = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for index in range(VIDEO_FRAMES):
        video.write(np.full((48, 64, 3), 60 * index, np.uint8))
    video.release()
    return folder


def saved_model(task: str, directory) -> str:
    torch.manual_seed(0)
    model_class, extra = MODELS[task]
    model_class(SapiensConfig(**TINY, **extra)).save_pretrained(directory)
    SapiensImageProcessorPil(size={"height": 128, "width": 96}).save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
def test_predict_on_a_folder_and_a_video(task, inputs, tmp_path, capsys):
    output = tmp_path / "out"
    arguments = ["predict", "--task", task, "--model", saved_model(task, tmp_path / "model"), str(inputs)]
    arguments += ["--output", str(output), "--batch-size", "2", "--quiet"]
    if task in ("pose", "depth"):
        arguments.append("--flip-test")
    assert main(arguments) == 1  # one input failed

    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "Cannot read an image" in captured.err
    assert f"Wrote results for {2 + VIDEO_FRAMES} image(s)/frame(s)" in captured.out
    visual = "jpg" if task in ("pose", "seg") else "png"
    assert (output / f"astronaut_{task}_vis.{visual}").is_file()
    assert (output / "more" / f"camera_{task}_vis.{visual}").is_file()
    capture = cv2.VideoCapture(str(output / f"clip_{task}_vis.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == VIDEO_FRAMES
    capture.release()

    if task == "pose":
        coco = json.loads((output / "keypoints.json").read_text())
        assert len(coco["images"]) == len(coco["annotations"]) == 2 + VIDEO_FRAMES  # one whole-image person each
        assert coco["categories"][0]["keypoints"][0] == "nose" and [16, 14] in coco["categories"][0]["skeleton"]
        annotation = coco["annotations"][0]
        assert len(annotation["keypoints"]) == 17 * 3 and annotation["bbox"] == [0, 0, 160, 160]
        assert [image.get("frame") for image in coco["images"]] == [None, 0, 1, 2, None]
    elif task == "seg":
        label_map = PIL.Image.open(output / "astronaut_seg.png")
        assert label_map.mode == "P" and label_map.size == (160, 160) and np.asarray(label_map).max() < 28
        assert (output / "clip" / "frame_000002_seg.png").is_file()
    else:
        array = np.load(output / "more" / f"camera_{task}.npy")
        assert array.dtype == np.float32 and array.shape == ((90, 120) if task == "depth" else (90, 120, 3))
        assert np.load(output / "clip" / f"frame_000001_{task}.npy").shape[:2] == (48, 64)


def test_predict_on_the_shipped_sample_photo(tmp_path):
    assert SAMPLE_IMAGE.is_file()
    arguments = ["predict", "--task", "seg", "--model", saved_model("seg", tmp_path / "model")]
    assert main(arguments + [str(SAMPLE_IMAGE), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert PIL.Image.open(tmp_path / "out" / "astronaut_seg.png").size == (512, 512)


def test_missing_inputs_and_bad_options(tmp_path, capsys):
    model = saved_model("depth", tmp_path / "model")
    assert (
        main(["predict", "--task", "depth", "--model", model, str(tmp_path / "nope.jpg"), "--output", str(tmp_path)])
        == 1
    )
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--flip-test applies to --task pose and depth"):
        main(["predict", "--task", "seg", "--flip-test", "x.jpg", "--output", str(tmp_path)])
    with pytest.raises(SystemExit, match="--detector applies to --task pose"):
        main(["predict", "--task", "depth", "--detector", "some/detr", "x.jpg", "--output", str(tmp_path)])


def test_unloadable_model_explains_how_to_use_a_local_checkpoint(tmp_path):
    image = tmp_path / "image.png"
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit) as error:
        main(
            ["predict", "--task", "pose", "--model", str(tmp_path / "no-model"), str(image), "--output", str(tmp_path)]
        )
    message = str(error.value)
    assert "could not load" in message and "Hub cannot be reached" in message
    assert "sapiens-hf convert CHECKPOINT.pth OUT_DIR --task pose" in message


def test_convert_subcommand_calls_the_converter(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("sapiens_hf.convert.convert_to_folder", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["convert", "model.pth", str(tmp_path), "--task", "depth", "--push-to", "me/sapiens-depth"]) == 0
    assert calls == [(("model.pth", str(tmp_path)), {"task": "depth", "push_to": "me/sapiens-depth"})]


def test_predict_offline_with_an_original_hub_id_says_how_to_use_a_local_checkpoint(tmp_path):
    """`sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b …` with `HF_HUB_OFFLINE=1`, empty cache."""
    image = tmp_path / "photo.png"
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-m", "sapiens_hf.cli", "predict", "--task", "pose", "--model", "facebook/sapiens-pose-0.3b",
         str(image), "--output", str(tmp_path / "out")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "could not load facebook/sapiens-pose-0.3b" in result.stderr
    assert "Hub cannot be reached (HF_HUB_OFFLINE is set)" in result.stderr
    assert "use a local or converted checkpoint as --model" in result.stderr
    assert "hf download facebook/sapiens-pose-0.3b --local-dir DIR" in result.stderr
    assert "sapiens-hf convert CHECKPOINT.pth OUT_DIR --task pose" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_predict_with_a_local_original_folder(tmp_path, monkeypatch, capsys):
    """A folder laid out like Meta's repo (a released `.pth`, no config.json) converts on load."""
    from test_original_repos import POSE_FILE, save_original

    from sapiens_hf import convert

    monkeypatch.setitem(convert.HEADS_BY_WIDTH, 32, 2)  # the tiny checkpoint's width counts as a released size
    save_original(tmp_path / "sapiens-pose-0.3b" / POSE_FILE)
    image = tmp_path / "photo.png"
    PIL.Image.fromarray(skimage.data.astronaut()).resize((64, 80)).save(image)
    arguments = ["predict", "--task", "pose", "--model", str(tmp_path / "sapiens-pose-0.3b"), str(image)]
    assert main(arguments + ["--output", str(tmp_path / "out"), "--quiet"]) == 0
    coco = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert len(coco["annotations"][0]["keypoints"]) == 17 * 3 and coco["categories"][0]["keypoints"][0] == "nose"
    assert (tmp_path / "out" / "photo_pose_vis.jpg").is_file()


def test_help_imports_neither_torch_nor_transformers():
    """`sapiens-hf --help` (and each subcommand's) answers without importing torch or transformers, which take
    seconds: the parser is standard library only and `import sapiens_hf` defers its registration."""
    snippet = """
import contextlib, io, json, sys
from sapiens_hf.cli import build_parser, main
build_parser()
helps = {}
for argv in (["--help"], ["predict", "--help"], ["convert", "--help"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code == 0, exit.code
    helps[" ".join(argv)] = out.getvalue()
print(json.dumps({"helps": helps, "heavy": sorted({"torch", "transformers", "cv2", "numpy"} & set(sys.modules))}))
"""
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    helps = report["helps"]
    assert "usage: sapiens-hf" in helps["--help"] and "predict" in helps["--help"] and "convert" in helps["--help"]
    assert "--task {depth,normal,pose,seg}" in helps["predict --help"] and "--dtype" in helps["predict --help"]
    assert "usage: sapiens-hf convert" in helps["convert --help"] and "--push-to" in helps["convert --help"]


def test_import_sapiens_hf_registers_with_transformers_imported_afterwards():
    """The cheap `import sapiens_hf` still registers everything for transformers imported after it."""
    snippet = """
import sys
import sapiens_hf
assert "transformers" not in sys.modules and "torch" not in sys.modules
from transformers import AutoConfig, pipeline
from transformers.pipelines import PIPELINE_REGISTRY
assert "sapiens-pose" in PIPELINE_REGISTRY.get_supported_tasks()
assert type(AutoConfig.for_model("sapiens")).__name__ == "SapiensConfig"
print("registered")
"""
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and "registered" in result.stdout, result.stderr
