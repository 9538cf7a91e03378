"""Shared test helpers: the reference ("golden") outputs of the original implementation in tests/fixtures/ and the
weight recipe (tests/fixtures/README.md)."""

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


REPO_ROOT = Path(__file__).resolve().parents[1]
# Another set made by tests/fixtures/make_fixtures.py can be tested by pointing SAPIENS_FIXTURES_DIR at it.
GOLDEN_DIR = Path(os.environ.get("SAPIENS_FIXTURES_DIR", REPO_ROOT / "tests" / "fixtures"))

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


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _conversion_cache(tmp_path_factory, monkeypatch):
    """Originals converted by a test go to a fresh folder (per test), never into the user's cache."""
    monkeypatch.setenv("SAPIENS_HF_CACHE", str(tmp_path_factory.mktemp("sapiens-hf-cache")))
