"""What `sapiens-hf annotate` reads, and how the work is cut so that any number of processes gives the same result.

The input — image files (folders searched recursively, sorted, or a list file) or a `datasets` dataset (a Hub id or
a local imagefolder/parquet folder, streamed or not) — is one sequence in a fixed order, cut into chunks of
`chunk_size` consecutive items. A chunk is the unit of work and of output: one process (and in it one DataLoader
worker) reads it, the models see its images in batches formed inside it, and it is written as one shard. Which
process does a chunk changes nothing in its content, so 1, 2 or 16 processes, and a run resumed after a kill, give
the same shards.
"""

import io
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, read_image


@dataclass
class Prepared:
    """One input after decoding and pre-processing (in a DataLoader worker), or the reason it could not be read."""

    chunk: int
    index: int
    id: str
    size: tuple[int, int] | None = None  # (height, width)
    inputs: dict | None = None  # per task: what its model and post-processing need
    error: str | None = None


@dataclass
class ChunkEnd:
    """Sent after the last item of a chunk, with the number of inputs the chunk held."""

    chunk: int
    count: int


class FileSource:
    """Image files in a fixed order: those under each folder argument (recursively, sorted) and the files given,
    each once; ids are the paths as found."""

    def __init__(self, paths: list[str], exclude: Path | None = None):
        suffixes = {suffix.lower() for suffix in PIL.Image.registered_extensions()}
        files, seen = [], set()
        for argument in paths:
            path = Path(argument)
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                               and not (exclude is not None and p.resolve().is_relative_to(exclude.resolve())))
            elif path.is_file():
                found = [path]
            else:
                raise FileNotFoundError(f"No such file or folder: {argument}")
            for file in found:
                if file.resolve() not in seen:
                    seen.add(file.resolve())
                    files.append(str(file))
        self.files = files
        self.length = len(files)

    def chunk(self, number: int, size: int) -> Iterator[tuple[int, str, object]]:
        for index in range(number * size, min((number + 1) * size, self.length)):
            yield index, self.files[index], self.files[index]

    def describe(self) -> dict:
        return {"kind": "files", "count": self.length}


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
        self.image_column, self.id_column, self.name = image_column, id_column, name
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
        return {"kind": "dataset", "name": self.name, "split": self.split, "image_column": self.image_column,
                "id_column": self.id_column, "streaming": self.streaming, "count": self.length}


def _image_value(value):
    """An undecoded `datasets.Image` value ({"bytes", "path"}) as bytes or a path; anything else unchanged."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        return value["bytes"] if value.get("bytes") is not None else value["path"]
    return value


def decode(value, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """An input image as uint8 RGB: a path or URL, encoded bytes, or an image object (`read_image`)."""
    if isinstance(value, bytes):
        image = PIL.Image.open(io.BytesIO(value))  # a header that PIL cannot parse raises here
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(f"The image has {image.width}×{image.height} pixels, more than {max_pixels:,}")
        value = image
    return read_image(value, max_pixels=max_pixels)


def chunks_to_do(rank: int, world_size: int, done: set[int], length: int | None, chunk_size: int):
    """This process's chunks (every `world_size`-th from `rank`) that have no shard yet; for a stream of unknown
    length an endless iterator, which the reader ends at the first empty chunk."""
    numbers = itertools.count(rank, world_size) if length is None else range(rank, -(-length // chunk_size), world_size)
    return (number for number in numbers if number not in done)


class ChunkReader(torch.utils.data.IterableDataset):
    """Reads and pre-processes whole chunks (each in one DataLoader worker, chunks dealt round-robin to the
    workers), yielding `Prepared` items in input order and a `ChunkEnd` after each chunk."""

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
            yield ChunkEnd(number, count)


def worker_count(requested: int | None, on_cpu: bool, processes: int) -> int:
    """DataLoader workers per process: as asked; else none when the models run on the CPU (they use every core, and
    a worker only competes with them: benchmarks/annotate_throughput.py), and with a GPU the process's share of the
    cores less the one that drives the GPU, at most 4."""
    if requested is not None:
        return requested
    if on_cpu:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) // processes - 1))
