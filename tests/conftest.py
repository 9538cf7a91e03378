"""Fixtures shared by the test files. Helpers that tests import are in helpers.py (tiny configs and models) and
golden_utils.py (the reference outputs in tests/fixtures/)."""

from pathlib import Path

import pytest
import torch
from helpers import save_example_model, save_tiny_detector, save_tiny_model


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _conversion_cache(tmp_path_factory, monkeypatch):
    """Originals converted by a test go to a fresh folder (per test), never into the user's cache."""
    monkeypatch.setenv("SAPIENS_HF_CACHE", str(tmp_path_factory.mktemp("sapiens-hf-cache")))


class _SavedModels:
    """Task -> folder of a model saved on first use and reused by every later test of the session (the weights are
    the same as a fresh build: drawn after torch.manual_seed(0)). Tests only read these folders."""

    def __init__(self, root, save, kind):
        self.root, self.save, self.kind, self.folders = root, save, kind, {}

    def __call__(self, task: str):
        if task not in self.folders:
            self.folders[task] = self.save(task, self.root / task)
        return self.kind(self.folders[task])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """`tiny_model(task)`: the folder (a str, for command lines) of helpers.save_tiny_model's model (pose, seg, depth, normal, encoder;
    v2-pose, v2-segmentation, v2-normal, v2-pointmap, v2-matting: tiny Sapiens2 models)."""
    return _SavedModels(tmp_path_factory.mktemp("tiny-models"), save_tiny_model, str)


@pytest.fixture(scope="session")
def example_model(tmp_path_factory):
    """`example_model(task)`: the folder (a Path) of helpers.save_example_model's model, which the example scripts train."""
    return _SavedModels(tmp_path_factory.mktemp("example-models"), save_example_model, Path)


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory) -> str:
    """The folder (a str) of helpers.save_tiny_detector's RT-DETR: the tests' person detector (no download)."""
    return save_tiny_detector(tmp_path_factory.mktemp("tiny-detector") / "rtdetr")
