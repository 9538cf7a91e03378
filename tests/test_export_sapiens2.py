"""Exports of Sapiens2 models (transformers' own classes): every task's graph — with all the outputs its
post-processing reads — equals the eager model, follows other input sizes where the model does (RoPE), runs in the
pipelines and `predict` with the Sapiens2 processor, and is refused by the torch-free runtime's Sapiens processing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from golden_utils import well_conditioned_keypoints
from helpers import sapiens2_config
from transformers import pipeline

from sapiens_hf import Sapiens2ImageProcessorPil
from sapiens_hf.cli import SAMPLE_IMAGE, main
from sapiens_hf.export import MANIFEST, ExportError, export
from sapiens_hf.image_io import read_image
from sapiens_hf.runtime import ExportedModel
from sapiens_hf.tasks import get_task


pytest.importorskip("onnxruntime")
V2_TASKS = ("pose", "segmentation", "normal", "pointmap", "matting")


def eager_model(folder, task):
    return getattr(transformers, get_task(task).v2_model_class).from_pretrained(folder).eval()


def assert_graph_equals_eager(runner, model, task, size, batch=2):
    """Every output of the graph against the eager model's on a fresh input: at most 1e-4 × the output's scale (its
    largest magnitude, at least 1), the rule of the Sapiens exports' tests."""
    pixel_values = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eager = model(pixel_values=pixel_values)
    outputs = runner.run_outputs(pixel_values.numpy())
    assert list(outputs) == list(get_task(task).outputs)
    for name, actual in outputs.items():
        expected = getattr(eager, name).numpy()
        assert actual.shape == expected.shape, name
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()), err_msg=name)


@pytest.mark.parametrize("task", V2_TASKS)
@pytest.mark.parametrize("format", ["onnx", "exported-program"])
def test_every_sapiens2_task_exports_equal_to_eager(task, format, tmp_path, tiny_model):
    folder = tiny_model(f"v2-{task}")
    manifest = export(folder, tmp_path / "out", format=format, dynamic_batch=True)
    assert manifest["family"] == "Sapiens2" and manifest["outputs"] == list(get_task(task).outputs)
    assert manifest["model"]["class"] == get_task(task).v2_model_class
    assert json.loads((tmp_path / "out" / MANIFEST).read_text()) == manifest
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "sapiens2"
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["image_processor_type"] == (
        "Sapiens2ImageProcessor")
    if task == "pose":
        assert manifest["labels"][0] == "nose" and manifest["flip_pairs"][0] == [1, 2]
    runner = ExportedModel(tmp_path / "out", trust_remote_code=True)  # a program: written by this test
    assert_graph_equals_eager(runner, eager_model(folder, task), task, (128, 96))


def test_a_sapiens2_graph_of_dynamic_size_follows_other_input_sizes(tmp_path, tiny_model):
    """RoPE computes its angles from the patch grid of the input: one graph serves other sizes (multiples of the
    patch) and equals the eager model there."""
    folder = tiny_model("v2-segmentation")
    manifest = export(folder, tmp_path / "out", dynamic_size=True)
    assert set(manifest["max_abs_difference_to_eager"]) == {"1x128x96", "1x160x112"}  # checked at a second size
    runner, model = ExportedModel(tmp_path / "out"), eager_model(folder, "segmentation")
    for size in [(64, 48), (192, 160)]:
        assert_graph_equals_eager(runner, model, "segmentation", size, batch=1)


def test_a_pointmap_model_refuses_dynamic_size_with_the_reason(tmp_path, tiny_model, capsys):
    """Its scale head flattens the feature map into a linear layer of fixed width: refused before anything is
    written (a usage error on the command line)."""
    folder = tiny_model("v2-pointmap")
    with pytest.raises(ExportError, match="scale head is a linear layer"):
        export(folder, tmp_path / "out", dynamic_size=True)
    assert main(["export", folder, str(tmp_path / "out"), "--dynamic-size", "--quiet"]) == 2
    assert "scale head is a linear layer" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", V2_TASKS)
def test_the_pipelines_run_a_sapiens2_export_folder_as_the_eager_model(task, tmp_path, tiny_model):
    folder = tiny_model(f"v2-{task}")
    export(folder, tmp_path / "export")  # batch 1: the pipelines' batches are split
    expected = pipeline(f"sapiens-{task}", model=folder)
    exported = pipeline(f"sapiens-{task}", model=str(tmp_path / "export"))
    assert isinstance(exported.image_processor, Sapiens2ImageProcessorPil)
    assert exported.model.exported_from == get_task(task).v2_model_class
    image = read_image(SAMPLE_IMAGE)
    if task == "pose":
        boxes = [[40, 20, 300, 480], [200, 60, 250, 400]]
        crops = expected.image_processor(image, boxes=[boxes], return_tensors="pt")["pixel_values"]
        pairs = torch.as_tensor(expected.flip_pairs)
        with torch.no_grad():  # the crops' heatmaps, and the mirrored crops' flipped back by each model (flip test)
            maps = [[pipe.model(pixel_values=crops).heatmaps.numpy(),
                     pipe.model(pixel_values=crops.flip(-1), flip_pairs=pairs).heatmaps.numpy()]
                    for pipe in (expected, exported)]
        np.testing.assert_allclose(np.stack(maps[1]), np.stack(maps[0]), rtol=0, atol=1e-4)
        stable = well_conditioned_keypoints(maps[0][0], input_size=(96, 128))
        assert stable.any()
        for flip_test in (False, True):
            people = zip(expected(image, boxes=boxes, flip_test=flip_test),
                         exported(image, boxes=boxes, flip_test=flip_test, batch_size=2), stable, strict=True)
            for person, from_export, keep in people:
                np.testing.assert_allclose(from_export["scores"], person["scores"], rtol=0, atol=1e-4)
                assert from_export["bbox_xywh"].tolist() == person["bbox_xywh"].tolist()
                if not flip_test:  # image pixels, where the decoding is well conditioned (tests/test_export.py)
                    np.testing.assert_allclose(from_export["keypoints"][keep], person["keypoints"][keep], rtol=0,
                                               atol=1e-2)
        return
    mirrored = np.ascontiguousarray(image[:, ::-1])
    whole = {"mask": False} if task == "normal" else {}  # the person mask: tests/test_pipelines.py
    results = zip(expected([image, mirrored], **whole), exported([image, mirrored], batch_size=2, **whole), strict=True)
    for result, from_export in results:
        if task == "segmentation":
            assert (result["segmentation"] == from_export["segmentation"]).float().mean() > 0.999
            continue
        for key, value in result.items():
            if isinstance(value, torch.Tensor):  # unit normals: dividing by a short raw vector enlarges differences
                tolerance = (5e-4 if key == "normals" else 1e-4) * max(1.0, value.abs().max())
                np.testing.assert_allclose(from_export[key], value, rtol=0, atol=tolerance, err_msg=key)
            elif isinstance(value, float):  # a pointmap's scale
                assert from_export[key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_predict_with_a_sapiens2_export_folder_equals_the_eager_model(tmp_path, tiny_model):
    """The pointmap graph's two outputs reach predict's files: the map and the PLY beside it."""
    folder = tiny_model("v2-pointmap")
    export(folder, tmp_path / "export")
    for model, out in ((folder, "eager"), (str(tmp_path / "export"), "exported")):
        assert main(["predict", "--task", "pointmap", "--model", model, str(SAMPLE_IMAGE), "--output",
                     str(tmp_path / out), "--quiet"]) == 0
    stem = SAMPLE_IMAGE.stem
    expected = np.load(tmp_path / "eager" / f"{stem}_pointmap.npy")
    actual = np.load(tmp_path / "exported" / f"{stem}_pointmap.npy")
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))
    assert (tmp_path / "exported" / f"{stem}_pointmap.ply").is_file()


def test_the_torch_free_runtime_refuses_to_process_a_sapiens2_graph(tmp_path, tiny_model):
    """Its Sapiens processing (uint8 UDP warps, two resizes) is not Sapiens2's: one line naming what runs it instead,
    before the image is read; the raw graph still runs."""
    export(tiny_model("v2-normal"), tmp_path / "out")
    runner = ExportedModel(tmp_path / "out")
    with pytest.raises(ValueError, match=r"^This is a Sapiens2 export, .* sapiens-normal pipeline or sapiens-hf "
                                         r"predict$"):
        runner(tmp_path / "no-such-image.jpg")
    assert runner.run(np.zeros((1, 3, 128, 96), np.float32)).shape[:2] == (1, 3)


def test_an_export_and_a_config_of_other_generations_or_fields_are_refused(tmp_path, tiny_model, capsys):
    """A config.json of the other generation beside a graph would pick the other processor: refused by name. A
    Sapiens-only config field given to a Sapiens2 model, or a model that is no task model, is refused before
    anything is written (exit code 2)."""
    from sapiens_hf.exported_model import SapiensExportedModel
    from sapiens_hf.modeling_sapiens import WrongModelError

    folder = tiny_model("v2-matting")
    export(folder, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    (tmp_path / "out" / "config.json").write_text(json.dumps({**config, "model_type": "sapiens"}))
    with pytest.raises(WrongModelError, match="holds a Sapiens2 graph beside a Sapiens config.json"):
        SapiensExportedModel.from_pretrained(tmp_path / "out")
    assert main(["export", folder, str(tmp_path / "other"), "--config", "use_cls_token=true", "--quiet"]) == 2
    assert "Unknown config override 'use_cls_token'" in capsys.readouterr().err
    encoder = transformers.Sapiens2Model(sapiens2_config("matting"))
    with pytest.raises(ExportError, match="A Sapiens2Model is not exported"):
        export(encoder, tmp_path / "encoder")
    assert not (tmp_path / "other").exists() and not (tmp_path / "encoder").exists()


def test_the_runtime_example_refuses_a_sapiens2_export_in_one_line(tmp_path, tiny_model):
    export(tiny_model("v2-segmentation"), tmp_path / "out")
    script = Path(__file__).resolve().parents[1] / "examples" / "run_exported.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), str(SAMPLE_IMAGE)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "This is a Sapiens2 export" in result.stderr.strip().splitlines()[-1]
