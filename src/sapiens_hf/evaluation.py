"""`sapiens-hf evaluate`: a model's figures on a labelled set, predicted with the task's pipeline and scored with
`sapiens_hf.metrics` (one implementation of each metric; protocol in docs/metrics.md).

- pose: COCO keypoint AP/AR (OKS) on a COCO keypoints file and its image folder, with the ground-truth person boxes,
  a COCO detection results file (as the released evaluation uses, `COCO_val2017_detections_AP_H_70_person.json`)
  or the pipeline's person detector, flip test on by default; the predictions are a COCO results list, scored and
  thinned as mmpose's `CocoMetric` does (person score = box score × mean of the keypoint scores above 0.2, then
  OKS-NMS at 0.9 per image).
- segmentation, depth, normals: mIoU, depth errors after per-image scale-and-shift alignment, angular errors, on a
  `datasets` dataset or a folder (`images/` + `labels/`, `depth/` or `normals/` [+ `masks/`]), the references read as
  the dense training scripts read them (`training.dense_data`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import keypoint_formats, metadata
from .geometry import MAX_BOX_COORDINATE
from .tasks import Task


# mmpose CocoMetric's defaults (score_mode="bbox_keypoint", nms_mode="oks_nms"), the released pose configs' evaluator.
KEYPOINT_SCORE_THRESHOLD = 0.2
OKS_NMS_THRESHOLD = 0.9
BOX_SOURCES = ("gt", "detector")  # or the detections of a COCO results file (`read_detections`)


# ---------------------------------------------------------------------------------------------------------------
# Pose: a COCO keypoints file
# ---------------------------------------------------------------------------------------------------------------


def read_coco_keypoints(path: str | Path, images_dir: str | Path) -> dict:
    """The COCO keypoints document at `path`, checked (standard library only, before any model loads): the person
    category with its keypoint names, images whose files exist under `images_dir`, annotations with K×3 keypoints, a
    box and an area. A ValueError names the first problem."""
    path, images_dir = Path(path), Path(images_dir)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as a COCO keypoints file: {error}") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(key), list)
                                                 for key in ("images", "annotations", "categories")):
        raise ValueError(f"{path} is not a COCO keypoints file (it needs images, annotations and categories lists)")
    categories = [category for category in document["categories"]
                  if isinstance(category, dict) and isinstance(category.get("keypoints"), list)]
    if len(categories) != 1:
        raise ValueError(f"{path}: expected one category with keypoint names (the person), found {len(categories)}")
    category = categories[0]
    count = len(category["keypoints"])
    if count not in metadata.KEYPOINT_SET_BY_COUNT:
        raise ValueError(f"{path}: its {count} keypoints have no OKS sigmas here (known: the released sets of "
                         f"{', '.join(map(str, sorted(metadata.KEYPOINT_SET_BY_COUNT)))} keypoints)")
    known = metadata.keypoint_set(count)["keypoint_names"]
    if category["keypoints"] != list(known) and sorted(map(str, category["keypoints"])) == sorted(known):
        # The sigmas (and a model's keypoints, matched by the set's names) would go to the wrong points.
        raise ValueError(f"{path}: its keypoints are the {metadata.KEYPOINT_SET_BY_COUNT[count]} set's {count} in "
                         "another order; the OKS sigmas follow that set's order: list the names and each "
                         "annotation's keypoints in it")
    if not images_dir.is_dir():
        raise ValueError(f"--images {images_dir} is not a folder")
    ids = set()
    for image in document["images"]:
        if not (isinstance(image, dict) and isinstance(image.get("id"), int) and isinstance(image.get("file_name"), str)
                and _numbers([image[key] for key in ("width", "height") if key in image])):
            raise ValueError(f"{path}: an image without an integer id and a file_name, or with a width or height that "
                             f"is not a number ({str(image)[:80]})")
        if image["id"] in ids:  # its people would be predicted on every image of that id
            raise ValueError(f"{path}: two images have the id {image['id']}")
        ids.add(image["id"])
    missing = [image["file_name"] for image in document["images"] if not (images_dir / image["file_name"]).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of {path} are not in {images_dir}, e.g. {missing[0]}")
    image_ids = {image["id"] for image in document["images"]}
    for annotation in document["annotations"]:
        if not isinstance(annotation, dict) or annotation.get("category_id") != category["id"]:
            continue
        keypoints, box = annotation.get("keypoints"), annotation.get("bbox")
        valid = (isinstance(keypoints, list) and len(keypoints) == 3 * count and isinstance(box, list)
                 and len(box) == 4 and _numbers([*keypoints, *box, annotation.get("area")]) and _in_bounds(box)
                 and annotation.get("image_id") in image_ids)
        if not valid:
            raise ValueError(f"{path}: annotation {annotation.get('id')} needs an image_id of the file, {3 * count} "
                             f"keypoint values, a bbox [x, y, w, h] within ±{MAX_BOX_COORDINATE:,} pixels and an area "
                             "(finite numbers)")
    # COCOeval ignores crowd regions and people without a labelled keypoint: without any other, AP would be a
    # meaningless 0.
    if not any(annotation.get("category_id") == category["id"] and not annotation.get("iscrowd", 0)
               and any(value > 0 for value in annotation["keypoints"][2::3]) for annotation in document["annotations"]):
        raise ValueError(f"{path} has no person to score: none of its {len(document['annotations'])} annotations is "
                         "a non-crowd person with a labelled keypoint (visibility above 0)")
    return document


def _numbers(values: list) -> bool:
    """Whether every value is a finite number (JSON as Python reads it also has NaN and Infinity)."""
    return all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
               for value in values)


def _in_bounds(box: list) -> bool:
    """Whether a box's values are within what the pipeline's crop geometry takes (`geometry.check_boxes`)."""
    return all(abs(value) <= MAX_BOX_COORDINATE for value in box)


def read_detections(path: str | Path, document: dict) -> dict[int, list[tuple[list[float], float]]]:
    """Person boxes and scores by image id from a COCO detection results file (`[{image_id, category_id, bbox,
    score}]`), those of the annotations' person category. A ValueError names the first problem."""
    try:
        detections = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path} as a COCO detection results file: {error}") from None
    if not isinstance(detections, list):
        raise ValueError(f"{path} is not a COCO detection results file (a list of detections)")
    person = next(c["id"] for c in document["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list))
    image_ids, by_image = {image["id"] for image in document["images"]}, {}
    for detection in detections:
        box = detection.get("bbox") if isinstance(detection, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and _numbers([*box, detection.get("score")]) and _in_bounds(box)
                and isinstance(detection.get("image_id"), int)):
            raise ValueError(f"{path}: a detection without an integer image_id, a bbox [x, y, w, h] within "
                             f"±{MAX_BOX_COORDINATE:,} pixels and a score (finite numbers): {str(detection)[:80]}")
        if detection.get("category_id", person) == person and detection["image_id"] in image_ids:
            by_image.setdefault(detection["image_id"], []).append((box, float(detection["score"])))
    if not by_image:  # detections of another set (its image ids): nothing would be predicted, AP a meaningless 0
        raise ValueError(f"{path}: none of its {len(detections)} detections is a person in an image of the "
                         "annotations (their image_id and category_id)")
    return by_image


def pose_conversion(model_names: list[str], reference_names: list[str]):
    """How the model's keypoints become the references' (by name): None when they are the same set or only the
    names differ (same count: compared in order); else the `keypoint_formats` conversion to the format with those
    names. A KeypointFormatError when neither."""
    if model_names == reference_names:
        return None
    for name, target in keypoint_formats.FORMATS.items():
        if list(target.keypoint_names) == reference_names:
            try:
                return keypoint_formats.conversion(model_names, name)
            except keypoint_formats.KeypointFormatError:
                # No shared name (a model fine-tuned without keypoint names: LABEL_0, ...): as other names of the
                # same count, compared in order.
                if len(model_names) != len(reference_names):
                    raise
    if len(model_names) == len(reference_names):
        print(f"evaluate: the annotations' keypoint names are not the model's; the {len(model_names)} keypoints are "
              "compared in order", file=sys.stderr)
        return None
    raise keypoint_formats.KeypointFormatError(
        f"the annotations' {len(reference_names)} keypoints are neither the model's {len(model_names)} nor a known "
        f"format ({', '.join(keypoint_formats.FORMATS)})")


def person_score(scores: np.ndarray, box_score: float | None) -> float:
    """mmpose `CocoMetric(score_mode="bbox_keypoint")`: the box score (1 for given boxes) × the mean of the keypoint
    scores above `KEYPOINT_SCORE_THRESHOLD` (0 when none is)."""
    confident = scores[scores > KEYPOINT_SCORE_THRESHOLD]
    return (1.0 if box_score is None else box_score) * (float(confident.mean()) if confident.size else 0.0)


def usable_box(box, image: dict) -> bool:
    """Whether the pipeline can crop `box` from `image`: some size, and inside the image where its size is known
    (boxes that are not are left out, not the image)."""
    x, y, width, height = box
    inside = all(key not in image or value < image[key] for key, value in (("width", x), ("height", y)))
    return width > 0 and height > 0 and x + width > 0 and y + height > 0 and inside


def person_boxes(document: dict, boxes) -> dict[int, list[tuple[list[float], float | None]]]:
    """The given person boxes by image id, those the pipeline can crop (`usable_box`), with their scores (None for
    ground-truth boxes): `boxes="gt"`, each image's non-crowd people with a labelled keypoint; a dict
    (`read_detections`), its boxes. Images without one are left out."""
    category = next(category for category in document["categories"] if isinstance(category.get("keypoints"), list))
    by_image: dict[int, list] = {}  # image id → [(box, box score or None)]
    if boxes == "gt":
        for annotation in document["annotations"]:
            if (annotation.get("category_id") == category["id"] and not annotation.get("iscrowd", 0)
                    and any(value > 0 for value in annotation["keypoints"][2::3])):
                by_image.setdefault(annotation["image_id"], []).append((annotation["bbox"], None))
    else:
        by_image = dict(boxes)
    images = {image["id"]: image for image in document["images"]}
    usable = {image_id: [entry for entry in entries if usable_box(entry[0], images[image_id])]
              for image_id, entries in by_image.items() if image_id in images}
    return {image_id: entries for image_id, entries in usable.items() if entries}


def oks_nms(people: list[dict], sigmas, threshold: float = OKS_NMS_THRESHOLD) -> list[dict]:
    """mmpose's `oks_nms` over one image's predictions (`keypoints` K×3 triplets, `score`, `area`, optionally
    `present`: which keypoints the prediction has, all by default): best score first, dropping every later one whose
    OKS with a kept one exceeds `threshold` — the OKS of mmpose's `oks_iou` (squared distances over the mean of the two
    areas), over the keypoints both have (a point missing from a converted format would otherwise count as a match)."""
    if not people:
        return []
    points = np.array([np.asarray(person["keypoints"], np.float64).reshape(-1, 3)[:, :2] for person in people])
    present = np.array([person.get("present", [True] * points.shape[1]) for person in people], bool)
    areas = np.array([person["area"] for person in people], np.float64)
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2
    order, keep = np.argsort([-person["score"] for person in people], kind="stable"), []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        squared = ((points[rest] - points[best]) ** 2).sum(-1)
        scale = (areas[best] + areas[rest])[:, None] / 2 + np.spacing(1)
        both = present[rest] & present[best]
        similarity = np.where(both, np.exp(-squared / variances / scale / 2), 0).sum(-1)
        oks = np.divide(similarity, both.sum(-1), out=np.zeros(len(rest)), where=both.any(-1))
        order = rest[oks <= threshold]
    return [people[index] for index in sorted(keep)]


def evaluate_pose(pipe, document: dict, images_dir: str | Path, boxes="gt", detector=None,
                  detector_threshold: float = 0.3, flip_test: bool = True, batch_size: int = 1,
                  progress: Callable[[int], None] | None = None) -> tuple[dict, list[dict]]:
    """COCO keypoint AP/AR of the pose pipeline `pipe` on `document` (`read_coco_keypoints`) and its images.

    `boxes="gt"`: the boxes of each image's non-crowd people with labelled keypoints; a dict (`read_detections`):
    those boxes and scores; `"detector"`: `detector` (the pipeline's `detector=`) finds them, and an image where it
    finds nobody gives no prediction. Boxes the pipeline cannot crop (`usable_box`) are left out. The model's
    keypoints are converted by name to the references' (`pose_conversion`); each image's predictions are scored
    (`person_score`) and thinned by `oks_nms` (areas: the padded crop sizes). Returns the figures
    (`metrics.functional.keypoint_ap`) and the COCO results list they were computed from."""
    import torch

    from .coco import person_annotation
    from .geometry import get_box_center_scale
    from .metrics.functional import keypoint_ap

    if not isinstance(boxes, dict) and boxes not in BOX_SOURCES:
        raise ValueError(f"boxes must be one of {BOX_SOURCES} or detections by image id, got {boxes!r}")
    category = next(category for category in document["categories"] if isinstance(category.get("keypoints"), list))
    config = pipe.model.config
    conversion = pose_conversion([config.id2label[index] for index in range(config.num_labels)],
                                 list(category["keypoints"]))
    people = [annotation for annotation in document["annotations"] if annotation.get("category_id") == category["id"]]
    given = boxes != "detector"
    by_image = person_boxes(document, boxes) if given else {}
    images = [image for image in document["images"] if not given or by_image.get(image["id"])]
    call = {"flip_test": flip_test, "batch_size": batch_size}
    if not given:
        call.update(detector=detector, detector_threshold=detector_threshold)
    size = pipe.image_processor.size
    sigmas = metadata.keypoint_set(len(category["keypoints"]))["sigmas"]
    results = []
    for chunk in _chunks(images, max(batch_size, 8)):  # a few images at a time: memory stays bounded
        inputs = [str(Path(images_dir) / image["file_name"]) for image in chunk]
        if given:
            inputs = [{"image": path, "boxes": [box for box, _ in by_image[image["id"]]]}
                      for path, image in zip(inputs, chunk)]
        for image, predicted in zip(chunk, pipe(inputs, **call)):
            box_scores = [score for _, score in by_image[image["id"]]] if given else None
            candidates = []
            for index, person in enumerate(predicted):
                box_score = box_scores[index] if given else person["bbox_score"]
                if not given and box_score is None:
                    continue  # nobody detected: the pipeline fell back to the whole image
                if conversion is not None:
                    person = conversion.person(person)
                annotation = person_annotation(person, KEYPOINT_SCORE_THRESHOLD)
                scale = get_box_center_scale(np.asarray([annotation["bbox"]]), (size["width"], size["height"]))[1]
                candidates.append({"image_id": image["id"], "category_id": category["id"],
                                   "keypoints": annotation["keypoints"], "bbox": annotation["bbox"],
                                   "score": person_score(person["scores"].float().numpy(), box_score),
                                   "area": float(np.prod(scale)),
                                   "present": (torch.isfinite(person["keypoints"]).all(-1)
                                               & torch.isfinite(person["scores"])).tolist()})
            results += [{key: value for key, value in person.items() if key not in ("area", "present")}
                        for person in oks_nms(candidates, sigmas)]
        if progress is not None:
            progress(len(chunk))
    evaluated = {image["id"] for image in images}
    references = [annotation for annotation in people if annotation["image_id"] in evaluated]
    return keypoint_ap(results, references, sigmas), results


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------------------------
# Segmentation, depth, normals: a datasets dataset or a folder
# ---------------------------------------------------------------------------------------------------------------


def dense_dataset(task: Task, dataset: str, split: str, image_column: str = "image", target_column: str | None = None,
                  mask_column: str = "mask"):
    """The `image`, `target` (and `mask`) rows of a dense task's labelled set: a folder `DIR` or `DIR/<split>` with
    `images/` and the task's target folder (labels, depth, normals; optional `masks/`), else a `datasets` dataset
    (Hub id or local folder) and its `split` with the image and target columns (default: label, depth, normal)."""
    import datasets

    from .training.dense_data import load_dense_folder

    column, folder = task.training_target
    for directory in (Path(dataset), Path(dataset) / split):
        if (directory / "images").is_dir():
            return load_dense_folder(directory, folder)
    loaded = datasets.load_dataset(dataset, split=split)
    target_column = target_column or column
    missing = {image_column, target_column} - set(loaded.column_names)
    if missing:
        raise ValueError(f"split {split!r} of {dataset} lacks the column(s) {sorted(missing)} (it has "
                         f"{loaded.column_names}); name them with --image-column / --target-column")
    columns = {image_column: "image", target_column: "target"}
    if mask_column in loaded.column_names:
        columns[mask_column] = "mask"
    return loaded.select_columns(list(columns)).rename_columns(columns)


def evaluate_dense(pipe, task: Task, rows, flip_test: bool = False, batch_size: int = 1,
                   progress: Callable[[int], None] | None = None) -> dict:
    """The figures of the dense pipeline `pipe` on `rows` (`dense_dataset`), each reference read and checked as the
    training scripts read it (`DenseTransform.read`: foreground from the mask and the target), the prediction at
    the image's size: segmentation mIoU and accuracies over the whole set (`segmentation_scores` of the summed
    `confusion_matrix`); depth RMSE, AbsRel, δ<1.25 averaged over images after per-image least-squares scale and
    shift on the foreground (`DepthEvaluator`); normal angular errors pooled over foreground pixels
    (`NormalEvaluator`)."""
    import torch

    from .metrics.evaluators import DepthEvaluator, NormalEvaluator
    from .metrics.functional import confusion_matrix, segmentation_scores
    from .training.dense_data import DenseTransform

    config = pipe.model.config
    reader = DenseTransform(task.name, pipe.image_processor, train=False,
                            num_labels=config.num_labels if task.classes else None)
    confusion = np.zeros((config.num_labels, config.num_labels), np.int64) if task.classes else None
    evaluator = None if task.classes else (DepthEvaluator() if task.output_channels == 1 else NormalEvaluator())
    call = {"batch_size": batch_size, **({"flip_test": True} if flip_test else {})}
    if task.masked:  # the whole maps: the reference's own foreground decides which pixels are scored
        call["mask"] = False
    count = 0
    for chunk in _chunks(range(len(rows)), max(batch_size, 8)):
        examples = [reader.read(rows[index]) for index in chunk]
        for (image, target, _), result in zip(examples, pipe([image for image, _, _ in examples], **call)):
            if task.classes:
                confusion += confusion_matrix(result["segmentation"].numpy(), target, config.num_labels)
            elif task.output_channels == 1:
                evaluator.update(result["predicted_depth"][None].float(), torch.from_numpy(target)[None])
            else:
                evaluator.update(result["normals"][None].float(), torch.from_numpy(target).permute(2, 0, 1)[None])
        count += len(chunk)
        if progress is not None:
            progress(len(chunk))
    if not count:
        raise ValueError("the dataset has no rows")
    if task.classes:
        scores = segmentation_scores(confusion)
        figures = {key: scores[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        names = [config.id2label[index] for index in range(config.num_labels)]
        figures.update({f"iou_{name}": value for name, value in zip(names, scores["per_category_iou"])
                        if value == value})  # classes absent from references and predictions (NaN) left out
        return figures
    return evaluator.compute()


def task_protocol(task: Task, **settings) -> dict:
    """What the figures mean, recorded with them."""
    if task.top_down:
        return {"metric": "COCO keypoint AP/AR (OKS, pycocotools)", **settings,
                "person_score": f"box score x mean keypoint score above {KEYPOINT_SCORE_THRESHOLD}"}
    return {"metric": {"segmentation": "mIoU over the set", "depth": "per-image scale-and-shift aligned errors",
                       "normal": "angular errors pooled over foreground pixels"}[task.name], **settings}


__all__ = ["BOX_SOURCES", "dense_dataset", "evaluate_dense", "evaluate_pose", "oks_nms", "person_boxes",
           "pose_conversion", "read_coco_keypoints", "read_detections"]
