"""What the batch engine reads, as one stream of events per run: the items to predict (each of a unit: an input file
of `predict`, a chunk of `annotate`), items that could not be read (their `error` set) and a `UnitEnd` after the last
item of each unit.

`predict` reads images and videos given directly or found in folders, frame by frame (every `frame_stride`-th frame
of a video; those an interrupted run finished skipped without being converted), in the main process.
`annotate` reads image files (folders searched recursively, sorted, or a list file) or a `datasets` dataset (a Hub id
or a local imagefolder/parquet folder, streamed or not) as one sequence in a fixed order, cut into chunks of
`chunk_size` consecutive items. A chunk is the unit of work and of output: one process (and in it one DataLoader
worker) reads and pre-processes it, the models see its images in batches formed inside it, and it is written as one
shard. Which process does a chunk changes nothing in its content, so 1, 2 or 16 processes, and a run resumed after a
kill, give the same shards."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image
import torch

from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, read_image


VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


@dataclass
class UnitEnd:
    """Sent after the last item of a unit, with the number of inputs it held (a skipped unit: without items)."""

    unit: Any
    count: int


def find_files(paths: list[str], suffixes: set[str], exclude: Path | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Every file given directly or found in a folder (recursively, sorted; never inside `exclude`, the output
    folder) with one of `suffixes`, each once, as `(file, the folder argument it was found in or None)`; and the
    arguments that do not exist."""
    found, missing, seen = [], [], set()
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            files = [(file, path) for file in sorted(path.rglob("*")) if file.is_file()
                     and file.suffix.lower() in suffixes
                     and not (exclude is not None and file.resolve().is_relative_to(exclude.resolve()))]
        elif path.is_file():
            files = [(path, None)]
        else:
            missing.append(argument)
            continue
        for file, folder in files:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                found.append((file, folder))
    return found, missing


# ---------------------------------------------------------------------------------------------------------------
# predict: image and video files, in the main process
# ---------------------------------------------------------------------------------------------------------------


def file_identity(path: Path) -> list:
    """What tells a file apart for resuming: its resolved path, size and modification time (as `make` and rsync)."""
    status = path.stat()
    return [str(path.resolve()), status.st_size, status.st_mtime_ns]


def model_identity(model: str | None) -> str | None:
    """What tells a local model apart for resuming: a sha256 of the `file_identity` of its file, or of every file in
    its folder (a checkpoint retrained or replaced in place is other work). None for a Hub id, named by its id."""
    path = Path(model) if model else None
    if path is None or not path.exists():
        return None
    files = sorted(file for file in path.iterdir() if file.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(repr([file_identity(file) for file in files]).encode()).hexdigest()


@dataclass
class Input:
    file: Path
    name: str  # output name: the path relative to its folder argument, without suffix
    frames: int = 1
    frame_stride: int = 1  # a video's frames predicted: every frame_stride-th, from the first

    @property
    def is_video(self) -> bool:
        return self.file.suffix.lower() in VIDEO_SUFFIXES

    @property
    def indices(self) -> range | list[None]:
        """The frames predicted (as announced by the video's header), `[None]` for a still image."""
        return range(0, self.frames, self.frame_stride) if self.is_video else [None]


@dataclass
class Frame:
    source: Input
    index: int | None  # None for a still image
    image: np.ndarray | None
    fps: float = 0.0
    error: str | None = None  # why the input could not be read (from here on)

    @property
    def unit(self) -> str:
        return self.source.name


def collect_inputs(paths: list[str], exclude: Path | None = None,
                   frame_stride: int = 1) -> tuple[list[Input], list[tuple[str, str]]]:
    """Every image/video given directly or found in a folder (see `find_files`), with its frame count, and
    (path, reason) for arguments that do not exist. Output names keep sub-folders."""
    found, missing = find_files(paths, IMAGE_SUFFIXES | VIDEO_SUFFIXES, exclude)
    inputs = [Input(file, file.stem if folder is None else file.relative_to(folder).with_suffix("").as_posix(),
                    frame_stride=frame_stride) for file, folder in found]
    for entry in inputs:
        entry.frames = count_frames(entry)
    return inputs, [(argument, "no such file or folder") for argument in missing]


def name_clashes(inputs: list[Input], planned: Callable[[Input], list[Path]]) -> list[str]:
    """Inputs whose outputs (`planned(input)`: the files it writes) would have the same paths: the same name (`a/x.jpg`
    and `b/x.jpg` given as files, `x.jpg` and `x.png`), or an image named like a video's frame (`clip/frame_000000.png`
    beside `clip.mp4`); compared case-insensitively, for case-insensitive file systems."""
    first, problems, clashing = {}, [], set()
    for entry in inputs:
        for path in planned(entry):
            other = first.setdefault(str(path).casefold(), entry)
            if other is entry or (other.file, entry.file) in clashing:
                continue
            clashing.add((other.file, entry.file))
            what = f"the outputs named {entry.name!r}" if other.name.casefold() == entry.name.casefold() else str(path)
            problems.append(f"{other.file} and {entry.file} would both write {what}: rename one, or predict them "
                            "into separate --output folders")
    return problems


def count_frames(entry: Input) -> int:
    if not entry.is_video:
        return 1
    capture = cv2.VideoCapture(str(entry.file))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(frames, 0)


def read_frames(entry: Input, skip: set[int] = frozenset()):
    """Yields the frames of an image (one, index None) or a video (every `entry.frame_stride`-th but those in
    `skip`: passed over undecoded to RGB); raises ValueError for an unreadable file."""
    if not entry.is_video:  # an oversized file is refused from its header, before it is decoded
        yield Frame(entry, None, read_image(entry.file, max_pixels=DEFAULT_MAX_IMAGE_PIXELS))
        return
    capture = cv2.VideoCapture(str(entry.file))
    if not capture.isOpened():
        raise ValueError("OpenCV cannot open this video")
    fps, index = capture.get(cv2.CAP_PROP_FPS), 0
    try:
        while capture.grab():
            if index % entry.frame_stride == 0 and index not in skip:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                yield Frame(entry, index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError("the video has no readable frames")


def frame_events(inputs: list[Input], done: set[str], frames_done: Callable[[str], set[int]] = lambda name: set()):
    """The frames of the inputs not `done` (of a video, those not in `frames_done(name)`), a read error (unreadable
    or truncated file) as a last failed frame, and a `UnitEnd` after each input (alone for a done one)."""
    for entry in inputs:
        if entry.name not in done:
            try:
                yield from read_frames(entry, frames_done(entry.name))
            except Exception as error:  # noqa: BLE001  (the input's failure; the run goes on)
                yield Frame(entry, None, None, error=f"{type(error).__name__}: {error}")
        yield UnitEnd(entry.name, len(entry.indices))


# ---------------------------------------------------------------------------------------------------------------
# annotate: files or a dataset, in chunks, read and pre-processed by DataLoader workers
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One input after decoding and pre-processing (in a DataLoader worker), or the reason it could not be read."""

    unit: int  # the chunk
    index: int
    id: str
    size: tuple[int, int] | None = None  # (height, width)
    inputs: dict | None = None  # per task: what its model and post-processing need (`Task.prepare`)
    error: str | None = None


class FileSource:
    """Image files in a fixed order: those under each folder argument (recursively, sorted) and the files given,
    each once; ids are the paths as found."""

    def __init__(self, paths: list[str], exclude: Path | None = None):
        suffixes = {suffix.lower() for suffix in PIL.Image.registered_extensions()}
        found, missing = find_files(paths, suffixes, exclude)
        if missing:
            raise FileNotFoundError(f"No such file or folder: {missing[0]}")
        self.files = [str(file) for file, _ in found]
        self.length = len(self.files)

    def chunk(self, number: int, size: int) -> Iterator[tuple[int, str, object]]:
        for index in range(number * size, min((number + 1) * size, self.length)):
            yield index, self.files[index], self.files[index]

    def describe(self) -> dict:
        """The inputs as a resumed run must find them again: the files in order, with their sizes and modification
        times (as a sha256)."""
        fingerprint = hashlib.sha256()
        for file in self.files:
            status = os.stat(file)
            fingerprint.update(f"{file}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
        return {"kind": "files", "count": self.length, "fingerprint": fingerprint.hexdigest()}


def read_list_file(path: str) -> list[str]:
    """The image paths of a list file, one per line (blank lines and `#` comments skipped), relative to the file."""
    base = Path(path).parent
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [str(base / line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


class DatasetSource:
    """The rows of a `datasets` dataset in their order; images are decoded by the workers (a corrupt one is an error
    row, not a crash). Streamed datasets have no known length: a chunk past the end is simply empty."""

    def __init__(self, name: str, config: str | None = None, split: str = "train", image_column: str = "image",
                 id_column: str | None = None, streaming: bool = False):
        import datasets

        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
        columns = dataset.column_names if dataset.column_names is not None else list(dataset.features or {})
        missing = [column for column in (image_column, id_column) if column is not None and column not in columns]
        if missing:
            raise ValueError(f"{name} ({split}) has no column {missing[0]!r}; its columns are {columns}")
        if isinstance((dataset.features or {}).get(image_column), datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # bytes: decoded in workers
        self.dataset, self.split, self.streaming = dataset, split, streaming
        self.image_column, self.id_column, self.name, self.config = image_column, id_column, name, config
        self.length = None if streaming else len(dataset)

    def chunk(self, number: int, size: int) -> Iterator[tuple[int, str, object]]:
        start = number * size
        if self.streaming:
            rows = self.dataset.skip(start).take(size)
        else:
            rows = (self.dataset[index] for index in range(start, min(start + size, self.length)))
        for index, row in zip(itertools.count(start), rows):
            row_id = str(row[self.id_column]) if self.id_column else f"{self.split}/{index}"
            yield index, row_id, _image_value(row[self.image_column])

    def describe(self) -> dict:
        # `datasets`' fingerprint follows the data files (a streamed dataset has none: its name, configuration and
        # split identify it).
        return {"kind": "dataset", "name": self.name, "config": self.config, "split": self.split,
                "image_column": self.image_column, "id_column": self.id_column, "streaming": self.streaming,
                "count": self.length, "fingerprint": getattr(self.dataset, "_fingerprint", None)}


def _image_value(value):
    """An undecoded `datasets.Image` value ({"bytes", "path"}) as bytes or a path; anything else unchanged."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        return value["bytes"] if value.get("bytes") is not None else value["path"]
    return value


def decode(value) -> np.ndarray:
    """An input image as uint8 RGB: a path or URL, encoded bytes, or an image object (`read_image`: EXIF orientation
    applied, the pixel limit checked before decoding), as `predict` reads the same file."""
    return read_image(value, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)


def chunks_to_do(rank: int, world_size: int, done: set[int], length: int | None, chunk_size: int):
    """This process's chunks (every `world_size`-th from `rank`) that have no shard yet; for a stream of unknown
    length an endless iterator, which the reader ends at the first empty chunk."""
    numbers = itertools.count(rank, world_size) if length is None else range(rank, -(-length // chunk_size), world_size)
    return (number for number in numbers if number not in done)


class ChunkReader(torch.utils.data.IterableDataset):
    """Reads and pre-processes whole chunks (each in one DataLoader worker, chunks dealt round-robin to the
    workers), yielding `Prepared` items in input order and a `UnitEnd` after each chunk."""

    def __init__(self, source, chunk_size: int, rank: int, world_size: int, done: set[int],
                 prepare: Callable[[np.ndarray], dict]):
        self.source, self.chunk_size, self.prepare = source, chunk_size, prepare
        self.rank, self.world_size, self.done = rank, world_size, done

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            torch.set_num_threads(1)  # the workers decode; the model process keeps the cores
        numbers = chunks_to_do(self.rank, self.world_size, self.done, self.source.length, self.chunk_size)
        for number in itertools.islice(numbers, worker, None, workers):
            count = 0
            for index, item_id, value in self.source.chunk(number, self.chunk_size):
                count += 1
                try:
                    image = decode(value)
                    yield Prepared(number, index, item_id, image.shape[:2], self.prepare(image))
                except Exception as error:  # recorded in the errors file; the run goes on
                    yield Prepared(number, index, item_id, error=f"{type(error).__name__}: {error}")
            if count == 0:  # past the end of a stream
                return
            yield UnitEnd(number, count)


def worker_count(requested: int | None, on_cpu: bool, processes: int) -> int:
    """DataLoader workers per process: as asked; else none when the models run on the CPU (they use every core, and
    a worker only competes with them: benchmarks/annotate_throughput.py), and with a GPU the process's share of the
    cores less the one that drives the GPU, at most 4."""
    if requested is not None:
        return requested
    if on_cpu:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) // processes - 1))
