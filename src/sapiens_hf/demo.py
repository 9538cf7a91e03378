"""`sapiens-hf demo` (or `python -m sapiens_hf.demo`): a Gradio web app for the Sapiens tasks (pose, body-part
segmentation, depth, surface normals, and Sapiens2's pointmaps and matting) on one uploaded image, with Sapiens and
Sapiens2 models side by side (each model's config decides its generation), e.g.
`sapiens-hf demo --model pose=facebook/sapiens-pose-1b --device cuda` (needs the `demo` extra:
`pip install "sapiens-hf[demo]"`).

A thin layer over what `sapiens-hf predict` uses: the models load through `pipelines.load_task_pipeline` (any model
`from_pretrained` takes, Meta's original releases and `sapiens-hf export` folders included; a model of another task
is refused with its `WrongModelError` message), the upload is read by the package's `read_image` with the documented
pixel limit (`SapiensImageProcessorPil.max_image_pixels`), the pipelines predict, and `predict`'s writer
(`batch.writers.FileWriter`) draws and writes the downloads: the files `predict` writes for the same image (COCO
keypoints JSON, label PNG, depth and normals `.npy`, the pointmap's `.npy` and `.ply` point cloud; tests/test_demo.py
compares them). Every problem of a request is shown in the page as one line; the traceback goes to the server's log
only.

The command line imports this module (its `demo` command checks the options, then calls `serve`), so this module
imports nothing from `sapiens_hf.cli` (the package's modules form no import cycle): `python -m sapiens_hf.demo` runs
that command. Gradio, an optional dependency, is imported inside the functions that build the app."""

from __future__ import annotations

import atexit
import html
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .batch.inputs import Frame, Input
from .batch.writers import FileWriter
from .families import family_of
from .image_io import SAMPLE_IMAGE, read_image
from .image_processing_sapiens import SapiensImageProcessorPil
from .keypoint_formats import FORMAT_NAMES, NATIVE
from .modeling_sapiens import WrongModelError
from .pipelines import load_task_pipeline
from .tasks import DEFAULT_DETECTOR, PIPELINE_TASKS, SEGMENTATION, TASKS, Task, get_task
from .visualization import class_palette


DEMO_TASKS = tuple(task.name for task in PIPELINE_TASKS.values())  # the tasks with a pipeline
BOX_SOURCES = ("person detector", "whole image", "typed boxes")
# A shared demo is a server: what one request may leave on its disk, and for how long, is bounded.
KEEP_RESULTS_S = 600  # results (and Gradio's copies of them) older than this are deleted
KEEP_REQUESTS = 8  # and only the results of the newest requests are kept
MAX_UPLOAD = "50mb"  # Gradio refuses larger uploads before they are stored
QUEUE_SIZE = 16  # requests waiting for their turn (one runs at a time); more are turned away
PREVIEW_PIXELS = 640  # the longer side of the upload's preview
# The result pictures, three to a row: all six tasks' pictures fit in a 1280×900 window without scrolling.
RESULTS_PER_ROW = 3
RESULT_HEIGHT = 300
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


def serve(models: dict, device: str | None = None, port: int = 7860, share: bool = False,
          detector: str | None = DEFAULT_DETECTOR, backend: str = "torch", quiet: bool = False) -> int:
    """Loads every model, then serves the app until interrupted (`sapiens-hf demo`, which checks the options first):
    no request waits for a model to load, convert or export (`backend`, as `load_task_pipeline`'s, for a server with
    no known number of images; each model's backend is printed once unless `quiet`)."""
    blocks, app = build_demo(models, device, detector, return_app=True, backend=backend, quiet=quiet)
    app.load_all()
    blocks.launch(server_port=port, share=share, max_file_size=MAX_UPLOAD)
    return 0


def build_demo(models: dict, device: str | None = None, detector: str | None = DEFAULT_DETECTOR,
               return_app: bool = False, backend: str = "torch", quiet: bool = False):
    """The app (a `gr.Blocks`; call `.launch()`): `models` maps tasks to model ids or paths, the others get their
    pipeline's default (`TASKS[task].default_checkpoint`); `detector` is the person detector of pose (None: none).
    The models are the operator's choice: a request picks tasks and options, never a model or a path. Models load
    on first use (`serve` loads them first); requests queue and run one at a time."""
    import gradio as gr

    app = DemoApp(models, device, detector, backend, quiet)
    limit = SapiensImageProcessorPil.max_image_pixels
    model_lines = "\n".join(f"- {task}: `{model}`" for task, model in app.models.items())
    detector_line = f"\n- person detector: `{app.detector}`" if app.detector else ""
    sources = [source for source in BOX_SOURCES if app.detector or source != "person detector"]
    with gr.Blocks(title="Sapiens demo", analytics_enabled=False,
                   delete_cache=(KEEP_RESULTS_S, KEEP_RESULTS_S)) as blocks:
        gr.Markdown("# Sapiens\nUpload a photo of people (or click the example), choose the tasks, press **Run**.")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                upload = gr.File(label=f"Image (at most {limit / 1e6:g} megapixels)", type="filepath",
                                 elem_id="upload", height=90)
                preview = gr.Image(label="Preview", interactive=False, height=240, elem_id="preview")
                gr.Examples([[str(SAMPLE_IMAGE)]], inputs=[upload], label="Example photo (click to use it)",
                            example_labels=[SAMPLE_IMAGE.name], elem_id="examples")
                tasks = gr.CheckboxGroup(list(DEMO_TASKS), value=list(DEMO_TASKS[:1]), label="Tasks", elem_id="tasks")
                run = gr.Button("Run", variant="primary", elem_id="run")
                with gr.Accordion("Pose: which people", open=True):
                    box_source = gr.Radio(sources, value=sources[0], label="People", elem_id="box-source")
                    boxes = gr.Textbox(label="Boxes: x, y, w, h per line (typed boxes)", lines=2,
                                       placeholder="120, 30, 260, 480", elem_id="boxes")
                    detector_threshold = gr.Slider(0, 1, 0.3, step=0.05, label="Detector threshold",
                                                   visible=bool(app.detector))
                    keypoint_threshold = gr.Slider(0, 1, 0.3, step=0.05, label="Keypoint threshold (drawn and "
                                                   "counted above it)", elem_id="keypoint-threshold")
                    keypoint_format = gr.Dropdown(list(FORMAT_NAMES), value=NATIVE, elem_id="keypoint-format",
                                                  label="Keypoint format (the model's own, or by name: COCO 17, "
                                                  "COCO-WholeBody 133, OpenPose 18)")
                with gr.Accordion("Options", open=True):
                    mask = gr.Checkbox(value=True, label="Depth and normals on the people only (the person mask "
                                       "of the segmentation model)", elem_id="mask")
                    flip_names = ", ".join(task.name for task in PIPELINE_TASKS.values() if task.flip_test)
                    flip_test = gr.Checkbox(label=f"Flip test: average with the mirrored image ({flip_names})",
                                            elem_id="flip-test")
                with gr.Accordion("Models (chosen by the operator)", open=False):
                    gr.Markdown(model_lines + detector_line)
            with gr.Column(scale=2, min_width=480):
                status = gr.Markdown("Results appear here.", elem_id="status")
                pictures = []
                with gr.Column(elem_id="results"):
                    for start in range(0, len(DEMO_TASKS), RESULTS_PER_ROW):
                        with gr.Row(equal_height=True):
                            pictures += [gr.Image(label=task, interactive=False, visible=False, height=RESULT_HEIGHT,
                                                  elem_id=f"result-{task}")
                                         for task in DEMO_TASKS[start : start + RESULTS_PER_ROW]]
                legend = gr.HTML(elem_id="legend")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
        upload.change(preview_image, upload, preview)
        inputs = [upload, tasks, box_source, boxes, detector_threshold, keypoint_threshold, flip_test, mask,
                  keypoint_format]

        def respond(*values, progress=gr.Progress()):  # noqa: B008  (Gradio's way to report progress)
            return app.respond(*values, progress=progress)

        run.click(respond, inputs, [*pictures, legend, downloads, status])
    blocks.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return (blocks, app) if return_app else blocks


def preview_image(upload):
    """A small copy of the upload for the page (None when it is not a readable image: Run says why)."""
    import PIL.Image

    if not upload:
        return None
    try:
        picture = PIL.Image.fromarray(read_upload(upload))
    except DemoError:
        return None
    picture.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS))
    return picture


class DemoApp:
    """What the Run button does, and the pipelines it loads on first use (one request at a time)."""

    def __init__(self, models: dict, device: str | None = None, detector: str | None = DEFAULT_DETECTOR,
                 backend: str = "torch", quiet: bool = False):
        chosen = {get_task(task).name: model for task, model in models.items() if model}  # aliases too ("seg")
        if set(chosen) - set(DEMO_TASKS):
            raise ValueError(f"The demo runs {', '.join(DEMO_TASKS)}; got models for {sorted(chosen)}")
        self.models = {task: chosen.get(task) or TASKS[task].default_checkpoint for task in DEMO_TASKS}
        self.device, self.detector, self.backend, self.quiet = device, detector, backend, quiet
        self.pipelines: dict = {}
        self.lock = threading.Lock()
        self.results_root = Path(tempfile.mkdtemp(prefix="sapiens-hf-demo-"))
        atexit.register(shutil.rmtree, self.results_root, True)

    def respond(self, upload, tasks, box_source, boxes, detector_threshold, keypoint_threshold, flip_test,
                mask=True, keypoint_format=NATIVE, progress=None):
        """The page's outputs: one picture per task (hidden when not run), the segmentation legend, the downloads and
        the status line (timings, or what went wrong: its only message, plain text)."""
        try:
            with self.lock:
                return self.predict(upload, tasks, box_source, boxes, detector_threshold, keypoint_threshold,
                                    flip_test, mask, keypoint_format, progress)
        except DemoError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001  (shown in the page; the traceback goes to the log)
            logger.exception("sapiens-hf demo: the request failed")
            message = f"{type(error).__name__}: {error}"
        return (*self.pictures({}, {}), "", None, f"**Error:** {plain_text(message)}")

    @staticmethod
    def pictures(shown: dict, generations: dict) -> list:
        """The result slots of the page: each task's picture, shown only when the task ran, labelled with the task and
        its model's generation (`generations`: task → "Sapiens" or "Sapiens2"; both serve side by side)."""
        import gradio as gr

        return [gr.Image(value=shown.get(task), visible=task in shown,
                         label=f"{task} · {generations[task]}" if task in generations else task)
                for task in DEMO_TASKS]

    def load_all(self) -> None:
        """Loads the pipeline of every task and the person detector, printing each (the server's terminal)."""
        for task in DEMO_TASKS:
            print(f"sapiens-hf demo: loading the {task} model {self.models[task]} ...", flush=True)
            pipe, _ = self.pipeline(task)
            if TASKS[task].top_down and self.detector:
                print(f"sapiens-hf demo: loading the person detector {self.detector} ...", flush=True)
                pipe._resolve_detector(self.detector)

    def predict(self, upload, tasks, box_source, boxes, detector_threshold, keypoint_threshold, flip_test,
                mask=True, keypoint_format=NATIVE, progress=None):
        """Reads the upload once, then runs, draws and saves each chosen task in turn (the segmentation's pass also
        gives depth and normals their person mask); raises on the first problem."""
        def stage(fraction: float, text: str) -> None:
            if progress is not None:
                progress(fraction, desc=text)

        if not upload:
            raise DemoError("Upload an image first (or click the example photo).")
        if not tasks:
            raise DemoError("Choose at least one task.")
        chosen = [TASKS[task] for task in DEMO_TASKS if task in tasks]
        top_down = any(task.top_down for task in chosen)
        pose_kwargs = pose_arguments(box_source, boxes, self.detector, detector_threshold) if top_down else {}
        masked = mask and any(task.masked for task in chosen)
        started = time.perf_counter()
        stage(0.0, "Reading the image")
        image, name = read_upload(upload), Path(upload).name
        output_dir = self.new_results_dir()
        shown, generations, downloads, timings, legend, people = {}, {}, [], [], "", None
        steps = len(chosen) + (masked and SEGMENTATION not in chosen)
        for task in [SEGMENTATION] * (masked and SEGMENTATION not in chosen) + chosen:  # the mask's pass first
            stage(len(timings) / steps, self.stage_text(task, task in chosen, pose_kwargs))
            pipe, load_seconds = self.pipeline(task.name)
            kwargs = dict(pose_kwargs) if task.top_down else {}
            if flip_test and task.flip_test:
                kwargs["flip_test"] = True
            if task.top_down and keypoint_format != NATIVE:
                try:  # refused before the model runs
                    pipe.keypoint_conversion(keypoint_format)
                except ValueError as error:
                    raise DemoError(f"Keypoint format: {error}") from None
                kwargs["keypoint_format"] = keypoint_format
            predicted = time.perf_counter()
            if task.masked:
                result = pipe({"image": image, "mask": people} if masked else image, mask=False, **kwargs)
            else:
                result = pipe(image, **kwargs)
            label = task.name if task in chosen else "person mask"
            timings.append(f"{label} {time.perf_counter() - predicted:.2f} s"
                           + (f" (+ loading the model {load_seconds:.2f} s)" if load_seconds else ""))
            if task is SEGMENTATION and masked:
                people = SEGMENTATION.person_mask(result["segmentation"]).numpy()
            if task not in chosen:
                continue
            picture, files = save_result(task, result, image, output_dir, name, keypoint_threshold,
                                         pipe.model.config)
            shown[task.name] = picture
            generations[task.name] = family_of(pipe.model.config).name
            downloads += files
            if task.classes:
                legend = legend_html(pipe.model.config)
        stage(1.0, "Done")
        height, width = image.shape[:2]
        status = (f"{plain_text(name)} ({width}×{height}) on {pipe.device}: "
                  f"{' · '.join(timings)} — total {time.perf_counter() - started:.2f} s")
        return (*self.pictures(shown, generations), legend, downloads, status)

    def stage_text(self, task: Task, chosen: bool, pose_kwargs: dict) -> str:
        """What the progress bar says while `task` runs."""
        if not chosen:
            return "Person mask for depth and normals: segmentation model"
        if task.top_down and "detector" in pose_kwargs:
            return f"Pose: finding the people ({self.detector}), then their keypoints"
        return f"{task.name.capitalize()}: {task.description}"

    def pipeline(self, task: str):
        """The task's pipeline, loaded on first use, and the seconds its loading took now (0 when cached)."""
        if task in self.pipelines:
            return self.pipelines[task], 0.0
        model, started = self.models[task], time.perf_counter()
        try:
            pipe = load_task_pipeline(task, model, device=self.device, backend=self.backend,
                                      report=None if self.quiet else lambda line: print(f"{task}: {line}",
                                                                                          file=sys.stderr))
        except WrongModelError as error:
            raise DemoError(f"The {task} model {model} does not fit: {error}") from None
        except Exception as error:  # noqa: BLE001  (a missing, unreachable or broken checkpoint)
            logger.exception("sapiens-hf demo: cannot load %s", model)
            raise DemoError(f"Cannot load the {task} model {model}: {type(error).__name__}: {error}") from None
        self.pipelines[task] = pipe
        return pipe, time.perf_counter() - started

    def new_results_dir(self) -> Path:
        """A new folder for one request's files; those of requests older than `KEEP_RESULTS_S` are deleted, and all
        but the newest `KEEP_REQUESTS - 1`, so the results on the server's disk stay bounded."""
        folders = sorted(self.results_root.iterdir(), key=lambda folder: folder.stat().st_mtime, reverse=True)
        for index, old in enumerate(folders):
            if index >= KEEP_REQUESTS - 1 or time.time() - old.stat().st_mtime > KEEP_RESULTS_S:
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


def plain_text(text: str) -> str:
    """`text` shown as it is in the Markdown status line: Markdown's punctuation backslash-escaped (not as HTML
    entities, which the page would show literally)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!<>&|~])", r"\\\1", text)


def pose_arguments(box_source: str, boxes: str, detector: str | None, detector_threshold: float) -> dict:
    """The pose pipeline's keyword arguments for the chosen source of person boxes (`detector`: the operator's)."""
    if box_source == "typed boxes":
        typed = parse_boxes(boxes or "")
        if not typed:
            raise DemoError("Type at least one box (x, y, w, h per line), or choose another source of people.")
        return {"boxes": typed}
    if box_source == "person detector" and detector:
        return {"detector": detector, "detector_threshold": detector_threshold}
    return {"detector": None}  # the whole image


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


def save_result(task: Task, result, image, output_dir: Path, file_name: str, keypoint_threshold: float,
                model_config) -> tuple[str, list[str]]:
    """Writes the picture and the downloads of one task's result into `output_dir` with `predict`'s writer, named as
    `predict` names them but for the records file (`photo_pose_vis.jpg`, `photo_keypoints.json`, `photo_seg.png`,
    `photo_depth.npy` and its `photo_depth_mask.png`, `photo_pointmap.npy` and its `photo_pointmap.ply`, ...); returns
    the picture's path and the downloads' paths."""
    stem = Path(file_name).stem
    masked = isinstance(result, dict) and "mask" in result
    writer = FileWriter(task, output_dir, keypoint_threshold, task.records_file and f"{stem}_{task.records_file}",
                        masked=masked)
    kept = writer.write(Frame(Input(Path(file_name), stem), None, image), result)
    if writer.records_path is not None:
        writer.write_records([kept], model_config)
    files = [str(writer.records_path)] if writer.records_path is not None else [
        str(path) for path in task.result_paths(output_dir, stem)]  # the result and its companions (a pointmap's .ply)
    return str(task.visual_path(output_dir, stem)), files + ([str(task.mask_path(output_dir, stem))] if masked else [])


def legend_html(model_config) -> str:
    """The segmentation classes in their overlay colours (`class_palette`: by name, so Sapiens2's 29 classes too),
    under a title that names the model's generation and counts its classes."""
    names = [model_config.id2label[index] for index in range(model_config.num_labels)]
    items = [
        f'<span style="display:inline-block;margin:2px 10px 2px 0;white-space:nowrap">'
        f'<span style="display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;'
        f'background:rgb({red},{green},{blue})"></span>{html.escape(str(name))}</span>'
        for name, (red, green, blue) in zip(names, class_palette(model_config.id2label).tolist())
    ]
    title = f"Segmentation classes of the {family_of(model_config).name} model ({len(names)})"
    return f'<div class="legend"><b>{title}:</b> {"".join(items)}</div>'


if __name__ == "__main__":
    sys.exit(main())
