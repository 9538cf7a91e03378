"""Pose results as COCO keypoints JSON (`[x, y, score]` triplets per keypoint), one format in one place: the
dataset-style keypoints.json that `sapiens-hf predict` writes and the demo's download (images, annotations,
categories), and the COCO *results* list beside it (`[{image_id, category_id, keypoints, score, bbox}]`, what
pycocotools' `COCO.loadRes` and `COCOeval` read), whose `image_id`s are the ids of keypoints.json's `images`."""

import math

from . import metadata
from .keypoint_formats import keypoint_format


def person_annotation(person: dict, keypoint_threshold: float) -> dict:
    """One person of a pose pipeline's result as a COCO annotation, without the ids (numbered in the document).
    `num_keypoints` counts the keypoints scoring above `keypoint_threshold`; `bbox_score` is the detector's score
    (None for given boxes or the whole image); a person followed through a video has its `track_id` (None: in no
    track). A keypoint missing from a converted format (NaN) is `0, 0, 0`, COCO's unlabelled point, and counts
    neither in `num_keypoints` nor in `score` (the mean keypoint score); so is a point whose score is not finite
    (an overflowed heatmap), which JSON could not hold."""
    keypoints, scores = person["keypoints"].tolist(), person["scores"].float().tolist()
    track = {"track_id": person["track_id"]} if "track_id" in person else {}
    present = [all(map(math.isfinite, (*point, score))) for point, score in zip(keypoints, scores)]
    triplets = [(*point, score) if kept else (0.0, 0.0, 0.0) for point, score, kept in zip(keypoints, scores, present)]
    kept_scores = [score for score, kept in zip(scores, present) if kept]
    return {
        "category_id": 1,
        "bbox": person["bbox_xywh"].tolist(),
        "keypoints": [round(value, 3) for triplet in triplets for value in triplet],
        "num_keypoints": sum(score > keypoint_threshold for score in kept_scores),
        "score": sum(kept_scores) / len(kept_scores) if kept_scores else 0.0,
        "bbox_score": person["bbox_score"],
        **track,
    }


def keypoints_document(records: list[dict], model_config) -> dict:
    """The COCO document of records `{"image": {file_name, height, width, …}, "annotations": [person_annotation,
    …], "keypoint_format": name (converted records only)}`, in order, with image and annotation ids numbered from 1
    and the keypoint names and skeleton of the records' format (else the model's)."""
    images, annotations, formats = [], [], {record.get("keypoint_format") for record in records} - {None}
    for record in records:
        images.append({"id": len(images) + 1, **record["image"]})
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), **annotation})
    id2label = model_config.id2label
    category = {"id": 1, "name": "person", "keypoints": [id2label[i] for i in range(len(id2label))]}
    if formats:  # one run, one format (the run's settings)
        converted = keypoint_format(formats.pop())
        category.update(keypoints=list(converted.keypoint_names),
                        skeleton=[[a + 1, b + 1] for a, b in converted.skeleton_links])
    elif model_config.num_labels in metadata.KEYPOINT_SET_BY_COUNT:
        links = metadata.keypoint_set(model_config.num_labels)["skeleton_links"]
        category["skeleton"] = [[a + 1, b + 1] for a, b in links]  # COCO skeletons are 1-based
    return {"images": images, "annotations": annotations, "categories": [category]}


def results_list(document: dict) -> list[dict]:
    """The COCO results list of a `keypoints_document`: per annotation its `image_id` (the document's image id),
    `category_id`, `keypoints`, `score` and `bbox`."""
    keys = ("image_id", "category_id", "keypoints", "score", "bbox")
    return [{key: annotation[key] for key in keys} for annotation in document["annotations"]]


__all__ = ["keypoints_document", "person_annotation", "results_list"]
