"""Bounded memory for large images: the resize of dense maps to the image size in bands of rows, and images / target
sizes above `max_image_pixels` refused before any work.

Each band samples the same points as one F.interpolate call of the whole map but computes them in other steps (the
width resize of the rows it reads, then the weighted sum of two rows, at source coordinates computed in float64 where
F.interpolate rounds them to float32). So the bands are compared with F.interpolate within what that rounding allows
(`tolerance`), not bit for bit, and segmentation labels by how many agree: at least 99.99 %, as only near-ties of two
classes can flip."""

import random

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

import sapiens_hf.image_processing_sapiens as module
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil, _bilinear_bands
from sapiens_hf.modeling_sapiens import SapiensNormalEstimatorOutput


def interpolate(maps, size):
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def tolerance(maps) -> float:
    """How far a bilinear resize of `maps` `(channels, h, w)` in float32 may be from another that samples the same
    points: a source coordinate near h is rounded to a multiple of 2^-24·h (F.interpolate, in each direction), which
    moves a value by up to that much times the largest step between neighbouring source values; plus 1e-5 relative
    for the float32 arithmetic."""
    steps = [maps.diff(dim=dim).abs().max().item() if maps.shape[dim] > 1 else 0.0 for dim in (1, 2)]
    return 2**-23 * max(maps.shape[1:]) * max(steps) + 1e-5 * maps.abs().max().item()


def assert_close(actual, expected, source):
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance(source))


def banded(maps, size, rows_per_band):
    bands = list(_bilinear_bands(maps, size, rows_per_band))
    assert [start for start, _, _ in bands] == list(range(0, size[0], rows_per_band))
    assert bands[-1][1] == size[0]
    return torch.cat([band for _, _, band in bands], dim=1)


@pytest.mark.slow
def test_banded_resize_matches_f_interpolate():
    rng = random.Random(0)
    cases = [((1024, 768), (600, 450)), ((1024, 768), (1, 700)), ((1024, 768), (5, 129)), ((1024, 768), (3001, 127))]
    cases += [((7, 5), (1, 200)), ((1, 9), (300, 11)), ((300, 2), (301, 3)), ((1024, 768), (1024, 131))]
    cases += [
        ((rng.randint(1, 300), rng.randint(1, 300)), (rng.randint(1, 600), rng.randint(1, 600))) for _ in range(20)
    ]
    for (height, width), size in cases:  # up- and down-scaling, odd sizes, 1-row outputs, equal heights
        channels = 1 if height * width > 10**5 else rng.choice((1, 2, 3, 28))
        maps = torch.randn(channels, height, width) * 10
        expected = interpolate(maps, size)
        for rows in {rng.randint(1, 5), rng.randint(1, size[0])}:
            assert_close(banded(maps, size, rows), expected, maps)


def test_band_boundaries_at_every_position():
    rng = random.Random(1)
    for (height, width), size in [((10, 6), (37, 131)), ((40, 9), (13, 120)), ((5, 5), (5, 140)), ((3, 4), (1, 129))]:
        maps = torch.randn(2, height, width)
        expected = interpolate(maps, size)
        for rows in range(1, size[0] + 1):
            assert_close(banded(maps, size, rows), expected, maps)
        maps = torch.randn(1, height, width).exp() * rng.choice((1e-3, 1, 1e4))
        assert_close(banded(maps, size, 3), interpolate(maps, size), maps)


def test_bands_stay_within_their_size():
    maps = torch.randn(28, 64, 48)
    sizes = [tuple(band.shape) for _, _, band in _bilinear_bands(maps, (200, 4000))]
    assert len(sizes) > 1 and all(np.prod(shape) <= module._BAND_ELEMENTS for shape in sizes), sizes


@pytest.fixture
def small_bands(monkeypatch):
    """Band every target size, in bands of a few rows."""
    monkeypatch.setattr(module, "BANDED_RESIZE_MIN_PIXELS", 0)
    monkeypatch.setattr(module, "_BAND_ELEMENTS", 5000)


SIZES = [(517, 389), (1, 700), (97, 1301), (1300, 131)]


@pytest.mark.slow
def test_post_processing_in_bands_matches_one_resize(small_bands):
    processor = SapiensImageProcessorPil(size={"height": 64, "width": 48})
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(SIZES), 28, 32, 24, generator=generator) * 5
    depth = torch.randn(len(SIZES), 32, 24, generator=generator)
    normals = torch.randn(len(SIZES), 3, 32, 24, generator=generator)

    def unbanded(maps, size):  # the processor's two resizes, each one F.interpolate call
        return interpolate(interpolate(maps, (64, 48)), size)

    labels = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), SIZES)
    scored = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), SIZES, True)
    depths = processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), SIZES)
    units = processor.post_process_normal_estimation(SapiensNormalEstimatorOutput(normals=normals), SIZES)
    agree = total = 0
    for index, size in enumerate(SIZES):
        scores = unbanded(logits[index], size)
        assert labels[index].dtype == torch.int64 and labels[index].shape == size
        agree += (labels[index] == scores.argmax(dim=0)).sum().item()
        total += labels[index].numel()
        assert_close(scored[index]["segmentation_scores"], scores, interpolate(logits[index], (64, 48)))
        assert torch.equal(scored[index]["segmentation"], labels[index])  # argmax of the same bands
        source = interpolate(depth[index][None], (64, 48))
        assert_close(depths[index]["predicted_depth"], unbanded(depth[index][None], size)[0], source)
        expected = unbanded(normals[index], size)
        expected = expected / (torch.linalg.vector_norm(expected, dim=0, keepdim=True) + 1e-5)
        source = interpolate(normals[index], (64, 48))  # a unit normal moves by the raw one's error over its length
        assert_close(units[index]["normals"], expected, source / source.norm(dim=0).min())
    assert agree >= 0.9999 * total, (agree, total)


def test_target_sizes_above_the_limit_are_refused_before_any_work():
    processor = SapiensImageProcessorPil()
    assert processor.max_image_pixels == 100_000_000
    logits = SemanticSegmenterOutput(logits=torch.zeros(1, 28, 4, 3))
    depth = DepthEstimatorOutput(predicted_depth=torch.zeros(1, 4, 3))
    normals = SapiensNormalEstimatorOutput(normals=torch.zeros(1, 3, 4, 3))
    for method, outputs in [
        (processor.post_process_semantic_segmentation, logits),
        (processor.post_process_depth_estimation, depth),
        (processor.post_process_normal_estimation, normals),
    ]:
        with pytest.raises(ValueError, match=r"12000×12000 = 144\.0 megapixels.*max_image_pixels = 100,000,000"):
            method(outputs, target_sizes=[(12000, 12000)])
    processor.max_image_pixels = 10
    with pytest.raises(ValueError, match="4×3"):
        processor.post_process_semantic_segmentation(logits, [(4, 3)], return_segmentation_scores=True)
    processor.max_image_pixels = None  # no limit
    assert processor.post_process_depth_estimation(depth, [(4, 3)])[0]["predicted_depth"].shape == (4, 3)


def test_images_above_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    PIL.Image.new("RGB", (40, 30)).save(path)
    processor = SapiensImageProcessorPil(max_image_pixels=1000)

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    with monkeypatch.context() as patch:
        patch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(ValueError, match=r"'.*wide\.png' is 30×40 = 0\.0 megapixels.*max_image_pixels = 1,000"):
            processor(str(path))
    for image in (PIL.Image.open(path), np.zeros((30, 40, 3), np.uint8), torch.zeros(3, 30, 40)):
        with pytest.raises(ValueError, match="30×40"):
            processor(image)
        with pytest.raises(ValueError, match="30×40"):
            SapiensImageProcessorPil()(image, max_image_pixels=1199)
        assert SapiensImageProcessorPil()(image, max_image_pixels=1200)["pixel_values"].shape == (1, 3, 1024, 768)
    with pytest.raises(ValueError, match="max_image_pixels must be a positive integer"):
        processor(np.zeros((3, 4, 3), np.uint8), max_image_pixels=0)
