"""`sapiens_hf.backends`: which runtime runs a model (`--backend auto|torch|onnxruntime`). `auto` exports only when
the run pays for it or a checked export is cached, picks onnxruntime only where it was timed clearly faster, stays torch on
an accelerator; the export is cached by content, reused, rebuilt when damaged; a failed export or check falls back to
torch with a note; the onnxruntime results equal the eager model's."""

import os
import shutil
import time

import numpy as np
import pytest
import torch

from sapiens_hf import SapiensForPoseEstimation, backends
from sapiens_hf import export as exporting
from sapiens_hf.pipelines import load_task_pipeline


pytest.importorskip("onnxruntime")


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports that run (the real exporter is called)."""
    calls = []
    real = exporting.export

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(exporting, "export", counted)
    return calls


def timed(monkeypatch, eager: float, exported: float) -> None:
    """The check's timings as if measured: onnxruntime `exported` s per image against torch's `eager`."""
    monkeypatch.setattr(backends, "speeds", lambda folder: (eager, exported))


def test_auto_exports_for_a_long_run_where_onnxruntime_is_faster_and_never_for_one_image(tiny_model, exports,
                                                                                       monkeypatch):
    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose"))
    timed(monkeypatch, eager=2.0, exported=1.0)
    one = backends.choose(model, backend="auto", device="cpu", images=1, input_size=(128, 96))
    assert (one.backend, one.folder, exports) == ("torch", None, [])
    assert "1 image(s)" in one.reason and str(backends.MIN_IMAGES) in one.reason
    many = backends.choose(model, backend="auto", device="cpu", images=backends.MIN_IMAGES, input_size=(128, 96))
    assert many.backend == "onnxruntime" and len(exports) == 1 and backends.damage(many.folder) is None
    assert "faster than torch" in many.reason
    # Once cached, one image runs the export too; where onnxruntime was timed slower, torch runs.
    assert backends.choose(model, device="cpu", images=1, input_size=(128, 96)).folder == many.folder
    timed(monkeypatch, eager=1.0, exported=2.0)
    slower = backends.choose(model, device="cpu", images=100, input_size=(128, 96))
    assert slower.backend == "torch" and "not 1.15× faster" in slower.reason and len(exports) == 1
    # A lead within the check's noise (one timed call each) is not taken: 13.4 s against 13.9 s ran 13 % slower.
    timed(monkeypatch, eager=13.9, exported=13.4)
    assert backends.choose(model, device="cpu", images=100, input_size=(128, 96)).backend == "torch"


def test_auto_stays_torch_on_an_accelerator_and_in_bfloat16(tiny_model, exports, monkeypatch):
    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose"))
    timed(monkeypatch, eager=2.0, exported=1.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in (None, "cuda"):  # the default device is the GPU here
        choice = backends.choose(model, device=device, images=None)
        assert choice.backend == "torch" and "accelerator" in choice.reason
        with pytest.raises(ValueError, match="runs on the CPU"):
            backends.choose(model, backend="onnxruntime", device=device)
    assert backends.choose(model, device="cpu", dtype=torch.bfloat16).backend == "torch"
    with pytest.raises(ValueError, match="float32 or int8"):
        backends.choose(model, backend="onnxruntime", device="cpu", dtype=torch.bfloat16)
    assert exports == []


def test_the_export_is_cached_by_content_and_reused(tiny_model, exports, tmp_path, monkeypatch):
    """The same weights under another path are the same entry (no second export); other weights are another."""
    timed(monkeypatch, eager=2.0, exported=1.0)
    first = backends.choose(SapiensForPoseEstimation.from_pretrained(tiny_model("pose")), device="cpu", images=None)
    copy = shutil.copytree(tiny_model("pose"), tmp_path / "copy")
    again = backends.choose(SapiensForPoseEstimation.from_pretrained(copy), device="cpu", images=None)
    assert again.folder == first.folder and len(exports) == 1 and "cached export" in again.reason
    changed = SapiensForPoseEstimation.from_pretrained(copy)
    with torch.no_grad():
        changed.model.embeddings.patch_embeddings.projection.weight[0, 0, 0, 0] += 1
    other = backends.choose(changed, device="cpu", images=None)
    assert other.folder != first.folder and len(exports) == 2


def test_a_damaged_cache_entry_is_named_and_rebuilt(tiny_model, exports, monkeypatch):
    timed(monkeypatch, eager=2.0, exported=1.0)
    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose"))
    folder = backends.choose(model, device="cpu", images=None).folder
    graph, manifest = folder / "model.onnx", folder / "sapiens-export.json"
    damages = {  # a copy or a disk that ran out; killed before the entry was complete; an edit
        "model.onnx changed": lambda: graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2]),
        "no record": lambda: (folder / backends.RECORD).unlink(),
        "sapiens-export.json is damaged or was edited": lambda: manifest.write_text(manifest.read_text().replace("pose", "depth")),
    }
    stale, running = folder.parent / ".exporting-killed", folder.parent / ".exporting-running"
    for staging in (stale, running):
        staging.mkdir()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)  # a run killed two days ago; `running` may be another process's
    for expected, damage in damages.items():
        damage()
        assert expected in backends.damage(folder)
        short = backends.choose(model, device="cpu", images=1)  # not worth an export: named, left for a longer run
        assert short.backend == "torch" and f"the cached export was damaged: {expected}" in short.reason
        rebuilt = backends.choose(model, device="cpu", images=None)
        assert f"the cached export was damaged: {expected}" in rebuilt.reason and rebuilt.backend == "onnxruntime"
        assert rebuilt.folder == folder and backends.damage(folder) is None
    assert len(exports) == 1 + len(damages)
    assert list(folder.parent.glob(".exporting-*")) == [running]  # none of ours left behind, the stale one removed


def test_a_failing_export_or_check_falls_back_to_torch_with_a_note(tiny_model, monkeypatch, tmp_path, capsys):
    model = SapiensForPoseEstimation.from_pretrained(tiny_model("pose"))
    monkeypatch.setattr(exporting, "TOLERANCE", {"fp32": 0.0, "fp16": 0.0, "bf16": 0.0})  # the check fails
    choice = backends.choose(model, device="cpu", images=None)
    assert choice.backend == "torch" and "ONNX export failed" in choice.reason and "ExportCheckError" in choice.reason
    assert "\n" not in str(choice)
    with pytest.raises(backends.BackendError, match="ExportCheckError"):  # asked for: the failure is the answer
        backends.choose(model, backend="onnxruntime", device="cpu")
    assert not list(backends.exports_cache().glob("*/*"))  # nothing kept

    from sapiens_hf.cli import main

    image = photo(tmp_path / "in.png")
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), image, "--output", str(tmp_path / "o"),
                 "--backend", "onnxruntime"]) == 1  # one line, no advice about the Hub
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: The ONNX export for the onnxruntime backend")

    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)  # onnxruntime not installed
    choice = backends.choose(model, device="cpu", images=None)
    assert choice.backend == "torch" and "sapiens-hf[export]" in choice.reason
    assert main(["predict", "--task", "pose", "--model", tiny_model("pose"), image, "--output", str(tmp_path / "o"),
                 "--dtype", "int8"]) == 2  # before any work
    assert "needs onnx, onnxscript, onnxruntime, which are not installed" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
def test_onnxruntime_results_equal_the_eager_models(task, tiny_model):
    """The pipeline on the cached export equals the eager pipeline within the export check's tolerance (1e-4 of
    the output's scale; keypoints in pixels, labels exactly)."""
    images = [np.random.default_rng(seed).integers(0, 256, (100, 80, 3), dtype=np.uint8) for seed in range(2)]
    lines = []
    eager = load_task_pipeline(task, tiny_model(task), device="cpu")
    graph = load_task_pipeline(task, tiny_model(task), device="cpu", backend="onnxruntime", report=lines.append)
    assert type(graph.model).__name__ == "SapiensExportedModel" and lines[0].startswith("backend: onnxruntime")
    whole = {"pose": {"detector": None}, "depth": {"mask": False}, "normal": {"mask": False}}.get(task, {})
    for expected, actual in zip(eager(images, **whole), graph(images, **whole)):
        if task == "pose":
            expected, actual = expected[0], actual[0]
            torch.testing.assert_close(actual["keypoints"], expected["keypoints"], rtol=0, atol=1e-2)
            torch.testing.assert_close(actual["scores"], expected["scores"], rtol=0, atol=1e-4)
        elif task == "seg":
            assert torch.equal(actual["segmentation"], expected["segmentation"])
        else:
            key = "predicted_depth" if task == "depth" else "normals"
            scale = max(1.0, expected[key].abs().max().item())
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-4 * scale)


def photo(path) -> str:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_predict_prints_the_backend_once_and_quiet_silences_it(tiny_model, tmp_path, capsys):
    from sapiens_hf.cli import main

    command = ["predict", "--task", "depth", "--no-mask", "--model", tiny_model("depth"), photo(tmp_path / "in.png"), "--output"]
    assert main([*command, str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("backend: ") == 1 and "backend: torch (1 image(s): a first ONNX export" in err
    assert main([*command, str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "backend" not in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "in.png"), "--task", "depth", "--model", tiny_model("depth"),
                 "--output", str(tmp_path / "shards"), "--backend", "torch", "--no-mask"]) == 0
    assert "annotate: backend: torch (asked for)" in capsys.readouterr().err


def test_backend_arguments_that_cannot_go_together_are_refused_before_any_work(tiny_model, tmp_path, capsys,
                                                                               monkeypatch):
    from sapiens_hf.cli import main

    image, out = photo(tmp_path / "in.png"), tmp_path / "out"
    command = ["predict", "--task", "depth", "--no-mask", "--model", tiny_model("depth"), image, "--output", str(out)]
    for arguments, message in [(["--dtype", "int8", "--backend", "torch"], "--dtype int8 runs a quantised"),
                               (["--backend", "onnxruntime", "--dtype", "bf16"], "float32 or int8 graphs, not"),
                               (["--backend", "onnxruntime", "--device", "cuda"], "--device cuda")]:
        assert main([*command, *arguments]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device's default is then the GPU
    assert main([*command, "--dtype", "int8"]) == 2
    assert "add --device cpu" in capsys.readouterr().err
    monkeypatch.undo()
    exporting.export(tiny_model("depth"), tmp_path / "onnx")
    assert main(["predict", "--task", "depth", "--no-mask", "--model", str(tmp_path / "onnx"), image, "--output", str(out),
                 "--backend", "torch"]) == 2
    assert "is an export folder" in capsys.readouterr().err
    assert not out.exists()
    lines = []  # from Python, an export folder runs as exported whatever the backend (the demo's default is torch)
    assert load_task_pipeline("depth", tmp_path / "onnx", report=lines.append).model.manifest["task"] == "depth"
    assert lines == ["backend: onnxruntime (an export folder)"]
    from sapiens_hf.cli import build_parser

    assert build_parser().parse_args(["demo", "--backend", "onnxruntime"]).backend == "onnxruntime"


def test_predict_with_onnxruntime_equals_torch_and_int8_runs_its_calibrated_graph(tiny_model, tmp_path, capsys):
    from sapiens_hf.cli import main

    command = ["predict", "--task", "depth", "--no-mask", "--model", tiny_model("depth"), photo(tmp_path / "in.png"), "--output"]
    assert main([*command, str(tmp_path / "torch"), "--backend", "torch"]) == 0
    assert main([*command, str(tmp_path / "ort"), "--backend", "onnxruntime"]) == 0
    assert "backend: onnxruntime (asked for; exported and checked" in capsys.readouterr().err
    expected, actual = np.load(tmp_path / "torch" / "in_depth.npy"), np.load(tmp_path / "ort" / "in_depth.npy")
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))
    assert main([*command, str(tmp_path / "again"), "--backend", "onnxruntime"]) == 0
    assert "backend: onnxruntime (asked for; cached export" in capsys.readouterr().err
    assert main([*command, str(tmp_path / "int8"), "--dtype", "int8"]) == 0
    assert "backend: onnxruntime (int8 graph, exported" in (err := capsys.readouterr().err)
    assert "against fp32 on the bundled photo: depth_relative_error_mean " in err
    int8 = np.load(tmp_path / "int8" / "in_depth.npy")
    assert int8.shape == expected.shape and 0 < np.abs(int8 - expected).mean() < 0.1 * np.abs(expected).mean()


def test_onnxruntime_uses_as_many_threads_as_torch(tiny_model, tmp_path, monkeypatch):
    """Several processes on one machine (`accelerate launch` sets each one's torch threads) share the cores alike
    with either backend: the session's intra-op threads follow torch's."""
    import onnxruntime

    from sapiens_hf.exported_model import SapiensExportedModel

    exporting.export(tiny_model("depth"), tmp_path / "onnx")
    sessions, real = [], onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *args, **kwargs: sessions.append(args) or real(
        *args, **kwargs))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        SapiensExportedModel(tmp_path / "onnx")
    finally:
        torch.set_num_threads(threads)
    assert sessions[0][1].intra_op_num_threads == 1


def test_sapiens2_models_run_on_onnxruntime_through_their_checked_export(tiny_model, exports, tmp_path):
    """A Sapiens2 model is exported and checked like a Sapiens one: both outputs of a matting graph reach the
    results, equal to the eager model's; auto still waits for a run long enough to pay for the export."""
    from sapiens_hf.backends import choose
    from sapiens_hf.runtime import read_manifest

    folder = tiny_model("v2-matting")
    model = load_task_pipeline("matting", folder).model
    assert choose(model, backend="auto", device="cpu", images=1).backend == "torch" and not exports
    choice = choose(model, backend="onnxruntime", device="cpu", input_size=(128, 96))  # the processor's size
    assert choice.backend == "onnxruntime" and read_manifest(choice.folder)["family"] == "Sapiens2"
    image = photo(tmp_path / "in.png")
    expected = load_task_pipeline("matting", folder, backend="torch")(image)
    actual = load_task_pipeline("matting", folder, backend="onnxruntime")(image)
    for key in ("alpha", "foreground"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=0, atol=1e-4)
    assert len(exports) == 1  # the second pipeline found the cached export
