"""The reference ("golden") outputs of the original implementation in tests/fixtures/: reading them (the weight
recipe, the images), building the golden tiny models' inputs and comparing outputs with the stored subsets and
statistics (tests/fixtures/README.md §1, §2, §4). A helpers module, not a test file; make_fixtures.py imports it too."""

import hashlib
import json
import os
import zlib
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


# Another set made by tests/fixtures/make_fixtures.py can be tested by pointing SAPIENS_FIXTURES_DIR at it.
GOLDEN_DIR = Path(os.environ.get("SAPIENS_FIXTURES_DIR", Path(__file__).resolve().parent / "fixtures"))

# ImageNet mean/std on 0-255 RGB, as the original data preprocessors.
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def recipe(seed, name, shape, offset=0.0, amp=1.0, u8=False):
    """The integer-hash generator of tests/fixtures/README.md §1 (weights and random images)."""
    n = int(np.prod(shape))
    key = np.uint64(((zlib.crc32(name.encode()) & 0xFFFFFFFF) << 32) | (seed & 0xFFFFFFFF))
    with np.errstate(over="ignore"):
        z = key + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    if u8:
        return (z >> np.uint64(56)).astype(np.uint8).reshape(shape)
    v = (2.0 * (z >> np.uint64(40)).astype(np.float64) + 1.0 - 2.0**24) / 2.0**24
    return (offset + amp * v).astype(np.float32).reshape(shape)


def normalize(rgb_hwc: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB -> normalised float32 CHW, exactly as tests/fixtures/README.md §2."""
    return (torch.from_numpy(np.ascontiguousarray(rgb_hwc)).permute(2, 0, 1).float() - MEAN) / STD


def golden_path(name: str) -> Path:
    path = GOLDEN_DIR / name
    if not path.exists():
        pytest.fail(f"reference file {path} is missing (see tests/fixtures/README.md)")
    return path


@cache
def _manifest_files() -> dict:
    return json.loads(golden_path("manifest.json").read_text())["files"]


def load_golden(name: str) -> dict:
    """A reference file of tests/fixtures/README.md §6 by its name there: .safetensors as torch tensors, .npz as
    numpy arrays. Weights are made by the recipe and checked against their sha256; images are read from PNG."""
    entry = _manifest_files()[name]
    if entry.get("generated_from_recipe"):
        tensors = {}
        for key, spec in entry["tensors"].items():
            array = recipe(spec["recipe"]["seed"], key, tuple(spec["shape"]), spec["recipe"]["offset"], spec["recipe"]["amp"])
            assert hashlib.sha256(array.tobytes()).hexdigest() == spec["sha256"], f"recipe differs for {name}: {key}"
            tensors[key] = torch.from_numpy(array)
        return tensors
    if name == "images.npz":
        return {key: cv2.imread(str(golden_path(file)))[..., ::-1].copy() for key, (_, _, file) in entry["arrays"].items()}
    path = golden_path(name)
    if path.suffix == ".npz":
        return dict(np.load(path))
    from safetensors.torch import load_file

    return load_file(path)


def random_image(seed: int = 1000, shape=(1024, 768, 3)) -> np.ndarray:
    return recipe(seed, "input_random_image", shape, u8=True)


ATOL = RTOL = 1e-4  # tests/fixtures/README.md §4: parity thresholds for features and head outputs
TASK_OF = {"pose17": "pose", "pose308": "pose", "seg": "segmentation", "depth": "depth", "normal": "normal"}


@cache
def manifest() -> dict:
    return json.loads(golden_path("manifest.json").read_text())


def arch(name: str) -> dict:
    return manifest()["arch"][name]


def golden_weights(name: str) -> dict[str, torch.Tensor]:
    return load_golden(f"weights_{name}.safetensors")


def fullwidth_weights(name: str) -> dict[str, torch.Tensor]:
    """Regenerates the full-head-width weights from the recipe and checks them against the published sha256."""
    table = json.loads(golden_path("fullwidth_weights_sha256.json").read_text())[name]
    weights = {}
    for key, spec in table.items():
        array = recipe(spec["seed"], key, tuple(spec["shape"]), spec["offset"], spec["amp"])
        assert hashlib.sha256(array.tobytes()).hexdigest() == spec["sha256"], f"recipe mismatch for {key}"
        weights[key] = torch.from_numpy(array)
    return weights


def images() -> dict[str, np.ndarray]:
    return load_golden("images.npz")


def pose_batch() -> torch.Tensor:
    seed = manifest()["seed"]
    return torch.stack([normalize(images()["pose_crop_box0_rgb"]), normalize(random_image(seed))])


def seg_batch() -> torch.Tensor:
    seed = manifest()["seed"]
    return torch.stack([normalize(images()["seg_input_astronaut_rgb"]), normalize(random_image(seed))])


def batch_for(name: str) -> torch.Tensor:
    return pose_batch() if name.startswith("pose") else seg_batch()


def subset_slices(note: str) -> tuple[slice, ...]:
    """The part of the full tensor a subset holds, from its manifest note: '... X[:, :, ::16, 29:37]'."""
    inside = note[note.index("X[") + 2 : note.rindex("]")]
    return tuple(slice(*[int(b) if b.strip() else None for b in part.split(":")]) for part in inside.split(","))


def assert_matches_golden(output: torch.Tensor, file: str, prefix: str, atol: float = ATOL, rtol: float = RTOL):
    """Compares a full output with every stored form of `prefix` in a reference file: the full tensor, subsets
    (`prefix.<kind>` whose note names the slice `X[...]`), batch elements (`prefix.bN`) and the statistics
    [sum, sum of squares, min, max] over the trailing axes (`prefix.stats`). Returns how many were compared."""
    golden = load_golden(file)
    notes = manifest()["files"][file]["tensors"]
    output = output.detach().double()
    checked = 0
    for key, expected in golden.items():
        if key != prefix and not (key.startswith(prefix + ".") and "." not in key[len(prefix) + 1 :]):
            continue
        kind, expected = key[len(prefix) + 1 :], expected.double()
        if kind == "stats":
            flat = output.reshape(*output.shape[: expected.ndim - 1], -1)
            actual = torch.stack([flat.sum(-1), (flat**2).sum(-1), flat.amin(-1), flat.amax(-1)], dim=-1)
            sum_tol = 1e-4 * expected[..., 1].sqrt() + atol  # sums cancel: absolute, scaled by the norm (§4)
            assert ((actual[..., 0] - expected[..., 0]).abs() <= sum_tol).all(), f"{key}: sums differ"
            torch.testing.assert_close(actual[..., 1:], expected[..., 1:], rtol=1e-5, atol=atol, msg=f"{key} stats")
        elif kind == "":
            torch.testing.assert_close(output, expected, atol=atol, rtol=rtol, msg=lambda m, key=key: f"{key}: {m}")
        elif kind.startswith("b") and kind[1:].isdigit():
            index = int(kind[1:])
            torch.testing.assert_close(output[index : index + 1], expected, atol=atol, rtol=rtol, msg=lambda m, key=key: f"{key}: {m}")
        elif "X[" in notes.get(key, {}).get("note", ""):
            actual = output[subset_slices(notes[key]["note"])]
            torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m, key=key: f"{key}: {m}")
        else:
            continue
        checked += 1
    assert checked, f"no reference tensors with prefix {prefix!r} in {file}"
    return checked



def well_conditioned_keypoints(heatmaps: np.ndarray, noise: float = 3e-6, movement: float = 2.5e-4,
                               input_size: tuple[int, int] = (768, 1024)) -> np.ndarray:
    """(N, K) mask of the keypoints whose UDP + DARK decoding is insensitive to rounding in the heatmaps.

    The tiny models' random weights give flat heatmaps: two peaks can differ by less than rounding, so the argmax
    jumps, and DARK's Hessian is near-singular, so its sub-pixel step amplifies last-bit differences a hundredfold.
    Different CPUs' kernels change model outputs by up to ~3e-6 (measured with torch's AVX-512, AVX2 and oneDNN/MKL
    paths), which moves such keypoints by far more than 1e-3 px, for us as for the original. A keypoint counts as
    well conditioned when four perturbations of its maps by uniform noise of that size move it by less than a
    quarter of the 1e-3 px tolerance (crop pixels); tests compare those and bound how many are not.
    """
    from sapiens_hf.geometry import decode_udp_heatmaps

    heatmaps = np.asarray(heatmaps, np.float32)
    reference, _ = decode_udp_heatmaps(heatmaps, input_size=input_size)
    rng = np.random.default_rng(0)
    worst = np.zeros(reference.shape[:2])
    for _ in range(4):
        perturbed = heatmaps + rng.uniform(-noise, noise, heatmaps.shape).astype(np.float32)
        keypoints, _ = decode_udp_heatmaps(perturbed, input_size=input_size)
        worst = np.maximum(worst, np.abs(keypoints - reference).max(-1))
    return worst < movement
