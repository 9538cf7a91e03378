"""The files of `sapiens-hf predict`: the inputs it reads (images and videos given directly or found in folders,
with their output names and frames) and the outputs it writes (per-image results, visualisations, keypoints.json)
together with `Progress`, its JSON Lines record in the output folder that tells which existing files a run wrote and
which inputs a resumed run skips."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import visualization
from ..coco import person_annotation
from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, read_image
from ..tasks import TASKS


VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
RESULT_SUFFIXES = {"segmentation": ".png", "depth": ".npy", "normal": ".npy"}  # pose: keypoints.json
KEYPOINTS_FILE = "keypoints.json"
PROGRESS_FILE = "sapiens-hf-{task}-progress.jsonl"


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
    capture = cv2.VideoCapture(str(file))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(frames, 0)


def read_frames(entry: Input):
    """Yields the frames of an image (one, index None) or a video; raises ValueError for an unreadable file."""
    if not entry.is_video:  # an oversized file is refused from its header, before it is decoded
        yield Frame(entry, None, read_image(entry.file, max_pixels=DEFAULT_MAX_IMAGE_PIXELS), 0.0)
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
    if task not in RESULT_SUFFIXES:
        return None
    return output_dir / f"{stem}_{TASKS[task].file_tag}{RESULT_SUFFIXES[task]}"


def visual_path(output_dir: Path, task: str, name: str, video: bool) -> Path:
    suffix = "mp4" if video else "jpg" if task in ("pose", "segmentation") else "png"
    return output_dir / f"{name}_{TASKS[task].file_tag}_vis.{suffix}"


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
        if self.task == "segmentation":
            result["label_map"].save(target)
        elif self.task == "depth":
            np.save(target, result["predicted_depth"].float().numpy())
        else:
            np.save(target, result["normals"].float().permute(1, 2, 0).numpy())

    def _visual(self, image: np.ndarray, result):
        if self.task == "pose":
            return visualization.draw_keypoints(image, result, keypoint_threshold=self.keypoint_threshold)
        if self.task == "segmentation":
            return visualization.overlay_segmentation(image, result["segmentation"])
        return result["depth"] if self.task == "depth" else result["normal_map"]

    def _video(self, name: str, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
        if name not in self.videos:
            path = visual_path(self.output_dir, self.task, name, video=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.videos[name] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, size)
        return self.videos[name]

    def _pose_record(self, frame: Frame, people: list[dict]) -> dict:
        """The COCO image and annotations of one image/frame, without the ids (numbered in keypoints.json)."""
        height, width = frame.image.shape[:2]
        image = {"file_name": str(frame.source.file), "height": height, "width": width}
        annotations = [person_annotation(person, self.keypoint_threshold) for person in people]
        return {"image": image if frame.index is None else {**image, "frame": frame.index}, "annotations": annotations}

    def finish(self, name: str) -> None:
        """Closes the visualisation video of an input, if any."""
        video = self.videos.pop(name, None)
        if video is not None:
            video.release()

    def close(self) -> None:
        for name in list(self.videos):
            self.finish(name)


class Progress:
    """The run's record, `sapiens-hf-<task>-progress.jsonl` in the output folder, appended and flushed as results are
    written: a first line with the run's settings, then `{"start": name}` before an input's files are written,
    `{"name": name, "record": ...}` per pose image/frame and `{"done": name}` once all its files are written.

    It tells which existing files this run (or the interrupted run it resumes) wrote — those of started inputs —
    and which inputs a resumed run skips: the done ones. An input started again drops its earlier records."""

    def __init__(self, output_dir: Path, task: str, settings: dict):
        self.path = output_dir / PROGRESS_FILE.format(task=TASKS[task].file_tag)
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

