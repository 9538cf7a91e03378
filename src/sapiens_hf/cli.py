"""`sapiens-hf` command line: batch prediction on images, folders and videos, and checkpoint conversion, e.g.

`sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b photo.jpg clips/ --output out/`
`sapiens-hf convert sapiens_0.3b_goliath_best_goliath_AP_573.pth out/sapiens-pose-0.3b --task pose`

The parser and everything at module level use the standard library only, and so does `import sapiens_hf` (see its
`__init__`): `sapiens-hf --help` and a mistyped option answer at once. torch, transformers, OpenCV and the models are
imported inside the commands that need them.

`predict` guarantees (docs/inference.md): every argument is checked before any work; it never replaces a file that
it did not write unless `--overwrite` is given; it never reads its own outputs (the output folder is left out of
folder searches); it records its progress in a JSON Lines file in the output folder as results are written, so an
interrupted run keeps every finished image and the same command resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import cv2
    import numpy as np

TASKS = {"pose": "sapiens-pose", "seg": "sapiens-segmentation", "depth": "sapiens-depth", "normal": "sapiens-normal"}
MODEL_CLASSES = {
    "pose": "SapiensForPoseEstimation",
    "seg": "SapiensForSemanticSegmentation",
    "depth": "SapiensForDepthEstimation",
    "normal": "SapiensForNormalEstimation",
}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
RESULT_SUFFIXES = {"seg": "_seg.png", "depth": "_depth.npy", "normal": "_normal.npy"}  # pose: keypoints.json
DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes, resolved when the model is loaded
SAMPLE_IMAGE = Path(__file__).parent / "data" / "astronaut.jpg"
KEYPOINTS_FILE = "keypoints.json"
PROGRESS_FILE = "sapiens-hf-{task}-progress.jsonl"
DEBUG_ENV = "SAPIENS_HF_DEBUG"  # set to 1: tracebacks instead of one-line errors
EXIT_FAILED, EXIT_USAGE = 1, 2  # some inputs failed / the model cannot be loaded; bad arguments


class Interrupted(BaseException):
    """SIGINT or SIGTERM during `predict`: a BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Input:
    file: Path
    name: str  # output name: the path relative to its folder argument, without suffix
    frames: int = 1

    @property
    def is_video(self) -> bool:
        return self.file.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Frame:
    source: Input
    index: int | None  # None for a still image
    image: np.ndarray
    fps: float


def collect_inputs(paths: list[str], exclude: Path | None = None) -> tuple[list[Input], list[tuple[str, str]]]:
    """Every image/video given directly or found in a folder (recursively, sorted; never inside `exclude`, the
    output folder), each file once, and (path, reason) for arguments that do not exist. Output names keep
    sub-folders."""
    inputs, missing, seen = [], [], set()
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            entries = [Input(p, p.relative_to(path).with_suffix("").as_posix()) for p in _media_in(path, exclude)]
        elif path.is_file():
            entries = [Input(path, path.stem)]
        else:
            missing.append((argument, "no such file or folder"))
            continue
        for entry in entries:
            if entry.file.resolve() not in seen:
                seen.add(entry.file.resolve())
                inputs.append(entry)
    return inputs, missing


def _media_in(folder: Path, exclude: Path | None) -> list[Path]:
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not _inside(p, exclude)
    )


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def name_clashes(inputs: list[Input]) -> list[str]:
    """Inputs whose outputs would have the same names (`a/x.jpg` and `b/x.jpg` given as files, `x.jpg` and `x.png`;
    compared case-insensitively, for case-insensitive file systems)."""
    first, problems = {}, []
    for entry in inputs:
        other = first.setdefault(entry.name.casefold(), entry)
        if other is not entry:
            problems.append(f"{other.file} and {entry.file} would both write the outputs named {entry.name!r}: "
                            "rename one, or predict them into separate --output folders")
    return problems


def count_frames(file: Path) -> int:
    if file.suffix.lower() not in VIDEO_SUFFIXES:
        return 1
    import cv2

    capture = cv2.VideoCapture(str(file))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(frames, 0)


def read_frames(entry: Input):
    """Yields the frames of an image (one, index None) or a video; raises ValueError for an unreadable file."""
    import cv2

    from .image_processing_sapiens import load_image, to_rgb_uint8

    if not entry.is_video:
        yield Frame(entry, None, to_rgb_uint8(load_image(entry.file)), 0.0)
        return
    capture = cv2.VideoCapture(str(entry.file))
    if not capture.isOpened():
        raise ValueError("OpenCV cannot open this video")
    fps, index = capture.get(cv2.CAP_PROP_FPS), 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Frame(entry, index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError("the video has no readable frames")


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


def frame_stem(name: str, frame_index: int | None) -> str:
    return name if frame_index is None else f"{name}/frame_{frame_index:06d}"


def result_path(output_dir: Path, task: str, stem: str) -> Path | None:
    """The machine-readable result of one image/frame (none for pose: its results go to keypoints.json)."""
    return output_dir / f"{stem}{RESULT_SUFFIXES[task]}" if task in RESULT_SUFFIXES else None


def visual_path(output_dir: Path, task: str, name: str, video: bool) -> Path:
    suffix = "mp4" if video else "jpg" if task in ("pose", "seg") else "png"
    return output_dir / f"{name}_{task}_vis.{suffix}"


def planned_outputs(output_dir: Path, task: str, entry: Input) -> list[Path]:
    """The files that predicting `entry` writes (for a video, with its announced frame count)."""
    frames = range(entry.frames) if entry.is_video else [None]
    results = [result_path(output_dir, task, frame_stem(entry.name, index)) for index in frames]
    return [visual_path(output_dir, task, entry.name, entry.is_video)] + [path for path in results if path]


def write_atomically(path: Path, text: str) -> None:
    """Writes a temporary file next to `path` and renames it: readers see the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class ResultWriter:
    """Writes each image's / video frame's prediction: machine-readable results (`<name>_seg.png` class-index maps;
    `<name>_depth.npy`, `<name>_normal.npy` float32 maps; video frames under `<name>/frame_NNNNNN`; pose: a record
    for keypoints.json) and a visualisation (`<name>_<task>_vis.jpg|png`, or `<name>_<task>_vis.mp4` for a video)."""

    def __init__(self, task: str, output_dir: Path, keypoint_threshold: float):
        self.task, self.output_dir, self.keypoint_threshold = task, output_dir, keypoint_threshold
        self.videos: dict[str, cv2.VideoWriter] = {}

    def write(self, frame: Frame, result) -> dict | None:
        """Writes the files of one prediction; returns its keypoints.json record for pose."""
        import cv2
        import numpy as np

        target = result_path(self.output_dir, self.task, frame_stem(frame.source.name, frame.index))
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._save_result(target, result)
        visual = self._visual(frame.image, result)
        if frame.index is None:
            path = visual_path(self.output_dir, self.task, frame.source.name, video=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            visual.save(path)
        else:
            self._video(frame.source.name, visual.size, frame.fps).write(
                cv2.cvtColor(np.asarray(visual), cv2.COLOR_RGB2BGR)
            )
        return self._pose_record(frame, result) if self.task == "pose" else None

    def _save_result(self, target: Path, result) -> None:
        import numpy as np

        if self.task == "seg":
            result["label_map"].save(target)
        elif self.task == "depth":
            np.save(target, result["predicted_depth"].float().numpy())
        else:
            np.save(target, result["normals"].float().permute(1, 2, 0).numpy())

    def _visual(self, image: np.ndarray, result):
        from . import visualization

        if self.task == "pose":
            return visualization.draw_keypoints(image, result, keypoint_threshold=self.keypoint_threshold)
        if self.task == "seg":
            return visualization.overlay_segmentation(image, result["segmentation"])
        return result["depth"] if self.task == "depth" else result["normal_map"]

    def _video(self, name: str, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
        import cv2

        if name not in self.videos:
            path = visual_path(self.output_dir, self.task, name, video=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.videos[name] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, size)
        return self.videos[name]

    def _pose_record(self, frame: Frame, people: list[dict]) -> dict:
        """The COCO image and annotations of one image/frame, without the ids (numbered in keypoints.json)."""
        import torch

        height, width = frame.image.shape[:2]
        image = {"file_name": str(frame.source.file), "height": height, "width": width}
        annotations = []
        for person in people:
            keypoints = torch.cat([person["keypoints"], person["scores"][:, None].float()], dim=1)
            annotations.append(
                {
                    "category_id": 1,
                    "bbox": person["bbox_xywh"].tolist(),
                    "keypoints": [round(v, 3) for v in keypoints.flatten().tolist()],
                    "num_keypoints": int((person["scores"] > self.keypoint_threshold).sum()),
                    "score": float(person["scores"].mean()),
                    "bbox_score": person["bbox_score"],
                }
            )
        return {"image": image if frame.index is None else {**image, "frame": frame.index}, "annotations": annotations}

    def finish(self, name: str) -> None:
        """Closes the visualisation video of an input, if any."""
        video = self.videos.pop(name, None)
        if video is not None:
            video.release()

    def close(self) -> None:
        for name in list(self.videos):
            self.finish(name)


def coco_document(records: list[dict], model_config) -> dict:
    """keypoints.json (COCO format with `[x, y, score]` triplets) from the pose records, in order."""
    from . import metadata

    images, annotations = [], []
    for record in records:
        images.append({"id": len(images) + 1, **record["image"]})
        for annotation in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), **annotation})
    id2label = model_config.id2label
    category = {"id": 1, "name": "person", "keypoints": [id2label[i] for i in range(len(id2label))]}
    if model_config.num_labels in metadata.KEYPOINT_SET_BY_COUNT:
        links = metadata.keypoint_set(model_config.num_labels)["skeleton_links"]
        category["skeleton"] = [[a + 1, b + 1] for a, b in links]  # COCO skeletons are 1-based
    return {"images": images, "annotations": annotations, "categories": [category]}


class Progress:
    """The run's record, `sapiens-hf-<task>-progress.jsonl` in the output folder, appended and flushed as results are
    written: a first line with the run's settings, then `{"start": name}` before an input's files are written,
    `{"name": name, "record": ...}` per pose image/frame and `{"done": name}` once all its files are written.

    It tells which existing files this run (or the interrupted run it resumes) wrote — those of started inputs —
    and which inputs a resumed run skips: the done ones. An input started again drops its earlier records."""

    def __init__(self, output_dir: Path, task: str, settings: dict):
        self.path = output_dir / PROGRESS_FILE.format(task=task)
        self.settings = json.loads(json.dumps(settings))  # as read back
        self.records: dict[str, list[dict]] = {}  # of the started inputs, by name
        self.done: set[str] = set()
        self.file = None

    def load(self) -> str | None:
        """Reads an earlier run's record; returns why it cannot be resumed (other settings), else None."""
        if not self.path.is_file():
            return None
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("settings") != self.settings:
            return (f"{self.path} records a run with other settings ({header.get('settings')}): use another --output "
                    "folder, or --overwrite to start afresh")
        for line in lines[1:]:
            try:
                self._apply(json.loads(line))
            except json.JSONDecodeError:  # the last line, cut by the interruption
                break
        return None

    def _apply(self, entry: dict) -> None:
        if "start" in entry:
            self.records[entry["start"]] = []
            self.done.discard(entry["start"])
        elif "done" in entry:
            self.done.add(entry["done"])
        else:
            self.records.setdefault(entry["name"], []).append(entry["record"])

    def open(self) -> None:
        """Rewrites the record without an earlier run's cut line, then appends to it."""
        lines = [{"settings": self.settings}]
        for name, records in self.records.items():
            lines += [{"start": name}] + [{"name": name, "record": r} for r in records]
            lines += [{"done": name}] if name in self.done else []
        write_atomically(self.path, "".join(json.dumps(line) + "\n" for line in lines))
        self.file = self.path.open("a")

    def _append(self, entry: dict) -> None:
        self._apply(entry)
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def start(self, name: str) -> None:
        self._append({"start": name})

    def add(self, name: str, record: dict) -> None:
        self._append({"name": name, "record": record})

    def finish(self, name: str) -> None:
        self._append({"done": name})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def records_in_order(self, inputs: list[Input]) -> list[dict]:
        return [record for entry in inputs for record in self.records.get(entry.name, [])]


# ---------------------------------------------------------------------------------------------------------------
# Checks: before any work, one line per problem
# ---------------------------------------------------------------------------------------------------------------


class CommandError(Exception):
    """Ends a command with these lines on stderr and this exit code, without a traceback."""

    def __init__(self, code: int, lines: list[str]):
        super().__init__("\n".join(lines))
        self.code, self.lines = code, lines


def usage_error(problems: list[str]) -> CommandError:
    return CommandError(EXIT_USAGE, [f"error: {problem}" for problem in problems])


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def config_override(text: str) -> tuple[str, object]:
    """`--config KEY=VALUE`: the value is read as JSON (numbers, true/false, lists), else kept as a string."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_attention_heads=16), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def with_cli_hint(error: Exception) -> str:
    """The first line of an error, pointing a library hint such as `pass num_attention_heads=...` to --config."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = re.search(r"pass (\w+)=\.\.\.", message)
    return f"{message} (on the command line: --config {hint[1]}=VALUE)" if hint else message


def argument_problems(args) -> list[str]:
    """The problems that the arguments alone show (standard library only)."""
    problems = []
    if getattr(args, "batch_size", 1) < 1:
        problems.append("--batch-size must be at least 1")
    if args.command != "predict":
        return problems
    if args.flip_test and args.task not in ("pose", "depth"):
        problems.append("--flip-test applies to --task pose and depth")
    if args.detector and args.task != "pose":
        problems.append("--detector applies to --task pose")
    return problems + [problem for problem in [output_problem(Path(args.output))] if problem]


def output_problem(output: Path) -> str | None:
    if output.exists() and not output.is_dir():
        return f"--output {output} is a file, not a folder"
    existing = next(path for path in [output.absolute(), *output.absolute().parents] if path.exists())
    if not existing.is_dir():
        return f"--output {output} cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--output {output} is not writable ({existing})"
    return None


def device_problem(device: str | None) -> str | None:
    import torch

    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device (cpu, cuda, cuda:N, mps)"
    available = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if parsed.type not in available:
        return f"--device {device!r}: {parsed.type} devices are not supported (cpu, cuda, cuda:N, mps)"
    if not available[parsed.type]():
        return f"--device {device}: no {parsed.type} device is available to this torch build ({torch.__version__})"
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)"
    return None


def config_problems(overrides: list[tuple[str, object]]) -> list[str]:
    from .convert import check_config_overrides

    problems = []
    for key, value in overrides:
        try:
            check_config_overrides({key: value})
        except TypeError as error:
            problems.append(f"--config {key}: {error}")
    return problems


def resume_problems(output_dir: Path, task: str, inputs: list[Input], progress: Progress) -> list[str]:
    """Loads the record of an earlier run into `progress`; its settings must be the same, and the run must not
    replace existing files that neither it nor the run it resumes wrote."""
    mismatch = progress.load()
    return [mismatch] if mismatch else overwrite_problems(output_dir, task, inputs, progress)


def overwrite_problems(output_dir: Path, task: str, inputs: list[Input], progress: Progress) -> list[str]:
    """Existing files that the run would replace although neither it nor the run it resumes wrote them."""
    existing = [path for entry in inputs if entry.name not in progress.records
                for path in planned_outputs(output_dir, task, entry) if path.exists()]
    keypoints = output_dir / KEYPOINTS_FILE
    if task == "pose" and keypoints.exists() and not progress.path.is_file():
        existing.insert(0, keypoints)
    problems = [f"{path} exists and this run did not write it (--overwrite replaces it)" for path in existing[:5]]
    if len(existing) > 5:
        problems.append(f"... and {len(existing) - 5} more existing files in {output_dir}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


def load_pipeline(args):
    """The task's pipeline. The model is loaded through its Sapiens class, so that besides transformers checkpoints
    (Hub ids, local folders) Meta's original releases load too: their Hub repos, local folders laid out like them and
    `.pth`/`.pt2` files, converted on load (see sapiens_hf.hub). A model of another task is refused here, before any
    prediction."""
    import torch
    from transformers import AutoImageProcessor, pipeline

    from . import modeling_sapiens
    from .image_processing_sapiens import SapiensImageProcessorPil
    from .pipelines import DEFAULT_MODELS, WrongModelError

    task = TASKS[args.task]
    model_id = args.model or DEFAULT_MODELS[task]
    try:
        model_class = getattr(modeling_sapiens, MODEL_CLASSES[args.task])
        model = model_class.from_pretrained(model_id, dtype=getattr(torch, args.dtype), **dict(args.config))
    except Exception as error:  # any loading failure is reported in one line (SAPIENS_HF_DEBUG=1: traceback)
        if debugging():
            raise
        raise CommandError(EXIT_FAILED, _load_error(model_id, args.task, error)) from None
    try:  # Meta's original releases ship no processor file: AutoImageProcessor gives the default one for them
        processor = AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):  # a converted folder saved without its processor: the released settings
        processor = SapiensImageProcessorPil()
    try:
        return pipeline(task, model=model, image_processor=processor, device=args.device)
    except WrongModelError as error:
        raise usage_error([f"--model {model_id} does not fit --task {args.task}: {error}"]) from None


def _load_error(model_id: str, task: str, error: Exception) -> list[str]:
    """The message of a model that cannot be loaded: why, and for a Hub id how to use a local or converted
    checkpoint (a local file or folder gets the reason only)."""
    from huggingface_hub import constants

    from .pipelines import DEFAULT_MODELS

    first = f"error: could not load {model_id} for --task {task}: {with_cli_hint(error)}"
    if Path(model_id).exists():
        return [first]
    convert_task = "segmentation" if task == "seg" else task
    hub_id = model_id if re.fullmatch(r"[\w.-]+/[\w.-]+", model_id) else None
    if constants.is_offline_mode():
        reason = (f"The Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set) and {model_id} is not in the local "
                  "cache: use a local or converted checkpoint as --model:")
    else:
        reason = ("If the Hugging Face Hub cannot be reached (offline, proxy, rate limit) or the repo is gated (the "
                  "facebook/sapiens-* repos need their licence accepted and `hf auth login`), use a local or converted "
                  "checkpoint as --model:")
    return [
        first,
        reason,
        (f"  - a folder laid out like the original repo (`hf download {hub_id or DEFAULT_MODELS[TASKS[task]]} "
         "--local-dir DIR` on a machine with access) or the original .pth / _torchscript.pt2 file: converted on load;"),
        ("  - a converted folder (config.json, model.safetensors, preprocessor_config.json), made from an original "
         f"checkpoint with\n    sapiens-hf convert CHECKPOINT.pth OUT_DIR --task {convert_task}"),
        "With HF_HUB_OFFLINE=1, checkpoints already in the local Hugging Face cache are used.",
    ]


def run_settings(args) -> dict:
    """What makes two runs the same for resuming (the inputs may differ)."""
    keys = ("task", "model", "dtype", "flip_test", "detector", "detector_threshold", "keypoint_threshold")
    return {**{key: getattr(args, key) for key in keys}, "config": dict(args.config)}


def predict(args) -> int:
    output_dir = Path(args.output)
    inputs, failures = collect_inputs(args.inputs, exclude=output_dir)
    if not inputs and not failures:
        raise usage_error([f"no images or videos found (the output folder {output_dir} is never searched)"])
    for entry in inputs:
        entry.frames = count_frames(entry.file)
    progress = Progress(output_dir, args.task, run_settings(args))
    problems = name_clashes(inputs) + [p for p in [device_problem(args.device)] if p] + config_problems(args.config)
    if not args.overwrite:  # else: start afresh
        problems += resume_problems(output_dir, args.task, inputs, progress)
    if problems:
        raise usage_error(problems)
    predictor = load_pipeline(args)

    output_dir.mkdir(parents=True, exist_ok=True)
    run = PredictionRun(predictor, ResultWriter(args.task, output_dir, args.keypoint_threshold), progress, args)
    skipped = sum(entry.name in progress.done for entry in inputs)
    code = run.run(inputs)
    if skipped:
        print(f"Resumed: skipped {skipped} input(s) finished by an earlier run")
    print(f"Wrote results for {run.written} image(s)/frame(s) to {output_dir}")
    for path, reason in failures + run.failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return code or (EXIT_FAILED if failures or run.failures else 0)


class PredictionRun:
    """Predicts the inputs in batches of `--batch-size` images/frames (across files), writes each result as it comes
    and records it in the progress file; on SIGINT/SIGTERM or a write error it stops and still writes
    keypoints.json with every finished image."""

    def __init__(self, predictor, writer: ResultWriter, progress: Progress, args):
        self.predictor, self.writer, self.progress, self.args = predictor, writer, progress, args
        self.call_kwargs = {"batch_size": args.batch_size}
        if args.flip_test:
            self.call_kwargs["flip_test"] = True
        if args.detector:
            self.call_kwargs.update(detector=args.detector, detector_threshold=args.detector_threshold)
        self.batch: list[Frame] = []
        self.read: list[Input] = []  # read to the end; finished once their last batch is written
        self.failed: set[str] = set()
        self.failures: list[tuple[str, str]] = []
        self.written = 0

    def run(self, inputs: list[Input]) -> int:
        """0, or the exit code of an interruption (128 + signal) or a write error (1)."""
        from tqdm.auto import tqdm

        total = sum(entry.frames for entry in inputs)
        code = 0
        with tqdm(total=total, desc=f"sapiens {self.args.task}", unit="image", disable=self.args.quiet) as bar:
            self.bar = bar
            self.progress.open()
            with signals_interrupt():  # also during the clean-up, where a second signal is ignored
                try:
                    for entry in inputs:
                        self._read(entry)
                    self._flush()
                except Interrupted as interruption:
                    code = 128 + interruption.signum
                    print(f"Interrupted ({interruption}): finished results are kept; run the same command again to "
                          "resume", file=sys.stderr)
                except OSError as error:
                    code = EXIT_FAILED
                    print(f"error: cannot write the results: {error}", file=sys.stderr)
                finally:
                    self._close(inputs)
        return code

    def _read(self, entry: Input) -> None:
        if entry.name in self.progress.done:
            self.bar.update(entry.frames)
            return
        self.progress.start(entry.name)
        for frame in self._frames(entry):
            self.batch.append(frame)
            if len(self.batch) == self.args.batch_size:
                self._flush()
        self.read.append(entry)
        self._finish_read()

    def _frames(self, entry: Input):
        """The frames of an input; a read error (unreadable or truncated file) is reported and ends it. Errors of the
        consumer (writing) are not caught here."""
        try:
            yield from read_frames(entry)
        except Exception as error:  # noqa: BLE001
            self._fail(entry, None, error)

    def _flush(self) -> None:
        """Predicts and writes the batch, then marks the inputs that it completes as done."""
        for frame, result in zip(self.batch, self._predict([frame.image for frame in self.batch])):
            if isinstance(result, Exception):
                self._fail(frame.source, frame.index, result)
                continue
            record = self.writer.write(frame, result)
            if record is not None:
                self.progress.add(frame.source.name, record)
            self.written += 1
        self.bar.update(len(self.batch))
        self.batch = []
        self._finish_read()

    def _finish_read(self) -> None:
        """Marks the inputs read to the end whose frames are all written as done (unless one failed)."""
        pending = {frame.source.name for frame in self.batch}
        for entry in [entry for entry in self.read if entry.name not in pending]:
            self.writer.finish(entry.name)
            if entry.name not in self.failed:
                self.progress.finish(entry.name)
        self.read = [entry for entry in self.read if entry.name in pending]

    def _predict(self, images: list) -> list:
        """The predictions of a batch; if the batch fails, image by image, so that one bad image costs only its own
        result (an Exception in its place)."""
        if not images:
            return []
        try:
            return self.predictor(images, **self.call_kwargs)
        except Exception:  # noqa: BLE001  (retried one by one below to find the culprit)
            return [self._predict_one(image) for image in images]

    def _predict_one(self, image):
        try:
            return self.predictor([image], **self.call_kwargs)[0]
        except Exception as error:  # noqa: BLE001  (reported as this image's failure)
            return error

    def _fail(self, entry: Input, frame_index: int | None, error: Exception) -> None:
        self.failed.add(entry.name)
        where = str(entry.file) if frame_index is None else f"{entry.file} (frame {frame_index})"
        self.failures.append((where, f"{type(error).__name__}: {error}"))

    def _close(self, inputs: list[Input]) -> None:
        """Closes the videos and the progress file and writes keypoints.json atomically, from the progress records."""
        self.writer.close()
        self.progress.close()
        if self.args.task == "pose":
            document = coco_document(self.progress.records_in_order(inputs), self.predictor.model.config)
            write_atomically(self.writer.output_dir / KEYPOINTS_FILE, json.dumps(document))


@contextlib.contextmanager
def signals_interrupt():
    """SIGINT and SIGTERM raise Interrupted (once: a second signal during the clean-up is ignored)."""
    received = []

    def handler(signum, _frame):
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {}
    with contextlib.suppress(ValueError):  # signal handlers can only be set in the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def convert(args) -> int:
    from .convert import convert_to_folder

    try:
        convert_to_folder(args.checkpoint, args.output_dir, task=args.task, push_to=args.push_to, **dict(args.config))
    except Exception as error:  # one line (SAPIENS_HF_DEBUG=1: the traceback)
        if debugging():
            raise
        code = EXIT_USAGE if isinstance(error, TypeError) else EXIT_FAILED  # TypeError: an unknown --config key
        raise CommandError(code, [f"error: cannot convert {args.checkpoint}: {with_cli_hint(error)}"]) from None
    print(f"Converted {args.checkpoint} → {args.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sapiens-hf",
        description="Meta's Sapiens models with Hugging Face transformers",
        epilog=f"Exit codes: 0 done, 1 some inputs failed or the model/checkpoint could not be loaded, 2 bad arguments "
        f"(nothing done), 128+N stopped by signal N. {DEBUG_ENV}=1 shows tracebacks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "override a model config field, e.g. num_attention_heads=16 (VALUE read as JSON); repeatable"

    run = commands.add_parser("predict", help="predict on images, folders and videos")
    run.add_argument("--task", required=True, choices=sorted(TASKS))
    run.add_argument(
        "--model",
        help="Hub id (converted, or Meta's original release), local folder (converted, or laid out like an original "
        "repo) or original .pth/.pt2 file (default: the task's original 0.3B release, facebook/sapiens-<task>-0.3b)",
    )
    run.add_argument("inputs", nargs="+", help=f"images, folders or videos (e.g. {SAMPLE_IMAGE})")
    run.add_argument("--output", required=True, help="output folder (never searched for inputs)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing files that this run did not write, and start afresh instead of resuming")
    run.add_argument("--batch-size", type=int, default=1, help="images/frames per forward pass")
    run.add_argument("--device", help='"cpu", "cuda", "cuda:1", ... (default: the first GPU if any, else the CPU)')
    run.add_argument("--dtype", choices=DTYPES, default="float32")
    run.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                     help=config_help)
    run.add_argument("--flip-test", action="store_true", help="average with the mirrored input (pose, depth)")
    run.add_argument("--detector", help="pose: object-detection model id used to find people (default: whole image)")
    run.add_argument("--detector-threshold", type=float, default=0.3)
    run.add_argument("--keypoint-threshold", type=float, default=0.3, help="pose: keypoints drawn above this score")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=predict)

    conversion = commands.add_parser("convert", help="convert an original Sapiens checkpoint to transformers format")
    conversion.add_argument("checkpoint", help="original .pth / _torchscript.pt2 / .safetensors file")
    conversion.add_argument("output_dir")
    conversion.add_argument("--task", help="pose, segmentation, depth, normal, pretraining (default: detected)")
    conversion.add_argument("--push-to", help="also publish to this Hub repo (org/name)")
    conversion.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                            help=config_help)
    conversion.set_defaults(handler=convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        problems = argument_problems(args)
        if problems:
            raise usage_error(problems)
        return args.handler(args)
    except CommandError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
