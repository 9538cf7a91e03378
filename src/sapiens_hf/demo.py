"""`sapiens-hf demo` (or `python -m sapiens_hf.demo`): a Gradio web app for the four Sapiens tasks (pose, body-part
segmentation, depth, surface normals) on one uploaded image, e.g.
`sapiens-hf demo --model pose=facebook/sapiens-pose-1b --device cuda` (needs the `demo` extra:
`pip install "sapiens-hf[demo]"`).

A thin layer over what `sapiens-hf predict` uses: the models load through `pipelines.load_task_pipeline` (any model
`from_pretrained` takes, Meta's original releases and `sapiens-hf export` folders included; a model of another task
is refused with its `WrongModelError` message), the upload is read by the package's `read_image` with the documented
pixel limit (`SapiensImageProcessorPil.max_image_pixels`), the pipelines predict, `visualization` draws, and the
downloads are the files `predict` writes for the same image (COCO keypoints JSON from `sapiens_hf.coco`, label PNG,
depth and normals `.npy`; tests/test_demo.py compares them). Every problem of a request is shown in the page as one
line; the traceback goes to the server's log only.

The command line imports this module (its `demo` command checks the options, then calls `serve`), so this module
imports nothing from `sapiens_hf.cli` (the package's modules form no import cycle): `python -m sapiens_hf.demo` runs
that command. Gradio, an optional dependency, is imported inside the functions that build the app."""

from __future__ import annotations

import atexit
import html
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import visualization
from .coco import keypoints_document, person_annotation
from .image_io import read_image
from .image_processing_sapiens import SapiensImageProcessorPil
from .pipelines import WrongModelError, load_task_pipeline
from .tasks import PIPELINE_TASKS, TASKS, get_task


DEMO_TASKS = tuple(task.name for task in PIPELINE_TASKS.values())  # the tasks with a pipeline
FLIP_TEST_TASKS = ("pose", "depth")
BOX_SOURCES = ("whole image", "typed boxes", "person detector")
DEFAULT_DETECTOR = "hustvl/yolos-tiny"
KEEP_RESULTS_S = 3600  # results (and Gradio's copies of them) older than this are deleted
logger = logging.getLogger(__name__)


class DemoError(Exception):
    """A problem of a request that the page shows as one line: a bad upload, malformed boxes, a model that does not
    load or does not fit its task."""


def main(argv: list[str] | None = None) -> int:
    """`python -m sapiens_hf.demo [options]` is `sapiens-hf demo [options]`: it runs that command with this Python, as
    a process (not an import, see above), and returns its exit code. Ctrl-C stops the command, which shuts down."""
    command = [sys.executable, "-m", "sapiens_hf.cli", "demo", *(sys.argv[1:] if argv is None else argv)]
    with subprocess.Popen(command) as process:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command gets Ctrl-C, and answers it
        try:
            return process.wait()
        finally:
            signal.signal(signal.SIGINT, previous)


def serve(models: dict, device: str | None = None, port: int = 7860, share: bool = False) -> int:
    """Serves the app until interrupted (`sapiens-hf demo`, which checks the options first)."""
    build_demo(models, device).launch(server_port=port, share=share)
    return 0


def build_demo(models: dict, device: str | None = None):
    """The app (a `gr.Blocks`; call `.launch()`): `models` maps tasks to model ids or paths, the others get their
    pipeline's default (`TASKS[task].default_checkpoint`). Models load on first use."""
    import gradio as gr

    app = DemoApp(models, device)
    limit = SapiensImageProcessorPil.max_image_pixels
    model_lines = "\n".join(f"- {task}: `{model}`" for task, model in app.models.items())
    with gr.Blocks(title="Sapiens demo", analytics_enabled=False,
                   delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S)) as blocks:
        gr.Markdown(f"# Sapiens\nUpload a photo of people, choose the tasks, press **Run**. Models:\n{model_lines}")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"Image (at most {limit / 1e6:g} megapixels)", type="filepath",
                                 elem_id="upload")
                tasks = gr.CheckboxGroup(list(DEMO_TASKS), value=["pose"], label="Tasks", elem_id="tasks")
                with gr.Accordion("Pose", open=True):
                    box_source = gr.Radio(list(BOX_SOURCES), value=BOX_SOURCES[0], label="People",
                                          elem_id="box-source")
                    boxes = gr.Textbox(label="Boxes: x, y, w, h per line (typed boxes)", lines=2,
                                       placeholder="120, 30, 260, 480", elem_id="boxes")
                    detector = gr.Textbox(DEFAULT_DETECTOR, label="Person detector: object-detection model id or "
                                          "folder (person detector)", elem_id="detector")
                    detector_threshold = gr.Slider(0, 1, 0.3, step=0.05, label="Detector threshold")
                    keypoint_threshold = gr.Slider(0, 1, 0.3, step=0.05, label="Keypoint threshold (drawn and "
                                                   "counted above it)", elem_id="keypoint-threshold")
                flip_test = gr.Checkbox(label="Flip test: average with the mirrored image (pose, depth)",
                                        elem_id="flip-test")
                run = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Input and results", columns=2, object_fit="contain", height="auto",
                                     elem_id="results")
                legend = gr.HTML(elem_id="legend")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
        inputs = [upload, tasks, box_source, boxes, detector, detector_threshold, keypoint_threshold, flip_test]
        run.click(app.respond, inputs, [gallery, legend, downloads, status])
    return blocks


class DemoApp:
    """What the Run button does, and the pipelines it loads on first use (one request at a time)."""

    def __init__(self, models: dict, device: str | None = None):
        chosen = {get_task(task).name: model for task, model in models.items() if model}  # aliases too ("seg")
        if set(chosen) - set(DEMO_TASKS):
            raise ValueError(f"The demo runs {', '.join(DEMO_TASKS)}; got models for {sorted(chosen)}")
        self.models = {task: chosen.get(task) or TASKS[task].default_checkpoint for task in DEMO_TASKS}
        self.device = device
        self.pipelines: dict = {}
        self.lock = threading.Lock()
        self.results_root = Path(tempfile.mkdtemp(prefix="sapiens-hf-demo-"))
        atexit.register(shutil.rmtree, self.results_root, True)

    def respond(self, upload, tasks, box_source, boxes, detector, detector_threshold, keypoint_threshold,
                flip_test):
        """The page's outputs: the gallery (input, then one picture per task), the segmentation legend, the
        downloads and the status line (timings, or what went wrong)."""
        import gradio as gr

        try:
            with self.lock:
                return self.predict(upload, tasks, box_source, boxes, detector, detector_threshold,
                                    keypoint_threshold, flip_test)
        except DemoError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001  (shown in the page; the traceback goes to the log)
            logger.exception("sapiens-hf demo: the request failed")
            message = f"{type(error).__name__}: {error}"
        gr.Warning(message)
        return gr.Gallery(value=None, columns=2), "", None, f"**Error:** {html.escape(message)}"

    def predict(self, upload, tasks, box_source, boxes, detector, detector_threshold, keypoint_threshold,
                flip_test):
        """Reads the upload once, then runs, draws and saves each chosen task in turn; raises on the first problem."""
        import gradio as gr

        if not upload:
            raise DemoError("Upload an image first.")
        if not tasks:
            raise DemoError("Choose at least one task.")
        pose_kwargs = pose_arguments(box_source, boxes, detector, detector_threshold) if "pose" in tasks else {}
        started = time.perf_counter()
        image, name = read_upload(upload), Path(upload).name
        output_dir = self.new_results_dir()
        gallery, downloads, timings, legend = [(upload, "input")], [], [], ""
        for task in [task for task in DEMO_TASKS if task in tasks]:
            pipe, load_seconds = self.pipeline(task)
            kwargs = dict(pose_kwargs) if task == "pose" else {}
            if flip_test and task in FLIP_TEST_TASKS:
                kwargs["flip_test"] = True
            predicted = time.perf_counter()
            result = pipe(image, **kwargs)
            timings.append(f"{task} {time.perf_counter() - predicted:.2f} s"
                           + (f" (+ loading the model {load_seconds:.2f} s)" if load_seconds else ""))
            picture, download = save_result(task, result, image, output_dir, name, keypoint_threshold,
                                            pipe.model.config)
            gallery.append((picture, task))
            downloads.append(download)
            if task == "segmentation":
                legend = legend_html(pipe.model.config)
        height, width = image.shape[:2]
        status = (f"{html.escape(name)} ({width}×{height}) on {pipe.device}: "
                  f"{' · '.join(timings)} — total {time.perf_counter() - started:.2f} s")
        return gr.Gallery(value=gallery, columns=min(len(gallery), 3)), legend, downloads, status

    def pipeline(self, task: str):
        """The task's pipeline, loaded on first use, and the seconds its loading took now (0 when cached)."""
        if task in self.pipelines:
            return self.pipelines[task], 0.0
        model, started = self.models[task], time.perf_counter()
        try:
            pipe = load_task_pipeline(task, model, device=self.device)
        except WrongModelError as error:
            raise DemoError(f"The {task} model {model} does not fit: {error}") from None
        except Exception as error:  # noqa: BLE001  (a missing, unreachable or broken checkpoint)
            logger.exception("sapiens-hf demo: cannot load %s", model)
            raise DemoError(f"Cannot load the {task} model {model}: {type(error).__name__}: {error}") from None
        self.pipelines[task] = pipe
        return pipe, time.perf_counter() - started

    def new_results_dir(self) -> Path:
        """A new folder for one request's files; those of requests older than `KEEP_RESULTS_S` are deleted."""
        for old in self.results_root.iterdir():
            if time.time() - old.stat().st_mtime > KEEP_RESULTS_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.results_root))


def read_upload(path: str):
    """The upload as an `(H, W, 3)` uint8 RGB array, read as `predict` reads images: the pixel limit is checked from
    the file's header, before decoding. Errors name the file, not its temporary path."""
    name = Path(path).name
    try:
        return read_image(path, max_pixels=SapiensImageProcessorPil.max_image_pixels)
    except Exception as error:  # noqa: BLE001  (PIL's DecompressionBombError is none of OSError/ValueError)
        message = str(error).replace(str(path), name)
        raise DemoError(message if name in message else f"Cannot read {name} as an image: {message}") from None


def pose_arguments(box_source: str, boxes: str, detector: str, detector_threshold: float) -> dict:
    """The pose pipeline's keyword arguments for the chosen source of person boxes."""
    if box_source == "typed boxes":
        typed = parse_boxes(boxes or "")
        if not typed:
            raise DemoError("Type at least one box (x, y, w, h per line), or choose another source of people.")
        return {"boxes": typed}
    if box_source == "person detector":
        if not (detector or "").strip():
            raise DemoError("Name an object-detection model for the person detector.")
        return {"detector": detector.strip(), "detector_threshold": detector_threshold}
    return {}


def parse_boxes(text: str) -> list[list[float]]:
    """`x, y, w, h` per line (commas and/or spaces); empty lines are skipped. The pipeline checks the values."""
    boxes = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            box = [float(value) for value in line.replace(",", " ").split()]
        except ValueError:
            box = []
        if len(box) != 4:
            raise DemoError(f"Box line {number} ({line.strip()!r}): expected four numbers x, y, w, h")
        boxes.append(box)
    return boxes


def save_result(task: str, result, image, output_dir: Path, file_name: str, keypoint_threshold: float,
                model_config) -> tuple[str, str]:
    """Writes the picture and the download of one task's result into `output_dir`, named and made as `predict`
    makes them (`photo_pose_vis.jpg`, `photo_keypoints.json`, `photo_seg.png`, `photo_depth.npy`, ...); returns
    their paths."""
    stem, tag = Path(file_name).stem, TASKS[task].file_tag
    if task == "pose":
        picture = visualization.draw_keypoints(image, result, keypoint_threshold=keypoint_threshold)
        download = output_dir / f"{stem}_keypoints.json"
        height, width = image.shape[:2]
        record = {"image": {"file_name": file_name, "height": height, "width": width},
                  "annotations": [person_annotation(person, keypoint_threshold) for person in result]}
        document = keypoints_document([record], model_config)
        download.write_text(json.dumps(document))
    elif task == "segmentation":
        picture = visualization.overlay_segmentation(image, result["segmentation"])
        download = output_dir / f"{stem}_{tag}.png"
        result["label_map"].save(download)  # pixel values = class indices
    elif task == "depth":
        picture, download = result["depth"], output_dir / f"{stem}_{tag}.npy"
        np.save(download, result["predicted_depth"].float().numpy())
    else:
        picture, download = result["normal_map"], output_dir / f"{stem}_{tag}.npy"
        np.save(download, result["normals"].float().permute(1, 2, 0).numpy())  # (H, W, 3)
    picture_path = output_dir / f"{stem}_{tag}_vis.{'jpg' if task in ('pose', 'segmentation') else 'png'}"
    picture.save(picture_path)
    return str(picture_path), str(download)


def legend_html(model_config) -> str:
    """The segmentation classes in their overlay colours (`visualization.segmentation_palette`)."""
    names = [model_config.id2label[index] for index in range(model_config.num_labels)]
    items = [
        f'<span style="display:inline-block;margin:2px 10px 2px 0;white-space:nowrap">'
        f'<span style="display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;'
        f'background:rgb({red},{green},{blue})"></span>{html.escape(str(name))}</span>'
        for name, (red, green, blue) in zip(names, visualization.segmentation_palette(len(names)).tolist())
    ]
    return f'<div class="legend"><b>Segmentation classes:</b> {"".join(items)}</div>'


if __name__ == "__main__":
    sys.exit(main())
