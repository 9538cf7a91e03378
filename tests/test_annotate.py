"""`sapiens-hf annotate`: Parquet shards that `datasets` reads; exactly the same rows with 1 or 2 processes
(`accelerate launch`, gloo on the CPU); a process killed with SIGKILL and a re-run give the same final set; a
streamed parquet dataset as input; unreadable inputs in the errors file; the pipelines' own results."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import datasets
import numpy as np
import PIL.Image
import pytest
import skimage.data

from sapiens_hf.batch import writers as output
from sapiens_hf.cli import main


TASKS = ("pose", "seg", "depth")
# Each process the same single thread: equal numerics whatever the process count (docs/inference.md).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def models(tiny_model, tiny_detector):
    return {**{task: tiny_model(task) for task in TASKS}, "detector": tiny_detector}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """30 small photos of varied sizes in a folder tree, and two unreadable files."""
    folder = tmp_path_factory.mktemp("images")
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    for index in range(30):
        size = (60 + 7 * index, 80 + 3 * index)
        target = folder / ("sub" if index % 3 else "") / f"photo{index:02d}.png"
        target.parent.mkdir(exist_ok=True)
        PIL.Image.fromarray(photos[index % 3]).resize(size).save(target)
    (folder / "broken.png").write_bytes(b"\x89PNG not an image")
    (folder / "sub" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def arguments(images, models, out, *extra):
    return ["annotate", str(images), "--output", str(out), "--task", "pose", "--task", "seg", "--task", "depth",
            "--model", f"pose={models['pose']}", "--model", f"seg={models['seg']}", "--model",
            f"depth={models['depth']}", "--batch-size", "3", "--chunk-size", "5", "--dense-size", "32x24",
            "--device", "cpu", "--quiet", "--detector", models["detector"], "--detector-threshold", "0",
            "--backend", "torch", *extra]  # rows compared with the torch pipelines


def launch(args, processes: int, **popen):
    # `--multi_gpu` picks accelerate's torch.distributed launcher; `--device cpu` then makes the processes use gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sapiens_hf.cli",
               *args]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def rows(out: Path) -> list[dict]:
    table = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    return sorted(table.to_list(), key=lambda row: row["index"])


def shard_bytes(out: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(out.glob("shard-*.parquet"))}


@pytest.fixture(scope="module")
def single(images, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    result = subprocess.run([sys.executable, "-m", "sapiens_hf.cli", *arguments(images, models, out, "--workers", "1")],
                            env=ENV, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # 1: some inputs were unreadable
    return out


@pytest.mark.slow
def test_rows_are_the_pipelines_results_and_unreadable_inputs_are_recorded(single, images, models):
    from transformers import pipeline

    import sapiens_hf  # noqa: F401  (registers the pipelines)

    table = rows(single)
    errors = [json.loads(line) for line in (single / ".sapiens-hf" / "errors.jsonl").read_text().splitlines()]
    assert [Path(error["id"]).name for error in errors] == ["broken.png", "truncated.jpg"]
    assert sorted([row["index"] for row in table] + [error["index"] for error in errors]) == list(range(32))
    assert [row["id"] for row in table] == sorted(row["id"] for row in table)  # input order: sorted paths
    assert all("cannot" in error["error"].lower() or "error" in error["error"].lower() for error in errors)
    manifest = json.loads((single / ".sapiens-hf" / "annotate.json").read_text())
    assert manifest["settings"]["chunk_size"] == 5 and set(manifest["models"]) == {"pose", "segmentation", "depth"}

    row = next(row for row in table if row["id"].endswith("photo04.png"))
    image = PIL.Image.open(row["id"])
    assert (row["height"], row["width"]) == (image.height, image.width)
    people = pipeline("sapiens-pose", model=models["pose"])(image, detector=models["detector"], detector_threshold=0)
    assert len(row["pose_keypoints"]) == len(people) > 0  # the people the detector found, as the pipeline finds them
    for keypoints, box, person in zip(row["pose_keypoints"], row["pose_boxes"], people):
        np.testing.assert_allclose(keypoints, person["keypoints"].numpy(), atol=1e-3)
        np.testing.assert_allclose(box, person["bbox_xywh"].numpy())
    segmentation = pipeline("sapiens-segmentation", model=models["seg"])(image)["segmentation"]
    labels = np.asarray(PIL.Image.open(io.BytesIO(row["segmentation_png"])))
    assert labels.shape == (image.height, image.width) and (labels == segmentation.numpy()).mean() > 0.999
    depth = np.load(io.BytesIO(row["depth_npy"]))
    assert depth.shape == (32, 24) and depth.dtype == np.float32
    # The person mask of the segmentation's own pass, at the image's size; the depth map NaN outside it.
    mask = np.asarray(PIL.Image.open(io.BytesIO(row["person_mask_png"]))) > 0
    assert mask.shape == labels.shape and np.array_equal(mask, labels != 0)
    small = cv2.resize(mask.astype(np.uint8), (24, 32), interpolation=cv2.INTER_NEAREST) > 0
    assert np.isnan(depth[~small]).all() and np.isfinite(depth[small]).all()


@pytest.mark.slow
def test_two_processes_give_exactly_the_single_process_shards(single, images, models, tmp_path):
    out = tmp_path / "out"
    process = launch(arguments(images, models, out, "--workers", "1"), processes=2)
    log = process.communicate(timeout=600)[0]
    assert process.returncode == 1, log
    assert shard_bytes(out) == shard_bytes(single)  # bit-identical files, so bit-identical rows and arrays
    assert (out / ".sapiens-hf" / "errors.jsonl").read_text() == (single / ".sapiens-hf" / "errors.jsonl").read_text()
    assert "images/s over 2 process(es)" in log


@pytest.mark.slow
def test_a_killed_process_and_a_rerun_give_the_same_final_set(single, images, models, tmp_path):
    out = tmp_path / "out"
    process = launch(arguments(images, models, out, "--workers", "0"), processes=2, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob(".sapiens-hf/chunks/*.json")) and time.time() < deadline:
        time.sleep(0.05)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(int(children[-1]), signal.SIGKILL)  # one of the two workers, mid-run
    process.communicate(timeout=300)
    assert process.returncode != 0
    finished = len(list(out.glob(".sapiens-hf/chunks/*.json")))
    assert finished < 7, "the run finished before the kill: nothing was tested"
    result = subprocess.run([sys.executable, "-m", "sapiens_hf.cli", *arguments(images, models, out)], env=ENV,
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert shard_bytes(out) == shard_bytes(single)
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]


def test_a_streamed_parquet_dataset_and_other_settings(single, models, tmp_path):
    images = [skimage.data.astronaut(), skimage.data.coffee()]
    data = tmp_path / "people"
    data.mkdir()
    encoded = []
    for index, image in enumerate(images * 3):
        buffer = io.BytesIO()
        PIL.Image.fromarray(image).resize((64 + index, 80)).save(buffer, "PNG")
        encoded.append({"image": {"bytes": buffer.getvalue(), "path": None}, "name": f"person-{index}"})
    encoded[4]["image"]["bytes"] = b"corrupt"
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    datasets.Dataset.from_list(encoded, features=features).to_parquet(str(data / "train.parquet"))
    out = tmp_path / "out"

    def args(chunk_size, *extra):
        return ["annotate", "--dataset", str(data), "--streaming", "--id-column", "name", "--task", "depth",
                "--model", f"depth={models['depth']}", "--output", str(out), "--chunk-size", str(chunk_size),
                "--dense-size", "image", "--device", "cpu", "--quiet", "--workers", "0", "--mask-model",
                models["seg"], *extra]

    assert main(args(4)) == 1
    table = rows(out)
    assert [row["id"] for row in table] == [f"person-{i}" for i in (0, 1, 2, 3, 5)]
    assert np.load(io.BytesIO(table[0]["depth_npy"])).shape == (80, 64)  # --dense-size image
    errors = (out / ".sapiens-hf" / "errors.jsonl").read_text()
    assert json.loads(errors)["id"] == "person-4"
    # A re-run with other settings is refused (the folder is not mixed), --overwrite starts afresh.
    assert main(args(2)) == 1
    assert len(list(out.glob("shard-*.parquet"))) == 2
    (out / "notes.txt").write_text("mine")
    assert main(args(2, "--overwrite")) == 1
    assert len(list(out.glob("shard-*.parquet"))) == 3 and (out / "notes.txt").read_text() == "mine"


def test_arguments_are_checked_before_any_work(tmp_path, capsys):
    assert main(["annotate", "--task", "pose", "--output", str(tmp_path / "out")]) == 2
    assert main(["annotate", "x", "--dataset", "y", "--task", "pose", "--output", str(tmp_path / "o")]) == 2
    assert main(["annotate", "x", "--task", "pose", "--model", "depth=m", "--output", str(tmp_path / "o")]) == 2
    assert main(["annotate", "x", "--task", "pose", "--device", "cuda:1", "--output", str(tmp_path / "o")]) == 2
    assert main(["annotate", "x", "--task", "depth", "--detector", "a/b", "--output", str(tmp_path / "o")]) == 2
    assert main(["annotate", "x", "--task", "pose", "--detector-threshold", "nan", "--output", str(tmp_path / "o")]) == 2
    errors = capsys.readouterr().err
    assert "one of them" in errors and "--model given for ['depth']" in errors and "accelerate gives" in errors
    assert "--detector applies to --task pose" in errors and "--detector-threshold must be a finite number in [0, 1]" in errors
    assert not (tmp_path / "out").exists() and output.STATE_DIR == ".sapiens-hf"


def test_an_unreachable_detector_is_one_error_before_any_image_is_read(models, images, tmp_path, monkeypatch,
                                                                        capsys):
    """Pose finds people with the default detector: offline without it, one line naming --detector none and a local
    folder (exit 1), and no shard, no chunk record, no image decoded."""
    from sapiens_hf.batch import inputs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(inputs, "decode", lambda value: 1 / 0)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["annotate", str(images), "--task", "pose", "--model", models["pose"], "--output", str(out),
                 "--device", "cpu", "--quiet"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load the person detector PekingU/rtdetr_r50vd")
    assert "--detector none" in lines[0] and "local folder" in lines[0]
    assert not list(out.glob("shard-*")) and not list(out.glob(".sapiens-hf/chunks/*"))


@pytest.mark.slow
def test_push_to_hub_uploads_the_shards_and_the_manifest_only(models, tmp_path):
    from fake_hub import FakeHub, client_env, run_client

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        PIL.Image.fromarray(skimage.data.astronaut()).resize((50 + index, 60)).save(photos / f"p{index}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("not uploaded")
    with FakeHub() as hub:
        run_client(f"""
from sapiens_hf.cli import main
assert main(["annotate", "{photos}", "--task", "depth", "--model", "depth={models['depth']}", "--output", "{out}",
             "--chunk-size", "2", "--device", "cpu", "--quiet", "--push-to-hub", "tester/annotations",
             "--mask-model", "{models['seg']}"]) == 0
""", client_env(hub, tmp_path / "home"), cwd=tmp_path)
        files = hub.files("tester/annotations")
    local = {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*") if path.is_file()
             and (path.suffix == ".parquet" or path.name in ("annotate.json", "errors.jsonl"))}
    assert {name: data for name, data in files.items() if name != ".gitattributes"} == local
    assert sorted(local) == [".sapiens-hf/annotate.json", ".sapiens-hf/errors.jsonl", "shard-000000.parquet",
                             "shard-000001.parquet"]


def small_folder(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    for index in range(3):
        image = np.roll(skimage.data.astronaut(), 40 * index + 7 * seed, axis=1)
        PIL.Image.fromarray(image).resize((48, 64)).save(folder / f"photo{index}.png")
    return folder


def depth_arguments(models, images: Path, out: Path, *extra, mask: bool = True) -> list[str]:
    """Depth (with the person mask of the tiny segmentation model unless `mask=False`)."""
    return ["annotate", str(images), "--output", str(out), "--task", "depth", "--model", f"depth={models['depth']}",
            "--chunk-size", "2", "--dense-size", "8x6", "--device", "cpu", "--workers", "0", "--quiet",
            *(["--mask-model", models["seg"]] if mask else []), *extra]


def test_depth_is_masked_with_one_segmentation_pass(models, tmp_path, monkeypatch):
    """annotate --task depth cuts the maps with --mask-model's person mask; with --task seg as well, the segmentation
    model runs once per batch (its pass gives both its column and the mask), and the rows are the same."""
    from sapiens_hf import SapiensForSemanticSegmentation

    images = small_folder(tmp_path / "in", 0)
    calls = []
    forward = SapiensForSemanticSegmentation.forward
    monkeypatch.setattr(SapiensForSemanticSegmentation, "forward",
                        lambda self, **kwargs: calls.append(len(kwargs["pixel_values"])) or forward(self, **kwargs))
    assert main(depth_arguments(models, images, tmp_path / "depth")) == 0
    alone = list(calls)
    arguments = depth_arguments(models, images, tmp_path / "both", "--task", "seg", "--model", f"seg={models['seg']}",
                                mask=False)  # the mask from --task seg's model
    assert main(arguments) == 0
    assert calls[len(alone):] == alone  # one segmentation pass, as for the mask alone
    for depth, both in zip(rows(tmp_path / "depth"), rows(tmp_path / "both")):
        assert depth["person_mask_png"] == both["person_mask_png"] and depth["depth_npy"] == both["depth_npy"]
        mask = np.asarray(PIL.Image.open(io.BytesIO(both["person_mask_png"]))) > 0
        labels = np.asarray(PIL.Image.open(io.BytesIO(both["segmentation_png"])))
        assert np.array_equal(mask, labels != 0)
        small = cv2.resize(mask.astype(np.uint8), (6, 8), interpolation=cv2.INTER_NEAREST) > 0  # --dense-size 8x6
        depth_map = np.load(io.BytesIO(both["depth_npy"]))
        assert np.isnan(depth_map[~small]).all() and np.isfinite(depth_map[small]).all()
    assert main(depth_arguments(models, images, tmp_path / "whole", "--no-mask", mask=False)) == 0
    whole = rows(tmp_path / "whole")[0]
    assert "person_mask_png" not in whole and np.isfinite(np.load(io.BytesIO(whole["depth_npy"]))).all()


def test_a_rerun_on_other_inputs_of_the_same_count_is_refused_not_resumed(models, tmp_path, capsys):
    """Another folder with as many images into the same output: not a resume (which would annotate nothing and
    keep the first folder's rows), an error naming what differs; --overwrite annotates the new inputs."""
    first, second, out = small_folder(tmp_path / "a", 0), small_folder(tmp_path / "b", 1), tmp_path / "out"
    assert main(depth_arguments(models, first, out)) == 0
    shards = shard_bytes(out)
    assert main(depth_arguments(models, second, out)) != 0
    assert "other settings (input)" in capsys.readouterr().err
    assert shard_bytes(out) == shards
    assert main(depth_arguments(models, second, out, "--overwrite")) == 0
    assert [row["id"] for row in rows(out)] == [str(second / f"photo{index}.png") for index in range(3)]


def test_annotate_replaces_only_the_shards_of_its_own_runs(models, tmp_path, capsys):
    """A folder with a shard file that no annotate run recorded is refused (also with --overwrite); --overwrite
    of a recorded run deletes its shards only, not a `shard-final-backup.parquet` beside them."""
    images, out = small_folder(tmp_path / "in", 0), tmp_path / "out"
    out.mkdir()
    (out / "shard-000000.parquet").write_bytes(b"the user's own")
    for extra in ([], ["--overwrite"]):
        assert main(depth_arguments(models, images, out, *extra)) != 0
        assert "shard-000000.parquet, which no sapiens-hf annotate run wrote" in capsys.readouterr().err
        assert (out / "shard-000000.parquet").read_bytes() == b"the user's own"
        assert not (out / ".sapiens-hf").exists()

    out = tmp_path / "ours"
    assert main(depth_arguments(models, images, out)) == 0
    (out / "shard-final-backup.parquet").write_bytes(b"a backup")
    assert main(depth_arguments(models, images, out, "--chunk-size", "3", "--overwrite")) == 0
    assert sorted(path.name for path in out.glob("shard-*.parquet")) == ["shard-000000.parquet",
                                                                         "shard-final-backup.parquet"]
    assert (out / "shard-final-backup.parquet").read_bytes() == b"a backup"


def test_a_finished_run_resumed_predicts_nothing_and_a_cut_write_leaves_no_shard(models, tmp_path, monkeypatch,
                                                                                   capsys):
    """The same command again runs the model on no image (its chunk records say all is done); a shard write cut
    short (the process dies in it) leaves no shard file that a reader would take, and the rerun writes it whole."""
    import pyarrow.parquet as pq

    from sapiens_hf import SapiensForDepthEstimation

    images, out = small_folder(tmp_path / "in", 0), tmp_path / "out"
    assert main(depth_arguments(models, images, out)) == 0
    shards = shard_bytes(out)
    calls = []
    forward = SapiensForDepthEstimation.forward
    monkeypatch.setattr(SapiensForDepthEstimation, "forward", lambda self, *a, **k: calls.append(1) or
                        forward(self, *a, **k))
    assert main(depth_arguments(models, images, out)) == 0
    assert calls == [] and shard_bytes(out) == shards

    cut = tmp_path / "cut"
    write_table = pq.write_table

    def dies_while_writing(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half a shard")
        raise KeyboardInterrupt  # stands in for the process being killed here

    monkeypatch.setattr(pq, "write_table", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        main(depth_arguments(models, images, cut))
    assert not list(cut.glob("shard-*.parquet"))
    monkeypatch.setattr(pq, "write_table", write_table)
    assert main(depth_arguments(models, images, cut)) == 0
    assert shard_bytes(cut) == shards


def test_accelerate_starting_one_process_of_several_says_so(models, tmp_path, monkeypatch, capsys):
    """`accelerate launch --num_processes 2` without --multi_gpu starts one process (its simple launcher sets only the
    rendezvous address): the run says so, and how to get the processes, instead of silently running one."""
    images = small_folder(tmp_path / "in", 0)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(depth_arguments(models, images, tmp_path / "out")) == 0
    assert "asked for several processes but started one" in capsys.readouterr().err
    monkeypatch.delenv("MASTER_ADDR")
    assert main(depth_arguments(models, images, tmp_path / "again")) == 0
    assert "several processes" not in capsys.readouterr().err


def test_annotate_does_not_resume_with_a_model_replaced_in_place(models, tmp_path, capsys):
    import shutil

    model = tmp_path / "depth"
    shutil.copytree(models["depth"], model)
    images, out = small_folder(tmp_path / "in", 0), tmp_path / "out"
    arguments = [*depth_arguments(models, images, out), "--model", f"depth={model}"]
    assert main(arguments) == 0
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    assert main(arguments) != 0
    assert "other settings (model_files)" in capsys.readouterr().err
