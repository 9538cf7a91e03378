"""`sapiens_hf.export`: ONNX (onnxruntime) and torch.export programs of the encoder and every task model equal the
eager model; dynamic batch; int8 with its accuracy change; unsupported requests fail before any file is written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_utils import well_conditioned_keypoints
from helpers import tiny_config

from sapiens_hf import SapiensModel
from sapiens_hf.export import MANIFEST, ExportError, export
from sapiens_hf.image_io import read_image


pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("task", ["depth", "normal", "pose", "seg"])
@pytest.mark.parametrize("format", ["onnx", "exported-program"])
def test_every_task_exports_equal_to_eager(task, format, tmp_path, tiny_model):
    manifest = export(tiny_model(task), tmp_path / "out", format=format, dynamic_batch=True)
    assert set(manifest["max_abs_difference_to_eager"]) == {"1x128x96", "3x128x96"}
    assert max(manifest["max_abs_difference_to_eager"].values()) <= 1e-4
    assert json.loads((tmp_path / "out" / MANIFEST).read_text()) == manifest
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    if task == "pose":
        assert manifest["labels"][0] == "nose" and manifest["flip_pairs"][0] == [1, 2]
    if format == "onnx":  # the head's transposed convolutions are traced as convolutions (see the next test)
        import onnx

        operators = {node.op_type for node in onnx.load(tmp_path / "out" / "model.onnx").graph.node}
        assert "ConvTranspose" not in operators and "DepthToSpace" in operators


def test_a_transposed_convolution_traced_as_a_convolution_is_the_same_layer():
    """`ConvTranspose2d(4, 2, 1)` as one 2×2 convolution and a pixel shuffle (onnxruntime runs it faster): equal on
    odd sizes and batches, and the model gets its own layers back after tracing."""
    from sapiens_hf.export import _SubPixelConvTranspose, _transposed_convolutions_as_convolutions
    from sapiens_hf.modeling_sapiens import SapiensDecodeHead

    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(6, 5, kernel_size=4, stride=2, padding=1, bias=False)
    hidden = torch.randn(3, 6, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(_SubPixelConvTranspose(deconv)(hidden), deconv(hidden), rtol=0, atol=1e-6)
    head = SapiensDecodeHead(6, [4, 4], [4], 3, 0.0).eval()
    layers = list(head.modules())
    with torch.no_grad():
        expected = head(hidden)
        with _transposed_convolutions_as_convolutions(head):
            assert not any(isinstance(module, torch.nn.ConvTranspose2d) for module in head.modules())
            torch.testing.assert_close(head(hidden), expected, rtol=0, atol=1e-5)
    assert list(head.modules()) == layers


@pytest.mark.slow
def test_the_encoder_exports_and_int8_reports_its_accuracy_change(tiny_model, tmp_path):
    torch.manual_seed(0)
    SapiensModel(tiny_config()).save_pretrained(tmp_path / "encoder")
    assert export(tmp_path / "encoder", tmp_path / "encoder-onnx")["output"] == "last_hidden_state"
    manifest = export(tiny_model("pose"), tmp_path / "pose-onnx", quantize="int8")
    assert (tmp_path / "pose-onnx" / "model.int8.onnx").is_file()
    assert manifest["int8"]["keypoint_error_px_mean"] >= 0 and manifest["int8"]["size_ratio"] < 1
    manifest = export(tiny_model("seg"), tmp_path / "seg-onnx", quantize="int8")
    assert 0 <= manifest["int8"]["pixel_agreement"] <= 1


@pytest.mark.parametrize("opset", [23, 18])
def test_int8_ranges_measured_on_the_eager_model_are_onnxruntimes(opset, tiny_model, tmp_path):
    """The int8 calibration (`linear_ranges`: hooks on the eager model's linear layers, one forward's memory) gives
    the ranges onnxruntime's own calibrator measures on the graph, for the same tensors. At opset 18 attention is
    MatMuls of two activations, from no linear layer: those are named and stay float, and the graph still runs."""
    from onnxruntime.quantization import CalibrationDataReader, create_calibrator

    from sapiens_hf import SapiensForPoseEstimation, SapiensImageProcessorPil
    from sapiens_hf.export import _Graph, calibration_inputs, linear_ranges
    from sapiens_hf.runtime import ExportedModel
    from sapiens_hf.tasks import get_task

    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose")).eval()
    with torch.no_grad():  # biases that are not zero, as trained ones: a MatMul's output range is without them
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_(0, 1, generator=torch.Generator().manual_seed(len(layer.bias)))
    manifest = export(model, tmp_path / "onnx", quantize="int8", opset=opset)
    inputs = calibration_inputs(get_task("pose"), SapiensImageProcessorPil.from_pretrained(tiny_model("pose")))
    ranges, unmatched = linear_ranges(_Graph(model, ("heatmaps",)).eval(), tmp_path / "onnx" / "model.onnx", inputs)

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"pixel_values": pixel_values} for pixel_values in inputs)

        def get_next(self):
            return next(self.batches, None)

    calibrator = create_calibrator(tmp_path / "onnx" / "model.onnx", ["MatMul", "Gemm"],
                                   augmented_model_path=str(tmp_path / "augmented.onnx"))
    calibrator.collect_data(Inputs())
    expected = {name: (float(np.min(data.range_value[0])), float(np.max(data.range_value[1])))
                for name, data in calibrator.compute_data().data.items()}
    layers = model.config.num_hidden_layers
    assert len(unmatched) == (0 if opset == 23 else 2 * layers)  # q·kᵀ and attention·v of each layer
    linear = {name: value for name, value in expected.items() if name in ranges}
    assert len(ranges) == 2 * 4 * layers and len(linear) == len(ranges)  # in and out of qkv, proj, fc1, fc2
    np.testing.assert_allclose(np.array(list(ranges.values())), np.array([linear[name] for name in ranges]),
                               rtol=1e-5, atol=1e-6)
    assert manifest["int8"]["keypoint_error_px_mean"] < 0.1
    int8, fp32 = (np.asarray(ExportedModel(tmp_path / "onnx", int8=int8).run(inputs[0])) for int8 in (True, False))
    assert int8.shape == fp32.shape and np.isfinite(int8).all()


def test_int8_refuses_a_graph_whose_nodes_name_no_layer(tiny_model, tmp_path):
    """Without the exporter's record of each node's module there is nothing to calibrate: one error, not an "int8"
    graph that is the fp32 one."""
    import onnx

    from sapiens_hf import SapiensForPoseEstimation, SapiensImageProcessorPil
    from sapiens_hf.export import _Graph, calibration_inputs, linear_ranges
    from sapiens_hf.tasks import get_task

    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose")).eval()
    export(model, tmp_path / "onnx")
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    for node in graph.graph.node:
        del node.metadata_props[:]
    onnx.save(graph, str(tmp_path / "bare.onnx"))
    inputs = calibration_inputs(get_task("pose"), SapiensImageProcessorPil.from_pretrained(tiny_model("pose")))
    with pytest.raises(ExportError, match="names the linear layer it was traced from"):
        linear_ranges(_Graph(model, ("heatmaps",)).eval(), tmp_path / "bare.onnx", inputs)


def test_unsupported_requests_fail_before_anything_is_written(tiny_model, tmp_path):
    model = tiny_model("depth")
    for request, message in [({"dtype": "bf16"}, "exported-program for bf16"),
                             ({"format": "tflite"}, "Unknown format"),
                             ({"quantize": "int8", "format": "exported-program"}, "fp32 ONNX"),
                             ({"input_size": (100, 96)}, "multiple of the patch size")]:
        with pytest.raises(ExportError, match=message):
            export(model, tmp_path / "out", **request)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="--input-size"):  # the position-table resize is fixed when traced
        export(model, tmp_path / "dynamic", dynamic_size=True)


@pytest.mark.slow
def test_a_bf16_program_and_another_input_size(tiny_model, tmp_path):
    model = tiny_model("normal")
    manifest = export(model, tmp_path / "bf16", format="exported-program", dtype="bf16")
    assert manifest["dtype"] == "bf16" and max(manifest["max_abs_difference_to_eager"].values()) <= 2e-1
    manifest = export(model, tmp_path / "fp16", dtype="fp16")  # for GPU runtimes; checked on onnxruntime's CPU
    assert max(manifest["max_abs_difference_to_eager"].values()) <= 5e-2
    manifest = export(model, tmp_path / "small", input_size=(64, 48))
    assert manifest["input_size"] == [64, 48]
    assert json.loads((tmp_path / "small" / "preprocessor_config.json").read_text())["size"] == {
        "height": 64, "width": 48}
    assert np.isfinite(list(manifest["max_abs_difference_to_eager"].values())).all()


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "run_exported.py"
# Runs a script as on a machine without torch and transformers: importing either fails.
WITHOUT_TORCH = ("import runpy, sys; sys.modules.update(torch=None, transformers=None); sys.argv = sys.argv[1:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
def test_the_runner_gives_the_pipelines_results_without_torch_or_transformers(task, tmp_path, tiny_model):
    """examples/run_exported.py in a fresh process: the ONNX graph with the NumPy/OpenCV pre- and post-processing
    equals the torch pipeline (keypoints within 1e-3 px), in a process where torch and transformers cannot be
    imported."""
    from transformers import pipeline

    import sapiens_hf  # noqa: F401  (registers the pipelines)
    from sapiens_hf.cli import SAMPLE_IMAGE

    model = tiny_model(task)
    export(model, tmp_path / "onnx", dynamic_batch=True)
    command = [sys.executable, "-c", WITHOUT_TORCH, str(EXAMPLE), str(tmp_path / "onnx"), str(SAMPLE_IMAGE)]
    if task == "pose":
        command += ["--box", "40", "20", "300", "480", "--box", "200", "60", "250", "400"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["imported"] == []
    name = {"seg": "segmentation"}.get(task, task)
    expected = pipeline(f"sapiens-{name}", model=model)
    if task == "pose":
        boxes = [[40, 20, 300, 480], [200, 60, 250, 400]]
        people = expected(str(SAMPLE_IMAGE), boxes=boxes)
        # Compared where the decoding is well conditioned (onnxruntime's kernels round differently from torch's;
        # tests/golden_utils.py explains the tiny models' flat heatmaps), and most keypoints must be.
        crops = expected.image_processor(read_image(SAMPLE_IMAGE), boxes=[boxes], return_tensors="pt")
        with torch.no_grad():
            heatmaps = expected.model(pixel_values=crops["pixel_values"]).heatmaps.numpy()
        stable = well_conditioned_keypoints(heatmaps, input_size=(96, 128))
        assert stable.mean() >= 0.5
        for person, runner, keep in zip(people, output["result"], stable, strict=True):
            np.testing.assert_allclose(np.asarray(runner["keypoints"])[keep], person["keypoints"].numpy()[keep],
                                       rtol=0, atol=1e-3)
            np.testing.assert_allclose(runner["scores"], person["scores"].numpy(), rtol=0, atol=1e-4)
    elif task == "seg":
        labels = expected(str(SAMPLE_IMAGE))["segmentation"].numpy()
        assert (np.asarray(output["result"]["segmentation"]) == labels).mean() > 0.999
    elif task == "depth":
        depth = expected(str(SAMPLE_IMAGE), mask=False)["predicted_depth"].numpy()  # the runner: whole maps
        np.testing.assert_allclose(output["result"]["predicted_depth"], depth, rtol=0, atol=1e-4)
    else:
        normals = expected(str(SAMPLE_IMAGE), mask=False)["normals"].numpy()
        np.testing.assert_allclose(output["result"]["normals"], normals, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_the_export_command(tiny_model, tmp_path, capsys):
    from sapiens_hf.cli import main

    model = tiny_model("depth")
    assert main(["export", model, str(tmp_path / "out"), "--dynamic-batch"]) == 0
    assert "largest difference to the eager model" in capsys.readouterr().out
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["export", model, str(tmp_path / "out")]) == 2  # an earlier export is not replaced unasked
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", model, str(tmp_path / "out"), "--overwrite"]) == 0
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert main(["export", model, str(tmp_path / "bf16"), "--dtype", "bf16"]) == 2
    assert "exported-program for bf16" in capsys.readouterr().err and not (tmp_path / "bf16").exists()


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
@pytest.mark.parametrize("format", ["onnx", "exported-program"])
def test_the_pipelines_take_an_export_folder(task, format, tmp_path, tiny_model):
    """`pipeline("sapiens-…", model=export_folder)` runs the graph with the pipeline's own pre- and post-processing:
    the results of the torch model, also for a graph of batch 1 given batches of 2, and with the flip test."""
    from transformers import pipeline

    import sapiens_hf  # noqa: F401  (registers the pipelines)
    from sapiens_hf.cli import SAMPLE_IMAGE

    model = tiny_model(task)
    export(model, tmp_path / "export", format=format)  # batch 1: the pipelines' batches are split
    name = {"seg": "segmentation"}.get(task, task)
    trusted = {} if format == "onnx" else {"trust_remote_code": True}  # a program's loading can unpickle
    expected = pipeline(f"sapiens-{name}", model=model)
    exported = pipeline(f"sapiens-{name}", model=str(tmp_path / "export"), **trusted)
    assert exported.model.config.num_labels == expected.model.config.num_labels
    image = read_image(SAMPLE_IMAGE)
    if task == "pose":
        boxes = [[40, 20, 300, 480], [200, 60, 250, 400]]
        crops = expected.image_processor(image, boxes=[boxes], return_tensors="pt")["pixel_values"]
        for flip_test in (False, True):
            heatmaps = []
            for pipe in (expected, exported):
                with torch.no_grad():
                    maps = pipe.model(pixel_values=crops).heatmaps
                    if flip_test:
                        mirrored = pipe.model(pixel_values=crops.flip(-1), flip_pairs=pipe.flip_pairs).heatmaps
                        maps = 0.5 * (maps + mirrored)
                heatmaps.append(maps.numpy())
            np.testing.assert_allclose(heatmaps[1], heatmaps[0], rtol=0, atol=1e-4)
            # Keypoints compared where the decoding is well conditioned, as in the runner's test above (the flip
            # test's average of two flat maps leaves fewer such keypoints).
            stable = well_conditioned_keypoints(heatmaps[0], input_size=(96, 128))
            assert stable.mean() >= (0.2 if flip_test else 0.5)
            people = zip(expected(image, boxes=boxes, flip_test=flip_test),
                         exported(image, boxes=boxes, flip_test=flip_test, batch_size=2), stable, strict=True)
            for person, from_export, keep in people:
                np.testing.assert_allclose(from_export["keypoints"][keep], person["keypoints"][keep], rtol=0, atol=1e-3)
                np.testing.assert_allclose(from_export["scores"], person["scores"], rtol=0, atol=1e-4)
                assert from_export["bbox_xywh"].tolist() == person["bbox_xywh"].tolist()
        return
    mirrored = np.ascontiguousarray(image[:, ::-1])
    key = {"seg": "segmentation", "depth": "predicted_depth", "normal": "normals"}[task]
    whole = {} if task == "seg" else {"mask": False}  # the person mask: tests/test_pipelines.py
    for result, from_export in zip(expected([image, mirrored], **whole), exported([image, mirrored], batch_size=2,
                                                                                   **whole), strict=True):
        if task == "seg":
            assert (result[key] == from_export[key]).float().mean() > 0.999
        else:
            np.testing.assert_allclose(from_export[key], result[key], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_an_export_folder_in_the_command_line_and_its_checks(tiny_model, tmp_path, capsys, monkeypatch):
    """`predict --model export_folder` and `annotate` (through `load_task_pipeline`, as the demo), int8 by
    `model_kwargs`, and a clear error for another task's export, another dtype or device, and overrides."""
    from transformers import pipeline

    from sapiens_hf.cli import SAMPLE_IMAGE, main
    from sapiens_hf.exported_model import SapiensExportedModel
    from sapiens_hf.modeling_sapiens import WrongModelError
    from sapiens_hf.pipelines import load_task_pipeline

    pose, pose_model = tmp_path / "pose-onnx", tiny_model("pose")
    export(pose_model, pose, quantize="int8")
    output = tmp_path / "out"
    assert main(["predict", "--task", "pose", "--model", str(pose), str(SAMPLE_IMAGE), "--output", str(output),
                 "--quiet", "--detector", "none"]) == 0
    people = json.loads((output / "keypoints.json").read_text())["annotations"]
    expected = load_task_pipeline("pose", pose_model)(str(SAMPLE_IMAGE), detector=None)
    assert len(people) == len(expected) == 1 and len(people[0]["keypoints"]) == 17 * 3
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.jpg").write_bytes(SAMPLE_IMAGE.read_bytes())
    assert main(["annotate", str(photos), "--task", "pose", "--model", f"pose={pose}", "--output",
                 str(tmp_path / "shards"), "--device", "cpu", "--quiet", "--detector", "none"]) == 0
    import datasets

    row = datasets.load_dataset("parquet", data_dir=str(tmp_path / "shards"), split="train")[0]
    np.testing.assert_allclose(np.ravel(row["pose_keypoints"]), np.ravel(np.asarray(people[0]["keypoints"]).reshape(
        -1, 3)[:, :2]), atol=1e-3)
    int8 = pipeline("sapiens-pose", model=str(pose), model_kwargs={"int8": True})
    assert int8(str(SAMPLE_IMAGE), detector=None)[0]["keypoints"].shape == (17, 2)
    assert "SapiensExportedModel" in repr(int8)
    with pytest.raises(TypeError, match="saved already"):
        int8.save_pretrained(tmp_path / "copy")
    with pytest.raises(WrongModelError, match="exported in fp32"):  # transformers' loader would fall back to float32
        pipeline("sapiens-pose", model=str(pose), dtype=torch.float16)
    assert SapiensExportedModel.from_pretrained(pose, dtype="float32").dtype == torch.float32
    export(tiny_model("depth"), tmp_path / "depth-fp16", dtype="fp16")  # runs in its own dtype
    assert main(["predict", "--task", "depth", "--model", str(tmp_path / "depth-fp16"), str(SAMPLE_IMAGE), "--output",
                 str(tmp_path / "fp16-out"), "--quiet", "--no-mask"]) == 0
    assert np.isfinite(np.load(tmp_path / "fp16-out" / f"{SAMPLE_IMAGE.stem}_depth.npy")).all()

    export(tiny_model("seg"), tmp_path / "seg-onnx")
    with pytest.raises(WrongModelError, match="no int8 graph"):
        SapiensExportedModel.from_pretrained(tmp_path / "seg-onnx", int8=True)
    with pytest.raises(WrongModelError, match="no int8 graph") as refusal:  # as it is, not in a report of 70 lines
        pipeline("sapiens-segmentation", model=str(tmp_path / "seg-onnx"), model_kwargs={"int8": True})
    assert "Could not load model" not in str(refusal.value)
    with pytest.raises(WrongModelError, match="a segmentation model"):
        pipeline("sapiens-pose", model=str(tmp_path / "seg-onnx"))
    with pytest.raises(ValueError, match="fixed"):
        load_task_pipeline("seg", str(tmp_path / "seg-onnx"), num_labels=3)
    with pytest.raises(WrongModelError, match="exported in fp32"):
        SapiensExportedModel.from_pretrained(pose, dtype=torch.float16)
    with pytest.raises(ValueError, match="runs on the CPU"):
        SapiensExportedModel.from_pretrained(pose).to("cuda")
    # On a machine with a GPU, where a pipeline's default device is the GPU, an export's pipeline is on the CPU.
    import transformers.pipelines.base

    monkeypatch.setattr(transformers.pipelines.base, "is_torch_cuda_available", lambda *args, **kwargs: True)
    assert pipeline("sapiens-segmentation", model=str(tmp_path / "seg-onnx")).device == torch.device("cpu")
    export(tiny_model("depth"), tmp_path / "depth-pt2", format="exported-program")
    with pytest.raises(WrongModelError, match="trust_remote_code=True"):
        SapiensExportedModel.from_pretrained(tmp_path / "depth-pt2")
    with pytest.raises(OSError, match="not a folder written by sapiens-hf export"):
        SapiensExportedModel.from_pretrained(pose_model)


def test_an_export_without_config_json_is_named_as_an_older_export_by_every_entry_point(tiny_model, tmp_path, capsys):
    """An export folder written before exports carried config.json: one line naming it, before any work, from
    `pipeline()` (not transformers' "Unrecognized model"), the loader of predict, annotate and the demo, and the
    commands (exit code 2, nothing written); the torch-free runner, which needs only the manifest, still runs it."""
    import re

    from transformers import pipeline

    from sapiens_hf.cli import SAMPLE_IMAGE, main
    from sapiens_hf.modeling_sapiens import WrongModelError
    from sapiens_hf.pipelines import load_task_pipeline
    from sapiens_hf.runtime import ExportedModel

    folder = tmp_path / "pose-onnx"
    export(tiny_model("pose"), folder)
    (folder / "config.json").unlink()
    message = f"{folder} is an export written by an older sapiens-hf without config.json: export the model again"
    for load in (lambda: pipeline("sapiens-pose", model=str(folder)),
                 lambda: pipeline("sapiens-pose", model=folder, model_kwargs={"int8": True}),
                 lambda: load_task_pipeline("pose", str(folder))):
        with pytest.raises(WrongModelError, match=f"^{re.escape(message)}$"):
            load()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.jpg").write_bytes(SAMPLE_IMAGE.read_bytes())
    output, depth = tmp_path / "out", tiny_model("depth")
    capsys.readouterr()
    for command in (["predict", "--task", "pose", "--model", str(folder), str(photos), "--output", str(output)],
                    ["annotate", str(photos), "--task", "pose", "--model", f"pose={folder}", "--output", str(output)],
                    ["predict", "--task", "depth", "--model", depth, str(photos), "--mask-model", str(folder),
                     "--output", str(output)],
                    ["demo", "--model", f"pose={folder}"]):
        assert main(command) == 2, command
        assert capsys.readouterr().err.strip() == f"error: {message}", command
        assert not output.exists()
    assert ExportedModel(folder)(str(SAMPLE_IMAGE))[0]["keypoints"].shape == (17, 2)


def test_a_failed_export_leaves_nothing_and_a_typo_is_refused(tmp_path, monkeypatch, capsys, tiny_model):
    """A graph whose self-check fails (tolerance patched to 0) is a failure (exit code 1, not a usage error) that
    removes the files it wrote, so the same command runs again without --overwrite; a misspelled --config key is
    refused as predict and convert refuse it; the check's tolerance is relative to the output's scale."""
    from sapiens_hf import export as exporting
    from sapiens_hf.cli import main

    model = tiny_model("depth")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    monkeypatch.setattr(exporting, "TOLERANCE", {"fp32": 0.0, "fp16": 0.0, "bf16": 0.0})
    with pytest.raises(exporting.ExportCheckError, match="nothing was kept"):
        export(model, tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["notes.txt"]
    assert main(["export", model, str(tmp_path / "out")]) == 1
    assert "differs from the eager model" in capsys.readouterr().err
    monkeypatch.undo()
    manifest = export(model, tmp_path / "out")  # not blocked by leftovers
    assert manifest["output_scale"] >= 1
    assert max(manifest["max_abs_difference_to_eager"].values()) <= 1e-4 * manifest["output_scale"]
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"

    with pytest.raises(TypeError, match="num_hidden_layers"):
        export(model, tmp_path / "typo", config_overrides={"num_hiden_layers": 3})
    assert main(["export", model, str(tmp_path / "typo"), "--config", "num_hiden_layers=3"]) == 2
    assert not (tmp_path / "typo").exists()


def test_a_damaged_or_edited_export_folder_is_refused_with_its_reason(tmp_path, tiny_model):
    """A manifest naming a graph outside the folder, another task than the graph's, an unknown format, or a
    missing graph file: one error naming the manifest or the file and what to do, from the runner and from
    the pipelines' model alike (never a raw KeyError, never a file outside the folder opened)."""
    from sapiens_hf.exported_model import SapiensExportedModel
    from sapiens_hf.modeling_sapiens import WrongModelError
    from sapiens_hf.runtime import ExportedModel

    export(tiny_model("seg"), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    (tmp_path / "outside.onnx").write_bytes((tmp_path / "out" / "model.onnx").read_bytes())
    for edit, message in [({"file": "../outside.onnx"}, "not a file name in the folder"),
                          ({"task": "pose"}, "output is heatmaps, not logits"),
                          ({"task": "pose", "output": "heatmaps"}, r"outputs are \['heatmaps'\], not \['logits'\]"),
                          ({"task": "pose", "output": "heatmaps", "outputs": ["heatmaps"]},
                           r"computes \['logits'\], not \['heatmaps'\]"),
                          ({"family": "Sapiens3"}, "unknown family 'Sapiens3'"),
                          ({"format": "tflite"}, "unknown format"),
                          ({"file": "gone.onnx"}, "gone.onnx is missing")]:
        (tmp_path / "out" / MANIFEST).write_text(json.dumps({**manifest, **edit}))
        with pytest.raises(ValueError, match=message):
            ExportedModel(tmp_path / "out")
        with pytest.raises(WrongModelError, match=message):  # not a ValueError, which pipeline() would bury
            SapiensExportedModel(tmp_path / "out")
    (tmp_path / "out" / MANIFEST).write_text(json.dumps({key: manifest[key] for key in manifest if key != "task"}))
    with pytest.raises(ValueError, match="damaged or was edited .KeyError"):
        ExportedModel(tmp_path / "out")


def test_the_runner_reads_a_16_bit_png_as_the_pipelines_do(tmp_path, tiny_model):
    """16-bit PNGs keep their high byte in the pipelines (as cv2.imread); the runner reads images the same way."""
    import PIL.Image
    from transformers import pipeline

    import sapiens_hf  # noqa: F401  (registers the pipelines)
    from sapiens_hf.runtime import ExportedModel

    model = tiny_model("depth")
    export(model, tmp_path / "out")
    ramp = (np.arange(96 * 128, dtype=np.uint32).reshape(96, 128) * 5).astype(np.uint16)
    PIL.Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert PIL.Image.open(tmp_path / "deep.png").mode.startswith("I")
    expected = pipeline("sapiens-depth", model=model)(str(tmp_path / "deep.png"), mask=False)["predicted_depth"].numpy()
    actual = ExportedModel(tmp_path / "out")(tmp_path / "deep.png")["predicted_depth"]
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
