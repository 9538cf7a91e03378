"""Bounded memory for large images: the resize of dense maps to the image size in bands of rows is bit-identical to
one F.interpolate call, and images / target sizes above `max_image_pixels` are refused before any work."""

import random
from fractions import Fraction

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

import sapiens_hf.image_processing_sapiens as module
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil, _bilinear_bands, _fma
from sapiens_hf.modeling_sapiens import SapiensNormalEstimatorOutput


def interpolate(maps, size):
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def banded(maps, size, rows_per_band):
    bands = list(_bilinear_bands(maps, size, rows_per_band))
    assert [start for start, _, _ in bands] == list(range(0, size[0], rows_per_band))
    assert bands[-1][1] == size[0]
    return torch.cat([band for _, _, band in bands], dim=1)


@pytest.fixture
def two_threads():
    """PyTorch resizes 3-channel maps on one thread with another kernel (as for outputs with height + width
    <= 128); the banded resize reproduces the generic kernel, used everywhere else."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_banded_resize_is_bit_identical_to_f_interpolate():
    rng = random.Random(0)
    cases = [((1024, 768), (600, 450)), ((1024, 768), (1, 700)), ((1024, 768), (5, 129)), ((1024, 768), (3001, 127))]
    cases += [((7, 5), (1, 200)), ((1, 9), (300, 11)), ((300, 2), (301, 3)), ((1024, 768), (1024, 131))]
    cases += [
        ((rng.randint(1, 300), rng.randint(1, 300)), (rng.randint(1, 600), rng.randint(130, 600))) for _ in range(20)
    ]
    for (height, width), size in cases:  # up- and down-scaling, odd sizes, 1-row outputs, equal heights
        channels = 1 if height * width > 10**5 else rng.choice((1, 2, 28))
        maps = torch.randn(channels, height, width) * 10
        expected = interpolate(maps, size)
        for rows in {rng.randint(1, 5), rng.randint(1, size[0])}:
            assert torch.equal(banded(maps, size, rows), expected), ((height, width), size, rows)


def test_band_boundaries_at_every_position():
    rng = random.Random(1)
    for (height, width), size in [((10, 6), (37, 131)), ((40, 9), (13, 120)), ((5, 5), (5, 140)), ((3, 4), (1, 129))]:
        maps = torch.randn(2, height, width)
        expected = interpolate(maps, size)
        for rows in range(1, size[0] + 1):
            assert torch.equal(banded(maps, size, rows), expected), ((height, width), size, rows)
        maps = torch.randn(1, height, width).exp() * rng.choice((1e-3, 1, 1e4))
        assert torch.equal(banded(maps, size, 3), interpolate(maps, size))


def exact_fma(a, b, c):
    """float32 a * b + c, rounded once (to nearest, ties to even), with exact rational arithmetic."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    guess = np.float32(float(exact))
    candidates = [guess, np.nextafter(guess, np.float32(np.inf)), np.nextafter(guess, np.float32(-np.inf))]
    return min(candidates, key=lambda x: (abs(Fraction(float(x)) - exact), int(x.view(np.int32)) & 1))


def test_fma_rounds_once():
    # a * b = 2^-24 + 7 * 2^-71: 1 + a * b lies just above a float32 midpoint; float64 rounding would land on it
    a, b = np.float32(9010893 * 2.0**-23), np.float32(15618595 * 2.0**-48)
    for sign in (1, -1):
        t = [torch.tensor([v], dtype=torch.float32) for v in (sign * a, b, sign * np.float32(1))]
        assert _fma(*t).item() == sign * (1 + 2.0**-23) == exact_fma(sign * a, b, sign * np.float32(1))
    generator = torch.Generator().manual_seed(0)
    a, b, c = (
        torch.randn(500, generator=generator) * 10.0 ** torch.randint(-8, 8, (500,), generator=generator)
        for _ in range(3)
    )
    expected = [exact_fma(x, y, z) for x, y, z in zip(a.numpy(), b.numpy(), c.numpy())]
    assert torch.equal(_fma(a, b, c), torch.tensor(np.array(expected)))


@pytest.fixture
def small_bands(monkeypatch):
    """Band every target size, in bands of a few rows."""
    monkeypatch.setattr(module, "BANDED_RESIZE_MIN_PIXELS", 0)
    monkeypatch.setattr(module, "_BAND_ELEMENTS", 5000)


SIZES = [(517, 389), (1, 700), (97, 1301), (1300, 131)]


@pytest.mark.slow
def test_post_processing_in_bands_matches_one_resize(small_bands, two_threads):
    processor = SapiensImageProcessorPil(size={"height": 64, "width": 48})
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(SIZES), 28, 32, 24, generator=generator) * 5
    depth = torch.randn(len(SIZES), 32, 24, generator=generator)
    normals = torch.randn(len(SIZES), 3, 32, 24, generator=generator)

    def unbanded(maps, size):  # the processor's computation before banding
        return interpolate(interpolate(maps, (64, 48)), size)

    labels = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), SIZES)
    scored = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), SIZES, True)
    depths = processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), SIZES)
    units = processor.post_process_normal_estimation(SapiensNormalEstimatorOutput(normals=normals), SIZES)
    for index, size in enumerate(SIZES):
        scores = unbanded(logits[index], size)
        assert labels[index].dtype == torch.int64 and torch.equal(labels[index], scores.argmax(dim=0))
        assert torch.equal(scored[index]["segmentation_scores"], scores)
        assert torch.equal(scored[index]["segmentation"], labels[index])
        assert torch.equal(depths[index]["predicted_depth"], unbanded(depth[index][None], size)[0])
        expected = unbanded(normals[index], size)
        expected = expected / (torch.linalg.vector_norm(expected, dim=0, keepdim=True) + 1e-5)
        assert torch.equal(units[index]["normals"], expected)


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
