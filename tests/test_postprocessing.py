"""Post-processing parity with the original (golden cases 4 and 5): UDP + DARK keypoint decoding, flip test,
double-resized segmentation / depth / normal maps; end to end with the tiny golden models converted by
`convert_original_checkpoint`."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from golden_utils import (
    arch,
    assert_matches_golden,
    golden_weights,
    load_golden,
    manifest,
    subset_slices,
    well_conditioned_keypoints,
)
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

from sapiens_hf import metadata
from sapiens_hf.convert import convert_original_checkpoint
from sapiens_hf.geometry import decode_udp_heatmaps, get_heatmap_maximum, refine_keypoints_dark_udp
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
from sapiens_hf.modeling_sapiens import SapiensNormalEstimatorOutput, SapiensPoseEstimatorOutput, flip_back


KEYPOINT_ATOL = 1e-3  # pixels (tests/fixtures/README.md §4)
SCORE_ATOL = 1e-5
SETS = {"k17": 17, "k133": 133, "k308": 308}


@pytest.fixture(scope="module")
def decode():
    return load_golden("case4_decode.npz")


@pytest.fixture(scope="module")
def boxes():
    xyxy = load_golden("case3_pose_preprocess.safetensors")["boxes_xyxy"].double().numpy()
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


@pytest.fixture(scope="module")
def processor():
    return SapiensImageProcessorPil()


@pytest.fixture(scope="module")
def astronaut():
    return load_golden("images.npz")["astronaut_rgb"]


def assert_keypoints_close(actual, expected):
    """Golden keypoints within 1e-3 px; the original's NaN (all-zero map, see below) must be finite here."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=0, atol=KEYPOINT_ATOL)
    assert np.isfinite(actual).all()


# ---------------------------------------------------------------------------------------------------------------
# Pose: decoding and flip test (case 4)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_flip_merge_matches_golden(decode, name):
    heatmaps = torch.from_numpy(decode[f"{name}.heatmaps"])
    flipped = torch.from_numpy(decode[f"{name}.heatmaps_flipped_crop"])
    merged = 0.5 * (heatmaps + flip_back(flipped, metadata.flip_pairs(SETS[name])))
    torch.testing.assert_close(merged, torch.from_numpy(decode[f"{name}.merged"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("variant", ["plain", "merged"])
def test_decoding_in_crop_space_matches_golden(decode, name, variant):
    heatmaps = decode[f"{name}.heatmaps" if variant == "plain" else f"{name}.merged"]
    keypoints, scores = decode_udp_heatmaps(heatmaps, input_size=(768, 1024))
    assert_keypoints_close(keypoints, decode[f"{name}.{variant}.keypoints_input_space"])
    np.testing.assert_allclose(scores, decode[f"{name}.{variant}.scores"], rtol=0, atol=SCORE_ATOL)


@pytest.mark.parametrize("name", SETS)
def test_post_process_pose_estimation_matches_golden(decode, boxes, processor, name):
    """Image-space keypoints from the processor API: boxes as given to preprocess, flip test merged inside."""
    instance_boxes = boxes[decode[f"{name}.box_ids"]].tolist()
    outputs = SapiensPoseEstimatorOutput(heatmaps=torch.from_numpy(decode[f"{name}.heatmaps"]))
    # as the model returns them for flipped crops with `flip_pairs`: mirrored back, left/right swapped
    flipped_back = flip_back(torch.from_numpy(decode[f"{name}.heatmaps_flipped_crop"]), metadata.flip_pairs(SETS[name]))
    flipped = SapiensPoseEstimatorOutput(heatmaps=flipped_back)
    for variant, outputs_flipped in (("plain", None), ("merged", flipped)):
        people = processor.post_process_pose_estimation(outputs, [instance_boxes], outputs_flipped=outputs_flipped)[0]
        assert len(people) == len(instance_boxes)
        for index, person in enumerate(people):
            assert person["keypoints"].shape == (SETS[name], 2)
            assert_keypoints_close(person["keypoints"], decode[f"{name}.{variant}.keypoints_image"][index])
            np.testing.assert_allclose(
                person["scores"].numpy(), decode[f"{name}.{variant}.scores"][index], rtol=0, atol=SCORE_ATOL
            )
            assert torch.equal(person["labels"], torch.arange(SETS[name]))
            # one box format in and out: the box as given, (x, y, width, height)
            torch.testing.assert_close(person["bbox_xywh"], torch.tensor(instance_boxes[index], dtype=torch.float32))


def test_post_processing_maps_keypoints_through_the_crops_preprocess_returned(decode, boxes, processor):
    """One geometry: the crops `preprocess` returns are what post-processing maps the heatmaps back through, and
    passing them gives the same keypoints as recomputing them from the boxes; a shifted crop shifts every keypoint."""
    instance_boxes = boxes[decode["k17.box_ids"]].tolist()
    outputs = SapiensPoseEstimatorOutput(heatmaps=torch.from_numpy(decode["k17.heatmaps"]))
    image = np.zeros((1024, 1024, 3), np.uint8)
    crops = processor(image, boxes=[instance_boxes], return_tensors="pt")
    from_boxes = processor.post_process_pose_estimation(outputs, [instance_boxes])[0]
    from_crops = processor.post_process_pose_estimation(
        outputs, [instance_boxes], crop_center=crops["crop_center"], crop_scale=crops["crop_scale"])[0]
    shifted = processor.post_process_pose_estimation(
        outputs, [instance_boxes], crop_center=crops["crop_center"] + torch.tensor([10.0, 0.0]),
        crop_scale=crops["crop_scale"])[0]
    for recomputed, given, moved in zip(from_boxes, from_crops, shifted):
        torch.testing.assert_close(given["keypoints"], recomputed["keypoints"], rtol=0, atol=1e-4)
        torch.testing.assert_close(moved["keypoints"] - given["keypoints"],
                                   torch.tensor([10.0, 0.0]).expand_as(given["keypoints"]), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="both crop_center and crop_scale"):
        processor.post_process_pose_estimation(outputs, [instance_boxes], crop_center=crops["crop_center"])
    with pytest.raises(ValueError, match="one per box"):
        processor.post_process_pose_estimation(outputs, [instance_boxes], crop_center=crops["crop_center"][:1],
                                               crop_scale=crops["crop_scale"][:1])


def test_special_channels(decode):
    """All-zero map (the original returns NaN there: 0/0 in the blur rescale; deliberately finite here), a constant
    negative map ((−1, −1) → −4.02 in crop pixels, score = the value), corner peaks pushed past the crop, ties."""
    keypoints, scores = decode_udp_heatmaps(decode["k17.heatmaps"][:1], input_size=(768, 1024))
    assert np.isnan(decode["k17.plain.keypoints_input_space"][0, 3]).all()
    np.testing.assert_allclose(keypoints[0, 3], [-768 / 191, -1024 / 255], atol=1e-4)
    assert scores[0, 3] == 0
    np.testing.assert_allclose(keypoints[0, 5], [-4.02094241, -4.01568627], atol=1e-6)
    assert scores[0, 5] == np.float32(-0.05)
    assert (keypoints[0, 9] > [767, 1023]).all() and (keypoints[0, 7] < 0).all()


def test_thresholds_and_empty_boxes(decode, boxes, processor):
    outputs = SapiensPoseEstimatorOutput(heatmaps=torch.from_numpy(decode["k17.heatmaps"][:1]))
    person = processor.post_process_pose_estimation(outputs, [[boxes[0].tolist()]], threshold=0.5)[0][0]
    keep = decode["k17.plain.scores"][0] > 0.5
    assert torch.equal(person["labels"], torch.from_numpy(np.flatnonzero(keep)))
    assert person["keypoints"].shape == (keep.sum(), 2)
    # an image without boxes used the whole image as its box: its size is needed to decode
    with pytest.raises(ValueError, match="source_sizes"):
        processor.post_process_pose_estimation(outputs, [[]])
    whole = processor.post_process_pose_estimation(outputs, [[]], source_sizes=[(512, 512)])[0][0]
    explicit = processor.post_process_pose_estimation(outputs, [[[0, 0, 512, 512]]])[0][0]
    assert torch.equal(whole["keypoints"], explicit["keypoints"])
    with pytest.raises(ValueError, match="1 heatmaps for 2 boxes"):
        processor.post_process_pose_estimation(outputs, [[boxes[0].tolist(), boxes[1].tolist()]])


def whole_map_dark_udp(keypoints, heatmaps, kernel_size=11):
    """mmpose's `gaussian_blur` + `refine_keypoints_dark_udp` as written there: every map blurred, rescaled, clipped,
    logged and edge-padded whole, one map and one instance at a time; the reference for the decode's shortcuts."""
    num_instances, num_keypoints, height, width = heatmaps.shape
    border = (kernel_size - 1) // 2
    maps = heatmaps.copy().reshape(-1, height, width)
    for index, heatmap in enumerate(maps):
        origin_max = heatmap.max()
        padded = np.zeros((height + 2 * border, width + 2 * border), dtype=np.float32)
        padded[border:-border, border:-border] = heatmap
        maps[index] = cv2.GaussianBlur(padded, (kernel_size, kernel_size), 0)[border:-border, border:-border]
        if maps[index].max() != 0:  # the original divides by 0 here (NaN), which this package deliberately avoids
            maps[index] *= origin_max / maps[index].max()
    np.clip(maps, 1e-3, 50.0, maps)
    np.log(maps, maps)
    refined = keypoints.copy()
    for n, instance_maps in enumerate(maps.reshape(num_instances, num_keypoints, height, width)):
        padded = np.pad(instance_maps, ((0, 0), (1, 1), (1, 1)), mode="edge").flatten()
        index = keypoints[n, :, 0] + 1 + (keypoints[n, :, 1] + 1) * (width + 2)
        index = (index + (width + 2) * (height + 2) * np.arange(num_keypoints)).astype(int)
        i_, ix1, iy1, ix1y1, ix1_y1_, ix1_, iy1_ = (
            padded[(index + offset) % padded.size]
            for offset in (0, 1, width + 2, width + 3, -width - 3, -1, -width - 2)
        )
        derivative = np.stack([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], 1).reshape(num_keypoints, 2, 1)
        dxx, dyy = ix1 - 2 * i_ + ix1_, iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        hessian = np.stack([dxx, dxy, dxy, dyy], 1).reshape(num_keypoints, 2, 2)
        hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
        refined[n] -= np.einsum("imn,ink->imk", hessian, derivative).squeeze(-1)
    return refined


def test_decode_equals_the_whole_map_original_bit_for_bit():
    """The decode blurs maps on several threads and rescales / clips / logs only the values it reads; on peaked,
    flat, faint, saturated, negative, all-zero and corner-peaked maps its keypoints must equal the whole-map
    original's bit for bit (with near-singular Hessians any rounding difference would show, tests/fixtures/README.md §4)."""
    rng = np.random.default_rng(0)
    num_instances, num_keypoints, height, width = 3, 40, 64, 48
    maps = rng.normal(0, 0.05, (num_instances * num_keypoints, height, width)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width]
    for index in range(0, len(maps), 2):
        x, y, sigma = rng.uniform(-2, width + 2), rng.uniform(-2, height + 2), rng.uniform(1, 4)
        maps[index] += rng.uniform(0.1, 3) * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    maps[1::7] *= 1e-4
    maps[3::11] = np.abs(maps[3::11]) * 40
    maps[5::13] = -np.abs(maps[5::13])
    maps[6::17] = 0
    maps[9::19, 0, 0] = 5
    maps[10::19, -1, -1] = 5
    heatmaps = maps.reshape(num_instances, num_keypoints, height, width)
    locations, _ = get_heatmap_maximum(heatmaps)
    expected = whole_map_dark_udp(locations, heatmaps)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(max(2, threads))  # the threaded blur, even on one core
    try:
        actual = refine_keypoints_dark_udp(locations, heatmaps)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(actual, expected) and actual.dtype == expected.dtype


def test_decoding_reference_model_heatmaps_matches_golden(decode):
    """The tiny pose-17 model's own heatmaps as the original computed them (box-0 crop): noisy maps with many local
    maxima, decoded here from the stored values, so the result does not depend on this CPU's kernels."""
    heatmaps = load_golden("case1_task_outputs.safetensors")["pose17.b0"].numpy()
    keypoints, scores = decode_udp_heatmaps(heatmaps, input_size=(768, 1024))
    assert_keypoints_close(keypoints, decode["model17.plain.keypoints_input_space"])
    np.testing.assert_allclose(scores, decode["model17.plain.scores"], rtol=0, atol=SCORE_ATOL)


@pytest.fixture(scope="module")
def pose_models():
    return {
        name: convert_original_checkpoint(golden_weights(name), task="pose", num_attention_heads=arch(name)["H"])
        for name in ("pose17", "pose308")
    }


def assert_well_conditioned_keypoints_close(people, merged_heatmaps, expected):
    """Image-space keypoints against the original's where decoding is well conditioned (see
    `well_conditioned_keypoints`); at least half of them must be."""
    compared = well_conditioned_keypoints(merged_heatmaps)
    assert compared.mean() >= 0.5, f"only {compared.sum()} of {compared.size} keypoints are well conditioned"
    actual = np.stack([person["keypoints"].numpy() for person in people])
    assert np.isfinite(actual).all()
    assert_keypoints_close(actual[compared], expected[compared])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pose17", "pose308"])
def test_end_to_end_top_down_inference_matches_golden(pose_models, astronaut, boxes, processor, decode, name):
    """mmpose `inference_topdown` with the configs' flip test: crops → model (and on the flipped crops with
    `flip_pairs`) → average → decode → image space. The crops, the model outputs and the decoding are each compared
    exactly or at their own tolerance elsewhere; here keypoints whose decoding only amplifies rounding are left out."""
    model = pose_models[name]
    assert model.config.flip_pairs == metadata.flip_pairs(model.config.num_labels)
    golden = load_golden("case4_inference_topdown.npz")
    inputs = processor(astronaut, boxes=[boxes.tolist()], return_flipped_pixel_values=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
        outputs_flipped = model(pixel_values=inputs["pixel_values_flipped"], flip_pairs=model.config.flip_pairs)
    people = processor.post_process_pose_estimation(outputs, [boxes.tolist()], outputs_flipped=outputs_flipped)[0]
    merged = (0.5 * (outputs.heatmaps + outputs_flipped.heatmaps)).numpy()
    assert_well_conditioned_keypoints_close(people, merged, golden[f"{name}.keypoints_image"])
    scores = np.stack([person["scores"].numpy() for person in people])
    np.testing.assert_allclose(scores, golden[f"{name}.scores"], rtol=0, atol=SCORE_ATOL)
    if name == "pose17":  # box 0 without the flip test
        single = SapiensPoseEstimatorOutput(heatmaps=outputs.heatmaps[:1])
        person = processor.post_process_pose_estimation(single, [boxes[:1].tolist()])[0]
        assert_well_conditioned_keypoints_close(person, single.heatmaps.numpy(), decode["model17.plain.keypoints_image"])
        np.testing.assert_allclose(person[0]["scores"].numpy(), decode["model17.plain.scores"][0], atol=SCORE_ATOL)


# ---------------------------------------------------------------------------------------------------------------
# Segmentation, depth, normals (case 5)
# ---------------------------------------------------------------------------------------------------------------

CASE5 = "case5_postprocess.safetensors"


@pytest.fixture(scope="module")
def case5():
    golden = load_golden(CASE5)
    image = load_golden("images.npz")["case5_ori_rgb"]
    pixel_values = SapiensImageProcessorPil()(image, return_tensors="pt")["pixel_values"]
    return golden, image.shape[:2], pixel_values


def run_golden_model(name: str, pixel_values):
    model = convert_original_checkpoint(golden_weights(name), num_attention_heads=arch(name)["H"])
    with torch.no_grad():
        return model(pixel_values=pixel_values)


def test_segmentation_end_to_end_matches_golden(case5, processor):
    golden, size, pixel_values = case5
    outputs = run_golden_model("seg", pixel_values)
    assert_matches_golden(outputs.logits, CASE5, "seg.raw")
    result = processor.post_process_semantic_segmentation(outputs, [size], return_segmentation_scores=True)[0]
    scores = result["segmentation_scores"]
    assert scores.shape == (28, *size)
    assert_matches_golden(scores[None], CASE5, "seg.logits_resized")
    expected = golden["seg.pred_sem_seg"].long()
    mismatch = result["segmentation"] != expected
    if mismatch.any():  # only near-ties may flip
        top2 = scores.topk(2, dim=0).values
        assert (top2[0] - top2[1])[mismatch].max() < 1e-4
    assert torch.equal(processor.post_process_semantic_segmentation(outputs, [size])[0], result["segmentation"])
    assert processor.post_process_semantic_segmentation(outputs)[0].shape == (1024, 768)


def test_depth_end_to_end_matches_golden(case5, processor):
    golden, size, pixel_values = case5
    outputs = run_golden_model("depth", pixel_values)
    assert_matches_golden(outputs.predicted_depth[:, None], CASE5, "depth.raw")
    depth = processor.post_process_depth_estimation(outputs, [size])[0]["predicted_depth"]
    assert_matches_golden(depth[None], CASE5, "depth.pred")
    # flip averaging, as the original demo's --flip: the mirrored prediction is flipped back first
    mirrored = DepthEstimatorOutput(predicted_depth=outputs.predicted_depth.flip(-1))
    averaged = processor.post_process_depth_estimation(outputs, [size], outputs_flipped=mirrored)[0]["predicted_depth"]
    torch.testing.assert_close(averaged, depth, rtol=0, atol=1e-6)


def test_normal_end_to_end_matches_golden(case5, processor):
    """Unit normals divide by the length, which is small on these random weights (0.003–0.1), so they amplify the
    model's rounding up to 300-fold: they are compared times the reference length (i.e. at the model-output
    tolerance), and as they are where the length is at least 0.05 (most pixels)."""
    golden, size, pixel_values = case5
    outputs = run_golden_model("normal", pixel_values)
    assert_matches_golden(outputs.normals, CASE5, "normal.raw")
    normals = processor.post_process_normal_estimation(outputs, [size])[0]["normals"]
    assert normals.shape == (3, *size)
    compared = 0
    for subset in ("stride4", "window"):
        unnormalized = golden[f"normal.pred_unnormalized.{subset}"][0].permute(1, 2, 0)  # the same pixels
        expected = golden[f"normal.normalized_hwc.{subset}"]
        note = manifest()["files"][CASE5]["tensors"][f"normal.normalized_hwc.{subset}"]["note"]
        actual = normals.permute(1, 2, 0)[subset_slices(note)]
        length = torch.linalg.vector_norm(unnormalized, dim=-1, keepdim=True)
        torch.testing.assert_close(actual * (length + 1e-5), unnormalized, rtol=1e-4, atol=1e-4)
        long = length[..., 0] >= 0.05
        torch.testing.assert_close(actual[long], expected[long], rtol=1e-4, atol=1e-4)
        compared += long.sum().item() / long.numel()
    assert compared / 2 >= 0.5


def test_dense_post_processing_of_stored_outputs(processor):
    """Double resize and normalisation on synthetic outputs: exact shapes, batch handling, errors."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 28, 64, 48, generator=generator)
    maps = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), [(30, 40), (70, 20)])
    assert [m.shape for m in maps] == [(30, 40), (70, 20)]
    raw = torch.randn(1, 3, 64, 48, generator=generator)
    normals = processor.post_process_normal_estimation(SapiensNormalEstimatorOutput(normals=raw), [(33, 21)])[0]
    resized = F.interpolate(F.interpolate(raw, (1024, 768), mode="bilinear"), (33, 21), mode="bilinear")[0]
    resized = resized.permute(1, 2, 0).numpy()
    expected = resized / (np.linalg.norm(resized, axis=-1, keepdims=True) + 1e-5)  # the original demo, in NumPy
    np.testing.assert_allclose(normals["normals"].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="3 target sizes for a batch of 2"):
        processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), [(1, 1)] * 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_outputs_raise_instead_of_decoding(processor, decode, boxes, bad):
    """A NaN or infinite prediction (NaN inputs, fp16 overflow) must not come back as a plausible answer."""
    heatmaps = torch.from_numpy(decode["k17.heatmaps"][:1].copy())
    heatmaps[0, 4, 7, 9] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        processor.post_process_pose_estimation(SapiensPoseEstimatorOutput(heatmaps=heatmaps), [[boxes[0].tolist()]])
    dense = torch.zeros(1, 3, 8, 6)
    dense[0, 1, 2, 3] = bad
    calls = [
        (processor.post_process_semantic_segmentation, SemanticSegmenterOutput(logits=dense)),
        (processor.post_process_depth_estimation, DepthEstimatorOutput(predicted_depth=dense[:, 1])),
        (processor.post_process_normal_estimation, SapiensNormalEstimatorOutput(normals=dense)),
    ]
    for post_process, outputs in calls:
        with pytest.raises(ValueError, match="NaN or infinite"):
            post_process(outputs)
    assert processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=dense[:0])) == []  # no images
