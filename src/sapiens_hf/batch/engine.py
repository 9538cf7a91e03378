"""The batch engine of `sapiens-hf predict` and `sapiens-hf annotate`: inputs → batches → models → writers.

`Engine.run` reads a stream of items (`inputs`), predicts them in batches, hands each result to a writer
(`writers.FileWriter`, per-image files; `writers.ShardWriter`, Parquet shards) and marks each unit (an input file, a
chunk) done in the run's `writers.ResumeRecord` once all its outputs are written, so that the same command resumes
an interrupted run. `predict_files` runs a task's pipeline over files in the main process, SIGINT/SIGTERM ending it
with every finished image kept; `annotate` runs the models of several tasks on DataLoader-prepared chunks, one
process per device under `accelerate launch`, post-processing the batches with each task's image processor as its
pipeline does."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable

from ..tasks import DEFAULT_DETECTOR, PIPELINE_TASKS, SEGMENTATION, Task
from .inputs import ChunkReader, UnitEnd, frame_events, model_identity, worker_count
from .writers import MASK_COLUMN, ChunkRecords, ResumeRecord, ShardWriter


class Engine:
    """Predicts the items of a stream in batches of `batch_size` — across units, or with `within_units` only of one
    unit (a chunk, whose items other chunks' may interleave) — and writes each result as it comes; a unit is finished
    (`writer.finish`, then recorded as done unless the writer answers None) once it has ended and its last batch is
    written. `predict(items)` returns a result or an Exception per item; items that could not be read carry their
    `error`. The writer and the record are closed however the run ends."""

    def __init__(self, predict: Callable[[list], list], writer, record: ResumeRecord, batch_size: int,
                 within_units: bool = False):
        self.predict, self.writer, self.record = predict, writer, record
        self.batch_size, self.within_units = batch_size, within_units
        self.pending: dict = {}  # items waiting for their batch, by unit (within_units) or all under None
        self.ended: list = []  # units read to the end, finished once their last batch is written
        self.started: set = set()

    def run(self, events, bar) -> None:
        try:
            for event in events:
                if isinstance(event, UnitEnd):
                    self._end(event, bar)
                    continue
                if event.unit not in self.started:
                    self.started.add(event.unit)
                    self.record.start(event.unit)
                if event.error is not None:
                    self.writer.fail(event, event.error)
                    bar.update()
                    continue
                group = event.unit if self.within_units else None
                self.pending.setdefault(group, []).append(event)
                if len(self.pending[group]) == self.batch_size:
                    self._flush(group, bar)
            for group in list(self.pending):
                self._flush(group, bar)
        finally:
            self.writer.close()
            self.record.close()

    def _end(self, event: UnitEnd, bar) -> None:
        if event.unit in self.record.done:  # finished by an earlier run: skipped
            bar.update(event.count)
            return
        self.ended.append(event.unit)
        if self.within_units:
            self._flush(event.unit, bar)
        self._finish_ended()

    def _flush(self, group, bar) -> None:
        """Predicts and writes a batch, then finishes the units that it completes."""
        items = self.pending.pop(group, [])
        for item, result in zip(items, self.predict(items) if items else []):
            if isinstance(result, Exception):
                self.writer.fail(item, f"{type(result).__name__}: {result}")
                continue
            kept = self.writer.write(item, result)
            if kept is not None:
                self.record.add(item.unit, kept)
        bar.update(len(items))
        self._finish_ended()

    def _finish_ended(self) -> None:
        waiting = {item.unit for items in self.pending.values() for item in items}
        for unit in [unit for unit in self.ended if unit not in waiting]:
            summary = self.writer.finish(unit)
            if summary is not None:
                self.record.finish(unit, summary)
        self.ended = [unit for unit in self.ended if unit in waiting]


# ---------------------------------------------------------------------------------------------------------------
# predict: a pipeline over image and video files
# ---------------------------------------------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGINT or SIGTERM during `predict`: a BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def pipeline_predictor(pipe, **call_kwargs) -> Callable[[list], list]:
    """The predictions of a batch of frames by `pipe`; if the batch fails, image by image, so that one bad image
    costs only its own result (an Exception in its place)."""

    def predict_one(image):
        try:
            return pipe([image], **call_kwargs)[0]
        except Exception as error:  # noqa: BLE001  (reported as this image's failure)
            return error

    def predict(frames: list) -> list:
        images = [frame.image for frame in frames]
        try:
            return pipe(images, **call_kwargs)
        except Exception:  # noqa: BLE001  (retried one by one to find the culprit)
            return [predict_one(image) for image in images]

    return predict


def predict_files(pipe, inputs: list, writer, record, batch_size: int, call_kwargs: dict, quiet: bool) -> None:
    """Predicts the inputs (`inputs.Input`) with the pipeline `pipe` in batches of `batch_size` images/frames
    (across files), writing each result as it comes and recording it in `record` (`writers.ProgressFile`, loaded);
    the task's records (keypoints.json) are written at the end, also when SIGINT/SIGTERM (`Interrupted`) or a write
    error (OSError) ends the run, with every finished image."""
    from tqdm.auto import tqdm

    engine = Engine(pipeline_predictor(pipe, batch_size=batch_size, **call_kwargs), writer, record, batch_size)
    total = sum(len(entry.indices) for entry in inputs)  # a video's frames after --frame-stride: the ETA's basis
    with tqdm(total=total, desc=f"sapiens {writer.task.name}", unit="frame", disable=quiet) as bar:
        bar.update(sum(len(record.frames_done(entry.name)) for entry in inputs if entry.name not in record.done))
        with signals_interrupt():  # also during the clean-up, where a second signal is ignored
            record.open()
            try:
                engine.run(frame_events(inputs, record.done, record.frames_done), bar)
            finally:
                if writer.records_path is not None:
                    writer.write_records(record.kept_in_order([entry.name for entry in inputs]), pipe.model.config)


# ---------------------------------------------------------------------------------------------------------------
# annotate: the models of several tasks over chunks, in one process per device
# ---------------------------------------------------------------------------------------------------------------


class Preparer:
    """Pre-processing of every task for one decoded image (runs in the DataLoader workers: processors only)."""

    def __init__(self, processors: dict[Task, object]):
        self.processors = processors

    def __call__(self, image) -> dict:
        return {task.name: task.prepare(processor, image) for task, processor in self.processors.items()}


def predict_rows(pipelines: dict[Task, object], items: list, dense_size: tuple[int, int] | None,
                 pose_kwargs: dict | None = None, columns: list[Task] | None = None, masked: bool = False) -> list[dict]:
    """The rows of a batch of images: every task's model on the batch, post-processed per image by the task's image
    processor (`Task.post_process`, as the pipelines do) into the columns of the tasks in `columns` (`Task.row`;
    default all). A top-down task runs its pipeline on the images with `pose_kwargs` (the person detector, the
    keypoint format): people found in the batch, their crops batched as `predict` batches them. With `masked`, the
    segmentation's person masks (`SEGMENTATION.person_mask`, its pass shared with its own columns) cut the masked
    tasks' maps (NaN outside, the mask resized to the map by nearest neighbour) and go to `MASK_COLUMN` as PNG at the
    image's size."""
    import cv2
    import numpy as np
    import torch

    rows = [{"id": item.id, "index": item.index, "height": item.size[0], "width": item.size[1]} for item in items]
    sizes = [item.size for item in items]
    dense_sizes = sizes if dense_size is None else [dense_size] * len(items)
    columns, masks = list(pipelines) if columns is None else columns, None
    for task, pipe in pipelines.items():
        prepared = [item.inputs[task.name] for item in items]
        if task.top_down:
            people = pipe([entry["image"] for entry in prepared], batch_size=len(items), **(pose_kwargs or {}))
            for row, result in zip(rows, people):
                row.update(task.row(result, pipe.model.config))
            continue
        pixel_values = torch.cat([entry["pixel_values"] for entry in prepared]).to(pipe.device, pipe.dtype)
        with torch.inference_mode():
            outputs = pipe.model(pixel_values=pixel_values)
        output = task.output_type()(**task.model_outputs(outputs))
        arguments = task.post_process_arguments(prepared, sizes, dense_sizes)
        if getattr(pipe.image_processor, "do_pad", False):  # Sapiens2's padded inputs: the border is found per image
            arguments["source_sizes"] = sizes
        results = getattr(pipe.image_processor, task.post_process)(output, **arguments)
        if masked and task is SEGMENTATION:
            masks = [task.person_mask(labels).numpy().astype(np.uint8) for labels in results]
        if masked and task.masked:
            results = [task.mask_result(result, torch.from_numpy(cv2.resize(mask, size[::-1],
                                                                            interpolation=cv2.INTER_NEAREST) > 0))
                       for result, mask, size in zip(results, masks, dense_sizes)]
        if task in columns:
            for row, result in zip(rows, results):
                row.update(task.row(result, pipe.model.config))
    for row, mask in zip(rows, masks or []):
        row[MASK_COLUMN] = cv2.imencode(".png", mask * 255)[1].tobytes()
    return rows


def _unbatched(item):
    return item


def annotate(source, models: dict[str, str], output, *, batch_size: int = 8, chunk_size: int = 128,
             dense_size: tuple[int, int] | None = (256, 192), dtype: str | None = None, workers: int | None = None,
             device: str | None = None, config_overrides: dict | None = None, overwrite: bool = False,
             quiet: bool = False, push_to_hub: str | None = None, keypoint_format: str = "native",
             detector: str | None = DEFAULT_DETECTOR, detector_threshold: float = 0.3,
             mask_model: str | None = SEGMENTATION.default_checkpoint, backend: str = "torch") -> dict:
    """Annotates every input of `source` (`inputs.FileSource` / `DatasetSource`) with each task's model
    (`{task: model id or path}`) into `output` (`writers.ShardWriter`); resumes a run with the same settings. Pose
    finds the people with `detector` (a model id or folder; None: the whole image); depth and normals are cut with
    the person mask of `mask_model` (None: unmasked), or of the segmentation task's model when it runs too (one pass
    for both). Both load before any image is read.
    Returns `{"rows", "errors", "seconds", "images_per_second", "processes"}` (over this run's work, all
    processes). `keypoint_format`: the pose keypoints' format (`keypoint_formats`; a `KeypointFormatError` once the
    pose model is loaded if its keypoints cannot give it, before anything is written). `backend` and `dtype` as
    `load_task_pipeline`'s (int8: the quantised onnxruntime graph); the backend of each task is printed once, on
    stderr, unless `quiet`."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from ..pipelines import load_task_pipeline

    accelerator = Accelerator(cpu=device == "cpu")
    if accelerator.num_processes == 1 and launched_for_several_processes():
        print("annotate: `accelerate launch` asked for several processes but started one (its launcher without "
              "--multi_gpu runs a single process): add --multi_gpu, which on a CPU-only machine runs the processes "
              "with gloo; this run goes on in one process", file=sys.stderr)
    tasks = [task for task in PIPELINE_TASKS.values() if task.name in models]
    masked = [task for task in tasks if task.masked]
    if SEGMENTATION in tasks and masked and mask_model is not None:  # the segmentation task's pass gives the masks
        mask_model = models[SEGMENTATION.name] or SEGMENTATION.default_checkpoint
    mask_model = mask_model if masked else None
    writer = ShardWriter(output, tasks, masks=mask_model is not None)
    settings = {"tasks": {task.name: models[task.name] for task in tasks},
                "model_files": {task.name: model_identity(models[task.name]) for task in tasks},
                "input": source.describe(),
                "dtype": dtype, "batch_size": batch_size, "chunk_size": chunk_size, "config": config_overrides or {},
                "dense_size": list(dense_size) if dense_size else "image", "keypoint_format": keypoint_format}
    top_down = [task for task in tasks if task.top_down]
    if top_down:
        settings.update(detector=detector, detector_threshold=detector_threshold,
                        detector_files=model_identity(detector))
    if masked:
        settings.update(mask_model=mask_model, mask_files=model_identity(mask_model))
    if accelerator.is_main_process:
        writer.check(settings, overwrite)  # before the models load
    report = None if quiet or not accelerator.is_main_process else (
        lambda line: print(f"annotate: {line}", file=sys.stderr))
    pipelines = {task: load_task_pipeline(task.name, models[task.name], device=accelerator.device,
                                          dtype=dtype if dtype == "int8" else dtype and getattr(torch, dtype),
                                          backend=backend, images=getattr(source, "length", None), report=report,
                                          **(config_overrides or {}))
                 for task in tasks}
    pose_kwargs = {}
    for task in top_down:  # KeypointFormatError and DetectorUnavailableError, before any image is read
        pipelines[task].keypoint_conversion(keypoint_format)
        pose_kwargs = {"detector": detector and pipelines[task]._resolve_detector(detector),
                       "detector_threshold": detector_threshold, "keypoint_format": keypoint_format}
    runs = pipelines
    if mask_model is not None and SEGMENTATION not in pipelines:  # MaskModelUnavailableError, before any image
        segmenter = pipelines[masked[0]]._resolve_mask_model(mask_model)
        runs = {task: pipelines.get(task, segmenter) for task in PIPELINE_TASKS.values()
                if task in pipelines or task is SEGMENTATION}  # the segmentation first
    if accelerator.is_main_process:
        writer.start(_manifest(settings, pipelines), overwrite)
    accelerator.wait_for_everyone()
    if (writer.existing_manifest() or {}).get("settings") != json.loads(json.dumps(settings)):
        raise RuntimeError(f"{output}: the processes were started with different settings")
    record = ChunkRecords(writer.state)

    reader = ChunkReader(source, chunk_size, accelerator.process_index, accelerator.num_processes, set(record.done),
                         Preparer({task: pipe.image_processor for task, pipe in runs.items()}))
    workers = worker_count(workers, accelerator.device.type == "cpu", accelerator.num_processes)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=workers, collate_fn=_unbatched,
                                         prefetch_factor=2 * batch_size if workers else None)
    engine = Engine(lambda items: predict_rows(runs, items, dense_size, pose_kwargs, tasks, mask_model is not None),
                    writer, record, batch_size, within_units=True)
    start = time.perf_counter()
    with tqdm(desc=f"annotate [{accelerator.process_index}]", unit="image", position=accelerator.process_index,
              disable=quiet, dynamic_ncols=True) as bar:
        engine.run(loader, bar)
    seconds = time.perf_counter() - start
    work = gather_object([(writer.finished, seconds)])
    accelerator.wait_for_everyone()
    summary = {"processes": accelerator.num_processes}
    if accelerator.is_main_process:
        summary["rows"], summary["errors"] = writer.collect_errors(record)
        total, slowest = sum(count for count, _ in work), max(elapsed for _, elapsed in work)
        summary.update(seconds=slowest, images_per_second=total / slowest if slowest else 0.0, annotated=total)
        # The aggregate throughput, also with `quiet` (which hides the progress bars).
        print(f"annotated {total} images in {slowest:.1f} s: {summary['images_per_second']:.2f} images/s over "
              f"{accelerator.num_processes} process(es); {summary['rows']} rows, {summary['errors']} unreadable "
              f"inputs in total (see {writer.state / 'errors.jsonl'})", file=sys.stderr)
        if push_to_hub:
            writer.push_to_hub(push_to_hub)
    accelerator.wait_for_everyone()
    return summary


def launched_for_several_processes() -> bool:
    """Whether `accelerate launch --num_processes N` (N > 1) started this single process: its simple launcher sets a
    rendezvous address for N > 1 but starts one process, without the WORLD_SIZE of a distributed launch."""
    return "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ


def _manifest(settings: dict, pipelines: dict) -> dict:
    import torch
    import transformers

    from .. import __version__

    models = {task.name: {"class": type(pipe.model).__name__, "name_or_path": pipe.model.name_or_path,
                          "revision": getattr(pipe.model.config, "_commit_hash", None),
                          "labels": pipe.model.config.id2label}
              for task, pipe in pipelines.items()}
    versions = {"sapiens_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    return {"settings": json.loads(json.dumps(settings)), "models": models, "versions": versions,
            "columns": {task.name: [name for name, _ in task.columns()] for task in pipelines},
            "tasks": {task.name: task.description for task in pipelines}}
