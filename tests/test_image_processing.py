"""SapiensImageProcessorPil pre-processing: golden parity of the original's crops, resizes and normalisation (cases 3,
5, 6 of tests/fixtures), training targets, input conversion, bad input, save/load."""

import hashlib
import json

import cv2
import numpy as np
import PIL.Image
import pytest
import torch
from golden_utils import golden_path, load_golden, normalize
from transformers import AutoImageProcessor

import sapiens_hf  # noqa: F401  (registers the processor)
from sapiens_hf.geometry import generate_udp_heatmaps, get_box_center_scale, get_udp_warp_matrix, warp_affine_bilinear
from sapiens_hf.image_io import to_rgb_uint8
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil


@pytest.fixture(scope="module")
def images():
    return load_golden("images.npz")


@pytest.fixture(scope="module")
def case3():
    golden = load_golden("case3_pose_preprocess.safetensors")
    xyxy = golden["boxes_xyxy"].double().numpy()
    golden["boxes_xywh"] = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return golden


@pytest.fixture(scope="module")
def manifest():
    return json.loads(golden_path("manifest.json").read_text())


@pytest.fixture(scope="module")
def processor():
    return SapiensImageProcessorPil()


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Golden parity
# ---------------------------------------------------------------------------------------------------------------


def test_box_center_scale_and_warp_matrix_match_golden(case3):
    center, scale = get_box_center_scale(case3["boxes_xywh"], (768, 1024), padding=1.25)
    for i in range(3):
        assert center.dtype == scale.dtype == np.float32
        np.testing.assert_array_equal(center[i], case3[f"box{i}.center"][0].numpy())
        np.testing.assert_array_equal(scale[i], case3[f"box{i}.scale"][0].numpy())
        matrix = get_udp_warp_matrix(center[i], scale[i], (768, 1024))
        np.testing.assert_array_equal(matrix, case3[f"box{i}.warp_matrix"].numpy())


def test_top_down_crops_are_bit_identical(images, case3, processor, manifest):
    inputs = processor(images["astronaut_rgb"], boxes=[case3["boxes_xywh"].tolist()], return_tensors="pt")
    assert inputs["pixel_values"].shape == (3, 3, 1024, 768)
    for i in range(3):
        matrix = case3[f"box{i}.warp_matrix"].numpy()
        crop = warp_affine_bilinear(images["astronaut_rgb"], matrix, (768, 1024))
        np.testing.assert_array_equal(crop, images[f"pose_crop_box{i}_rgb"])  # uint8, exact
        pixel_values = inputs["pixel_values"][i]
        assert sha256(pixel_values.numpy()) == manifest["normalized_sha256"][f"case3.box{i}"]
        torch.testing.assert_close(pixel_values, normalize(images[f"pose_crop_box{i}_rgb"]), rtol=0, atol=1e-6)
        torch.testing.assert_close(
            pixel_values[:, 500:532, 370:402], case3[f"box{i}.normalized_window"], rtol=0, atol=1e-6
        )
        np.testing.assert_array_equal(inputs["crop_center"][i].numpy(), case3[f"box{i}.center"][0].numpy())
        np.testing.assert_array_equal(inputs["crop_scale"][i].numpy(), case3[f"box{i}.scale"][0].numpy())


@pytest.mark.skipif(cv2.__version__.startswith(("5", "6")), reason="OpenCV ≥ 5 warpAffine changed (see the docstring)")
def test_warp_equals_opencv4_warp_affine_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(10):
        height, width = rng.integers(8, 400, size=2)
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        box = [
            [rng.uniform(-50, width), rng.uniform(-50, height), rng.uniform(1, 2 * width), rng.uniform(1, 2 * height)]
        ]
        center, scale = get_box_center_scale(np.array(box), (768, 1024))
        matrix = get_udp_warp_matrix(center[0], scale[0], (768, 1024))
        expected = cv2.warpAffine(image, matrix, (768, 1024), flags=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(warp_affine_bilinear(image, matrix, (768, 1024)), expected)


def test_whole_image_resize_and_normalisation_match_golden(images, processor, manifest):
    inputs = processor(images["astronaut_rgb"], return_tensors="pt")
    expected = normalize(images["seg_input_astronaut_rgb"])
    assert torch.equal(inputs["pixel_values"][0], expected)
    # case 5: the original's mmcv Resize of a 340×512 image equals cv2.resize INTER_LINEAR
    resized = cv2.resize(images["case5_ori_rgb"], (768, 1024), interpolation=cv2.INTER_LINEAR)
    assert sha256(resized) == manifest["cases"]["case5_resized_input_sha256"]
    inputs = processor(images["case5_ori_rgb"], return_tensors="pt")
    assert torch.equal(inputs["pixel_values"][0], normalize(resized))


def test_flipped_pixel_values(images, processor):
    inputs = processor(
        images["astronaut_rgb"], boxes=[[[100, 50, 200, 300]]], return_flipped_pixel_values=True, return_tensors="pt"
    )
    assert torch.equal(inputs["pixel_values_flipped"], inputs["pixel_values"].flip(-1))


# ---------------------------------------------------------------------------------------------------------------
# Training targets
# ---------------------------------------------------------------------------------------------------------------


def test_udp_heatmap_targets_match_golden():
    golden = load_golden("case6_udp_encode.npz")
    heatmaps, weights = generate_udp_heatmaps(
        golden["keypoints"][0], golden["keypoints_visible"][0], input_size=(768, 1024), heatmap_size=(192, 256), sigma=6
    )
    np.testing.assert_allclose(heatmaps, golden["heatmaps"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights, golden["keypoint_weights"][0])


def test_keypoints_become_labels_in_crop_coordinates(images, processor):
    box = [150.0, 20.0, 240.0, 480.0]
    center, scale = get_box_center_scale(np.array([box]), (768, 1024))
    matrix = get_udp_warp_matrix(center[0], scale[0], (768, 1024))
    keypoints = np.array([[270.0, 260.0, 2], [200.0, 100.0, 1], [300.0, 400.0, 0], [-500.0, 10.0, 2]], np.float32)
    inputs = processor(images["astronaut_rgb"], boxes=[[box]], keypoints=[[keypoints]], return_tensors="pt")
    assert inputs["labels"].shape == (1, 4, 256, 192) and inputs["label_weights"].shape == (1, 4)
    # the box centre lands in the middle of the crop, so its heatmap peak is the heatmap centre
    peak = np.unravel_index(inputs["labels"][0, 0].argmax().item(), (256, 192))
    assert abs(peak[0] - 127.5) <= 1 and abs(peak[1] - 95.5) <= 1
    # COCO visibility 2/1 → weight 1, 0 → 0 (no target), far outside the crop → 0
    np.testing.assert_array_equal(inputs["label_weights"][0].numpy(), [1, 1, 0, 0])
    assert inputs["labels"][0, 2].abs().max() == 0 and inputs["labels"][0, 3].abs().max() == 0
    in_crop = cv2.transform(keypoints[None, :, :2], matrix)[0]
    expected, _ = generate_udp_heatmaps(in_crop, np.minimum(1, keypoints[:, 2]), (768, 1024), (192, 256))
    np.testing.assert_array_equal(inputs["labels"][0].numpy(), expected)


def test_dense_targets_are_resized_with_nearest_neighbour(processor):
    image = np.zeros((40, 30, 3), np.uint8)
    segmentation = np.zeros((40, 30), np.int64)
    segmentation[:20] = 5
    segmentation[0, 0] = 255
    labels = processor(image, segmentation_maps=segmentation, return_tensors="pt")["labels"]
    assert labels.shape == (1, 1024, 768) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == {0, 5, 255}  # no blended class ids
    depth = np.where(segmentation > 0, 0.5, -1.0).astype(np.float32)
    labels = processor(image, depth_maps=depth, return_tensors="pt")["labels"]
    assert labels.shape == (1, 1024, 768) and set(labels.unique().tolist()) == {-1.0, 0.5}
    normals = np.full((40, 30, 3), -1000.0, np.float32)
    normals[10:30] = [0.0, 0.0, 1.0]
    labels = processor(image, normal_maps=normals, return_tensors="pt")["labels"]
    assert labels.shape == (1, 3, 1024, 768) and set(labels.unique().tolist()) == {-1000.0, 0.0, 1.0}


def test_target_errors(processor):
    image = np.zeros((40, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="need the person `boxes`"):
        processor(image, keypoints=[[np.zeros((17, 3))]])
    with pytest.raises(ValueError, match="cannot be used with `boxes`"):
        processor(image, boxes=[[[0, 0, 10, 10]]], segmentation_maps=np.zeros((40, 30), np.int64))
    with pytest.raises(ValueError, match="integer class indices"):
        processor(image, segmentation_maps=np.full((40, 30), 0.5))
    with pytest.raises(ValueError, match="keypoint sets for 2 boxes"):
        processor(image, boxes=[[[0, 0, 10, 10], [5, 5, 10, 10]]], keypoints=[[np.zeros((17, 3))]])


# ---------------------------------------------------------------------------------------------------------------
# Input conversion and bad input
# ---------------------------------------------------------------------------------------------------------------


def test_image_types_and_layouts_give_the_same_pixels(images, processor):
    rgb = images["case5_ori_rgb"]
    expected = processor(rgb, return_tensors="pt")["pixel_values"]
    for variant in (
        PIL.Image.fromarray(rgb),
        torch.from_numpy(rgb).permute(2, 0, 1),  # CHW tensor
        np.ascontiguousarray(rgb.transpose(2, 0, 1)),  # CHW array
        np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),  # RGBA: alpha dropped, as cv2.imread
        PIL.Image.fromarray(rgb).convert("RGBA"),
        rgb.astype(np.float32) / 255,  # float in [0, 1]
    ):
        assert torch.equal(processor(variant, return_tensors="pt")["pixel_values"], expected)
    batch = processor(np.stack([rgb, rgb]), return_tensors="pt")["pixel_values"]
    assert torch.equal(batch, torch.cat([expected, expected]))


def test_grayscale_and_16_bit_images(tmp_path, processor):
    gray = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21
    expected = np.repeat((gray >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(gray), expected)  # uint16: the high byte, as cv2.imread
    np.testing.assert_array_equal(to_rgb_uint8((gray >> 8).astype(np.uint8)), expected)  # (H, W) grayscale
    np.testing.assert_array_equal(to_rgb_uint8(PIL.Image.fromarray((gray >> 8).astype(np.uint8))), expected)
    PIL.Image.fromarray(gray).save(tmp_path / "gray16.png")  # opened by PIL as mode I;16
    np.testing.assert_array_equal(to_rgb_uint8(PIL.Image.open(tmp_path / "gray16.png")), expected)
    assert np.array_equal(cv2.imread(str(tmp_path / "gray16.png")), expected)  # what the original reads
    from_path = processor(str(tmp_path / "gray16.png"), return_tensors="pt")["pixel_values"]
    assert torch.equal(from_path, processor(expected, return_tensors="pt")["pixel_values"])


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (5, 1)])
def test_tiny_images(shape, processor):
    image = np.full(shape, 200, np.uint8)
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 1024, 768)
    assert processor(image, boxes=[[]], return_tensors="pt")["pixel_values"].shape == (1, 3, 1024, 768)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10, 3), np.uint8), "Empty image"),
        (np.full((4, 4, 3), 2.0, np.float32), r"Float images must hold finite values in \[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), "Float images"),
        (np.full((4, 4, 3), 300, np.int32), "no known bit depth"),
        (np.zeros((5, 5, 2), np.uint8), "Cannot tell the channel axis"),
        (np.zeros((4, 4, 4, 4, 3), np.uint8), "2 or 3 dimensions"),
    ],
)
def test_bad_images_are_rejected(image, message, processor):
    with pytest.raises(ValueError, match=message):
        processor(image)


def test_unreadable_and_missing_files(tmp_path, processor):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        processor(str(broken))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        processor(str(tmp_path / "missing.png"))


@pytest.mark.parametrize(
    "box, message",
    [
        ([10, 10, 0, 50], "Degenerate box"),
        ([10, 10, 50, -5], "Degenerate box"),
        ([10, float("nan"), 50, 50], "Degenerate box"),
        ([600, 10, 50, 50], "entirely outside"),
        ([-100, -100, 50, 50], "entirely outside"),
        ([1, 2, 3], "x, y, width, height"),
    ],
)
def test_bad_boxes_are_rejected(box, message, processor):
    with pytest.raises(ValueError, match=message):
        processor(np.zeros((100, 512, 3), np.uint8), boxes=[[box]])


def test_empty_box_list_uses_the_whole_image(images, processor):
    height, width = images["case5_ori_rgb"].shape[:2]
    whole = processor(images["case5_ori_rgb"], boxes=[[]], return_tensors="pt")
    explicit = processor(images["case5_ori_rgb"], boxes=[[[0, 0, width, height]]], return_tensors="pt")
    assert torch.equal(whole["pixel_values"], explicit["pixel_values"])
    np.testing.assert_array_equal(whole["crop_center"][0].numpy(), [width / 2, height / 2])
    with pytest.raises(ValueError, match="boxes are given per image"):
        processor(images["case5_ori_rgb"], boxes=[[0, 0, 10, 10], [5, 5, 10, 10]])


def test_save_and_load_with_auto_image_processor(tmp_path, images):
    processor = SapiensImageProcessorPil(box_padding=1.3, size={"height": 512, "width": 384})
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SapiensImageProcessor" and saved["do_rescale"] is False
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SapiensImageProcessorPil and loaded.box_padding == 1.3
    boxes = [[[120, 40, 250, 420]]]
    assert torch.equal(
        loaded(images["astronaut_rgb"], boxes=boxes, return_tensors="pt")["pixel_values"],
        processor(images["astronaut_rgb"], boxes=boxes, return_tensors="pt")["pixel_values"],
    )
