"""`sapiens-hf evaluate` and `sapiens_hf.evaluation`: pose AP equal to pycocotools' COCOeval run directly on the same
results (ground-truth boxes, a detector, another keypoint set by name), dense figures equal to the package's metric
functions run directly on the pipelines' predictions, and every bad argument refused before the model loads."""

import copy
import json
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from helpers import make_dense_data, make_pose_data
from PIL import Image

from sapiens_hf import evaluation, metadata
from sapiens_hf.cli import main
from sapiens_hf.metrics import functional
from sapiens_hf.tasks import TASKS


COCO_NAMES = metadata.keypoint_set(17)["keypoint_names"]


@pytest.fixture(scope="module")
def pose_data(tmp_path_factory):
    """Two photos, one with a second person (a shifted copy), the COCO-17 keypoint names, and a third image with
    nobody labelled."""
    root = tmp_path_factory.mktemp("coco")
    path, images = make_pose_data(root)
    document = json.loads(path.read_text())
    document["categories"][0]["keypoints"] = COCO_NAMES
    second = dict(document["annotations"][0], id=99, bbox=[100, 60, 200, 400])
    second["keypoints"] = [value + 120 * (index % 3 == 0) * (value > 0) for index, value in
                           enumerate(document["annotations"][0]["keypoints"])]  # far enough to survive OKS-NMS
    document["annotations"].append(second)
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(images / "empty.png")
    document["images"].append({"id": 7, "file_name": "empty.png", "height": 40, "width": 30})
    path.write_text(json.dumps(document))
    return path, images, document


class StubPose:
    """A pose pipeline's interface whose people are the annotated ones (the one whose box centre is nearest) plus
    noise (in the model's keypoint set `names`: COCO-17 points at the same-named slots, others at random)."""

    image_processor = SimpleNamespace(size={"height": 1024, "width": 768})

    def __init__(self, document, names, noise=6.0):
        self.model = SimpleNamespace(config=SimpleNamespace(id2label=dict(enumerate(names)), num_labels=len(names)))
        self.names, self.noise, self.calls = names, noise, []
        self.people = {tuple(a["bbox"]): (a["id"], np.asarray(a["keypoints"], np.float32).reshape(-1, 3))
                       for a in document["annotations"]}

    def __call__(self, inputs, **kwargs):
        self.calls.append(kwargs)
        results = []
        for item in inputs:
            people = []
            for box in item["boxes"]:
                person, truth = self.people[min(self.people, key=lambda known: distance(known, box))]
                rng = np.random.default_rng(person)  # the same COCO points whatever the model's set
                noise, coco_scores = rng.normal(0, self.noise, (17, 2)), rng.uniform(0.1, 1, 17)
                keypoints = rng.uniform(0, 300, (len(self.names), 2)).astype(np.float32)
                scores = rng.uniform(0.1, 1, len(self.names)).astype(np.float32)
                for index, name in enumerate(COCO_NAMES):
                    keypoints[self.names.index(name)] = truth[index, :2] + noise[index]
                    scores[self.names.index(name)] = coco_scores[index]
                people.append({"keypoints": torch.from_numpy(keypoints), "scores": torch.from_numpy(scores),
                               "labels": torch.arange(len(self.names)), "bbox_score": None,
                               "bbox_xywh": torch.tensor(box, dtype=torch.float32)})
            results.append(people)
        return results


def distance(box, other) -> float:
    return float(np.hypot(box[0] + box[2] / 2 - other[0] - other[2] / 2, box[1] + box[3] / 2 - other[1] - other[3] / 2))


def cocoeval_stats(annotations_file, results, sigmas) -> list[float]:
    """pycocotools run directly: the file as ground truth, the results list as detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = COCO(str(annotations_file))
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(copy.deepcopy(results)), iouType="keypoints")  # it edits them
    evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats.tolist()


@pytest.mark.parametrize("names", [COCO_NAMES, metadata.keypoint_set(308)["keypoint_names"]], ids=["coco", "goliath"])
def test_pose_ap_equals_cocoeval_on_the_same_results(pose_data, names):
    """Ground-truth boxes, flip test on; a 308-keypoint model is scored on its same-named COCO points."""
    path, images, document = pose_data
    stub = StubPose(document, names)
    figures, results = evaluation.evaluate_pose(stub, document, images, batch_size=2)
    assert 0.2 < figures["AP"] < 1  # a figure that can be wrong
    assert figures == dict(zip(functional.COCO_AP_NAMES, cocoeval_stats(path, results, metadata.keypoint_set(17)["sigmas"])))
    assert {result["image_id"] for result in results} == {1, 2} and len(results) == 3  # nobody labelled in 7
    assert all(call["flip_test"] is True and "detector" not in call for call in stub.calls)
    for result in results:
        scores = np.asarray(result["keypoints"][2::3])
        assert len(scores) == 17 and result["score"] == pytest.approx(scores[scores > 0.2].mean(), abs=1e-3)
    # The same points from the Goliath set (its order is not COCO's): the same results, the same figures.
    assert (figures, results) == evaluation.evaluate_pose(StubPose(document, COCO_NAMES), document, images)


def test_pose_with_a_detection_file_scores_the_boxes_and_thins_duplicates_by_oks(pose_data, tmp_path):
    """Boxes and scores of a COCO detection results file (the released evaluation's kind): a near-duplicate box of a
    person gives the same keypoints and is dropped by OKS-NMS; other categories, other images and boxes that cannot
    be cropped are left out."""
    path, images, document = pose_data
    detections = [{"image_id": 1, "category_id": 1, "bbox": [150, 10, 290, 502], "score": 0.8},
                  {"image_id": 1, "category_id": 1, "bbox": [152, 12, 288, 500], "score": 0.5},
                  {"image_id": 1, "category_id": 1, "bbox": [100, 60, 200, 400], "score": 0.7},
                  {"image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50], "score": 0.9},
                  {"image_id": 2, "category_id": 1, "bbox": [150, 40, 220, 440], "score": 0.6},
                  {"image_id": 2, "category_id": 1, "bbox": [600, 600, 30, 30], "score": 0.9},
                  {"image_id": 2, "category_id": 1, "bbox": [10, 10, 0, 30], "score": 0.9},
                  {"image_id": 42, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    file = tmp_path / "detections.json"
    file.write_text(json.dumps(detections))
    stub = StubPose(document, COCO_NAMES)
    figures, results = evaluation.evaluate_pose(stub, document, images, evaluation.read_detections(file, document))
    assert [(result["image_id"], result["bbox"]) for result in results] == [
        (1, [150, 10, 290, 502]), (1, [100, 60, 200, 400]), (2, [150, 40, 220, 440])]
    for result, box_score in zip(results, (0.8, 0.7, 0.6)):
        scores = np.asarray(result["keypoints"][2::3])
        assert result["score"] == pytest.approx(box_score * scores[scores > 0.2].mean(), abs=1e-3)
    assert figures == dict(zip(functional.COCO_AP_NAMES, cocoeval_stats(path, results, metadata.keypoint_set(17)["sigmas"])))
    assert 0.2 < figures["AP"] < 1


def test_a_model_without_keypoint_names_is_compared_in_order(capsys):
    """A 17-keypoint model fine-tuned without names (transformers' LABEL_0, ...) on a COCO file: the same count and
    other names, compared in order as documented (not refused because no name is COCO's); other counts are refused."""
    unnamed = [f"LABEL_{index}" for index in range(17)]
    assert evaluation.pose_conversion(unnamed, COCO_NAMES) is None
    assert "compared in order" in capsys.readouterr().err
    with pytest.raises(ValueError, match="share no keypoint name"):
        evaluation.pose_conversion(unnamed[:5], COCO_NAMES)


def test_oks_nms_keeps_the_best_of_overlapping_people():
    sigmas = metadata.keypoint_set(17)["sigmas"]
    base = np.column_stack([np.linspace(100, 200, 17), np.linspace(50, 400, 17), np.ones(17)])

    def person(shift, score):
        return {"keypoints": (base + [shift, 0, 0]).flatten().tolist(), "score": score, "area": 40000.0}

    people = [person(0, 0.5), person(1, 0.9), person(300, 0.4)]
    assert evaluation.oks_nms(people, sigmas) == [people[1], people[2]]
    # mmpose's OKS of a 10-pixel shift at this area: exp(-100 / (2σ)² / area / 2) averaged over the keypoints.
    oks = np.exp(-100 / (2 * np.asarray(sigmas)) ** 2 / 40000 / 2).mean()
    shifted = [person(0, 0.9), person(10, 0.5)]
    assert len(evaluation.oks_nms(shifted, sigmas, threshold=oks - 1e-6)) == 1
    assert len(evaluation.oks_nms(shifted, sigmas, threshold=oks + 1e-6)) == 2
    # Points one of them lacks (a converted format's missing points, all at 0, 0) do not make two people one.
    apart = [person(0, 0.9), person(300, 0.5)]
    for one in apart:
        one["keypoints"] = (np.asarray(one["keypoints"]).reshape(17, 3) * ([[0]] * 12 + [[1]] * 5)).flatten().tolist()
        one["present"] = [False] * 12 + [True] * 5
    assert len(evaluation.oks_nms(apart, sigmas)) == 2
    assert len(evaluation.oks_nms([{**one, "present": [True] * 17} for one in apart], sigmas, threshold=0.5)) == 1


def test_pose_with_a_detector_and_the_tiny_model(pose_data, tiny_model):
    """The pipeline's `detector=`: each detected person is scored with the detector's score; an image where it
    finds nobody gives no prediction."""
    from sapiens_hf.pipelines import load_task_pipeline

    path, images, document = pose_data
    pipe = load_task_pipeline("pose", tiny_model("pose"))
    boxes = {512: {"xmin": 150, "ymin": 10, "xmax": 440, "ymax": 500}}

    def detector(image):
        box = boxes.get(image.height)
        return [{"label": "person", "score": 0.9, "box": box}] if box and image.width == 512 else []

    figures, results = evaluation.evaluate_pose(pipe, document, images, boxes="detector", detector=detector)
    assert set(figures) == set(functional.COCO_AP_NAMES)
    assert [result["image_id"] for result in results] == [1, 2]
    for result in results:
        scores = np.asarray(result["keypoints"][2::3])
        confident = scores[scores > 0.2]
        expected = 0.9 * confident.mean() if confident.size else 0.0
        assert result["bbox"] == [150.0, 10.0, 290.0, 490.0] and result["score"] == pytest.approx(expected, abs=1e-3)
    stats = cocoeval_stats(path, results, metadata.keypoint_set(17)["sigmas"])
    assert figures == dict(zip(functional.COCO_AP_NAMES, stats))


def test_the_command_writes_the_figures_of_the_api(pose_data, tiny_model, tmp_path, capsys):
    from sapiens_hf.pipelines import load_task_pipeline

    path, images, document = pose_data
    output = tmp_path / "figures.json"
    assert main(["evaluate", "--task", "pose", "--model", tiny_model("pose"), "--annotations", str(path), "--images",
                 str(images), "--output", str(output), "--batch-size", "2", "--quiet"]) == 0
    report = json.loads(output.read_text())
    expected, _ = evaluation.evaluate_pose(load_task_pipeline("pose", tiny_model("pose")), document, images)
    assert report["metrics"] == expected and report["protocol"]["flip_test"] is True and report["images"] == 3
    assert "AP" in capsys.readouterr().out
    assert main(["evaluate", "--task", "pose", "--model", tiny_model("pose"), "--annotations", str(path), "--images",
                 str(images), "--output", str(output), "--quiet"]) == 2  # exists: not replaced without --overwrite
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [150, 40, 220, 440], "score": 0.6}]))
    assert main(["evaluate", "--task", "pose", "--model", tiny_model("pose"), "--annotations", str(path), "--images",
                 str(images), "--output", str(output), "--boxes", str(detections), "--overwrite", "--quiet"]) == 0
    expected, _ = evaluation.evaluate_pose(load_task_pipeline("pose", tiny_model("pose")), document, images,
                                           evaluation.read_detections(detections, document))
    assert json.loads(output.read_text())["metrics"] == expected


@pytest.fixture(scope="module")
def dense_root(tmp_path_factory):
    return make_dense_data(tmp_path_factory.mktemp("dense"))


def direct_dense_figures(task_name, model, rows):
    """The pipeline's predictions and the references as the training scripts read them, scored with the package's
    metric functions directly."""
    from sapiens_hf.pipelines import load_task_pipeline
    from sapiens_hf.training.dense_data import DenseTransform

    task, pipe = TASKS[task_name], load_task_pipeline(task_name, model)
    reader = DenseTransform(task.name, pipe.image_processor, train=False,
                            num_labels=pipe.model.config.num_labels if task.classes else None)
    examples = [reader.read(rows[index]) for index in range(len(rows))]
    results = [pipe(image, **({"mask": False} if task.masked else {})) for image, _, _ in examples]  # as evaluate
    if task.classes:
        return functional.mean_iou([r["segmentation"].numpy() for r in results], [t for _, t, _ in examples],
                                   pipe.model.config.num_labels)
    if task.output_channels == 1:
        return functional.depth_metrics([r["predicted_depth"].numpy() for r in results], [t for _, t, _ in examples],
                                        [m > 0 for _, _, m in examples], alignment="scale_shift")
    return functional.normal_metrics([r["normals"].permute(1, 2, 0).numpy() for r in results],
                                     [t for _, t, _ in examples])


@pytest.mark.parametrize("task", ["seg", "depth", "normal"])
def test_dense_figures_equal_the_metric_functions_run_directly(task, dense_root, tiny_model, tmp_path):
    output = tmp_path / "figures.json"
    assert main(["evaluate", "--task", task, "--model", tiny_model(task), "--dataset", str(dense_root), "--split",
                 "val", "--output", str(output), "--batch-size", "2", "--quiet"]) == 0
    report = json.loads(output.read_text())
    figures, name = report["metrics"], TASKS[{"seg": "segmentation"}.get(task, task)].name
    rows = evaluation.dense_dataset(TASKS[name], str(dense_root), "val")
    direct = direct_dense_figures(name, tiny_model(task), rows)
    assert report["images"] == len(rows) == 2
    if name == "segmentation":
        for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
            assert figures[key] == pytest.approx(direct[key], abs=1e-9)
    elif name == "depth":
        for key in ("rmse", "abs_rel", "delta1"):
            assert figures[key] == pytest.approx(direct[key], rel=1e-5)
    else:
        assert figures["mean_angular_error"] == pytest.approx(direct["mean_angular_error"], rel=1e-5)
        assert figures["median_angular_error"] == pytest.approx(direct["median_angular_error"], abs=5e-4)
        for key in ("within_11.25", "within_22.5", "within_30"):
            assert figures[key] == pytest.approx(direct[key], abs=1e-9)


def test_a_datasets_dataset_gives_the_figures_of_the_same_folder(dense_root, tiny_model, tmp_path):
    folder = evaluation.dense_dataset(TASKS["segmentation"], str(dense_root), "val")
    table = datasets.Dataset.from_dict({"image": [Image.open(row["image"]) for row in folder],
                                        "label": [Image.open(row["target"]) for row in folder]})
    (tmp_path / "hub").mkdir()
    table.to_parquet(str(tmp_path / "hub" / "validation.parquet"))
    figures = []
    for dataset in (str(tmp_path / "hub"), str(dense_root)):
        output = tmp_path / f"{len(figures)}.json"
        assert main(["evaluate", "--task", "seg", "--model", tiny_model("seg"), "--dataset", dataset, "--split",
                     "validation" if "hub" in dataset else "val", "--output", str(output), "--quiet",
                     "--mask-column", "none"]) == 0
        figures.append(json.loads(output.read_text())["metrics"])
    assert figures[0]["mean_iou"] == pytest.approx(figures[1]["mean_iou"])


def test_bad_arguments_are_refused_before_the_model_loads(pose_data, dense_root, tmp_path, capsys):
    path, images, _ = pose_data
    missing = str(tmp_path / "no-such-model")  # loading it would fail with exit code 1, not 2
    out = ["--output", str(tmp_path / "f.json"), "--model", missing, "--quiet"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    (tmp_path / "exists.json").write_text("{}")
    not_finite = json.loads(path.read_text())
    not_finite["annotations"][0]["keypoints"][0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(not_finite))  # Python's json writes and reads NaN
    (tmp_path / "nan-detections.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 9, 9], "score": float("inf")}]))
    nobody = json.loads(path.read_text())
    for name, annotations in {"empty": [], "crowd": [dict(a, iscrowd=1) for a in nobody["annotations"]],
                              "unlabelled": [dict(a, keypoints=[0] * 51) for a in nobody["annotations"]]}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(nobody, annotations=annotations)))
    (tmp_path / "other-set.json").write_text(json.dumps([{"image_id": 4242, "bbox": [0, 0, 9, 9], "score": 0.9}]))
    images_of = json.loads(path.read_text())["images"]
    (tmp_path / "text-width.json").write_text(json.dumps(dict(nobody, images=[dict(images_of[0], width="512"), *images_of[1:]])))
    (tmp_path / "same-id.json").write_text(json.dumps(dict(nobody, images=images_of + [dict(images_of[1], id=1)])))
    reordered = json.loads(path.read_text())
    reordered["categories"][0]["keypoints"] = COCO_NAMES[1:] + COCO_NAMES[:1]
    (tmp_path / "reordered.json").write_text(json.dumps(reordered))
    no_size = dict(nobody, annotations=[dict(a, bbox=[10, 10, 0, 0]) for a in nobody["annotations"]])
    (tmp_path / "no-size.json").write_text(json.dumps(no_size))
    (tmp_path / "huge-box.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1e30, 1e30], "score": 0.9}]))
    wrong_file = json.loads(path.read_text())
    wrong_file["images"][0]["file_name"] = "nowhere.jpg"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong_file))
    cases = {
        "needs --annotations": ["--task", "pose", "--images", str(images)],
        "cannot read": ["--task", "pose", "--annotations", str(broken), "--images", str(images)],
        "nowhere.jpg": ["--task", "pose", "--annotations", str(tmp_path / "wrong.json"), "--images", str(images)],
        "needs --detector": ["--task", "pose", "--annotations", str(path), "--images", str(images), "--boxes",
                             "detector"],
        "is evaluated on --dataset": ["--task", "depth", "--dataset", str(dense_root), "--annotations", str(path)],
        "has no flip test": ["--task", "seg", "--dataset", str(dense_root), "--flip-test"],
        "exists": ["--task", "seg", "--dataset", str(dense_root), "--output", str(tmp_path / "exists.json")],
        "would replace --annotations": ["--task", "pose", "--annotations", str(path), "--images", str(images),
                                        "--output", str(path), "--overwrite"],
        "expected gt, detector or a COCO detection": ["--task", "pose", "--annotations", str(path), "--images",
                                                      str(images), "--boxes", "nope.json"],
        "is not a COCO detection results file": ["--task", "pose", "--annotations", str(path), "--images", str(images), "--boxes",
                                str(tmp_path / "exists.json")],
        "(finite numbers)": ["--task", "pose", "--annotations", str(tmp_path / "nan.json"), "--images", str(images)],
        "score (finite numbers)": ["--task", "pose", "--annotations", str(path), "--images", str(images), "--boxes",
                                   str(tmp_path / "nan-detections.json")],
        "none of its 0 annotations": ["--task", "pose", "--annotations", str(tmp_path / "empty.json"), "--images",
                                      str(images)],
        "has no person to score": ["--task", "pose", "--annotations", str(tmp_path / "crowd.json"), "--images",
                                   str(images)],
        "a non-crowd person with a labelled keypoint": ["--task", "pose", "--annotations",
                                                        str(tmp_path / "unlabelled.json"), "--images", str(images)],
        "none of its 1 detections is a person in an image": ["--task", "pose", "--annotations", str(path), "--images",
                                                             str(images), "--boxes", str(tmp_path / "other-set.json")],
        "a width or height that is not a number": ["--task", "pose", "--annotations", str(tmp_path / "text-width.json"),
                                                   "--images", str(images)],
        "two images have the id 1": ["--task", "pose", "--annotations", str(tmp_path / "same-id.json"), "--images",
                                     str(images)],
        "--detector-threshold must be a finite number in [0, 1]": ["--task", "pose", "--annotations", str(path),
                                                                   "--images", str(images), "--boxes", "detector",
                                                                   "--detector", "d", "--detector-threshold", "inf"],
        "coco set's 17 in another order": ["--task", "pose", "--annotations", str(tmp_path / "reordered.json"),
                                           "--images", str(images)],
        "bbox [x, y, w, h] within ±10,000,000 pixels": ["--task", "pose", "--annotations", str(path), "--images", str(images),
                                              "--boxes", str(tmp_path / "huge-box.json")],
        "--boxes gt: no box the pipeline can crop": ["--task", "pose", "--annotations", str(tmp_path / "no-size.json"),
                                                     "--images", str(images)],
        "lacks the column": ["--task", "depth", "--dataset", str(dense_root / "val" / "images"), "--split", "train"],
    }
    for message, arguments in cases.items():
        assert main(["evaluate", *out, *arguments]) == 2, message
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, (message, error)
    assert main(["evaluate", "--task", "seg", "--dataset", str(dense_root), "--split", "val", *out]) == 1
    assert not (tmp_path / "f.json").exists()


def test_the_output_never_replaces_an_input_even_with_overwrite(pose_data, dense_root, tmp_path, capsys):
    """--output naming an input by another spelling (`sub/../`, a symbolic link), the --boxes file, an image of the
    annotations, a file of the --dataset folder or of the --model folder: refused before the model loads, the input
    unchanged."""
    path, images, document = pose_data
    model = tmp_path / "model"  # not a model: loading it would fail with exit code 1, not 2
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.json").symlink_to(path)
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps([{"image_id": 2, "category_id": 1, "bbox": [150, 40, 220, 440], "score": 0.6}]))
    pose = ["--task", "pose", "--annotations", str(path), "--images", str(images)]
    dense_file = next(path for path in sorted(dense_root.rglob("*")) if path.is_file())
    cases = {
        "--annotations": pose + ["--output", str(tmp_path / "sub" / ".." / ".." / path.parent.name / path.name)],
        "--annotations ": pose + ["--output", str(tmp_path / "link.json")],
        "--boxes": pose + ["--boxes", str(detections), "--output", str(detections)],
        document["images"][0]["file_name"]: pose + ["--output", str(images / document["images"][0]["file_name"])],
        dense_file.name: ["--task", "depth", "--dataset", str(dense_root), "--output", str(dense_file)],
        "config.json, a file of --model": pose + ["--output", str(model / "config.json")],
    }
    for message, arguments in cases.items():
        inputs = [path, detections, images / document["images"][0]["file_name"], dense_file, model / "config.json"]
        before = [file.read_bytes() for file in inputs]
        assert main(["evaluate", "--model", str(model), "--quiet", "--overwrite", *arguments]) == 2, message
        error = capsys.readouterr().err
        assert "would replace" in error and message.strip() in error and error.count("\n") == 1, (message, error)
        assert [file.read_bytes() for file in inputs] == before
