"""What the batch engine writes, and its record of what is finished, in the output folder.

`FileWriter`, the files of `sapiens-hf predict` (and the demo's downloads), for each image / video frame: the task's
machine-readable result (`<name>_seg.png` class-index maps; `<name>_depth.npy`, `<name>_normal.npy` float32 maps;
video frames under `<name>/frame_NNNNNN`), a visualisation (`<name>_<task>_vis.jpg|png`, `<name>_<task>_vis.mp4` for
a video: H.264, `VideoSegments`), for depth and normals the person mask they were cut with (`<name>_depth_mask.png`,
0 / 255; NaN in the maps outside it) and, for pose, the COCO keypoints.json of every image (video frames with their
people's track ids). Its record is `ProgressFile`, `sapiens-hf-<task>-progress.jsonl`: a video frame counts as done
once the segment of the visualisation holding it is written (`.sapiens-hf/predict-<task>-video/<name>/`, removed when
the video is joined), so a run killed at any point resumes after the last whole segment.

`ShardWriter`, the folder of `sapiens-hf annotate`, readable with `datasets.load_dataset("parquet", data_dir=OUT)`:

    OUT/shard-000000.parquet, shard-000001.parquet, …   one per chunk with a readable image, rows in input order
    OUT/.sapiens-hf/annotate.json                       the manifest: models and revisions, versions, settings
    OUT/.sapiens-hf/chunks/000000.json, …               one per finished chunk (`ChunkRecords`): rows and errors
    OUT/.sapiens-hf/errors.jsonl                        every unreadable input with the reason (rebuilt at the end)

(`datasets` reads every file of `data_dir`, so everything but the shards lives in the hidden folder.) A chunk counts
as done only once its record exists, written after its shard: a run killed at any point and started again redoes
exactly the chunks without a record, and replaces (never duplicates) a shard written just before the kill. Nothing
else in the folder is read or touched.

Every file that a reader may see while it changes is written with `write_atomically`. OpenCV, numpy and pyarrow are
imported inside the functions that use them."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..tasks import Task


STATE_DIR = ".sapiens-hf"
MANIFEST = "annotate.json"
ERRORS = "errors.jsonl"
PROGRESS_FILE = "sapiens-hf-{task}-progress.jsonl"
MASK_COLUMN = "person_mask_png"  # annotate: the person mask of the depth / normal maps, 8-bit PNG (0 / 255)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary_path)` next to `path`, then the rename (atomic): readers see the old file or the new one,
    never half. Each file is written by one process only (an annotate chunk belongs to one process), so the
    temporary name can be fixed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------------------
# The record of a run
# ---------------------------------------------------------------------------------------------------------------


class ResumeRecord:
    """What a run has done, kept in its output folder so that the same command resumes it: its units (the input
    files of `predict`, the chunks of `annotate`) as they start, what is kept of each (`add`: predict's keypoints
    records) and, once all their outputs are written, as done with a summary. A resumed run skips the done units; a
    unit started again drops what was kept of it. Subclasses store the entries (`_store`)."""

    def __init__(self):
        self.kept: dict[Any, list] = {}  # of the started units
        self.done: set = set()
        self.sources: dict[Any, Any] = {}  # what each recorded unit was read from, where the record knows it
        self.current: dict[Any, Any] = {}  # what this run reads each unit from (`forget_changed`)

    def start(self, unit) -> None:
        source = self.current.get(unit)
        self._store({"start": unit} if source is None else {"start": unit, "source": source})

    def add(self, unit, value) -> None:
        self._store({"name": unit, "record": value})

    def add_all(self, unit, values: list) -> None:
        """Keeps several values in one entry: a run stopped while it is stored keeps all of them or none."""
        if values:
            self._store({"name": unit, "records": values})

    def finish(self, unit, summary: dict) -> None:
        self._store({"done": unit, **summary})

    def close(self) -> None:
        """Ends the run's writing."""

    def _apply(self, entry: dict) -> None:
        if "start" in entry:
            self.kept[entry["start"]] = []
            self.done.discard(entry["start"])
            self.sources[entry["start"]] = entry.get("source")
        elif "done" in entry:
            self.done.add(entry["done"])
        elif "records" in entry:
            self.kept.setdefault(entry["name"], []).extend(entry["records"])
        else:
            self.kept.setdefault(entry["name"], []).append(entry["record"])

    def _store(self, entry: dict) -> None:
        raise NotImplementedError


class ProgressFile(ResumeRecord):
    """`predict`'s record, one JSON Lines file appended and flushed as results are written by its one process: a
    first line with the run's settings, then the entries (`{"start": name}`, `{"name": name, "record": ...}`,
    `{"done": name}`). It also tells which existing files this run (or the interrupted run it resumes) wrote: those
    of started inputs."""

    def __init__(self, folder: Path, task: Task, settings: dict):
        super().__init__()
        self.path = folder / PROGRESS_FILE.format(task=task.file_tag)
        self.settings = json.loads(json.dumps(settings))  # as read back
        self.file = None

    def recorded_settings(self) -> dict:
        """The settings of the run recorded in the folder (an earlier run's, whatever they are); {} without one."""
        try:
            with self.path.open() as file:
                header = json.loads(file.readline())
        except (OSError, json.JSONDecodeError):
            return {}
        return header.get("settings") if isinstance(header, dict) and isinstance(header.get("settings"), dict) else {}

    def load(self) -> str | None:
        """Reads an earlier run's record; returns why it cannot be resumed (other settings), else None."""
        if not self.path.is_file():
            return None
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        recorded = header.get("settings") if isinstance(header.get("settings"), dict) else {}
        if header.get("settings") != self.settings:
            changed = sorted(key for key in {**recorded, **self.settings} if recorded.get(key) != self.settings.get(key))
            differences = ", ".join(f"{key}: {recorded.get(key)!r} then, {self.settings.get(key)!r} now"
                                    for key in changed)
            return (f"{self.path} records a run with other settings ({differences or 'unreadable'}): use another "
                    "--output folder, or --overwrite to start afresh")
        for line in lines[1:]:
            try:
                self._apply(json.loads(line))
            except json.JSONDecodeError:  # the last line, cut by the interruption
                break
        return None

    def open(self) -> None:
        """Rewrites the record without an earlier run's cut line, then appends to it."""
        lines = [{"settings": self.settings}]
        for name, records in self.kept.items():
            source = {"source": self.sources[name]} if self.sources.get(name) is not None else {}
            lines += [{"start": name, **source}] + [{"name": name, "record": r} for r in records]
            lines += [{"done": name}] if name in self.done else []
        text = "".join(json.dumps(line) + "\n" for line in lines)
        write_atomically(self.path, lambda path: path.write_text(text))
        self.file = self.path.open("a")

    def _store(self, entry: dict) -> None:
        self._apply(entry)
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def continues(self, unit) -> bool:
        """Whether this run goes on with a video that an earlier run started from the same file (its done frames
        kept), rather than starting it again."""
        frames = any("frame" in record for record in self.kept.get(unit, []))
        return frames and unit not in self.done and self.sources.get(unit) == self.current.get(unit)

    def frames_done(self, unit) -> set[int]:
        """The frames of a video that this run goes on with (`continues`) that are done."""
        return {record["frame"] for record in self.kept.get(unit, [])} if self.continues(unit) else set()

    def start(self, unit) -> None:
        if not self.continues(unit):
            super().start(unit)

    def forget_changed(self) -> list:
        """Units recorded as done from another source than this run's (`current`, `inputs.file_identity`) — another
        file of the same name, or the file changed since: they are done again. Returns them."""
        changed = [unit for unit in sorted(self.done, key=str)
                   if unit in self.current and self.sources.get(unit) != self.current[unit]]
        self.done.difference_update(changed)
        return changed

    def forget(self, unit) -> None:
        """Drops what is recorded of a unit: it is done again from its start (the rewritten record without it)."""
        self.kept.pop(unit, None)
        self.sources.pop(unit, None)
        self.done.discard(unit)

    def kept_in_order(self, units: list) -> list:
        """What is kept of the units, in their order and a video's frames in frame order."""
        return [value for unit in units
                for value in sorted(self.kept.get(unit, []), key=lambda record: record.get("frame", -1))]


class ChunkRecords(ResumeRecord):
    """`annotate`'s record: a file per done chunk, `chunks/NNNNNN.json` (its row count and errors), so that any number
    of processes can write theirs; the settings are in the manifest (`ShardWriter.start`)."""

    def __init__(self, state: Path):
        super().__init__()
        self.folder = state / "chunks"
        self.done = {int(path.stem) for path in self.folder.glob("*.json") if path.stem.isdigit()}

    def _store(self, entry: dict) -> None:
        self._apply(entry)
        if "done" in entry:
            summary = {key: value for key, value in entry.items() if key != "done"}
            text = json.dumps(summary)
            write_atomically(self.folder / f"{entry['done']:06d}.json", lambda path: path.write_text(text))

    def summaries(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted(self.folder.glob("*.json"))]

    def remove(self) -> None:
        for path in self.folder.glob("*.json"):
            path.unlink()


# ---------------------------------------------------------------------------------------------------------------
# predict: files per image
# ---------------------------------------------------------------------------------------------------------------


def frame_stem(name: str, frame_index: int | None) -> str:
    return name if frame_index is None else f"{name}/frame_{frame_index:06d}"


class VideoSegments:
    """The visualisation video of one input as browsers play it: H.264 (libx264, which PyAV's wheels bundle in their
    FFmpeg) in MP4, yuv420p, even width and height (an odd one gets its edge row or column repeated), moov atom first
    (`+faststart`). Encoded with PyAV in segments of at most `length` frames in `folder`, each written under a
    temporary name and renamed `FIRST-LAST.mp4` (video frame indices) once whole, so that a kill at any point leaves
    only whole segments; `join` copies their packets, without encoding again, into the final file. Memory holds one
    frame and the encoder's state, whatever the video's length. Without B-frames, so that the segments' timestamps
    simply follow each other."""

    def __init__(self, folder: Path, rate: Fraction, length: int):
        self.folder, self.rate, self.length = folder, rate, length
        self.container = self.stream = None
        self.first: int | None = None
        self.pending: list = []  # what is kept of the open segment's frames, recorded once it is written

    @staticmethod
    def _span(path: Path) -> tuple[int, int] | None:
        match = re.fullmatch(r"(\d{6,})-(\d{6,})", path.stem)
        return (int(match[1]), int(match[2])) if match and path.suffix == ".mp4" else None

    def files(self) -> list[Path]:
        found = [path for path in self.folder.glob("*.mp4") if self._span(path)] if self.folder.is_dir() else []
        return sorted(found, key=self._span)

    def keep_only(self, done: set[int]) -> None:
        """Removes the segments with frames not recorded as done (renamed just before a kill, or of an earlier start
        of the video) and any half-written one."""
        for path in self.files():
            if self._span(path)[1] not in done:
                path.unlink()
        self._temporary().unlink(missing_ok=True)

    def _temporary(self) -> Path:
        return self.folder / ".open.mp4.tmp"

    def hold(self, done: set[int]) -> bool:
        """Whether the whole segments hold every frame of `done`, one readable packet each (none deleted, truncated
        or otherwise damaged since it was written)."""
        import av

        held = set()
        for path in self.files():
            first, last = self._span(path)
            if last not in done:  # not recorded: removed by `keep_only`
                continue
            frames = {frame for frame in done if first <= frame <= last}
            try:
                with av.open(str(path)) as segment:
                    packets = sum(packet.dts is not None for packet in segment.demux(segment.streams.video[0]))
            except (av.FFmpegError, OSError, IndexError):  # unreadable, or no video stream
                return False
            if packets != len(frames):
                return False
            held |= frames
        return held == done

    def add(self, index: int, image, kept) -> list:
        """Encodes a frame (`(H, W, 3)` uint8 RGB); returns what is kept of the frames of the segment that it
        completes, else []."""
        import av
        import numpy as np

        image = np.asarray(image)
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        if self.container is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self._temporary()), mode="w", format="mp4")
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.height, self.stream.width = image.shape[:2]
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "23", "preset": "veryfast", "x264-params": "bframes=0"}
            self.first = index
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = len(self.pending)
        self.container.mux(self.stream.encode(frame))
        self.pending.append((index, kept))
        return self.commit() if len(self.pending) == self.length else []

    def commit(self) -> list:
        """Ends the open segment, if any, and renames it whole; returns what is kept of its frames."""
        if self.container is None:
            return []
        self.container.mux(self.stream.encode())
        self.container.close()
        last = self.pending[-1][0]
        os.replace(self._temporary(), self.folder / f"{self.first:06d}-{last:06d}.mp4")
        kept, self.pending, self.container = [value for _, value in self.pending], [], None
        return kept

    def discard(self) -> None:
        """Drops the open segment (an interrupted run: its frames are predicted again when the run resumes)."""
        if self.container is not None:
            self.container.close()
            self.container, self.pending = None, []
        self._temporary().unlink(missing_ok=True)

    def join(self, path: Path) -> None:
        """Writes the segments' packets one after the other into `path` (atomically)."""
        import av

        files = self.files()

        def write(temporary: Path) -> None:
            with av.open(str(temporary), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
                stream, offset = None, 0
                for file in files:
                    with av.open(str(file)) as segment:
                        source = segment.streams.video[0]
                        stream = stream or output.add_stream_from_template(source)
                        end = offset
                        for packet in segment.demux(source):
                            if packet.dts is None:  # the demuxer's empty packet at the end
                                continue
                            packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                            end = max(end, packet.pts + packet.duration)
                            packet.stream = stream
                            output.mux(packet)
                        offset = end

        if files:
            write_atomically(path, write)

    def remove(self, root: Path) -> None:
        """Removes the segments' folder, and its parents up to `root` left empty."""
        if not self.folder.is_dir():  # a still image's, or removed already
            return
        for path in self.files():
            path.unlink()
        for parent in [self.folder, *self.folder.parents]:  # only folders left empty: nothing but segments removed
            if parent == root or any(parent.iterdir()):
                break
            parent.rmdir()


class FileWriter:
    """Writes each image's / video frame's result files (see the module's docstring) into `folder`; the task's
    records (pose: keypoints.json, or `records_name`) are written by `write_records`. A failed input is reported in
    `failures` and not finished, so a resumed run redoes it.

    Video frames: every `frame_stride`-th is predicted (the visualisation's frame rate divided as much); a top-down
    task's people get track ids (`tracking.PersonTracker`, `Task.track`; `smoothing`: their keypoints filtered per
    track), and each frame is recorded in `record` (`ProgressFile`) when the visualisation segment holding it is
    written. A video that `record` goes on with rebuilds its tracker from the recorded frames. `masked`: the results
    carry the person mask they were cut with, saved beside them."""

    segment_frames = 64  # frames per visualisation segment: the most that a killed run predicts again

    def __init__(self, task: Task, folder: Path, keypoint_threshold: float, records_name: str | None = None,
                 frame_stride: int = 1, smoothing=None, record: ProgressFile | None = None, masked: bool = False):
        self.task, self.folder, self.keypoint_threshold = task, folder, keypoint_threshold
        self.masked = masked  # the results carry their person mask, written as `<stem>_<tag>_mask.png`
        self.records_path = folder / (records_name or task.records_file) if task.records_file else None
        self.frame_stride, self.smoothing, self.record = frame_stride, smoothing, record
        self.videos: dict = {}  # per video being written: its segments and tracker
        # The task's second view of the records (pose: the COCO results list), named after the records file.
        self.results_path = None if self.records_path is None else self.records_path.with_name(
            f"{self.records_path.stem}_results.json")
        self.failed: set[str] = set()
        self.failures: list[tuple[str, str]] = []
        self.written = 0

    def planned(self, entry) -> list[Path]:
        """The files that an input writes (for a video, with its announced frame count)."""
        results = [path for index in entry.indices
                   for path in self.task.result_paths(self.folder, frame_stem(entry.name, index))]
        masks = [self.task.mask_path(self.folder, frame_stem(entry.name, index)) for index in entry.indices]
        return [self.task.visual_path(self.folder, entry.name, entry.is_video), *results,
                *(masks if self.masked else [])]

    def write(self, frame, result) -> dict | None:
        """Writes the files of one prediction; returns what the task's records keep of an image (a video frame's is
        recorded with its segment)."""
        import cv2
        import numpy as np
        import PIL.Image

        video = None if frame.index is None else self._video(frame)
        extra = {}
        if video is not None and video["tracker"] is not None:
            result, extra = self.task.track(video["tracker"], result, frame.index / video["fps"])
        target = self.task.result_path(self.folder, frame_stem(frame.source.name, frame.index))
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.task.save_result(result, target)
        if self.masked:
            mask = self.task.mask_path(self.folder, frame_stem(frame.source.name, frame.index))
            mask.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask), result["mask"].numpy().astype(np.uint8) * 255)
        visual = self.task.visualize(frame.image, result, self.keypoint_threshold)
        height, width = frame.image.shape[:2]
        image = {"file_name": str(frame.source.file), "height": height, "width": width}
        if video is None:
            path = self.task.visual_path(self.folder, frame.source.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            visual.save(path)
            self.written += 1
            return self.task.record(result, image, self.keypoint_threshold)
        if visual.mode == "RGBA":  # a cut-out (matting): its frames over black, as a video has no transparency
            visual = PIL.Image.alpha_composite(PIL.Image.new("RGBA", visual.size, (0, 0, 0, 255)), visual)
        record = self.task.record(result, {**image, "frame": frame.index}, self.keypoint_threshold) or {}
        self.record.add_all(frame.source.name, video["segments"].add(frame.index, visual.convert("RGB"),
                                                                      {"frame": frame.index, **record, **extra}))
        self.written += 1
        return None

    def _segments(self, name: str, rate: Fraction = Fraction(25)) -> VideoSegments:
        folder = self.folder / STATE_DIR / f"predict-{self.task.file_tag}-video" / name
        return VideoSegments(folder, rate, self.segment_frames)

    def _video(self, frame) -> dict:
        """The state of the video of `frame`, started at its first frame in this run: its segments (those of frames
        not recorded as done removed) and tracker (fed the recorded frames again, in order)."""
        name = frame.source.name
        if name not in self.videos:
            from ..tracking import PersonTracker

            fps = frame.fps if math.isfinite(frame.fps) and frame.fps > 0 else 25.0  # a header without one
            rate = Fraction(fps / self.frame_stride).limit_denominator(1001000)
            done = sorted(self.record.kept.get(name, []) if self.record else [], key=lambda kept: kept["frame"])
            segments = self._segments(name, rate)
            segments.keep_only({kept["frame"] for kept in done})
            tracker = PersonTracker(float(rate), self.smoothing) if self.task.top_down else None
            for kept in done if tracker is not None else []:
                self.task.replay(tracker, kept, kept["frame"] / fps)
            self.videos[name] = {"segments": segments, "tracker": tracker, "fps": fps}
        return self.videos[name]

    def remove_other_stride_frames(self, inputs: list, stride: int) -> list[Path]:
        """Starting afresh (--overwrite) over a run of these inputs with another --frame-stride: removes the frame
        files that the earlier stride gives and this run's does not (they would mix two runs' frames in one folder);
        returns them. Only files named as this command names a video's frames, nothing else."""
        import dataclasses

        if stride == self.frame_stride or not isinstance(stride, int) or stride < 1:
            return []
        videos = [entry for entry in inputs if entry.is_video]
        kept = {path for entry in videos for path in self.planned(entry)}
        earlier = [path for entry in videos for path in self.planned(dataclasses.replace(entry, frame_stride=stride))]
        removed = [path for path in earlier if path not in kept and path.is_file()]
        for path in removed:
            path.unlink()
        return removed

    def forget_damaged_videos(self, inputs: list) -> list[str]:
        """Videos that `record` goes on with whose segments no longer hold every frame recorded as done (a segment
        deleted or damaged since): forgotten, so that they are predicted again from the start. Returns their names."""
        damaged = [entry.name for entry in inputs if entry.is_video and self.record.frames_done(entry.name)
                   and not self._segments(entry.name).hold(self.record.frames_done(entry.name))]
        for name in damaged:
            self.record.forget(name)
        return damaged

    def fail(self, frame, error: str) -> None:
        self.failed.add(frame.source.name)
        where = str(frame.source.file) if frame.index is None else f"{frame.source.file} (frame {frame.index})"
        self.failures.append((where, error))

    def finish(self, name: str) -> dict | None:
        """Writes the last segment of a video and joins its segments into the visualisation video (their folder
        removed once the video is done); the input is done unless it failed."""
        video = self.videos.pop(name, None)
        segments = video["segments"] if video is not None else self._segments(name)
        self.record.add_all(name, segments.commit())
        segments.join(self.task.visual_path(self.folder, name, video=True))
        if name in self.failed:
            return None  # the segments stay for the frames done; a resumed run predicts the others
        segments.remove(self.folder)
        return {}

    def close(self) -> None:
        for name in list(self.videos):
            self.videos.pop(name)["segments"].discard()

    def write_records(self, records: list[dict], model_config) -> None:
        document = self.task.records_document(records, model_config)
        write_atomically(self.records_path, lambda path: path.write_text(json.dumps(document)))
        results = self.task.results_list(document)
        if results is not None:
            write_atomically(self.results_path, lambda path: path.write_text(json.dumps(results)))


# ---------------------------------------------------------------------------------------------------------------
# annotate: Parquet shards per chunk
# ---------------------------------------------------------------------------------------------------------------


class ShardWriter:
    """Collects each chunk's rows (the `id`, `index`, `height`, `width` columns and those of each task,
    `Task.columns`) and unreadable inputs, and writes the chunk's shard when it is finished."""

    def __init__(self, folder: str | os.PathLike, tasks: list[Task], masks: bool = False):
        import pyarrow as pa

        self.folder = Path(folder)
        self.state = self.folder / STATE_DIR
        base = [("id", pa.string()), ("index", pa.int64()), ("height", pa.int32()), ("width", pa.int32())]
        masks = [(MASK_COLUMN, pa.binary())] if masks else []  # at the image's size
        self.schema = pa.schema(base + [column for task in tasks for column in task.columns()] + masks)
        self.rows: dict[int, list[dict]] = {}
        self.errors: dict[int, list[dict]] = {}
        self.finished = 0  # inputs of the chunks finished by this writer

    def shard(self, number: int) -> Path:
        return self.folder / f"shard-{number:06d}.parquet"

    def shards(self) -> list[Path]:
        """The files in the folder named as this command names its shards (`shard-NNNNNN.parquet`)."""
        return sorted(path for path in self.folder.glob("shard-*.parquet") if re.fullmatch(r"shard-\d{6}", path.stem))

    def existing_manifest(self) -> dict | None:
        path = self.state / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def check(self, settings: dict, overwrite: bool) -> None:
        """Raises, before any work, unless the folder is new, holds a run of these `settings` (resumed), or holds
        another run and `overwrite` is given. Shard files that no run recorded here are never replaced."""
        existing = self.existing_manifest()
        if existing is None:
            if self.shards():
                raise ValueError(f"{self.folder} holds {self.shards()[0].name}, which no sapiens-hf annotate run wrote "
                                 "there (no .sapiens-hf/annotate.json): choose a new or empty output folder")
            return
        settings = json.loads(json.dumps(settings))
        if existing["settings"] != settings and not overwrite:
            changed = sorted(key for key in {**existing["settings"], **settings}
                             if existing["settings"].get(key) != settings.get(key))
            raise ValueError(f"{self.folder} holds an annotation run with other settings ({', '.join(changed)}): "
                             "re-run the same command to resume it, pass --overwrite to start afresh, or choose "
                             "another output folder")

    def start(self, manifest: dict, overwrite: bool) -> None:
        """Writes the manifest of a new run (`check`ed); with `overwrite`, a run of other settings is removed first:
        its shards, records and manifest, nothing else."""
        self.check(manifest["settings"], overwrite)
        existing = self.existing_manifest()
        if existing is not None and existing["settings"] != manifest["settings"]:
            for path in self.shards():
                path.unlink()
            ChunkRecords(self.state).remove()
            for name in (MANIFEST, ERRORS):
                (self.state / name).unlink(missing_ok=True)
        if self.existing_manifest() is None:
            text = json.dumps(manifest, indent=2)
            write_atomically(self.state / MANIFEST, lambda path: path.write_text(text))

    def write(self, item, row: dict) -> None:
        self.rows.setdefault(item.unit, []).append(row)

    def fail(self, item, error: str) -> None:
        self.errors.setdefault(item.unit, []).append({"index": item.index, "id": item.id, "error": error})

    def finish(self, number: int) -> dict:
        """Writes the chunk's shard (when a row was read); returns its record's summary."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, errors = self.rows.pop(number, []), self.errors.pop(number, [])
        if rows:
            table = pa.Table.from_pylist(sorted(rows, key=lambda row: row["index"]), schema=self.schema)
            write_atomically(self.shard(number), lambda path: pq.write_table(table, path))
        else:
            self.shard(number).unlink(missing_ok=True)
        self.finished += len(rows) + len(errors)
        return {"rows": len(rows), "errors": errors}

    def close(self) -> None:
        """Nothing is open between chunks."""

    def collect_errors(self, records: ChunkRecords) -> tuple[int, int]:
        """Rebuilds errors.jsonl from the chunk records, in input order; returns (rows, errors) of the finished
        chunks."""
        summaries = records.summaries()
        errors = sorted((error for summary in summaries for error in summary["errors"]), key=lambda e: e["index"])
        lines = "".join(json.dumps(error) + "\n" for error in errors)
        write_atomically(self.state / ERRORS, lambda path: path.write_text(lines))
        return sum(summary["rows"] for summary in summaries), len(errors)

    def push_to_hub(self, repo_id: str, token=None, private: bool | None = None):
        """Uploads the shards and the manifest and error list as a dataset repo (nothing else in the folder)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
        return api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=self.folder,
            allow_patterns=["shard-*.parquet", f"{STATE_DIR}/{MANIFEST}", f"{STATE_DIR}/{ERRORS}"],
            commit_message="Sapiens annotations (sapiens-hf annotate)",
        )
