"""Shared test helpers: the golden reference data of the original implementation and its weight recipe."""

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("SAPIENS_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden"))

# ImageNet mean/std on 0-255 RGB, as the original data preprocessors.
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def recipe(seed, name, shape, offset=0.0, amp=1.0, u8=False):
    """The integer-hash generator of ../shared/golden/README.md §1 (weights and random images)."""
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
    """uint8 HWC RGB -> normalised float32 CHW, exactly as the golden README §2."""
    return (torch.from_numpy(np.ascontiguousarray(rgb_hwc)).permute(2, 0, 1).float() - MEAN) / STD


def golden_path(name: str) -> Path:
    path = GOLDEN_DIR / name
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; set SAPIENS_GOLDEN_DIR to the shared/golden folder")
    return path


def load_golden(name: str) -> dict:
    """A golden .safetensors (as torch tensors) or .npz (as numpy arrays) file."""
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
