"""Keypoint formats (by name, between the released sets and OpenPose 18), the pipeline's `keypoint_format=`, their
drawing, and the COCO files that `predict` writes (keypoints.json and the results list that pycocotools reads)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_pose_data
from PIL import Image

from sapiens_hf import keypoint_formats, metadata
from sapiens_hf.cli import main
from sapiens_hf.keypoint_formats import ALIASES, DERIVED, FORMATS, conversion, keypoint_format


SETS = {count: metadata.keypoint_set(count)["keypoint_names"] for count in (17, 133, 308)}
ALLOWED = [(308, "coco"), (308, "coco-wholebody"), (308, "openpose"), (133, "coco"), (133, "coco-wholebody"),
           (133, "openpose"), (17, "coco"), (17, "openpose")]


@pytest.mark.parametrize("count, name", ALLOWED)
def test_every_mapped_point_is_a_named_point_of_the_source(count, name):
    target = keypoint_format(name)
    plan = conversion(SETS[count], name)
    assert len(plan.sources) == target.num_keypoints
    for target_name, used in zip(target.keypoint_names, plan.sources):
        source_names = [SETS[count][index] for index in used]
        if len(used) == 2:
            assert tuple(source_names) == DERIVED[target_name]
        elif used:
            assert source_names[0] in (target_name, ALIASES.get(target_name))
        else:
            assert target_name not in SETS[count] and ALIASES.get(target_name) not in SETS[count]


def test_coverage_of_each_conversion():
    """What the docs' coverage table says: Goliath lacks COCO-WholeBody's 68 face points only; every format is
    complete from COCO-WholeBody; OpenPose's neck is always derived."""
    assert conversion(SETS[308], "coco-wholebody").missing == [f"face-{i}" for i in range(68)]
    plan = conversion(SETS[308], "coco-wholebody")
    renamed = [name for name, used in zip(plan.target.keypoint_names, plan.sources)
               if len(used) == 1 and SETS[308][used[0]] != name]
    assert len(renamed) == len(ALIASES) == 12 and plan.sources.count(()) == 68  # 53 by the same name
    for count, name in ALLOWED:
        if (count, name) != (308, "coco-wholebody"):
            assert conversion(SETS[count], name).missing == []
        assert conversion(SETS[count], name).derived == (["neck"] if name == "openpose" else [])


def test_goliath_to_coco_lands_on_the_same_named_points():
    rng = np.random.default_rng(0)
    keypoints, scores = rng.uniform(0, 500, (2, 308, 2)), rng.uniform(0, 1, (2, 308))
    converted, converted_scores = conversion(SETS[308], "coco").apply(keypoints, scores)
    assert converted.shape == (2, 17, 2) and converted_scores.shape == (2, 17)
    for index, name in enumerate(SETS[17]):
        source = SETS[308].index(name)  # Goliath's order is not COCO's (its wrists are at 41 and 62)
        np.testing.assert_allclose(converted[:, index], keypoints[:, source], rtol=1e-6)
        np.testing.assert_allclose(converted_scores[:, index], scores[:, source], rtol=1e-6)


def test_openpose_neck_is_the_shoulder_midpoint_with_the_lower_score():
    """Also from Goliath, which has an anatomical `neck` of its own: OpenPose's neck is the shoulders' midpoint."""
    for count in (17, 308):
        keypoints, scores = np.zeros((count, 2)), np.full(count, 0.9)
        names = SETS[count]
        keypoints[names.index("left_shoulder")], scores[names.index("left_shoulder")] = (10, 20), 0.8
        keypoints[names.index("right_shoulder")], scores[names.index("right_shoulder")] = (30, 40), 0.4
        if "neck" in names:
            keypoints[names.index("neck")] = (99, 99)
        points, point_scores = conversion(names, "openpose").apply(keypoints, scores)
        neck = keypoint_format("openpose").keypoint_names.index("neck")
        np.testing.assert_allclose(points[neck], (20, 30))
        assert point_scores[neck] == pytest.approx(0.4)


def test_the_aliases_join_the_same_joints_in_both_skeletons():
    """Each alias (COCO-WholeBody name ← Goliath name) links to aliased or same-named neighbours in both sets."""
    def neighbours(count, name):
        names, links = SETS[count], metadata.keypoint_set(count)["skeleton_links"]
        index = names.index(name)
        return {names[b if a == index else a] for a, b in links if index in (a, b)}

    inverse = {source: target for target, source in ALIASES.items()}
    for target, source in ALIASES.items():
        in_goliath = {inverse.get(name, name) for name in neighbours(308, source)}
        assert neighbours(133, target) <= in_goliath, target


def test_missing_points_are_nan_with_score_zero():
    points, scores = conversion(SETS[308], "coco-wholebody").apply(np.ones((308, 2)), np.ones(308))
    face = [index for index, name in enumerate(SETS[133]) if name.startswith("face-")]
    assert np.isnan(points[face]).all() and (scores[face] == 0).all()
    assert np.isfinite(np.delete(points, face, axis=0)).all()


@pytest.mark.parametrize("names, message", [
    (SETS[17], "would only add"), ([f"point_{i}" for i in range(5)], "share no keypoint name"),
])
def test_impossible_conversions_are_refused(names, message):
    with pytest.raises(ValueError, match=message):
        conversion(names, "coco-wholebody")
    for unknown in ("smpl", ["coco"], None):  # not a name: the same one-line error, not a TypeError
        with pytest.raises(ValueError, match="Unknown keypoint format"):
            conversion(SETS[308], unknown)
    assert conversion(names, "native") is None


def test_formats_are_consistent():
    for target in FORMATS.values():
        assert len(set(target.keypoint_names)) == target.num_keypoints == len(target.keypoint_colors)
        assert len(target.link_colors) == len(target.skeleton_links)
        assert all(0 <= a < target.num_keypoints and 0 <= b < target.num_keypoints for a, b in target.skeleton_links)
    assert keypoint_formats.FORMAT_NAMES == ("native", "coco", "coco-wholebody", "openpose")


# ---------------------------------------------------------------------------------------------------------------
# The pipeline, drawing and predict
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_pipeline(tiny_model):
    from sapiens_hf.pipelines import load_task_pipeline

    return load_task_pipeline("pose", tiny_model("pose"))


def test_pipeline_converts_after_post_processing(pose_pipeline):
    image = np.random.default_rng(0).integers(0, 255, (96, 72, 3), dtype=np.uint8)
    boxes = [[5, 5, 40, 80], [20, 10, 40, 70]]
    native = pose_pipeline(image, boxes=boxes)
    openpose = pose_pipeline(image, boxes=boxes, keypoint_format="openpose")
    plan = conversion(SETS[17], "openpose")
    for person, converted in zip(native, openpose):
        expected_points, expected_scores = plan.apply(person["keypoints"], person["scores"])
        torch.testing.assert_close(converted["keypoints"], torch.from_numpy(expected_points))
        torch.testing.assert_close(converted["scores"], torch.from_numpy(expected_scores))
        assert converted["keypoint_format"] == "openpose" and converted["labels"].tolist() == list(range(18))
        assert "keypoint_format" not in person
    thresholded = pose_pipeline(image, boxes=boxes, keypoint_format="openpose", threshold=0.5)
    for person, full in zip(thresholded, openpose):
        assert person["labels"].tolist() == torch.nonzero(full["scores"] > 0.5).flatten().tolist()
    with pytest.raises(ValueError, match="would only add"):
        pose_pipeline(image, keypoint_format="coco-wholebody")


def test_openpose_people_are_drawn_with_the_openpose_skeleton():
    """Two visible points at a time: a link of the OpenPose skeleton is drawn between them in its colour, any other
    pair is not joined; points scoring 0 (missing) are not drawn."""
    from sapiens_hf.visualization import draw_keypoints

    target = keypoint_format("openpose")
    links = dict(zip(target.skeleton_links, target.link_colors))
    for a, b in [*links, (0, 8), (2, 5)]:
        keypoints, scores = np.full((18, 2), 40, np.float32), torch.zeros(18)
        keypoints[a], keypoints[b], scores[[a, b]] = (10, 40), (70, 40), 1.0
        person = {"keypoints": torch.from_numpy(keypoints), "scores": scores, "keypoint_format": "openpose"}
        canvas = np.asarray(draw_keypoints(np.zeros((80, 80, 3), np.uint8), [person], radius=2, thickness=3))
        assert tuple(canvas[40, 40]) == links.get((a, b), (0, 0, 0)), (a, b)
        assert tuple(canvas[40, 10]) == target.keypoint_colors[a]


def test_predict_writes_converted_keypoints_and_a_results_list_that_pycocotools_loads(tiny_model, tmp_path):
    from pycocotools.coco import COCO

    ground_truth, images = make_pose_data(tmp_path / "data")
    # keypoints.json numbers the images from 1 in input order: here the ground truth's ids.
    inputs = [str(images / name) for name in ("astronaut.jpg", "camera.png")]
    output = tmp_path / "out"
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), "--detector", "none", *inputs, "--output", str(output),
                 "--keypoint-format", "openpose", "--quiet"]) == 0
    document = json.loads((output / "keypoints.json").read_text())
    category = document["categories"][0]
    assert category["keypoints"] == list(keypoint_format("openpose").keypoint_names)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in keypoint_format("openpose").skeleton_links]
    assert [image["file_name"] for image in document["images"]] == inputs
    results = json.loads((output / "keypoints_results.json").read_text())
    assert results == [{key: annotation[key] for key in ("image_id", "category_id", "keypoints", "score", "bbox")}
                       for annotation in document["annotations"]]
    assert all(len(result["keypoints"]) == 18 * 3 for result in results)
    # Another format into the same folder is other work: refused, not resumed (nothing replaced).
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), "--detector", "none", *inputs, "--output", str(output),
                 "--keypoint-format", "coco", "--quiet"]) == 2
    assert json.loads((output / "keypoints.json").read_text()) == document

    native = tmp_path / "native"
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), "--detector", "none", *inputs, "--output", str(native),
                 "--quiet"]) == 0
    gt = COCO(str(ground_truth))
    loaded = gt.loadRes(str(native / "keypoints_results.json"))
    assert sorted(loaded.getImgIds()) == [1, 2] and len(loaded.getAnnIds()) == len(gt.getAnnIds())
    for annotation_id in loaded.getAnnIds():
        loaded_annotation = loaded.anns[annotation_id]
        assert loaded_annotation["image_id"] in gt.imgs and len(loaded_annotation["keypoints"]) == 17 * 3


def test_predict_refuses_an_impossible_format_before_any_image(tiny_model, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(photo)
    output, model = tmp_path / "out", tiny_model("pose")
    capsys.readouterr()  # the model saved just now (when this test runs first) reports it on stderr
    assert main(["predict", "--task", "pose", "--model", model, str(photo), "--output", str(output),
                 "--keypoint-format", "coco-wholebody", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--keypoint-format coco-wholebody" in error
    assert not any(output.glob("*.json")) and not any(output.glob("*.jpg"))
    assert main(["predict", "--task", "depth", str(photo), "--output", str(output), "--keypoint-format", "coco"]) == 2


def test_the_demo_converts_with_the_same_answer_as_predict_and_names_a_refusal(tiny_model, tmp_path):
    pytest.importorskip("gradio")
    from sapiens_hf.cli import SAMPLE_IMAGE
    from sapiens_hf.demo import DemoApp

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(SAMPLE_IMAGE.read_bytes())
    app = DemoApp({"pose": tiny_model("pose")}, device="cpu")
    *_, files, status = app.respond(str(photo), ["pose"], "whole image", "", 0.3, 0.3, False,
                                    keypoint_format="openpose")
    assert "total" in status, status
    download = json.loads(next(Path(file) for file in files if file.endswith("_keypoints.json")).read_text())
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), str(photo), "--output",
                 str(tmp_path / "out"), "--keypoint-format", "openpose", "--detector", "none", "--quiet"]) == 0
    written = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert download["annotations"] == written["annotations"]
    assert download["categories"][0]["keypoints"][1] == "neck"
    refused = app.respond(str(photo), ["pose"], "whole image", "", 0.3, 0.3, False,
                          keypoint_format="coco-wholebody")[-1]
    assert refused.startswith("**Error:** Keypoint format") and "would only add" in refused


def test_annotate_stores_the_pipelines_converted_keypoints_and_refuses_an_impossible_format(tiny_model, tmp_path,
                                                                                             capsys):
    import datasets

    from sapiens_hf.pipelines import load_task_pipeline

    folder = tmp_path / "images"
    folder.mkdir()
    image = np.random.default_rng(1).integers(0, 255, (70, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "photo.png")
    common = ["annotate", str(folder), "--task", "pose", "--model", tiny_model("pose"), "--device", "cpu", "--quiet",
              "--detector", "none"]
    refused = tmp_path / "refused"
    assert main([*common, "--output", str(refused), "--keypoint-format", "coco-wholebody"]) == 2
    assert "would only add" in capsys.readouterr().err and not any(refused.glob("*.parquet"))
    assert main(["annotate", str(folder), "--task", "depth", "--output", str(tmp_path / "depth"),
                 "--keypoint-format", "openpose"]) == 2  # no pose task: refused before any model loads
    assert "--keypoint-format applies to --task pose" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main([*common, "--output", str(out), "--keypoint-format", "openpose"]) == 0
    row = datasets.load_dataset("parquet", data_dir=str(out), split="train")[0]
    person = load_task_pipeline("pose", tiny_model("pose"))(image, keypoint_format="openpose", detector=None)[0]
    np.testing.assert_allclose(row["pose_keypoints"][0], person["keypoints"].numpy(), atol=1e-3)
    np.testing.assert_allclose(row["pose_scores"][0], person["scores"].numpy(), atol=1e-4)
    assert len(row["pose_keypoints"][0]) == 18


def test_a_missing_point_is_cocos_unlabelled_point_and_counts_nowhere():
    from sapiens_hf.coco import person_annotation

    plan = conversion(SETS[308], "coco-wholebody")
    person = plan.person({"keypoints": torch.full((308, 2), 7.0), "scores": torch.full((308,), 0.5),
                          "bbox_xywh": torch.tensor([1.0, 2.0, 3.0, 4.0]), "bbox_score": None})
    annotation = person_annotation(person, keypoint_threshold=-1.0)
    triplets = np.asarray(annotation["keypoints"]).reshape(133, 3)
    face = [index for index, name in enumerate(SETS[133]) if name.startswith("face-")]
    assert (triplets[face] == 0).all() and (np.delete(triplets, face, axis=0) == [7, 7, 0.5]).all()
    assert annotation["num_keypoints"] == 133 - 68 and annotation["score"] == pytest.approx(0.5)
    json.dumps(annotation, allow_nan=False)  # valid JSON: no NaN


def test_a_point_without_a_finite_score_is_unlabelled_too():
    """A NaN score (a model's overflowed heatmap: its arg-max, and so the point, stays finite) would make keypoints.json
    and the results list invalid JSON (`NaN`) and the person's score NaN: written as COCO's unlabelled point."""
    from sapiens_hf.coco import person_annotation

    scores = torch.full((17,), 0.5)
    scores[3], scores[4] = float("nan"), float("inf")
    annotation = person_annotation({"keypoints": torch.full((17, 2), 7.0), "scores": scores,
                                    "bbox_xywh": torch.tensor([1.0, 2.0, 3.0, 4.0]), "bbox_score": None}, 0.3)
    triplets = np.asarray(annotation["keypoints"]).reshape(17, 3)
    assert (triplets[3:5] == 0).all() and (np.delete(triplets, [3, 4], axis=0) == [7, 7, 0.5]).all()
    assert annotation["num_keypoints"] == 15 and annotation["score"] == pytest.approx(0.5)
    json.dumps(annotation, allow_nan=False)
