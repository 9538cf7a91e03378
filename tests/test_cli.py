"""`sapiens-hf predict` on a folder (with an unreadable file) and a short generated video, with tiny saved models;
the `convert` subcommand's wiring; the message when a model cannot be loaded; `--help`."""

import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch
from helpers import POSE_FILE, model_class, save_original, two_people_image

from sapiens_hf import SapiensForSemanticSegmentation
from sapiens_hf.cli import SAMPLE_IMAGE, main


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


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
def test_predict_on_a_folder_and_a_video(task, inputs, tmp_path, capsys, tiny_model):
    output = tmp_path / "out"
    arguments = ["predict", "--task", task, "--model", tiny_model(task), str(inputs)]
    arguments += ["--output", str(output), "--batch-size", "2", "--quiet"]
    if task in ("pose", "depth"):
        arguments.append("--flip-test")
    if task == "pose":
        arguments += ["--detector", "none"]  # the whole image (the detector's own tests are below)
    if task in ("depth", "normal"):
        arguments += ["--mask-model", tiny_model("seg")]  # the person mask of a local segmentation model
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
        mask = np.asarray(PIL.Image.open(output / "more" / f"camera_{task}_mask.png"))
        assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
        person = (mask == 255) if array.ndim == 2 else (mask == 255)[..., None].repeat(3, -1)
        assert np.isnan(array[~person]).all() and np.isfinite(array[person]).all()  # NaN outside the people
        assert (output / "clip" / f"frame_000001_{task}_mask.png").is_file()


def test_predict_on_the_shipped_sample_photo(tmp_path, tiny_model):
    assert SAMPLE_IMAGE.is_file()
    arguments = ["predict", "--task", "seg", "--model", tiny_model("seg")]
    assert main(arguments + [str(SAMPLE_IMAGE), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert PIL.Image.open(tmp_path / "out" / "astronaut_seg.png").size == (512, 512)


def test_missing_inputs_and_bad_options(tmp_path, capsys):
    missing_model = str(tmp_path / "no-model")  # a mistyped input is reported before the model is loaded
    assert main(["predict", "--task", "depth", "--model", missing_model, str(tmp_path / "nope.jpg"), "--output",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'nope.jpg'}: no such file or folder" in err and "no-model" not in err
    assert main(["predict", "--task", "seg", "--flip-test", "x.jpg", "--output", str(tmp_path)]) == 2
    assert "error: --flip-test applies to --task pose and depth" in capsys.readouterr().err
    assert main(["predict", "--task", "depth", "--detector", "some/detr", "x.jpg", "--output", str(tmp_path)]) == 2
    assert "error: --detector applies to --task pose" in capsys.readouterr().err


def test_unloadable_model_explains_how_to_use_a_local_checkpoint(tmp_path, capsys):
    image = tmp_path / "image.png"
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    arguments = ["predict", "--task", "pose", "--model", str(tmp_path / "no-model"), str(image)]
    assert main(arguments + ["--output", str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err
    assert "could not load" in message and "Hub cannot be reached" in message
    assert "sapiens-hf convert CHECKPOINT.pth OUT_DIR --task pose" in message


def test_convert_subcommand_calls_the_converter(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("sapiens_hf.convert.convert_to_folder", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr("sapiens_hf.hub.publish_converted", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["convert", "model.pth", str(tmp_path), "--task", "depth", "--push-to-hub", "me/sapiens-depth"]) == 0
    assert calls == [(("model.pth", str(tmp_path)), {"task": "depth", "overwrite": False}),
                     ((str(tmp_path), "me/sapiens-depth"), {"source": "model.pth"})]


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


def test_predict_finds_people_with_the_detector_by_default(tiny_model, tiny_detector, tmp_path, monkeypatch, capsys):
    """pose without --detector uses the default person detector: offline without it, one error line (exit 1) before
    any image is read, naming --detector none and a local folder; --detector DIR (a tiny RT-DETR) finds people, whose
    boxes and scores are in keypoints.json; --detector none is the whole image; the detector is part of the run's
    settings (a run with another one does not resume it)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        PIL.Image.fromarray(two_people_image()).save(folder / f"{index}.png")
    arguments = ["predict", "--task", "pose", "--model", tiny_model("pose"), str(folder), "--quiet"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    read = []
    monkeypatch.setattr("sapiens_hf.pipelines.read_image", lambda *args: read.append(args) or 1 / 0)
    capsys.readouterr()
    assert main(arguments + ["--output", str(tmp_path / "offline")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load the person detector PekingU/rtdetr_r50vd")
    assert "--detector none" in lines[0] and "local folder" in lines[0] and not read
    monkeypatch.undo()

    assert main(arguments + ["--output", str(tmp_path / "found"), "--detector", tiny_detector,
                             "--detector-threshold", "0", "--batch-size", "2"]) == 0
    coco = json.loads((tmp_path / "found" / "keypoints.json").read_text())
    people = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    assert len(coco["images"]) == 3 and people and all(a["bbox_score"] is not None for a in people)
    assert all(a["bbox"] != [0, 0, 320, 240] for a in people)
    assert main(arguments + ["--output", str(tmp_path / "found"), "--detector", "none"]) == 2
    assert "other settings" in capsys.readouterr().err

    assert main(arguments + ["--output", str(tmp_path / "whole"), "--detector", "none"]) == 0
    whole = json.loads((tmp_path / "whole" / "keypoints.json").read_text())["annotations"]
    assert [a["bbox"] for a in whole] == [[0, 0, 320, 240]] * 3


def test_predict_masks_depth_with_the_segmentation_model_by_default(tiny_model, tmp_path, monkeypatch, capsys):
    """depth without --no-mask cuts its maps with the person mask of the released segmentation model: offline without
    it, one error line (exit 1) before any image is read, naming --no-mask and a local folder; --no-mask gives the
    whole map and no mask file; the mask options of other tasks, both at once or a model of another task are
    refused before any work."""
    image = tmp_path / "people.png"
    PIL.Image.fromarray(two_people_image()).save(image)
    arguments = ["predict", "--task", "depth", "--model", tiny_model("depth"), str(image), "--quiet"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    read = []
    monkeypatch.setattr("sapiens_hf.pipelines.read_image", lambda *args: read.append(args) or 1 / 0)
    capsys.readouterr()
    assert main(arguments + ["--output", str(tmp_path / "offline")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load the segmentation model facebook/sapiens-seg")
    assert "--no-mask" in lines[0] and "local folder" in lines[0] and not read
    monkeypatch.undo()

    assert main(arguments + ["--output", str(tmp_path / "whole"), "--no-mask"]) == 0
    assert np.isfinite(np.load(tmp_path / "whole" / "people_depth.npy")).all()
    assert not (tmp_path / "whole" / "people_depth_mask.png").exists()
    assert main(arguments + ["--output", str(tmp_path / "x"), "--no-mask", "--mask-model", "a/b"]) == 2
    assert main(["predict", "--task", "pose", "--no-mask", str(image), "--output", str(tmp_path / "x")]) == 2
    assert main(arguments + ["--output", str(tmp_path / "x"), "--mask-model", tiny_model("depth")]) == 2
    err = capsys.readouterr().err
    assert "give one of them" in err and "--mask-model and --no-mask apply to --task depth and normal" in err
    assert f"--mask-model {tiny_model('depth')} is not a body-part segmentation model" in err


def test_predict_with_a_local_original_folder(tmp_path, monkeypatch, capsys):
    """A folder laid out like Meta's repo (a released `.pth`, no config.json) converts on load."""
    from sapiens_hf import convert

    monkeypatch.setitem(convert.HEADS_BY_WIDTH, 32, 2)  # the tiny checkpoint's width counts as a released size
    save_original(tmp_path / "sapiens-pose-0.3b" / POSE_FILE)
    image = tmp_path / "photo.png"
    PIL.Image.fromarray(skimage.data.astronaut()).resize((64, 80)).save(image)
    arguments = ["predict", "--task", "pose", "--model", str(tmp_path / "sapiens-pose-0.3b"), str(image)]
    assert main(arguments + ["--output", str(tmp_path / "out"), "--quiet", "--detector", "none"]) == 0
    coco = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert len(coco["annotations"][0]["keypoints"]) == 17 * 3 and coco["categories"][0]["keypoints"][0] == "nose"
    assert (tmp_path / "out" / "photo_pose_vis.jpg").is_file()


def test_help_of_every_command():
    """`sapiens-hf --help` and each subcommand's, in a fresh process, as the console script runs them; the optional
    modules of `annotate` (pyarrow) and `demo` (Gradio) are not imported for it."""
    snippet = """
import contextlib, io, json, sys
from sapiens_hf.cli import main
helps = {}
for argv in (["--help"], ["predict", "--help"], ["convert", "--help"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exit:
            assert exit.code == 0, exit.code
    helps[" ".join(argv)] = out.getvalue()
print(json.dumps({"helps": helps, "optional": sorted({"gradio", "pyarrow"} & set(sys.modules))}))
"""
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["optional"] == []
    helps = report["helps"]
    assert "usage: sapiens-hf" in helps["--help"] and "predict" in helps["--help"] and "convert" in helps["--help"]
    compact = "".join(helps["predict --help"].split())  # argparse wraps the choices
    assert "--task{pose,segmentation,depth,normal,pointmap,matting}" in compact and "--dtype" in compact
    assert "usage: sapiens-hf convert" in helps["convert --help"] and "--push-to-hub" in helps["convert --help"]


# ---------------------------------------------------------------------------------------------------------------
# outputs never clobber inputs, resumable runs, batching, checks
# ---------------------------------------------------------------------------------------------------------------


def photos(folder, names, size=(40, 30)):
    """Small distinct photos (PIL can read them all)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image = np.roll(skimage.data.astronaut(), 37 * index, axis=1)
        PIL.Image.fromarray(image).resize(size).save(folder / name)
    return folder


def files_under(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def seg_model(tiny_model):
    return tiny_model("seg")


@pytest.fixture(scope="module")
def pose_model(tiny_model):
    return tiny_model("pose")


def test_predict_never_overwrites_user_files_nor_reads_its_own_outputs(seg_model, tmp_path, capsys):
    """Item 4: an output folder equal to / inside the input folder, and a user's file named like an output."""
    folder = photos(tmp_path / "photos", ["x.jpg", "y.jpg"])
    user_file = folder / "x_seg.png"  # the user's own photo, named like an output of x.jpg
    PIL.Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(user_file)
    before = user_file.read_bytes()
    seg = ["predict", "--task", "seg", "--model", seg_model, "--quiet"]

    assert main(seg + [str(folder / "x.jpg"), "--output", str(folder)]) == 2  # refused before any work
    err = capsys.readouterr().err
    assert f"{user_file} exists and this run did not write it (--overwrite replaces it)" in err
    assert "Traceback" not in err and user_file.read_bytes() == before
    assert files_under(folder) == ["x.jpg", "x_seg.png", "y.jpg"]

    assert main(seg + [str(folder), "--output", str(folder)]) == 2  # the output folder is never searched
    assert "no images or videos found" in capsys.readouterr().err

    output = folder / "out"  # inside the input folder: its own outputs are not inputs, now or in a later run
    for _ in range(2):
        assert main(seg + [str(folder), "--output", str(output)]) == 0
    assert "Resumed: skipped 3 input(s)" in capsys.readouterr().out
    assert [name for name in files_under(output) if not name.startswith("sapiens-hf-")] == [
        "x_seg.png", "x_seg_seg.png", "x_seg_seg_vis.jpg", "x_seg_vis.jpg", "y_seg.png", "y_seg_vis.jpg"
    ]
    assert user_file.read_bytes() == before

    assert main(seg + [str(folder / "x.jpg"), "--output", str(folder), "--overwrite"]) == 0
    assert user_file.read_bytes() != before  # replaced, as asked


def test_inputs_with_the_same_output_name_are_refused_before_any_work(seg_model, tmp_path, capsys):
    """Item 4: `a/x.jpg` and `b/x.jpg`, or `x.jpg` and `x.png`, would write the same outputs."""
    photos(tmp_path / "in", ["a/x.jpg", "b/x.jpg", "c/x.jpg", "c/x.png"])
    seg = ["predict", "--task", "seg", "--model", seg_model, "--quiet", "--output", str(tmp_path / "out")]
    assert main(seg + [str(tmp_path / "in" / "a" / "x.jpg"), str(tmp_path / "in" / "b" / "x.jpg")]) == 2
    assert "would both write the outputs named 'x'" in capsys.readouterr().err
    assert main(seg + [str(tmp_path / "in" / "c")]) == 2
    err = capsys.readouterr().err
    assert "c/x.jpg and" in err and "c/x.png would both write" in err
    assert not (tmp_path / "out").exists()
    assert main(seg + [str(tmp_path / "in" / "a"), str(tmp_path / "in" / "b")]) == 2  # names relative to a/, b/
    assert "would both write the outputs named 'x'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


SIGNAL_AT_THE_SECOND_FORWARD_PASS = """
import os, signal, sys
from sapiens_hf import SapiensForPoseEstimation
from sapiens_hf.cli import main
forward, calls = SapiensForPoseEstimation.forward, []
def forward_then_signal(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the first image is finished: interrupted while predicting the second
        os.kill(os.getpid(), signal.{signal})
    return forward(self, *args, **kwargs)
SapiensForPoseEstimation.forward = forward_then_signal
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_interrupted_pose_run_keeps_finished_images_and_resumes(signal_name, pose_model, tmp_path):
    """Item 5: killed after the first image, the run leaves keypoints.json with it; the same command resumes and
    ends with the keypoints.json of an uninterrupted run."""
    folder = photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    arguments = ["predict", "--task", "pose", "--model", pose_model, str(folder), "--quiet", "--detector", "none"]
    assert main(arguments + ["--output", str(tmp_path / "whole")]) == 0
    expected = (tmp_path / "whole" / "keypoints.json").read_text()

    output = tmp_path / "resumed"
    script = SIGNAL_AT_THE_SECOND_FORWARD_PASS.replace("{signal}", signal_name)
    result = subprocess.run([sys.executable, "-c", script, *arguments, "--output", str(output)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 128 + getattr(signal, signal_name), result.stderr
    assert "Traceback" not in result.stderr and "run the same command again to resume" in result.stderr
    interrupted = json.loads((output / "keypoints.json").read_text())
    assert [image["file_name"] for image in interrupted["images"]] == [str(folder / "a.jpg")]
    assert (output / "a_pose_vis.jpg").is_file() and not (output / "c_pose_vis.jpg").exists()

    assert main(arguments + ["--output", str(output)]) == 0
    assert (output / "keypoints.json").read_text() == expected


def test_a_write_error_stops_the_run_and_keeps_the_finished_images(pose_model, tmp_path, monkeypatch, capsys):
    """Item 5: a write error (disk full) ends the run with exit code 1 and the results written so far."""
    folder = photos(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    save = PIL.Image.Image.save

    def save_until_full(self, path, *args, **kwargs):
        if str(path).endswith("b_pose_vis.jpg"):
            raise OSError(28, "No space left on device")
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", save_until_full)
    output = tmp_path / "out"
    assert main(["predict", "--task", "pose", "--model", pose_model, str(folder), "--output", str(output),
                 "--detector", "none"]) == 1
    err = capsys.readouterr().err
    assert "error: cannot write the results: [Errno 28] No space left on device" in err and "Traceback" not in err
    coco = json.loads((output / "keypoints.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [str(folder / "a.jpg")]


def count_forward_calls(monkeypatch, model_class):
    calls = []
    forward = model_class.forward

    def counted(self, *args, **kwargs):
        calls.append(kwargs["pixel_values"].shape[0] if "pixel_values" in kwargs else args[0].shape[0])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", counted)
    return calls


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_images_are_batched_like_video_frames(task, seg_model, pose_model, tmp_path, monkeypatch):
    """Item 9: five images with --batch-size 2 take three forward passes (pose: a batch of whole-image crops),
    with the results of one image at a time."""
    folder = photos(tmp_path / "in", [f"{index}.jpg" for index in range(5)])
    model = seg_model if task == "seg" else pose_model
    calls = count_forward_calls(monkeypatch, model_class(task))
    arguments = ["predict", "--task", task, "--model", model, str(folder), "--quiet"]
    arguments += ["--detector", "none"] if task == "pose" else []  # one whole-image crop per image
    assert main(arguments + ["--output", str(tmp_path / "batched"), "--batch-size", "2"]) == 0
    assert calls == [2, 2, 1]
    assert main(arguments + ["--output", str(tmp_path / "single")]) == 0
    assert calls[3:] == [1] * 5
    if task == "seg":
        for index in range(5):
            batched = np.asarray(PIL.Image.open(tmp_path / "batched" / f"{index}_seg.png"))
            assert np.array_equal(batched, np.asarray(PIL.Image.open(tmp_path / "single" / f"{index}_seg.png")))
    else:
        batched, single = (json.loads((tmp_path / o / "keypoints.json").read_text()) for o in ("batched", "single"))
        for a, b in zip(batched["annotations"], single["annotations"]):
            np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=2e-3)


def test_bad_arguments_are_reported_before_any_work(seg_model, tmp_path, monkeypatch, capsys):
    """Item 16: one line per problem, exit code 2, no traceback, nothing written, no prediction."""
    image = photos(tmp_path / "in", ["x.jpg"]) / "x.jpg"
    calls = count_forward_calls(monkeypatch, SapiensForSemanticSegmentation)
    seg = ["predict", "--task", "seg", "--model", seg_model, str(image), "--quiet"]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")

    def refused(arguments, *expected):
        assert main(seg + arguments) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("error:") == len(expected), err
        for line in expected:
            assert line in err

    refused(["--output", str(a_file)], f"error: --output {a_file} is a file, not a folder")
    inside = a_file / "out"
    refused(["--output", str(inside)], f"error: --output {inside} cannot be created: {a_file} is a file")
    output = str(tmp_path / "out")
    refused(["--output", output, "--device", "gpu7"], "error: --device 'gpu7' is not a device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(["--output", output, "--device", "cuda", "--config", "num_attention_head=2"],
            "error: --device cuda: no cuda device is available", "error: --config num_attention_head: Unknown config "
            "override 'num_attention_head'; did you mean 'num_attention_heads'?")
    refused(["--output", output, "--task", "pose"], f"error: --model {seg_model} does not fit --task pose")
    refused(["--output", output, "--task", "pose", "--keypoint-threshold", "nan", "--detector-threshold", "5"],
            "error: --detector-threshold must be a finite number in [0, 1], got 5.0",
            "error: --keypoint-threshold must be a finite number, got nan")
    assert calls == [] and not (tmp_path / "out").exists()
    # Refused from the checkpoint's config, before its weights load into another head: one line, no load report.
    assert main(seg + ["--output", output, "--task", "depth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model {seg_model} does not fit --task depth") and err.count("\n") == 1
    assert "LOAD REPORT" not in err and "ignore_mismatched_sizes" not in err and "\x1b[" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_folder_that_is_not_writable_is_refused(tmp_path, capsys):
    (tmp_path / "locked").mkdir(mode=0o555)
    assert main(["predict", "--task", "seg", "x.jpg", "--output", str(tmp_path / "locked" / "out")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_a_corrupt_local_checkpoint_gives_the_real_reason_only(tmp_path, capsys):
    """Item 16: no "the Hub cannot be reached" advice for a local file."""
    image = photos(tmp_path / "in", ["x.jpg"]) / "x.jpg"
    checkpoint = tmp_path / "my-pose.pth"
    checkpoint.write_bytes(b"\x80\x02garbage" * 64)
    arguments = ["predict", "--task", "pose", "--model", str(checkpoint), str(image)]
    assert main(arguments + ["--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not load {checkpoint} for --task pose: Refusing to load")
    assert err.count("\n") == 1 and "Hub" not in err and not (tmp_path / "out").exists()


def test_convert_failures_are_one_line_and_config_overrides_reach_the_converter(tmp_path, capsys, monkeypatch):
    """Item 16: `sapiens-hf convert` errors without traceback (SAPIENS_HF_DEBUG=1 shows it), and `--config
    KEY=VALUE`, which the error about an unknown width points to."""
    checkpoint = tmp_path / POSE_FILE
    save_original(checkpoint)  # width 32: not a released size
    assert main(["convert", str(checkpoint), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pass num_attention_heads=... to convert it (on the command line: --config num_attention_heads=VALUE)" in err

    assert main(["convert", str(checkpoint), str(tmp_path / "out"), "--config", "num_attention_heads=2"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_attention_heads"] == 2

    assert main(["convert", str(checkpoint), str(tmp_path / "o2"), "--config", "num_attention_head=2"]) == 2
    assert "did you mean 'num_attention_heads'?" in capsys.readouterr().err
    missing = tmp_path / "missing.pth"
    assert main(["convert", str(missing), str(tmp_path / "o3")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot convert {missing}: ")
    monkeypatch.setenv("SAPIENS_HF_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["convert", str(missing), str(tmp_path / "o3")])


def test_predict_never_writes_over_an_input_even_with_overwrite(seg_model, tmp_path, capsys):
    """`a_seg_vis.jpg` given as an input beside `a.jpg`, outputs into their folder: the visualisation of a.jpg would
    replace that input (and then be read back as it). --overwrite replaces outputs only, so this is refused too."""
    folder = photos(tmp_path / "photos", ["a.jpg", "a_seg_vis.jpg"])
    before = {name: (folder / name).read_bytes() for name in ("a.jpg", "a_seg_vis.jpg")}
    seg = ["predict", "--task", "seg", "--model", seg_model, "--quiet", str(folder / "a.jpg"),
           str(folder / "a_seg_vis.jpg"), "--output", str(folder)]
    for extra in ([], ["--overwrite"]):
        assert main(seg + extra) == 2
        err = capsys.readouterr().err
        assert f"would replace the input {folder / 'a_seg_vis.jpg'}" in err and "another --output" in err
        assert {name: (folder / name).read_bytes() for name in before} == before
        assert files_under(folder) == ["a.jpg", "a_seg_vis.jpg"]


def test_a_resumed_predict_does_again_the_inputs_that_changed(seg_model, tmp_path, capsys):
    """A rerun into the same output folder skips an input only if it is the same file as the earlier run's: a
    photo replaced under the same name, or another folder with the same file names, is predicted again (and said
    so); the results equal a fresh run's."""
    folder = photos(tmp_path / "in", ["x.jpg", "y.jpg"])
    seg = ["predict", "--task", "seg", "--model", seg_model, "--quiet", "--output"]
    assert main(seg + [str(tmp_path / "out"), str(folder)]) == 0
    first_x = (tmp_path / "out" / "x_seg.png").read_bytes()

    PIL.Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(folder / "y.jpg")  # same name, other photo
    capsys.readouterr()
    assert main(seg + [str(tmp_path / "out"), str(folder)]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 input(s)" in out and "Predicted again 1 input(s)" in out and ": y" in out
    assert main(seg + [str(tmp_path / "fresh"), str(folder)]) == 0
    for name in ("x_seg.png", "y_seg.png", "y_seg_vis.jpg"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    assert (tmp_path / "out" / "x_seg.png").read_bytes() == first_x

    other = photos(tmp_path / "other", ["x.jpg", "y.jpg"], size=(50, 20))  # another folder, the same names
    capsys.readouterr()
    assert main(seg + [str(tmp_path / "out"), str(other)]) == 0
    assert "Predicted again 2 input(s)" in capsys.readouterr().out
    with PIL.Image.open(tmp_path / "out" / "x_seg.png") as written:
        assert written.size == (50, 20)


def test_one_grammar_for_every_command(seg_model, tmp_path, capsys):
    """The same spelling means the same thing in every command: --version; --help ends with examples; --dtype takes
    the torch names and the short ones; --device auto; --model MODEL or TASK=MODEL; --push-to-hub; --quiet
    silences the loading bars."""
    from sapiens_hf import __version__
    from sapiens_hf.cli import build_parser

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"sapiens-hf {__version__}"
    parser = build_parser()
    for command in ("predict", "annotate", "export", "convert", "demo"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert f"examples:\n  sapiens-hf {command}" in text or "examples:\n  accelerate" in text, command
        assert "--quiet" in text
    for spelling in ("bf16", "bfloat16"):
        assert parser.parse_args(["export", "m", "out", "--dtype", spelling]).dtype == "bfloat16"
        assert parser.parse_args(["predict", "--task", "seg", "x.jpg", "--output", "o", "--dtype", spelling]).dtype \
            == "bfloat16"
    assert parser.parse_args(["convert", "a.pth", "out", "--push-to-hub", "me/x"]).push_to_hub == "me/x"
    for model, parsed in [("runs/lr=1e-4/model", (None, "runs/lr=1e-4/model")), ("seg=runs/x", ("segmentation",
                          "runs/x")), ("normals=a=b", ("normal", "a=b"))]:  # "=" in a path is not a task
        assert parser.parse_args(["demo", "--model", model]).model == [parsed]
    assert parser.parse_args(["annotate", "x/", "--task", "seg", "--output", "o", "--device", "auto"]).device is None

    photo = photos(tmp_path / "in", ["a.jpg"])
    common = [str(photo), "--task", "seg", "--device", "auto", "--dtype", "fp32", "--quiet"]
    assert main(["predict", "--model", f"seg={seg_model}", *common, "--output", str(tmp_path / "a")]) == 0
    assert main(["predict", "--model", seg_model, *common, "--output", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "a_seg.png").read_bytes() == (tmp_path / "b" / "a_seg.png").read_bytes()
    assert "Loading weights" not in capsys.readouterr().err  # --quiet
    assert main(["predict", "--model", f"depth={seg_model}", *common, "--output", str(tmp_path / "c")]) == 2
    assert "this run's --task is segmentation" in capsys.readouterr().err
    assert main(["annotate", str(photo), "--task", "seg", "--model", seg_model, "--output", str(tmp_path / "d"),
                 "--device", "cpu", "--workers", "0", "--quiet"]) == 0


def test_errors_a_person_can_act_on_before_any_work(seg_model, tmp_path, capsys, monkeypatch):
    """annotate refuses a misspelled --config key as predict does (exit 2, did-you-mean); convert refuses to replace
    an earlier conversion unless --overwrite; the demo names a busy port before loading any model."""
    import socket

    from sapiens_hf import convert as conversion

    photo = photos(tmp_path / "in", ["a.jpg"])
    assert main(["annotate", str(photo), "--task", "seg", "--model", seg_model, "--output", str(tmp_path / "out"),
                 "--config", "num_hiden_layers=1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--config num_hiden_layers" in err and "num_hidden_layers" in err and not (tmp_path / "out").exists()

    (tmp_path / "converted").mkdir()
    (tmp_path / "converted" / "config.json").write_text("{}")
    (tmp_path / "converted" / "notes.txt").write_text("mine")
    converted = []
    monkeypatch.setattr(conversion, "_convert", lambda *args: converted.append(args) or (_ for _ in ()).throw(
        AssertionError("converted although refused")))
    assert main(["convert", "model.pth", str(tmp_path / "converted")]) == 2
    assert "already holds config.json" in capsys.readouterr().err and converted == []
    assert (tmp_path / "converted" / "config.json").read_text() == "{}"

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        loads = []
        monkeypatch.setattr("sapiens_hf.pipelines.load_task_pipeline", lambda *a, **k: loads.append(a))
        assert main(["demo", "--port", str(port), "--model", f"seg={seg_model}"]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err and loads == []


def test_a_model_replaced_in_place_is_not_resumed_as_the_same_run(seg_model, tmp_path, capsys):
    """The same --model path holding other weights (retrained or copied over) is other work: the rerun names the
    changed settings instead of keeping the old model's results."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(seg_model, model)
    folder = photos(tmp_path / "in", ["a.jpg"])
    command = ["predict", "--task", "seg", "--model", str(model), str(folder), "--output", str(tmp_path / "out"),
               "--quiet"]
    assert main(command) == 0
    assert main(command) == 0 and "Resumed: skipped 1" in capsys.readouterr().out
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")  # the folder changed
    assert main(command) == 2
    assert "records a run with other settings" in capsys.readouterr().err
