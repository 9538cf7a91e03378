"""Building the golden tiny models and comparing outputs with the stored subsets and statistics
(tests/fixtures/README.md §2, §4)."""

import hashlib
import json
from functools import cache

import numpy as np
import torch
from conftest import golden_path, load_golden, normalize, random_image, recipe


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
