"""`sapiens-hf demo` in a real browser: the Gradio app with tiny saved models (the `tiny_model` fixture) on a free
loopback port, driven by headless Chromium through Playwright — upload the bundled photo, run each task (pose with
typed boxes and with a tiny local person detector), check the pictures shown and parse every download; a text file
and an oversized image get a message in the page, and the app keeps serving afterwards. Also: the downloads equal
`sapiens-hf predict`'s files, the wrong-task message, and the command line (`--help` without Gradio, torch or
transformers; `python -m sapiens_hf.demo`; bad options).

Chromium is Debian's (`apt-get install -y chromium`, done by the `chromium` fixture when it is missing and the tests
run as root); without it the browser test is skipped with the reason. With SAPIENS_HF_DEMO_SCREENSHOTS=DIR (e.g.
docs/demo) the screenshot of each task's result is also written there, as in docs/demo.md."""

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import PIL.Image
import pytest


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the test's server

from sapiens_hf import SapiensConfig  # noqa: E402
from sapiens_hf.cli import SAMPLE_IMAGE, main  # noqa: E402
from sapiens_hf.demo import DEMO_TASKS, DemoApp, build_demo  # noqa: E402
from sapiens_hf.metadata import SEGMENTATION_CLASSES  # noqa: E402


TASK_MODELS = {"pose": "pose", "segmentation": "seg", "depth": "depth", "normal": "normal"}  # tiny_model's names
SIZE = PIL.Image.open(SAMPLE_IMAGE).size  # (512, 512)
TYPED_BOX = [100.0, 20.0, 300.0, 480.0]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing (as root); else a skip that says why."""
    path = shutil.which("chromium")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
            subprocess.run(install, env=env, capture_output=True, timeout=900, check=False)
        path = shutil.which("chromium")
    if path is None:
        pytest.skip("the browser test needs Debian's chromium (`apt-get install -y chromium`), which is not on PATH "
                    "and could not be installed here (not root, no apt-get, or the install failed)")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model) -> dict:
    models = {task: tiny_model(name) for task, name in TASK_MODELS.items()}
    # a copy: the shared folder stays as saved
    segmentation = tmp_path_factory.mktemp("models") / "segmentation"
    models["segmentation"] = str(shutil.copytree(models["segmentation"], segmentation))
    config = SapiensConfig.from_pretrained(models["segmentation"])  # the class names, for the legend
    config.id2label = dict(enumerate(SEGMENTATION_CLASSES))
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.save_pretrained(models["segmentation"])
    return models


@pytest.fixture(scope="module")
def detector(tiny_detector) -> str:
    """The tests' tiny random-weight RT-DETR, saved locally (its boxes are arbitrary but valid)."""
    return tiny_detector


@pytest.fixture(scope="module")
def server(models, detector) -> str:
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = build_demo(models, device="cpu", detector=detector)
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    blocks.close()


@pytest.fixture
def page(chromium, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport=VIEWPORT)
        # Only the app's own server: web fonts and anything else outside loopback are refused at once.
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                      else route.abort())
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server)
        page.locator("#run").wait_for()
        yield page
        browser.close()


def upload(page, path) -> None:
    """Puts `path` into the upload box (clearing the file there first, as a user would with its × button)."""
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    # The upload goes through the server's thread in this test process; in CI the other xdist worker's exports hold
    # both cores, and it has taken more than a minute there.
    page.locator("#upload").get_by_text(Path(path).name).wait_for(timeout=240_000)


def run(page, tasks: list[str], expect: str) -> str:
    """Ticks exactly `tasks`, presses Run and waits for the status line to show `expect`, which the status shown
    before must not contain (while the request runs, the line shows a timer); returns the status."""
    from playwright.sync_api import expect as playwright_expect

    for task in DEMO_TASKS:
        page.locator("#tasks").get_by_label(task, exact=True).set_checked(task in tasks)
    status = page.locator("#status")
    assert expect not in status.inner_text()
    page.locator("#run").click()
    # While a request runs its progress ("Depth: … - 40.0%") shows over the outputs: wait until it is gone and the
    # status line is this request's (the total, or the error).
    page.wait_for_function("""expect => {
        const text = document.querySelector("#status").innerText;
        return text.includes(expect) && /— total|Error:/.test(text) && !/\\d%/.test(document.body.innerText);
    }""", arg=expect)
    playwright_expect(status).to_contain_text(expect)
    return status.inner_text()


def shown_images(page) -> int:
    """How many pictures the results gallery shows, once every one is loaded (decoded, non-empty)."""
    page.wait_for_function("""() => {
        const images = [...document.querySelectorAll("#results img")];
        return images.length > 0 && images.every(image => image.complete && image.naturalWidth > 0);
    }""")
    return page.locator("#results img").count()


def downloads(page) -> dict[str, bytes]:
    """The files of the downloads list, fetched through their links, by name."""
    links = page.locator("#downloads a")
    links.first.wait_for()
    files = {}
    for index in range(links.count()):
        link = links.nth(index)
        response = page.request.get(urljoin(page.url, link.get_attribute("href")))
        assert response.ok, response.status
        files[link.get_attribute("download")] = response.body()
    return files


def screenshot(page, name: str, tmp_path, full_page: bool = False) -> None:
    """A small PNG (256 colours) of the window, or of the whole page; also into $SAPIENS_HF_DEMO_SCREENSHOTS
    (docs/demo) when set. Taken once Gradio's fade of outputs that are being updated (`.pending`) has ended."""
    page.wait_for_function("""() => !document.querySelector(".pending")
        && document.getAnimations().every(animation => animation.playState !== "running")""")
    page.evaluate("window.scrollTo(0, 0)")
    picture = PIL.Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    assert picture.width == VIEWPORT["width"]
    assert picture.height > VIEWPORT["height"] if full_page else picture.height == VIEWPORT["height"]
    for folder in [tmp_path, os.environ.get("SAPIENS_HF_DEMO_SCREENSHOTS")]:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            picture.quantize(256).save(Path(folder) / f"{name}.png", optimize=True)


def oversized_png(path: Path) -> Path:
    """A PNG header of 12000×9000 = 108 MP without pixel data: refused from the header, before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 12000, 9000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_every_task_in_the_browser(page, detector, tmp_path):
    upload(page, SAMPLE_IMAGE)

    # Pose with a typed box and the flip test: the skeleton over the input, COCO keypoints in the box.
    page.locator("#box-source").get_by_label("typed boxes").check()
    page.locator("#boxes textarea").fill(", ".join(f"{v:g}" for v in TYPED_BOX))
    page.locator("#flip-test input[type=checkbox]").check()
    threshold = page.locator("#keypoint-threshold input[type=number]")
    threshold.fill("0")  # every keypoint of the random model drawn and counted
    threshold.press("Enter")
    status = run(page, ["pose"], "pose ")
    assert "total" in status and "astronaut.jpg (512×512)" in status
    assert shown_images(page) == 1  # the skeleton (the input is the preview beside it)
    screenshot(page, "pose", tmp_path)
    (name, body), = downloads(page).items()
    coco = json.loads(body)
    assert name == "astronaut_keypoints.json" and coco["images"][0]["width"] == SIZE[0]
    (person,) = coco["annotations"]
    assert person["bbox"] == TYPED_BOX and person["bbox_score"] is None and len(person["keypoints"]) == 17 * 3
    assert person["num_keypoints"] == 17
    assert coco["categories"][0]["keypoints"][0] == "nose"

    for task, suffix in [("segmentation", "_seg.png"), ("depth", "_depth.npy"), ("normal", "_normal.npy")]:
        run(page, [task], f"{task} ")
        assert shown_images(page) == 1
        if task == "segmentation":
            assert "Segmentation classes" in page.locator("#legend").inner_text()
        screenshot(page, task, tmp_path)
        files = downloads(page)
        body = files[f"astronaut{suffix}"]
        if task != "segmentation":  # the person mask of the segmentation model, and its pass named in the status
            assert sorted(files) == sorted([f"astronaut{suffix}", f"astronaut_{task}_mask.png"])
            assert "person mask " in page.locator("#status").inner_text()
        if suffix.endswith(".png"):
            labels = PIL.Image.open(io.BytesIO(body))
            assert labels.mode == "P" and labels.size == SIZE and np.asarray(labels).max() < 28
        else:
            array = np.load(io.BytesIO(body))
            assert array.dtype == np.float32 and array.shape[:2] == SIZE[::-1]
            assert array.shape == (SIZE[1], SIZE[0], 3) if task == "normal" else array.ndim == 2

    # All four at once, pose with a person detector (a local object-detection model): five pictures, four files.
    page.locator("#box-source").get_by_label("person detector").check()
    status = run(page, list(TASK_MODELS), "pose ")
    assert all(f"{task} " in status for task in TASK_MODELS) and "total" in status, status
    assert "person mask" not in status  # the segmentation's own pass gave the mask
    assert shown_images(page) == 4
    files = downloads(page)
    assert sorted(files) == sorted(["astronaut_keypoints.json", "astronaut_seg.png", "astronaut_depth.npy",
                                    "astronaut_depth_mask.png", "astronaut_normal.npy", "astronaut_normal_mask.png"])
    people = json.loads(files["astronaut_keypoints.json"])["annotations"]
    assert people and all(person["bbox_score"] is not None for person in people)  # boxes from the detector


def test_bad_uploads_get_a_message_and_the_app_keeps_serving(page, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    upload(page, text_file)
    status = run(page, ["pose"], "Error")
    assert "Cannot read an image from 'notes.txt'" in status and "Traceback" not in page.content()
    assert page.locator("#results img").count() == 0 and "&#x27;" not in page.locator("body").inner_text()
    assert page.locator(".toast-body").count() == 0  # one message: the status line, no popup
    screenshot(page, "error", tmp_path)

    upload(page, oversized_png(tmp_path / "huge.png"))
    status = run(page, ["depth"], "megapixels")
    assert "Error" in status and "108.0 megapixels" in status and "100 MP" in status

    upload(page, SAMPLE_IMAGE)  # the same page, the same server: still answering
    assert "total" in run(page, ["pose"], "pose ")
    assert shown_images(page) == 1


def test_a_model_of_another_task_is_named_in_the_page(models):
    app = DemoApp({"pose": models["pose"], "seg": models["pose"]}, device="cpu")  # an alias, as on the command line
    *pictures, legend, files, status = app.respond(str(SAMPLE_IMAGE), ["segmentation"], "whole image", "", 0.3,
                                                   0.3, False)
    assert status.startswith("**Error:**") and "needs a SapiensForSemanticSegmentation" in status
    assert files is None and legend == ""
    bad_boxes = app.respond(str(SAMPLE_IMAGE), ["pose"], "typed boxes", "1, 2, 3", 0.3, 0.3, False)[-1]
    assert "Box line 1" in bad_boxes


def test_the_downloads_are_the_files_that_predict_writes(models, tmp_path):
    """The demo writes its downloads itself (the command line imports it, not the reverse): they must be exactly what
    `sapiens-hf predict` writes for the same image and models."""
    photo = tmp_path / "astronaut.jpg"
    shutil.copy(SAMPLE_IMAGE, photo)
    app = DemoApp(models, device="cpu")
    *_, files, status = app.respond(str(photo), list(TASK_MODELS), "whole image", "", 0.3, 0.3, False)
    assert "total" in status, status
    downloads = {Path(file).name: Path(file) for file in files}
    for task, model in models.items():
        arguments = ["predict", "--task", task, "--model", model, str(photo), "--output", str(tmp_path / task)]
        arguments += {"pose": ["--detector", "none"], "depth": ["--mask-model", models["segmentation"]],
                      "normal": ["--mask-model", models["segmentation"]]}.get(task, [])
        assert main([*arguments, "--device", "cpu", "--quiet"]) == 0

    demo, predicted = (json.loads(path.read_text()) for path in (downloads["astronaut_keypoints.json"],
                                                                 tmp_path / "pose" / "keypoints.json"))
    assert demo["images"][0].pop("file_name") == "astronaut.jpg" and predicted["images"][0].pop("file_name")
    assert demo == predicted and len(demo["annotations"]) == 1
    demo_labels, predicted_labels = (PIL.Image.open(path) for path in (downloads["astronaut_seg.png"],
                                                                       tmp_path / "segmentation" / "astronaut_seg.png"))
    assert np.array_equal(np.asarray(demo_labels), np.asarray(predicted_labels))
    assert demo_labels.getpalette() == predicted_labels.getpalette()
    for task in ("depth", "normal"):  # masked with the demo's segmentation model, as predict --mask-model does
        name = f"astronaut_{task}.npy"
        np.testing.assert_array_equal(np.load(downloads[name]), np.load(tmp_path / task / name))
        mask = f"astronaut_{task}_mask.png"
        assert downloads[mask].read_bytes() == (tmp_path / task / mask).read_bytes()


def test_the_pointmap_downloads_are_its_map_and_its_point_cloud(tiny_model, tmp_path):
    """A pointmap's downloads are both files `predict` writes for it, byte for byte: the `.npy` XYZ map and the `.ply`
    point cloud."""
    photo = tmp_path / "astronaut.jpg"
    shutil.copy(SAMPLE_IMAGE, photo)
    model = tiny_model("v2-pointmap")
    *_, files, status = DemoApp({"pointmap": model}, device="cpu").respond(str(photo), ["pointmap"], "whole image", "",
                                                                           0.3, 0.3, False)
    assert "total" in status, status
    downloads = {Path(file).name: Path(file) for file in files}
    assert sorted(downloads) == ["astronaut_pointmap.npy", "astronaut_pointmap.ply"]
    assert main(["predict", "--task", "pointmap", "--model", model, str(photo), "--output", str(tmp_path / "predicted"),
                 "--device", "cpu", "--backend", "torch", "--quiet"]) == 0
    for name, path in downloads.items():
        assert path.read_bytes() == (tmp_path / "predicted" / name).read_bytes(), name


def test_the_command_line(capsys):
    """`sapiens-hf demo --help` does not import Gradio (nor does importing the module); `python -m sapiens_hf.demo` is
    the same command; bad options are refused before anything loads."""
    snippet = """
import contextlib, io, json, sys
import sapiens_hf.demo
from sapiens_hf.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(["demo", "--help"])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
print(json.dumps({"help": out.getvalue(), "gradio": "gradio" in sys.modules}))
"""
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["gradio"]
    module = subprocess.run([sys.executable, "-m", "sapiens_hf.demo", "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert module.returncode == 0 and module.stdout == report["help"], module.stderr
    assert "usage: sapiens-hf demo" in module.stdout and "--model TASK=MODEL" in module.stdout
    assert "--port PORT" in module.stdout and "--share" in module.stdout and "--device" in module.stdout

    assert main(["demo", "--model", "pretraining=some/model", "--device", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "--model pretraining=...: the demo runs pose, segmentation, depth, normal" in err
    assert "--device 'nonsense' is not a device" in err


def test_a_shared_demo_is_a_bounded_server(models, detector, monkeypatch):
    """The demo may be shared (`--share`): the page chooses tasks and options, never a model, a detector or a
    server path; uploads are capped before they are stored; the results of old requests are deleted (at most
    `KEEP_REQUESTS` kept); every model is loaded before the first request, which then never waits for a load; the
    requests queue (bounded) and run one at a time."""
    import inspect

    import gradio as gr

    from sapiens_hf import demo

    assert "detector" not in inspect.signature(DemoApp.respond).parameters
    blocks, app = build_demo(models, device="cpu", detector=detector, return_app=True)
    assert not [block for block in blocks.blocks.values() if isinstance(block, gr.Textbox)
                and getattr(block, "elem_id", None) == "detector"]
    assert (blocks._queue.max_size, app.detector) == (demo.QUEUE_SIZE, detector)

    for _ in range(demo.KEEP_REQUESTS + 4):
        (app.new_results_dir() / "result.npy").write_bytes(b"x" * 1000)
    assert len(list(app.results_root.iterdir())) == demo.KEEP_REQUESTS

    events = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: events.append(("launch", kwargs)))
    monkeypatch.setattr(DemoApp, "pipeline", lambda self, task: events.append(("load", task)) or (FakePose(), 0.0))
    assert demo.serve(models, device="cpu", port=1, detector=detector) == 0
    assert [event for event, _ in events] == ["load"] * len(demo.DEMO_TASKS) + ["launch"]
    assert events[-1][1]["max_file_size"] == demo.MAX_UPLOAD == "50mb"
    assert FakePose.detectors == [detector]


class FakePose:
    detectors = []

    def _resolve_detector(self, detector):
        self.detectors.append(detector)


def test_error_text_is_shown_as_it_is(models):
    """Quotes, brackets and Markdown characters of a message reach the page as typed (not as `&#x27;`)."""
    from sapiens_hf.demo import plain_text

    message = "Cannot read 'a_b*c.txt' <as> [an] image"
    assert plain_text(message) == "Cannot read 'a\\_b\\*c\\.txt' \\<as\\> \\[an\\] image"
    app = DemoApp(models, device="cpu")
    status = app.respond(str(SAMPLE_IMAGE), ["pose"], "typed boxes", "1, 2, 3", 0.3, 0.3, False)[-1]
    assert "&#x27;" not in status and "'1, 2, 3'" in status


def test_depth_and_normals_share_one_segmentation_pass_and_the_stages_are_named(models, monkeypatch):
    """With segmentation, depth and normals chosen the segmentation model runs once: its result is shown and its
    person mask cuts depth and normals (NaN outside); without segmentation one pass still gives the mask; unticked,
    the maps are whole. The progress bar names each stage; a failing request gives one message (no popup)."""
    import gradio as gr

    from sapiens_hf import SapiensForSemanticSegmentation

    calls, stages, popups = [], [], []
    forward = SapiensForSemanticSegmentation.forward
    monkeypatch.setattr(SapiensForSemanticSegmentation, "forward",
                        lambda self, **kwargs: calls.append(1) or forward(self, **kwargs))
    monkeypatch.setattr(gr, "Warning", lambda *args, **kwargs: popups.append(args))
    app = DemoApp(models, device="cpu")
    arguments = ("whole image", "", 0.3, 0.3, False)
    *_, files, status = app.respond(str(SAMPLE_IMAGE), ["segmentation", "depth", "normal"], *arguments, True,
                                    progress=lambda fraction, desc: stages.append(desc))
    assert len(calls) == 1 and "person mask" not in status, status
    labels = np.asarray(PIL.Image.open(next(f for f in files if f.endswith("_seg.png"))))
    depth = np.load(next(f for f in files if f.endswith("_depth.npy")))
    mask = np.asarray(PIL.Image.open(next(f for f in files if f.endswith("_depth_mask.png")))) > 0
    assert np.array_equal(mask, labels != 0) and np.isnan(depth[~mask]).all() and np.isfinite(depth[mask]).all()
    assert stages[0] == "Reading the image" and stages[-1] == "Done"
    assert any(stage.startswith("Segmentation") for stage in stages) and any("Depth" in s for s in stages)

    *_, files, status = app.respond(str(SAMPLE_IMAGE), ["depth"], *arguments, True)
    assert len(calls) == 2 and "person mask " in status and any(f.endswith("_depth_mask.png") for f in files)
    *_, files, status = app.respond(str(SAMPLE_IMAGE), ["depth"], *arguments, False)
    assert len(calls) == 2 and [Path(f).name for f in files] == ["astronaut_depth.npy"]
    assert np.isfinite(np.load(files[0])).all()
    status = app.respond(str(tmp_text(app)), ["depth"], *arguments, True)[-1]
    assert status.startswith("**Error:**") and not popups


def tmp_text(app) -> Path:
    path = app.results_root / "notes.txt"
    path.write_text("not an image")
    return path


@pytest.mark.slow
def test_two_people_with_every_task_in_the_browser(chromium, models, tmp_path, monkeypatch):
    """The synthetic photo of two people, all four tasks: pose finds both people (a stub detector that returns the
    photo's two known boxes), depth and normals are cut with a person mask (a stub: the photo's known silhouettes);
    four pictures, all visible in the page at once. Its screenshot is docs/demo/two_people.png."""
    import torch
    from helpers import TWO_PEOPLE_BOXES, two_people_image
    from playwright.sync_api import sync_playwright

    from sapiens_hf.tasks import SegmentationTask

    photo = tmp_path / "two_people.png"
    PIL.Image.fromarray(two_people_image()).save(photo)
    silhouettes = torch.from_numpy((two_people_image() != 225).any(-1))
    monkeypatch.setattr(SegmentationTask, "person_mask", lambda self, segmentation: silhouettes)

    def known_people(picture):
        return [{"label": "person", "score": 1.0, "box": {"xmin": x, "ymin": y, "xmax": x + w, "ymax": y + h}}
                for x, y, w, h in TWO_PEOPLE_BOXES]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = build_demo(models, device="cpu", detector=known_people)
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/")
            upload(page, photo)
            status = run(page, list(TASK_MODELS), "normal ")
            assert shown_images(page) == 4 and "person mask" not in status
            for task in TASK_MODELS:  # every picture inside the window: nothing to scroll to
                box = page.locator(f"#result-{task} img").bounding_box()
                assert box["y"] + box["height"] <= VIEWPORT["height"], (task, box)
            files = downloads(page)
            coco = json.loads(files["two_people_keypoints.json"])
            assert [person["bbox"] for person in coco["annotations"]] == TWO_PEOPLE_BOXES
            depth = np.load(io.BytesIO(files["two_people_depth.npy"]))
            assert np.array_equal(np.isfinite(depth), silhouettes.numpy())
            screenshot(page, "two_people", tmp_path)
            browser.close()
    finally:
        blocks.close()


@pytest.mark.slow
def test_sapiens_and_sapiens2_side_by_side_in_the_browser(chromium, tiny_model, detector, tmp_path):
    """One demo serving both generations (the config decides): Sapiens pose and depth, Sapiens2 segmentation, normals,
    pointmaps and matting. All six pictures fit in the window, each labelled with its task and its model's
    generation, and the legend names the Sapiens2 model's 29 classes; on the bundled photo and on two people. Its
    screenshots are docs/demo/v1_and_v2*.png."""
    from helpers import two_people_image
    from playwright.sync_api import sync_playwright

    generations = {"pose": "Sapiens", "depth": "Sapiens", "segmentation": "Sapiens2", "normal": "Sapiens2",
                   "pointmap": "Sapiens2", "matting": "Sapiens2"}
    models = {task: tiny_model(task if generation == "Sapiens" else f"v2-{task}")
              for task, generation in generations.items()}
    photo = tmp_path / "two_people.png"
    PIL.Image.fromarray(two_people_image()).save(photo)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = build_demo(models, device="cpu", detector=detector)
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/")
            for image, name, expect in [(SAMPLE_IMAGE, "v1_and_v2", "astronaut.jpg"),
                                        (photo, "v1_and_v2_two_people", "two_people.png")]:
                upload(page, image)
                status = run(page, list(DEMO_TASKS), expect)
                assert all(f"{task} " in status for task in DEMO_TASKS), status
                assert shown_images(page) == len(DEMO_TASKS)
                for task, generation in generations.items():  # labelled, and inside the window: nothing to scroll to
                    slot = page.locator(f"#result-{task}")
                    assert slot.get_by_text(f"{task} · {generation}", exact=True).count() == 1, task
                    box = slot.locator("img").bounding_box()
                    assert box["y"] + box["height"] <= VIEWPORT["height"], (task, box)
                legend = page.locator("#legend").inner_text()
                assert "Segmentation classes of the Sapiens2 model (29)" in legend and "Left_Upper_Leg" in legend
                assert "&#x27;" not in page.locator("body").inner_text()
                screenshot(page, name, tmp_path)
            screenshot(page, "v1_and_v2_full", tmp_path, full_page=True)
            browser.close()
    finally:
        blocks.close()


def test_each_picture_and_the_legend_name_their_models_generation(tiny_model):
    """Without a browser: a demo mixing generations labels each picture with its model's generation (from its
    config) and titles the legend with the segmentation model's generation and class count; unrun tasks keep their
    plain label, and a failed request shows no generation."""
    app = DemoApp({"pose": tiny_model("pose"), "seg": tiny_model("v2-segmentation")}, device="cpu")
    *pictures, legend, _, status = app.respond(str(SAMPLE_IMAGE), ["pose", "segmentation"], "whole image", "", 0.3,
                                               0.3, False)
    assert "total" in status, status
    labels = {task: picture.label for task, picture in zip(DEMO_TASKS, pictures)}
    assert labels == {"pose": "pose · Sapiens", "segmentation": "segmentation · Sapiens2", "depth": "depth",
                      "normal": "normal", "pointmap": "pointmap", "matting": "matting"}
    assert "Segmentation classes of the Sapiens2 model (29):" in legend
    *pictures, legend, _, status = app.respond(str(tmp_text(app)), ["pose"], "whole image", "", 0.3, 0.3, False)
    assert status.startswith("**Error:**") and [picture.label for picture in pictures] == list(DEMO_TASKS)
