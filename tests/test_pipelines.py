"""The `sapiens-*` pipelines and the built-in `depth-estimation` / `image-segmentation` pipelines, end to end on real
photos (scikit-image's astronaut and camera) with tiny random models at a 256×192 input size; the visualisation
helpers and keypoint metadata they use."""

import copy
import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch
from golden_utils import arch, golden_weights, load_golden, well_conditioned_keypoints
from helpers import TWO_PEOPLE_BOXES, tiny_config, two_people_image
from transformers import YolosConfig, YolosForObjectDetection, pipeline
from transformers.dynamic_module_utils import get_imports
from transformers.pipelines import PIPELINE_REGISTRY

import sapiens_hf  # registers the pipelines
from sapiens_hf import (
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensImageProcessorPil,
    SapiensNormalPipeline,
)
from sapiens_hf.convert import convert_original_checkpoint
from sapiens_hf.metadata import SEGMENTATION_CLASSES, SEGMENTATION_PALETTE, flip_pairs, keypoint_set
from sapiens_hf.modeling_sapiens import WrongModelError
from sapiens_hf.visualization import (
    draw_keypoints,
    overlay_segmentation,
    segmentation_palette,
    segmentation_to_image,
    visualize_depth,
    visualize_normals,
)


# The small encoder with one layer at 256×192 (helpers.tiny_config).
SIZE = {"size": "small", "num_hidden_layers": 1, "image_size": [256, 192]}


@pytest.fixture(scope="module")
def processor():
    return SapiensImageProcessorPil(size={"height": 256, "width": 192})


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    pose_config = tiny_config(
        num_labels=17, id2label=dict(enumerate(keypoint_set(17)["keypoint_names"])), flip_pairs=flip_pairs(17), **SIZE
    )
    return {
        "pose": SapiensForPoseEstimation(pose_config).eval(),
        "seg": SapiensForSemanticSegmentation(
            tiny_config(num_labels=28, id2label=dict(enumerate(SEGMENTATION_CLASSES)), **SIZE)
        ).eval(),
        "depth": SapiensForDepthEstimation(tiny_config(**SIZE)).eval(),
        "normal": SapiensForNormalEstimation(tiny_config(**SIZE)).eval(),
    }


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def camera():
    return skimage.data.camera()  # grayscale


def manual_pose(model, processor, image, boxes, flip_test=False):
    inputs = processor(image, boxes=[boxes], return_flipped_pixel_values=flip_test, return_tensors="pt").to(model.dtype)
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
        flipped = model(pixel_values=inputs["pixel_values_flipped"], flip_pairs=flip_pairs(17)) if flip_test else None
    return processor.post_process_pose_estimation(
        outputs, [boxes], outputs_flipped=flipped, source_sizes=[image.shape[:2]]
    )[0]


def assert_people_equal(actual, expected, batched=False):
    """Exact for the same computation; a batched forward may differ in the last bits."""
    assert len(actual) == len(expected)
    tolerances = {"keypoints": 1e-4, "scores": 1e-6} if batched else {}
    for person, reference in zip(actual, expected):
        for key in ("keypoints", "scores", "labels", "bbox_xywh"):
            torch.testing.assert_close(person[key], reference[key], rtol=0, atol=tolerances.get(key, 0))


def test_pipelines_are_registered():
    for task in ("sapiens-pose", "sapiens-segmentation", "sapiens-depth", "sapiens-normal"):
        _, task_defaults, _ = PIPELINE_REGISTRY.check_task(task)
        model_id, revision = task_defaults["default"]["model"]
        assert model_id.startswith("facebook/sapiens-") and revision
        assert task_defaults["type"] == "image"


def test_pose_pipeline_equals_the_processor_api(models, processor, astronaut):
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    boxes = [[150.0, 20.0, 240.0, 480.0], [10.5, 200.25, 120.0, 300.0]]
    people = estimator(astronaut, boxes=boxes)
    assert_people_equal(people, manual_pose(models["pose"], processor, astronaut, boxes))
    assert people[0]["keypoints"].shape == (17, 2) and people[0]["bbox_score"] is None
    flipped = estimator(PIL.Image.fromarray(astronaut), boxes=boxes, flip_test=True)
    assert_people_equal(flipped, manual_pose(models["pose"], processor, astronaut, boxes, flip_test=True))
    whole = estimator(astronaut, detector=None)  # no boxes, no detector: the whole image
    assert len(whole) == 1 and whole[0]["bbox_xywh"].tolist() == [0, 0, 512, 512]


def test_pose_pipeline_batches_lists_paths_and_dicts(models, processor, astronaut, camera, tmp_path):
    # float64, so that batching changes no bit that matters: random heatmaps have near-ties that DARK amplifies
    model = copy.deepcopy(models["pose"]).double()
    estimator = pipeline("sapiens-pose", model=model, image_processor=processor)
    PIL.Image.fromarray(camera).save(tmp_path / "camera.png")
    images = [astronaut, str(tmp_path / "camera.png"), astronaut]
    boxes = [[[150, 20, 240, 480], [0, 0, 100, 100]], [], [[300, 100, 100, 300]]]
    batched = estimator(images, boxes=boxes, batch_size=2)
    assert [len(people) for people in batched] == [2, 1, 1]
    for image, image_boxes, people in zip([astronaut, np.dstack([camera] * 3), astronaut], boxes, batched):
        assert_people_equal(people, manual_pose(model, processor, image, image_boxes), batched=True)
    as_dicts = estimator([{"image": image, "boxes": b} for image, b in zip(images, boxes)], batch_size=3)
    for people, reference in zip(as_dicts, batched):
        assert_people_equal(people, reference, batched=True)
    with pytest.raises(ValueError, match="boxes for 1 images but 3 images"):
        estimator(images, boxes=[[]])
    with pytest.raises(ValueError, match="Degenerate box"):
        estimator(astronaut, boxes=[[10, 10, 0, 0]])


def test_pose_pipeline_with_a_person_detector(models, processor, astronaut):
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)

    def detector(image):
        assert isinstance(image, PIL.Image.Image) and image.size == (512, 512)
        return [
            {"label": "person", "score": 0.9, "box": {"xmin": 140, "ymin": 20, "xmax": 390, "ymax": 505}},
            {"label": "person", "score": 0.8, "box": {"xmin": 145, "ymin": 25, "xmax": 390, "ymax": 500}},  # dup
            {"label": "person", "score": 0.2, "box": {"xmin": 0, "ymin": 0, "xmax": 50, "ymax": 50}},  # weak
            {"label": "person", "score": 0.7, "box": {"xmin": 10, "ymin": 300, "xmax": 10, "ymax": 400}},  # empty
            {"label": "rocket", "score": 0.95, "box": {"xmin": 380, "ymin": 0, "xmax": 460, "ymax": 300}},
        ]

    people = estimator(astronaut, detector=detector)
    assert len(people) == 1 and people[0]["bbox_score"] == 0.9
    assert_people_equal(people, manual_pose(models["pose"], processor, astronaut, [[140, 20, 250, 485]]))
    nobody = estimator(astronaut, detector=lambda image: [])
    assert nobody[0]["bbox_xywh"].tolist() == [0, 0, 512, 512] and nobody[0]["bbox_score"] is None

    # a transformers object-detection pipeline (tiny random YOLOS whose only class is "person")
    yolos = YolosForObjectDetection(
        YolosConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[64, 64],
            num_detection_tokens=3,
            id2label={0: "person"},
        )
    ).eval()
    from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil

    detection = pipeline(
        "object-detection",
        model=yolos,
        image_processor=YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64}),
    )
    people = estimator(astronaut, detector=detection, detector_threshold=0.0)
    assert 1 <= len(people) <= 3 and all(person["bbox_score"] is not None for person in people)


def test_pose_finds_people_by_default_and_differs_from_the_whole_image(models, processor, tiny_detector):
    """Without boxes the pose pipeline looks for people (RT-DETR by default); detector=None is the whole image. On two
    people the detector's two crops give other keypoints than the one whole-image crop, through a stub detector and
    through a real (tiny RT-DETR) object-detection model loaded from its folder."""
    import inspect

    from sapiens_hf.pipelines import DEFAULT_DETECTOR, SapiensPosePipeline

    assert inspect.signature(SapiensPosePipeline.__call__).parameters["detector"].default == DEFAULT_DETECTOR
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    image = two_people_image()

    def two_people(picture):
        return [{"label": "person", "score": 0.9 - 0.1 * index,
                 "box": {"xmin": x, "ymin": y, "xmax": x + width, "ymax": y + height}}
                for index, (x, y, width, height) in enumerate(TWO_PEOPLE_BOXES)]

    whole = estimator(image, detector=None)
    assert [person["bbox_xywh"].tolist() for person in whole] == [[0, 0, 320, 240]]
    people = estimator(image, detector=two_people)
    assert [person["bbox_xywh"].tolist() for person in people] == TWO_PEOPLE_BOXES
    assert [person["bbox_score"] for person in people] == pytest.approx([0.9, 0.8])
    assert_people_equal(people, manual_pose(models["pose"], processor, image, TWO_PEOPLE_BOXES))
    assert not torch.allclose(people[0]["keypoints"], whole[0]["keypoints"], atol=1.0)

    # The real path: a folder name, loaded as an object-detection pipeline; its boxes after the person filter + NMS.
    detection = pipeline("object-detection", model=tiny_detector)
    found = [d for d in detection(PIL.Image.fromarray(image), threshold=0.0) if d["label"] == "person"]
    people = estimator(image, detector=tiny_detector, detector_threshold=0.0)
    assert 1 <= len(people) <= len(found) and all(person["bbox_score"] is not None for person in people)
    best = max(found, key=lambda d: d["score"])["box"]
    assert people[0]["bbox_xywh"].tolist() == [best["xmin"], best["ymin"], best["xmax"] - best["xmin"],
                                               best["ymax"] - best["ymin"]]
    boxes = [person["bbox_xywh"].tolist() for person in people]
    assert_people_equal(people, manual_pose(models["pose"], processor, image, boxes))
    assert boxes != [[0, 0, 320, 240]]


def test_pose_detects_a_list_of_images_in_batches(models, processor, tiny_detector, astronaut, monkeypatch):
    """A list of images goes to the object-detection model in one forward pass per `images_at_once` images (more than
    3 at once too: RT-DETR's outputs break the pipeline's own batching), with the same people as image by image; the
    crops of several images go through the model together (`batch_size`)."""
    model = copy.deepcopy(models["pose"]).double()  # batching changes no bit that matters (see above)
    estimator = pipeline("sapiens-pose", model=model, image_processor=processor)
    images = [two_people_image(), astronaut, two_people_image()[:, ::-1], astronaut[::-1], two_people_image()]
    one_by_one = [estimator(image, detector=tiny_detector, detector_threshold=0.0) for image in images]
    calls, forwards = [], []
    detector = estimator._detector.model.model  # loaded by the calls above, kept
    detect = detector.forward
    monkeypatch.setattr(detector, "forward", lambda **kwargs: calls.append(len(kwargs["pixel_values"]))
                        or detect(**kwargs))
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kwargs: forwards.append(len(kwargs["pixel_values"]))
                        or forward(**kwargs))
    estimator.images_at_once = 4
    batched = estimator(images, detector=tiny_detector, detector_threshold=0.0, batch_size=4)
    assert calls == [4, 1]
    for people, reference in zip(batched, one_by_one):
        assert_people_equal(people, reference, batched=True)
    crops = sum(len(people) for people in batched)
    assert crops > 3 and max(forwards) > 1 and sum(forwards) == crops  # crops of several images in one pass


def test_a_detector_without_a_person_label_is_refused(models, processor, tiny_detector):
    """A detector of other things would find nobody, and every image would silently become one whole-image person:
    refused with its labels, before any image; person_label= names its label for people."""
    detection = pipeline("object-detection", model=tiny_detector)
    detection.model.config.id2label = {0: "cat", 1: "dog"}
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    with pytest.raises(ValueError, match="no 'person' label \\(its labels: cat, dog\\)"):
        estimator("missing.jpg", detector=detection)
    assert estimator(two_people_image(), detector=detection, person_label="dog", detector_threshold=0.0)


def test_an_unreachable_detector_fails_once_before_any_image_is_read(models, processor, tmp_path, monkeypatch):
    """Offline without the detector (or a wrong folder): one error naming detector=None and a local folder, raised
    before the image is read (a missing file would otherwise fail first); given boxes need no detector."""
    from sapiens_hf.pipelines import DetectorUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    for detector in ({"detector": str(tmp_path / "no-detector")}, {}):  # a wrong folder; the default, offline
        with pytest.raises(DetectorUnavailableError, match="detector=None for the whole image") as error:
            estimator([str(tmp_path / "missing.jpg")] * 3, **detector)
        assert "local folder" in str(error.value) and "hf download" in str(error.value)
    people = estimator(two_people_image(), boxes=TWO_PEOPLE_BOXES)  # given boxes: no detector is loaded
    assert len(people) == 2 and (estimator._detector.name, estimator._detector.model) == (None, None)


def test_pose_pipeline_end_to_end_matches_golden():
    """The converted golden pose-17 model through the pipeline with the original's flip test (golden case 4): the
    same keypoints as the processor API bit for bit, and the original's where decoding is well conditioned."""
    model = convert_original_checkpoint(golden_weights("pose17"), task="pose", num_attention_heads=arch("pose17")["H"])
    xyxy = load_golden("case3_pose_preprocess.safetensors")["boxes_xyxy"].double().numpy()[:1]
    boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).tolist()
    image = load_golden("images.npz")["astronaut_rgb"]
    processor = SapiensImageProcessorPil()
    people = pipeline("sapiens-pose", model=model, image_processor=processor)(image, boxes=boxes, flip_test=True)
    inputs = processor(image, boxes=[boxes], return_flipped_pixel_values=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
        outputs_flipped = model(pixel_values=inputs["pixel_values_flipped"], flip_pairs=model.config.flip_pairs)
    expected = processor.post_process_pose_estimation(outputs, [boxes], outputs_flipped=outputs_flipped)[0][0]
    assert torch.equal(people[0]["keypoints"], expected["keypoints"])
    assert torch.equal(people[0]["scores"], expected["scores"])
    golden = load_golden("case4_inference_topdown.npz")
    compared = well_conditioned_keypoints((0.5 * (outputs.heatmaps + outputs_flipped.heatmaps)).numpy())[0]
    assert compared.mean() >= 0.5
    np.testing.assert_allclose(
        people[0]["keypoints"].numpy()[compared], golden["pose17.keypoints_image"][0][compared], rtol=0, atol=1e-3
    )
    np.testing.assert_allclose(people[0]["scores"].numpy(), golden["pose17.scores"][0], rtol=0, atol=1e-5)


def test_segmentation_pipeline(models, processor, astronaut, camera):
    segmenter = pipeline("sapiens-segmentation", model=models["seg"], image_processor=processor)
    result = segmenter(astronaut)
    inputs = processor(astronaut, return_tensors="pt")
    with torch.no_grad():
        expected = processor.post_process_semantic_segmentation(models["seg"](**inputs), [(512, 512)])[0]
    assert torch.equal(result["segmentation"], expected)
    label_map = result["label_map"]
    assert label_map.mode == "P" and np.array_equal(np.asarray(label_map), expected.numpy())
    results = segmenter([astronaut, camera], batch_size=2)
    assert torch.equal(results[0]["segmentation"], expected) and results[1]["segmentation"].shape == camera.shape
    with pytest.raises(ValueError, match="has no flip test"):
        segmenter(astronaut, flip_test=True)


def test_depth_and_normal_pipelines(models, processor, astronaut, camera):
    estimator = pipeline("sapiens-depth", model=models["depth"], image_processor=processor)
    result = estimator(camera, mask=False)  # the whole map (the person mask: test_depth_and_normals_are_masked...)
    assert result["predicted_depth"].shape == camera.shape and result["depth"].size == camera.shape[::-1]
    assert "mask" not in result and torch.isfinite(result["predicted_depth"]).all()
    averaged = estimator(camera, flip_test=True, mask=False)["predicted_depth"]
    inputs = processor(camera, return_tensors="pt")
    with torch.no_grad():
        mirrored = models["depth"](pixel_values=inputs["pixel_values"].flip(-1))
    expected = processor.post_process_depth_estimation(
        models["depth"](**inputs), [camera.shape], outputs_flipped=mirrored
    )[0]["predicted_depth"]
    torch.testing.assert_close(averaged, expected, rtol=0, atol=0)

    normals = pipeline("sapiens-normal", model=models["normal"], image_processor=processor)([astronaut, camera],
                                                                                            mask=False)
    assert normals[1]["normals"].shape == (3, *camera.shape) and normals[0]["normal_map"].size == (512, 512)
    lengths = normals[0]["normals"].norm(dim=0)
    assert (lengths <= 1).all() and (lengths > 0.99).float().mean() > 0.99


@pytest.fixture(scope="module")
def person_segmenter(models, processor):
    """A segmentation pipeline whose random model calls part of an image background (class 0) and the rest a body
    part (class 1): logits +f and -f of one feature channel f, so that the person mask is neither empty nor full."""
    model = copy.deepcopy(models["seg"])
    layer = model.get_submodule(next(name for name, _ in model.named_modules() if name.endswith("final_layer")))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[0, 0], layer.weight[1, 0] = 1.0, -1.0
    return pipeline("sapiens-segmentation", model=model, image_processor=processor)


def test_depth_and_normals_are_masked_to_the_people(models, processor, person_segmenter, astronaut, camera,
                                                    tmp_path, monkeypatch):
    """Depth and normals come with the person mask of the segmentation model (class != background): NaN and grey
    outside it, the unmasked values inside; a mask given with the image is used as it is (no segmentation); a list
    is segmented in one call per `images_at_once` images; the default model unreachable is one error before any
    image is read."""
    from sapiens_hf.pipelines import MaskModelUnavailableError
    from sapiens_hf.visualization import _BACKGROUND

    image = two_people_image()
    person = person_segmenter(image)["segmentation"] != 0
    assert 0.05 < person.float().mean() < 0.95
    for task, key, picture in (("depth", "predicted_depth", "depth"), ("normal", "normals", "normal_map")):
        estimator = pipeline(f"sapiens-{task}", model=models[task], image_processor=processor)
        whole = estimator(image, mask=False)[key]
        result = estimator(image, mask=person_segmenter)
        assert torch.equal(result["mask"], person)
        inside = result[key] if task == "depth" else result[key].permute(1, 2, 0)
        expected = whole if task == "depth" else whole.permute(1, 2, 0)
        assert torch.equal(inside[person], expected[person]) and torch.isnan(inside[~person]).all()
        pixels = np.asarray(result[picture])
        assert (pixels[~person.numpy()] == _BACKGROUND).all() and not (pixels[person.numpy()] == _BACKGROUND).all()
        given = estimator({"image": image, "mask": person.numpy()}, mask=lambda *args: 1 / 0)  # not called
        assert torch.equal(given["mask"], person)
        torch.testing.assert_close(given[key], result[key], equal_nan=True, rtol=0, atol=0)

    calls = []
    segment = type(person_segmenter).__call__
    monkeypatch.setattr(type(person_segmenter), "__call__",
                        lambda self, inputs, **kwargs: calls.append(len(inputs)) or segment(self, inputs, **kwargs))
    estimator = pipeline("sapiens-depth", model=models["depth"], image_processor=processor)
    estimator.images_at_once = 2
    batched = estimator([image, astronaut, camera], mask=person_segmenter, batch_size=3)
    assert calls == [2, 1] and torch.equal(batched[0]["mask"], person)
    assert batched[2]["mask"].shape == camera.shape

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MaskModelUnavailableError, match="mask=False for the unmasked map"):
        estimator(str(tmp_path / "missing.jpg"))  # the model fails first, not the file
    with pytest.raises(ValueError, match="a mask of the image's size"):
        estimator({"image": image, "mask": np.ones((10, 10), bool)})


def test_builtin_pipelines_work_with_sapiens_models(models, processor, astronaut):
    image = PIL.Image.fromarray(astronaut)
    depth = pipeline("depth-estimation", model=models["depth"], image_processor=processor)(image)
    ours = pipeline("sapiens-depth", model=models["depth"], image_processor=processor)(image, mask=False)
    assert torch.equal(depth["predicted_depth"], ours["predicted_depth"]) and depth["depth"].size == (512, 512)
    segments = pipeline("image-segmentation", model=models["seg"], image_processor=processor)(image)
    ours = pipeline("sapiens-segmentation", model=models["seg"], image_processor=processor)(image)
    present = ours["segmentation"].unique().tolist()
    assert sorted(segment["label"] for segment in segments) == sorted(SEGMENTATION_CLASSES[i] for i in present)


def test_saved_models_load_by_path_with_dtype(models, processor, astronaut, tmp_path):
    models["depth"].save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    estimator = pipeline("sapiens-depth", model=str(tmp_path), dtype=torch.bfloat16, device="cpu")
    assert estimator.model.dtype == torch.bfloat16
    depth = estimator(astronaut, mask=False)["predicted_depth"]
    assert depth.dtype == torch.float32 and depth.shape == (512, 512) and torch.isfinite(depth).all()


def test_wrong_model_for_the_task_is_rejected(models, processor):
    with pytest.raises(WrongModelError, match="needs a SapiensForPoseEstimation"):
        pipeline("sapiens-pose", model=models["depth"], image_processor=processor)


def test_pipeline_class_built_directly_gets_the_default_processor(models):
    estimator = SapiensNormalPipeline(model=models["normal"])
    assert (
        isinstance(estimator.image_processor, SapiensImageProcessorPil)
        and estimator.image_processor.size["height"] == 1024
    )


def test_pose_flip_test_keypoint_pairs(models, processor, astronaut):
    """Without `config.flip_pairs` the released set's pairs are used; an unknown keypoint set must name them."""
    without_pairs = copy.deepcopy(models["pose"])
    without_pairs.config.flip_pairs = None
    boxes = [[150, 20, 240, 480]]
    people = pipeline("sapiens-pose", model=without_pairs, image_processor=processor)(
        astronaut, boxes=boxes, flip_test=True
    )
    assert_people_equal(people, manual_pose(models["pose"], processor, astronaut, boxes, flip_test=True))
    five = SapiensForPoseEstimation(tiny_config(num_labels=5, **SIZE)).eval()
    estimator = pipeline("sapiens-pose", model=five, image_processor=processor)
    assert estimator(astronaut, detector=None)[0]["keypoints"].shape == (5, 2)
    with pytest.raises(ValueError, match="set model.config.flip_pairs"):
        estimator(astronaut, detector=None, flip_test=True)


@pytest.fixture
def image_url(tmp_path, astronaut):
    """An http:// URL of the astronaut photo, served from a local thread."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    PIL.Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/astronaut.png"
    server.shutdown()


def test_images_from_urls(models, processor, astronaut, image_url):
    segmenter = pipeline("sapiens-segmentation", model=models["seg"], image_processor=processor)
    assert torch.equal(segmenter(image_url)["segmentation"], segmenter(astronaut)["segmentation"])
    with pytest.raises(Exception, match="404"):
        segmenter(image_url.replace("astronaut", "missing"))


def test_metadata_and_visualisation_helpers(astronaut):
    for count in (17, 133, 308):
        keypoints = keypoint_set(count)
        assert len(keypoints["keypoint_colors"]) == count == len(keypoints["keypoint_names"])
        assert len(keypoints["link_colors"]) == len(keypoints["skeleton_links"])
        flip = keypoints["flip_indices"]
        assert [flip[i] for i in flip] == list(range(count))  # an involution
    assert len(SEGMENTATION_CLASSES) == len(segmentation_palette(28)) == 28
    assert keypoint_set(17)["sigmas"][0] == float(np.float32(0.026))  # the original's float32 values
    # Plain Python, no data files: the module works as remote code (only .py files reach a Hub repo).
    module = Path(sapiens_hf.metadata.__file__)
    assert not list((module.parent / "data").glob("*.json"))
    assert set(get_imports(module)) <= set(sys.stdlib_module_names)

    canvas = np.zeros((100, 80, 3), np.uint8)
    points = torch.tensor([[10.0, 10.0]] * 17)
    points[5], points[6] = torch.tensor([20.0, 50.0]), torch.tensor([60.0, 50.0])  # left / right shoulder
    scores = torch.zeros(17)
    scores[[5, 6]] = 1.0
    drawn = np.asarray(draw_keypoints(canvas, [{"keypoints": points, "scores": scores}], radius=3, thickness=3))
    colors = keypoint_set(17)["keypoint_colors"]
    assert drawn[50, 20].tolist() == colors[5] and drawn[50, 60].tolist() == colors[6]
    assert drawn[50, 40].tolist() == keypoint_set(17)["link_colors"][7]  # the shoulder link
    assert drawn[10, 10].tolist() == [0, 0, 0]  # below the score threshold: not drawn

    segmentation = np.zeros((4, 4), np.int64)
    segmentation[1:3, 1:3] = 14
    label_map = segmentation_to_image(segmentation)
    assert np.array_equal(np.asarray(label_map), segmentation)
    assert np.asarray(label_map.convert("RGB"))[1, 1].tolist() == list(SEGMENTATION_PALETTE[14])
    overlay = np.asarray(overlay_segmentation(np.full((4, 4, 3), 100, np.uint8), segmentation, alpha=0.5))
    assert overlay[1, 1].tolist() == [round(50 + c / 2) for c in SEGMENTATION_PALETTE[14]]

    depth = np.array([[1.0, 2.0], [3.0, 100.0]], np.float32)
    image = np.asarray(visualize_depth(depth, mask=np.array([[1, 1], [1, 0]], bool)))
    assert image[1, 1].tolist() == [100, 100, 100]  # background
    assert image[0, 0].sum() > image[0, 1].sum() > image[1, 0].sum()  # near is bright, normalised on the foreground
    normals = np.asarray(visualize_normals(torch.tensor([[[1.0]], [[0.0]], [[-1.0]]])))
    assert normals[0, 0].tolist() == [255, 127, 0]


def test_saved_pipelines_are_plain_checkpoints_that_load_without_remote_code(models, processor, astronaut, tmp_path):
    """`pipe.save_pretrained(dir)` writes the model and processor only, so `pipeline(task, model=dir)` loads it with
    `sapiens_hf` installed and no `trust_remote_code`."""
    for task, key in (("sapiens-depth", "depth"), ("sapiens-pose", "pose")):
        folder = tmp_path / task
        estimator = pipeline(task, model=models[key], image_processor=processor)
        estimator.save_pretrained(folder)
        files = sorted(path.name for path in folder.iterdir())
        assert files == ["config.json", "model.safetensors", "preprocessor_config.json"]
        saved = json.loads((folder / "config.json").read_text())
        assert "custom_pipelines" not in saved and "auto_map" not in saved
        assert getattr(models[key].config, "custom_pipelines", None) is None  # nothing written into the live config
        reloaded = pipeline(task, model=str(folder))
        assert type(reloaded) is type(estimator) and reloaded.image_processor.size == processor.size
        if task == "sapiens-depth":
            assert torch.equal(reloaded(astronaut, mask=False)["predicted_depth"],
                               estimator(astronaut, mask=False)["predicted_depth"])
        else:
            assert_people_equal(reloaded(astronaut, detector=None), estimator(astronaut, detector=None))


def serve_once(handler_body) -> tuple[str, http.server.ThreadingHTTPServer]:
    """A loopback HTTP server whose GET runs `handler_body(handler)`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (the http.server name)
            handler_body(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/image.png", server


def test_an_image_url_is_read_within_a_size_and_a_time_limit(monkeypatch):
    """A URL announcing (or sending) more than `MAX_DOWNLOAD_BYTES` is refused without reading it all; one that
    stalls fails after the timeout instead of hanging the call."""
    import time

    from sapiens_hf import image_io

    monkeypatch.setattr(image_io, "MAX_DOWNLOAD_BYTES", 10_000)
    sent = []

    def large(handler, announce=True):
        handler.send_response(200)
        if announce:
            handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        for _ in range(1000):  # 1 MB, unless the client stops reading
            try:
                handler.wfile.write(b"x" * 1000)
                sent.append(1000)
            except OSError:
                return

    for announce in (True, False):
        url, server = serve_once(lambda handler, announce=announce: large(handler, announce))
        with pytest.raises(ValueError, match="larger than"):
            image_io.read_image(url)
        server.shutdown()

    def stalled(handler):
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(b"\x89PNG")
        handler.wfile.flush()
        time.sleep(5)

    url, server = serve_once(stalled)
    started = time.perf_counter()
    with pytest.raises(Exception, match="(?i)timed? ?out"):
        image_io.read_image(url, timeout=0.5)
    assert time.perf_counter() - started < 4
    server.shutdown()


def test_encoded_image_bytes_are_read_as_the_file_is(tmp_path, astronaut):
    """EXIF orientation applies to image bytes (a `datasets` image column) as to the file they came from."""
    from sapiens_hf.batch.inputs import decode
    from sapiens_hf.image_io import read_image

    photo = PIL.Image.fromarray(astronaut[:, :300])  # 512 × 300: a transpose shows
    exif = photo.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise when shown
    photo.save(tmp_path / "rotated.jpg", exif=exif)
    from_file = read_image(tmp_path / "rotated.jpg")
    assert from_file.shape == (300, 512, 3)
    assert np.array_equal(decode((tmp_path / "rotated.jpg").read_bytes()), from_file)
    assert np.array_equal(read_image((tmp_path / "rotated.jpg").read_bytes()), from_file)


def test_many_people_in_one_image_keep_memory_bounded(models, processor, astronaut, monkeypatch):
    """Crops are made `crops_at_once` at a time and each batch is decoded to keypoints at once (no image's heatmaps
    wait for its other people): the results equal those of all crops at once; with `threshold`, the same keypoints
    are dropped as by the processor."""
    from sapiens_hf.modeling_sapiens import SapiensPoseEstimatorOutput
    from sapiens_hf.pipelines import SapiensPosePipeline

    pose = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    boxes = [[5 + 3 * index, 10 + 2 * index, 80, 120] for index in range(20)]
    made = []
    call = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: made.append(len(k["boxes"][0])) or
                        call(self, *a, **k))
    people = pose(astronaut, boxes=boxes, batch_size=3)
    assert max(made) == SapiensPosePipeline.crops_at_once and sum(made) == len(boxes)
    monkeypatch.setattr(SapiensPosePipeline, "crops_at_once", 1000)
    for one, other in zip(people, pose(astronaut, boxes=boxes, batch_size=3)):
        assert torch.equal(one["keypoints"], other["keypoints"]) and torch.equal(one["scores"], other["scores"])
        assert torch.equal(one["bbox_xywh"], other["bbox_xywh"])
    threshold = torch.cat([person["scores"] for person in people]).median().item()  # drops about half
    crops = processor(astronaut, boxes=[boxes], return_tensors="pt")
    heatmaps = models["pose"](pixel_values=crops["pixel_values"].float()).heatmaps
    expected = processor.post_process_pose_estimation(
        SapiensPoseEstimatorOutput(heatmaps=heatmaps), boxes=[boxes], threshold=threshold,
        crop_center=crops["crop_center"], crop_scale=crops["crop_scale"])[0]
    thresholded = pose(astronaut, boxes=boxes, threshold=threshold)
    assert 0 < sum(len(person["labels"]) for person in thresholded) < sum(len(person["labels"]) for person in people)
    for person, reference in zip(thresholded, expected):
        assert torch.equal(person["labels"], reference["labels"])
        torch.testing.assert_close(person["keypoints"], reference["keypoints"])


def test_detectors_named_one_after_another_are_not_all_kept(models, processor, astronaut, monkeypatch):
    """A long-running pipeline (the demo's server) keeps the last detector it loaded by name, not one per name."""
    from sapiens_hf import pipelines

    loaded = []
    monkeypatch.setattr(pipelines, "pipeline", lambda task, model, device: loaded.append(model) or (lambda image: []))
    pose = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    for name in ("a/detector", "b/detector", "c/detector", "c/detector"):
        pose(astronaut, detector=name)
    assert loaded == ["a/detector", "b/detector", "c/detector"]
    assert pose._detector.name == "c/detector"
