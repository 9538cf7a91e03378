"""Pose results as COCO keypoints JSON (`[x, y, score]` triplets per keypoint): the keypoints.json that
`sapiens-hf predict` writes and the demo's download, one format in one place."""

from . import metadata


def person_annotation(person: dict, keypoint_threshold: float) -> dict:
    """One person of a pose pipeline's result as a COCO annotation, without the ids (numbered in the document).
    `num_keypoints` counts the keypoints scoring above `keypoint_threshold`; `bbox_score` is the detector's score
    (None for given boxes or the whole image); a person followed through a video has its `track_id` (None: in no
    track)."""
    keypoints, scores = person["keypoints"].tolist(), person["scores"].float().tolist()
    track = {"track_id": person["track_id"]} if "track_id" in person else {}
    return {
        "category_id": 1,
        "bbox": person["bbox_xywh"].tolist(),
        "keypoints": [round(value, 3) for point, score in zip(keypoints, scores) for value in (*point, score)],
        "num_keypoints": int((person["scores"] > keypoint_threshold).sum()),
        "score": float(person["scores"].mean()),
        "bbox_score": person["bbox_score"],
        **track,
    }


def keypoints_document(records: list[dict], model_config) -> dict:
    """The COCO document of records `{"image": {file_name, height, width, …}, "annotations": [person_annotation,
    …]}`, in order, with image and annotation ids numbered from 1 and the model's keypoint names and skeleton."""
    images, annotations = [], []
    for record in records:
        images.append({"id": len(images) + 1, **record["image"]})
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), **annotation})
    id2label = model_config.id2label
    category = {"id": 1, "name": "person", "keypoints": [id2label[i] for i in range(len(id2label))]}
    if model_config.num_labels in metadata.KEYPOINT_SET_BY_COUNT:
        links = metadata.keypoint_set(model_config.num_labels)["skeleton_links"]
        category["skeleton"] = [[a + 1, b + 1] for a, b in links]  # COCO skeletons are 1-based
    return {"images": images, "annotations": annotations, "categories": [category]}


__all__ = ["keypoints_document", "person_annotation"]
