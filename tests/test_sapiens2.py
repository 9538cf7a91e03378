"""Sapiens2 (transformers' own models) through sapiens-hf's pipelines, `predict` and `annotate`, with tiny random
models (helpers.save_tiny_sapiens2_model): the same result schema as Sapiens for pose, segmentation and normals,
the new pointmap and matting tasks, the generation decided by the model's config, each generation's labels."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch
from transformers import pipeline

import sapiens_hf  # noqa: F401  (registers the pipelines)
from sapiens_hf.cli import main
from sapiens_hf.metadata import SEGMENTATION_CLASSES, SEGMENTATION_CLASSES_29, class_mapping_29_to_28
from sapiens_hf.pipelines import WrongModelError, load_task_pipeline
from sapiens_hf.visualization import class_palette


SHARED_TASKS = ("pose", "segmentation", "normal")  # the tasks both generations have
IMAGE = skimage.data.astronaut()[:300, 100:300]  # 300×200


@pytest.mark.parametrize("task", SHARED_TASKS)
def test_both_generations_give_the_same_result_schema(task, tiny_model):
    whole_image = {"pose": {"detector": None}, "normal": {"mask": False}}.get(task, {})  # no download in a test
    v1 = pipeline(f"sapiens-{task}", model=tiny_model(task))(IMAGE, **whole_image)
    v2_pipe = pipeline(f"sapiens-{task}", model=tiny_model(f"v2-{task}"))
    v2 = v2_pipe(IMAGE, **whole_image)
    assert type(v2_pipe.model).__name__.startswith("Sapiens2For")
    assert type(v2_pipe.image_processor).__name__ == "Sapiens2ImageProcessorPil"  # chosen from the config
    if task == "pose":
        v1, v2 = v1[0], v2[0]
    assert v1.keys() == v2.keys()
    for key in v1:
        if isinstance(v1[key], torch.Tensor):
            assert v1[key].shape == v2[key].shape and v1[key].dtype == v2[key].dtype, key
    if task == "normal":
        assert torch.allclose(v2["normals"].norm(dim=0), torch.ones(300, 200), atol=1e-5)  # unit vectors, as v1


def test_v2_pose_pipeline_with_flip_test_is_the_processor_and_model_route(tiny_model):
    """The pipeline's keypoints are those of transformers' documented Sapiens2 route: crops, the model on them and
    on the mirrored crops with the flip pairs, decoding with both."""
    pipe = pipeline("sapiens-pose", model=tiny_model("v2-pose"))
    boxes = [[20.0, 30.0, 120.0, 200.0], [60.0, 10.0, 80.0, 100.0]]
    people = pipe(IMAGE, boxes=boxes, flip_test=True)
    processor, model = pipe.image_processor, pipe.model
    inputs = processor(IMAGE, boxes=[boxes], return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
        flipped = model(pixel_values=inputs["pixel_values"].flip(-1), flip_pairs=torch.tensor(model.config.flip_pairs))
    expected = processor.post_process_pose_estimation(outputs, boxes=[boxes], outputs_flipped=flipped)[0]
    for person, reference in zip(people, expected):
        torch.testing.assert_close(person["keypoints"], reference["keypoints"], atol=1e-4, rtol=0)
        torch.testing.assert_close(person["bbox_xywh"], reference["bbox_xywh"])
    unflipped = pipe(IMAGE, boxes=boxes)
    assert not torch.allclose(unflipped[0]["keypoints"], people[0]["keypoints"])


def test_pointmap_and_matting_pipelines(tiny_model):
    pointmap = pipeline("sapiens-pointmap", model=tiny_model("v2-pointmap"))(IMAGE)
    assert pointmap["pointmap"].shape == (3, 300, 200) and isinstance(pointmap["scale"], float)
    assert pointmap["depth"].size == (200, 300)
    matting = pipeline("sapiens-matting", model=tiny_model("v2-matting"))(IMAGE)
    assert matting["alpha"].shape == (300, 200) and matting["foreground"].shape == (3, 300, 200)
    assert 0 <= matting["alpha"].min() and matting["alpha"].max() <= 1
    assert matting["cut_out"].mode == "RGBA"
    alpha = np.asarray(matting["cut_out"])[..., 3]
    np.testing.assert_allclose(alpha, np.rint(matting["alpha"].numpy() * 255), atol=1)


def test_the_config_decides_the_generation_and_wrong_models_are_refused(tiny_model):
    with pytest.raises(WrongModelError, match="got a normal model"):
        load_task_pipeline("pointmap", tiny_model("normal"))
    with pytest.raises(WrongModelError, match="Sapiens has no pointmap model"):
        load_task_pipeline("pointmap", tiny_model("encoder"))
    with pytest.raises(WrongModelError, match="got a normal model"):
        load_task_pipeline("depth", tiny_model("v2-normal"))
    with pytest.raises(WrongModelError, match="Sapiens2 has no depth model"):  # a model object given to pipeline()
        normal = load_task_pipeline("normal", tiny_model("v2-normal"))
        pipeline("sapiens-depth", model=normal.model, image_processor=normal.image_processor)
    with pytest.raises(WrongModelError, match="Sapiens2ForPoseEstimation"):
        pipeline("sapiens-segmentation", model=tiny_model("v2-pose"))
    with pytest.raises(WrongModelError, match="got a normal model"):
        load_task_pipeline("pointmap", tiny_model("v2-normal"))
    with pytest.raises(WrongModelError, match="Sapiens has no matting model"):
        load_task_pipeline("matting", tiny_model("encoder"))


def test_each_generation_has_its_class_colours(tiny_model):
    """The 29 classes keep the 28's colours by name; Eyeglass has its own. The label map carries the palette."""
    v2 = pipeline("sapiens-segmentation", model=tiny_model("v2-segmentation"))(IMAGE)["label_map"]
    v1 = pipeline("sapiens-segmentation", model=tiny_model("segmentation"))(IMAGE)["label_map"]
    v2_palette = np.asarray(v2.getpalette()[: 29 * 3]).reshape(29, 3)
    v1_palette = np.asarray(v1.getpalette()[: 28 * 3]).reshape(28, 3)
    np.testing.assert_array_equal(v2_palette[2], [14, 204, 182])  # Eyeglass
    np.testing.assert_array_equal(np.delete(v2_palette, 2, axis=0), v1_palette)
    unnamed = class_palette({index: f"LABEL_{index}" for index in range(29)})  # a config without names
    np.testing.assert_array_equal(unnamed, v2_palette)


def test_class_mapping_29_to_28():
    mapping = class_mapping_29_to_28()
    assert mapping[2] is None and len(mapping) == 29
    assert all(SEGMENTATION_CLASSES[v1] == SEGMENTATION_CLASSES_29[v2] for v2, v1 in mapping.items() if v1 is not None)
    assert sorted(v for v in mapping.values() if v is not None) == list(range(28))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    PIL.Image.fromarray(IMAGE).save(folder / "astronaut.png")
    PIL.Image.fromarray(skimage.data.coffee()[:120, :160]).save(folder / "coffee.png")
    return folder


def test_predict_writes_every_v2_tasks_files(photos, tmp_path, tiny_model):
    from plyfile import PlyData

    for task in ("pose", "segmentation", "normal", "pointmap", "matting"):
        arguments = ["predict", "--task", task, "--model", tiny_model(f"v2-{task}"), str(photos), "--output",
                     str(tmp_path / task), "--quiet"]
        options = {"pose": ["--flip-test", "--detector", "none"], "normal": ["--no-mask"]}.get(task, [])
        assert main(arguments + options) == 0, task
    assert len(json.loads((tmp_path / "pose" / "keypoints.json").read_text())["annotations"]) == 2
    labels = np.asarray(PIL.Image.open(tmp_path / "segmentation" / "astronaut_seg.png"))
    assert labels.shape == (300, 200) and labels.max() < 29
    assert np.load(tmp_path / "normal" / "astronaut_normal.npy").shape == (300, 200, 3)
    points = np.load(tmp_path / "pointmap" / "astronaut_pointmap.npy")
    assert points.shape == (300, 200, 3)
    cloud = PlyData.read(str(tmp_path / "pointmap" / "astronaut_pointmap.ply"))["vertex"]
    assert cloud.count == 300 * 200
    np.testing.assert_allclose(np.stack([cloud["x"], cloud["y"], cloud["z"]], 1), points.reshape(-1, 3))
    alpha = PIL.Image.open(tmp_path / "matting" / "coffee_matting.png")
    cut_out = PIL.Image.open(tmp_path / "matting" / "coffee_matting_vis.png")
    assert alpha.mode == "L" and cut_out.mode == "RGBA" and alpha.size == cut_out.size == (160, 120)
    np.testing.assert_array_equal(np.asarray(cut_out)[..., 3], np.asarray(alpha))


def test_a_large_pointmap_is_thinned_in_its_point_cloud(tmp_path):
    from plyfile import PlyData

    from sapiens_hf.tasks import TASKS

    pointmap = torch.randn(3, 2000, 1500)
    TASKS["pointmap"].save_result({"pointmap": pointmap}, tmp_path / "big.npy")
    assert np.load(tmp_path / "big.npy").shape == (2000, 1500, 3)
    assert PlyData.read(str(tmp_path / "big.ply"))["vertex"].count == 1000 * 750  # every 2nd pixel, ≤ 2 M points


def test_annotate_columns_of_the_v2_tasks(photos, tmp_path, tiny_model):
    tasks = {"pose": "pose", "seg": "segmentation", "normal": "normal", "pointmap": "pointmap",
             "matting": "matting"}
    arguments = ["annotate", str(photos), "--output", str(tmp_path / "out"), "--dense-size", "32x24", "--device",
                 "cpu", "--quiet", "--detector", "none", "--no-mask"]
    for spelling, task in tasks.items():
        arguments += ["--task", spelling, "--model", f"{spelling}={tiny_model(f'v2-{task}')}"]
    assert main(arguments) == 0
    table = sorted(datasets.load_dataset("parquet", data_dir=str(tmp_path / "out"), split="train").to_list(),
                   key=lambda row: row["index"])
    row = next(row for row in table if row["id"].endswith("astronaut.png"))
    assert len(row["pose_keypoints"][0]) == 17
    assert np.load(io.BytesIO(row["normal_npy"])).shape == (3, 32, 24)
    assert np.load(io.BytesIO(row["pointmap_npy"])).shape == (3, 32, 24) and isinstance(row["pointmap_scale"], float)
    assert PIL.Image.open(io.BytesIO(row["matting_alpha_png"])).size == (24, 32)
    assert PIL.Image.open(io.BytesIO(row["matting_foreground_png"])).mode == "RGBA"
    # The stored normals are the pipeline's at the image size, resized: the padding was taken off per image.
    normals = pipeline("sapiens-normal", model=tiny_model("v2-normal"))(IMAGE, mask=False)["normals"]
    resized = torch.nn.functional.interpolate(normals[None], size=(32, 24), mode="bilinear", align_corners=False)[0]
    assert (torch.from_numpy(np.load(io.BytesIO(row["normal_npy"]))) - resized).abs().mean() < 0.1
    manifest = json.loads((Path(tmp_path / "out") / ".sapiens-hf" / "annotate.json").read_text())
    assert manifest["models"]["segmentation"]["labels"]["2"] == "Eyeglass"


def test_models_lists_every_release_of_both_generations(capsys):
    from sapiens_hf.releases import LICENCES, ORIGINAL_CHECKPOINTS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for checkpoint in ORIGINAL_CHECKPOINTS:
        if checkpoint.format == "pth":
            assert checkpoint.repo_id in out and (checkpoint.repo_id != "noahcao/sapiens-pose-coco"
                                                  or Path(checkpoint.filename).name in out)
    for kind in ("pose", "seg", "normal", "pointmap"):
        assert all(f"facebook/sapiens2-{kind}-{size}" in out for size in ("0.4b", "0.8b", "1b", "5b"))
    assert "facebook/sapiens2-matting-1b" in out and "facebook/sapiens2-pretrain-1b-4k" in out
    assert "CC-BY-NC-4.0" in out and "Sapiens2 License" in out and "Which to pick" in out
    assert main(["models", "--task", "pose", "--generation", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in rows] == [f"facebook/sapiens2-pose-{size}" for size in ("0.4b", "0.8b", "1b", "5b")]
    assert {row["licence"] for row in rows} == {LICENCES[2]} and {row["labels"] for row in rows} == {"goliath-308"}
    with pytest.raises(SystemExit) as exit:
        main(["models", "--generation", "3"])
    assert exit.value.code == 2


def test_the_export_command_takes_a_sapiens2_model(tiny_model, tmp_path):
    """Exported and checked like a Sapiens model; the manifest says its generation (tests/test_export_sapiens2.py
    compares every task's graph with the eager model)."""
    assert main(["export", tiny_model("v2-pose"), str(tmp_path / "out"), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "sapiens-export.json").read_text())
    assert manifest["family"] == "Sapiens2" and manifest["model"]["class"] == "Sapiens2ForPoseEstimation"


def test_a_matting_video_shows_the_cut_out_over_black(tiny_model, tmp_path):
    import cv2

    frames = [np.ascontiguousarray(IMAGE[:96, :128]) for _ in range(3)]
    video = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 96))
    for frame in frames:
        video.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    video.release()
    assert main(["predict", "--task", "matting", "--model", tiny_model("v2-matting"), str(tmp_path / "clip.mp4"),
                 "--output", str(tmp_path / "out"), "--quiet"]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_matting_vis.mp4"))
    written = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB).astype(np.float32)
    capture.release()
    capture = cv2.VideoCapture(str(tmp_path / "clip.mp4"))  # the first frame as predict decoded it
    first = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB)
    capture.release()
    result = pipeline("sapiens-matting", model=tiny_model("v2-matting"))(first)
    expected = np.asarray(result["cut_out"].convert("RGBA"), np.float32)
    over_black = expected[..., :3] * expected[..., 3:] / 255  # the cut-out's colours times its alpha
    assert np.abs(written - over_black).mean() < 8  # mp4 compression


def test_the_demo_runs_sapiens2_models(tiny_model):
    from sapiens_hf.demo import DemoApp

    models = {"pose": tiny_model("v2-pose"), "seg": tiny_model("v2-segmentation"),
              "pointmap": tiny_model("v2-pointmap"), "matting": tiny_model("v2-matting")}
    app = DemoApp(models, device="cpu")
    photo = str(Path(sapiens_hf.__file__).parent / "data" / "astronaut.jpg")
    *pictures, legend, files, status = app.respond(photo, ["pose", "segmentation", "pointmap", "matting"],
                                                 "whole image", "", 0.3, 0.3, True)
    assert "total" in status, status
    assert "Eyeglass" in legend and "rgb(14,204,182)" in legend  # the model's 29 classes in their colours
    assert {Path(file).name for file in files} >= {"astronaut_pointmap.npy", "astronaut_matting.png"}


def test_publishing_a_sapiens2_pipeline_is_refused_before_the_hub_is_touched(tiny_model, monkeypatch):
    from sapiens_hf import hub

    monkeypatch.setattr(hub, "HfApi", lambda **kwargs: pytest.fail("the Hub was contacted"))
    with pytest.raises(ValueError, match="Sapiens2 model"):
        pipeline("sapiens-normal", model=tiny_model("v2-normal")).push_to_hub("me/normals")


def test_predict_never_overwrites_a_point_cloud_it_did_not_write(photos, tmp_path, tiny_model):
    output = tmp_path / "out"
    output.mkdir()
    (output / "astronaut_pointmap.ply").write_text("the user's own cloud")
    arguments = ["predict", "--task", "pointmap", "--model", tiny_model("v2-pointmap"), str(photos), "--output",
                 str(output), "--quiet"]
    assert main(arguments) == 2
    assert (output / "astronaut_pointmap.ply").read_text() == "the user's own cloud"
    assert not (output / "astronaut_pointmap.npy").exists()


def test_config_overrides_are_checked_per_generation(tiny_model, tmp_path, capsys):
    """A Sapiens2 field is a valid override for a Sapiens2 model only; a misspelt key is refused before any work."""
    pipe = load_task_pipeline("normal", tiny_model("v2-normal"), rope_theta=50.0)
    assert pipe.model.config.rope_theta == 50.0
    with pytest.raises(ValueError, match="Unknown config override 'rope_theta'.*Sapiens config fields"):
        load_task_pipeline("normal", tiny_model("normal"), rope_theta=50.0)
    with pytest.raises(ValueError, match="Unknown config override 'patch_embed_padding'"):
        load_task_pipeline("normal", tiny_model("v2-normal"), patch_embed_padding=2)
    PIL.Image.fromarray(IMAGE).save(tmp_path / "x.png")
    arguments = ["predict", "--task", "normal", "--model", tiny_model("v2-normal"), str(tmp_path / "x.png"),
                 "--output", str(tmp_path / "out"), "--config", "rope_thetta=50"]
    assert main(arguments) == 2 and "did you mean 'rope_theta'" in capsys.readouterr().err
