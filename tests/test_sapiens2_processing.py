"""Sapiens2 processing equal to transformers' `Sapiens2ImageProcessor`: sapiens-hf's torchvision-free
`Sapiens2ImageProcessorPil` against the references that tests/fixtures/make_sapiens2_reference.py made with
transformers' processor (torchvision backend). Tolerances: pixel values, dense maps and the crops exact to float32
rounding (1e-5); keypoints 1e-3 px (the DARK blur is OpenCV's here, torchvision's there: they differ in the last
float32 bits); class maps identical."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.sapiens2.modeling_sapiens2 import (
    Sapiens2ImageMattingOutput,
    Sapiens2NormalEstimatorOutput,
    Sapiens2PointmapEstimatorOutput,
    Sapiens2PoseEstimatorOutput,
)

from sapiens_hf.image_processing_sapiens2 import Sapiens2ImageProcessorPil


SIZE = {"height": 64, "width": 48}
REFERENCE = Path(__file__).parent / "fixtures" / "sapiens2_reference.npz"


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def processors():
    return Sapiens2ImageProcessorPil(size=SIZE), Sapiens2ImageProcessorPil(size=SIZE, do_pad=True)


def test_whole_image_resize_equals_transformers(reference, processors):
    plain, padded = processors
    np.testing.assert_allclose(plain(reference["image"], return_tensors="np")["pixel_values"],
                               reference["pixel_values"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(padded(reference["image"], return_tensors="np")["pixel_values"],
                               reference["pixel_values_padded"], atol=1e-5, rtol=0)


def test_top_down_crops_equal_transformers(reference, processors):
    """Shrunk (bilinear), enlarged (bicubic) and border-crossing boxes."""
    crops = processors[0](reference["image"], boxes=[reference["boxes"].tolist()], return_tensors="np")
    np.testing.assert_allclose(crops["pixel_values"], reference["pixel_values_crops"], atol=1e-5, rtol=0)


def test_pose_decoding_with_flip_equals_transformers(reference, processors):
    people = processors[0].post_process_pose_estimation(
        Sapiens2PoseEstimatorOutput(heatmaps=torch.from_numpy(reference["heatmaps"])),
        boxes=[reference["boxes"].tolist()],
        outputs_flipped=Sapiens2PoseEstimatorOutput(heatmaps=torch.from_numpy(reference["heatmaps_flipped"])))[0]
    np.testing.assert_allclose(np.stack([person["keypoints"] for person in people]), reference["keypoints"],
                               atol=1e-3, rtol=0)
    np.testing.assert_allclose(np.stack([person["scores"] for person in people]), reference["keypoint_scores"],
                               atol=1e-6, rtol=0)
    xyxy = reference["bbox_xyxy"]  # the same box, in v1's (x, y, width, height) schema
    np.testing.assert_allclose(np.stack([person["bbox_xywh"] for person in people]),
                               np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), atol=1e-4)


def test_segmentation_equals_transformers(reference, processors):
    segmentation = processors[0].post_process_semantic_segmentation(
        SemanticSegmenterOutput(logits=torch.from_numpy(reference["logits"])),
        target_sizes=[reference["image"].shape[:2]])[0]
    np.testing.assert_array_equal(segmentation.numpy(), reference["segmentation"])


def test_padded_normals_and_pointmaps_equal_transformers(reference, processors):
    padded, size = processors[1], [reference["image"].shape[:2]]
    outputs = Sapiens2NormalEstimatorOutput(normals=torch.from_numpy(reference["normals_raw"]))
    normals = padded.post_process_normal_estimation(outputs, target_sizes=size, unit_length=False)[0]
    np.testing.assert_allclose(normals["normals"].numpy(), reference["normals"], atol=1e-5, rtol=0)
    unit = padded.post_process_normal_estimation(outputs, target_sizes=size)[0]["normals"]  # the same directions
    expected = torch.nn.functional.normalize(torch.from_numpy(reference["normals"]), dim=0, eps=1e-8)
    np.testing.assert_allclose(unit.numpy(), expected.numpy(), atol=1e-5, rtol=0)
    result = padded.post_process_pointmap_estimation(
        Sapiens2PointmapEstimatorOutput(pointmaps=torch.from_numpy(reference["pointmaps_raw"]),
                                        scales=torch.from_numpy(reference["scales"])), target_sizes=size)[0]
    np.testing.assert_allclose(result["pointmap"].numpy(), reference["pointmap"], atol=1e-5, rtol=0)
    assert result["scale"] == pytest.approx(float(reference["scales"][0, 0]))


def test_padding_removed_from_the_images_size_at_another_target_size(processors):
    """annotate stores maps at another size than the image's: the border is found from `source_sizes`. A 150×200
    image fills rows 14–49 of the 64×48 input: normals +z there, +x on the border."""
    normals = torch.zeros(1, 3, 64, 48)
    normals[:, 0] = 1
    normals[:, :, 14:50] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    outputs = Sapiens2NormalEstimatorOutput(normals=normals)
    unpadded = processors[1].post_process_normal_estimation(outputs, target_sizes=[(60, 30)],
                                                            source_sizes=[(150, 200)])[0]["normals"]
    assert torch.allclose(unpadded[2], torch.ones(60, 30))
    kept = processors[1].post_process_normal_estimation(outputs, target_sizes=[(60, 30)])[0]["normals"]
    assert kept[0, 0].mean() > 0.9  # taken as a 60×30 image's: the border is in the map


def test_matting_equals_transformers(reference, processors):
    result = processors[0].post_process_image_matting(
        Sapiens2ImageMattingOutput(alphas=torch.from_numpy(reference["alphas_raw"]),
                                   foregrounds=torch.from_numpy(reference["foregrounds_raw"])),
        target_sizes=[reference["image"].shape[:2]])[0]
    np.testing.assert_allclose(result["alpha"].numpy(), reference["alpha"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(result["foreground"].numpy(), reference["foreground"], atol=1e-6, rtol=0)


def test_outputs_of_another_task_are_refused(processors):
    with pytest.raises(ValueError, match="pointmap model"):
        processors[0].post_process_pointmap_estimation(Sapiens2NormalEstimatorOutput(normals=torch.zeros(1, 3, 4, 4)))
    with pytest.raises(ValueError, match="matting model"):
        processors[0].post_process_image_matting(Sapiens2NormalEstimatorOutput(normals=torch.zeros(1, 3, 4, 4)))


def test_a_zero_scale_and_large_matting_sizes(processors):
    outputs = Sapiens2PointmapEstimatorOutput(pointmaps=torch.ones(1, 3, 8, 6), scales=torch.zeros(1, 1))
    with pytest.raises(ValueError, match="scales must be finite, non-zero"):
        processors[0].post_process_pointmap_estimation(outputs)
    matting = Sapiens2ImageMattingOutput(alphas=torch.rand(1, 1, 8, 6), foregrounds=torch.rand(1, 3, 8, 6))
    big = processors[0].post_process_image_matting(matting, target_sizes=[(2100, 2100)])[0]  # resized in bands
    whole = torch.nn.functional.interpolate(torch.cat([matting.foregrounds, matting.alphas], 1), size=(2100, 2100),
                                            mode="bilinear", align_corners=False)[0]
    assert (big["alpha"] - whole[3]).abs().max() < 1e-5 and (big["foreground"] - whole[:3]).abs().max() < 1e-5


def test_the_originals_resizes_as_an_option(reference):
    """`resize_as_original`: OpenCV as facebookresearch/sapiens2 (INTER_AREA down / INTER_CUBIC up for whole images,
    INTER_LINEAR for padded ones, warpAffine crops); docs/sapiens2.md says how much it differs from transformers'
    processor."""
    import cv2

    from sapiens_hf.geometry import get_box_center_scale, get_udp_warp_matrix

    image, boxes = reference["image"], reference["boxes"]
    original = Sapiens2ImageProcessorPil(size=SIZE, resize_as_original=True)
    std = np.asarray(Sapiens2ImageProcessorPil.image_std)[:, None, None] * 255  # normalised units → grey levels
    plain = original(image, return_tensors="np")["pixel_values"][0]
    shrunk = cv2.resize(image, (48, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    mean = np.asarray(Sapiens2ImageProcessorPil.image_mean)[:, None, None] * 255
    np.testing.assert_allclose(plain * std + mean, shrunk, atol=1e-3)
    assert np.abs(plain - reference["pixel_values"][0]).max() * std.max() > 1  # not transformers' resize
    padded = Sapiens2ImageProcessorPil(size=SIZE, do_pad=True, resize_as_original=True)
    canvas = np.zeros((64, 48, 3), np.uint8)  # 150×200 into 64×48: 36×48 at row 14
    canvas[14:50] = cv2.resize(image, (48, 36), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(padded(image, return_tensors="np")["pixel_values"][0] * std + mean,
                               canvas.transpose(2, 0, 1), atol=1e-3)
    crops = original(image, boxes=[boxes.tolist()], return_tensors="np")["pixel_values"]
    center, scale = get_box_center_scale(boxes, (48, 64))
    enlarged = cv2.warpAffine(image, get_udp_warp_matrix(center[1], scale[1], (48, 64)), (48, 64),
                              flags=cv2.INTER_CUBIC).transpose(2, 0, 1)
    np.testing.assert_allclose(crops[1] * std + mean, enlarged, atol=1e-3)


@pytest.mark.parametrize("resample", ["bicubic", "nearest"])
def test_other_resamples_equal_transformers(reference, resample):
    """A checkpoint's `resample` is honoured as transformers' processor honours it (shrinking and enlarging)."""
    from transformers.image_utils import PILImageResampling

    value = {"bicubic": PILImageResampling.BICUBIC, "nearest": PILImageResampling.NEAREST}[resample]
    processor = Sapiens2ImageProcessorPil(size=SIZE, resample=value)
    for suffix, image in (("", reference["image"]), ("_enlarged", reference["image"][:40, :30])):
        np.testing.assert_allclose(processor(image, return_tensors="np")["pixel_values"],
                                   reference[f"pixel_values_{resample}{suffix}"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="Unsupported resample"):
        Sapiens2ImageProcessorPil(size=SIZE, resample=PILImageResampling.HAMMING)(reference["image"])


def test_training_targets_are_refused(reference, processors):
    with pytest.raises(ValueError, match="not training targets \\(keypoints\\)"):
        processors[0](reference["image"], boxes=[reference["boxes"].tolist()], keypoints=[[[[1, 2, 2]]] * 3])
    with pytest.raises(ValueError, match="segmentation_maps"):
        processors[0](reference["image"], segmentation_maps=np.zeros((150, 200), np.uint8))
