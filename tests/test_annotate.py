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

import datasets
import numpy as np
import PIL.Image
import pytest
import skimage.data

from sapiens_hf.annotate import output
from sapiens_hf.cli import main


TASKS = ("pose", "seg", "depth")
# Each process the same single thread: equal numerics whatever the process count (docs/inference.md).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def models(tiny_model):
    return {task: tiny_model(task) for task in TASKS}


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
            "--device", "cpu", "--quiet", *extra]


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
    pose = pipeline("sapiens-pose", model=models["pose"])(image)[0]
    np.testing.assert_allclose(row["pose_keypoints"][0], pose["keypoints"].numpy(), atol=1e-3)
    np.testing.assert_allclose(row["pose_boxes"][0], [0, 0, image.width, image.height])
    segmentation = pipeline("sapiens-segmentation", model=models["seg"])(image)["segmentation"]
    labels = np.asarray(PIL.Image.open(io.BytesIO(row["segmentation_png"])))
    assert labels.shape == (image.height, image.width) and (labels == segmentation.numpy()).mean() > 0.999
    depth = np.load(io.BytesIO(row["depth_npy"]))
    assert depth.shape == (32, 24) and depth.dtype == np.float32


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
                "--dense-size", "image", "--device", "cpu", "--quiet", "--workers", "0", *extra]

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
    errors = capsys.readouterr().err
    assert "one of them" in errors and "--model given for ['depth']" in errors and "accelerate gives" in errors
    assert not (tmp_path / "out").exists() and output.STATE_DIR == ".sapiens-hf"


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
             "--chunk-size", "2", "--device", "cpu", "--quiet", "--push-to-hub", "tester/annotations"]) == 0
""", client_env(hub, tmp_path / "home"), cwd=tmp_path)
        files = hub.files("tester/annotations")
    local = {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*") if path.is_file()
             and (path.suffix == ".parquet" or path.name in ("annotate.json", "errors.jsonl"))}
    assert {name: data for name, data in files.items() if name != ".gitattributes"} == local
    assert sorted(local) == [".sapiens-hf/annotate.json", ".sapiens-hf/errors.jsonl", "shard-000000.parquet",
                             "shard-000001.parquet"]
