"""Building the golden tiny models and comparing outputs with the stored subsets/stats (golden README §2, §4)."""

import hashlib
import json
import re

import numpy as np
import torch

from conftest import GOLDEN_DIR, golden_path, load_golden, normalize, random_image, recipe

ATOL = RTOL = 1e-4  # golden README §4: parity thresholds for features and head outputs
TASK_OF = {"pose17": "pose", "pose308": "pose", "seg": "segmentation", "depth": "depth", "normal": "normal"}


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


def _window(note: str):
    rows, cols = re.search(r"X\[:, :, (\d+:\d+), (\d+:\d+)\]", note).groups()
    return tuple(slice(*map(int, part.split(":"))) for part in (rows, cols))


def assert_matches_golden(output: torch.Tensor, file: str, prefix: str, atol: float = ATOL, rtol: float = RTOL):
    """Compares a (B,C,H,W) output with every stored subset of `prefix` in a golden file; returns how many."""
    golden = load_golden(file)
    notes = manifest()["files"][file]["tensors"]
    output = output.detach().double()
    checked = 0
    for key, expected in golden.items():
        if not key.startswith(prefix + "."):
            continue
        kind = key[len(prefix) + 1 :]
        expected = expected.double()
        if kind.startswith("stride"):
            step = int(kind[len("stride") :])
            actual = output[:, :, ::step, ::step]
        elif kind == "window":
            rows, cols = _window(notes[key]["note"])
            actual = output[:, :, rows, cols]
        elif kind == "stats":
            flat = output.flatten(2)
            actual = torch.stack([flat.sum(-1), (flat**2).sum(-1), flat.amin(-1), flat.amax(-1)], dim=-1)
            sum_tol = 1e-4 * expected[..., 1].sqrt() + atol
            assert ((actual[..., 0] - expected[..., 0]).abs() <= sum_tol).all(), f"{key}: sums differ"
            torch.testing.assert_close(actual[..., 1:], expected[..., 1:], rtol=1e-5, atol=atol, msg=f"{key} stats")
            checked += 1
            continue
        elif kind.startswith("b") and kind[1:].isdigit():
            index = int(kind[1:])
            actual = output[index : index + 1]
        else:
            continue
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{key}: {m}")
        checked += 1
    assert checked, f"no golden tensors with prefix {prefix!r} in {file}"
    return checked


__all__ = ["GOLDEN_DIR"]
