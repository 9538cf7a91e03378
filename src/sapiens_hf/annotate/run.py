"""The annotation run: one process per device under `accelerate launch` (or just one), each with a DataLoader whose
workers decode and pre-process its chunks while the models run, every task's model on the same decoded images,
batches formed inside a chunk, results post-processed by the task's image processor (the pipelines' own code) and
written chunk by chunk (`output.OutputFolder`)."""

import json
import platform
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

from .. import __version__
from ..geometry import check_boxes
from ..modeling_sapiens import SapiensNormalEstimatorOutput, SapiensPoseEstimatorOutput
from ..tasks import PIPELINE_TASKS, TASKS
from .output import TASK_SCHEMA, OutputFolder, npy_bytes
from .sources import ChunkEnd, ChunkReader, Prepared, worker_count


TASK_ORDER = [task.name for task in PIPELINE_TASKS.values()]


class Preparer:
    """Pre-processing of every task for one decoded image (runs in the DataLoader workers: processors only)."""

    def __init__(self, processors: dict):
        self.processors = processors

    def __call__(self, image: np.ndarray) -> dict:
        inputs = {}
        for task, processor in self.processors.items():
            if task == "pose":  # the whole image is the person's box, as `predict` without --detector
                boxes = check_boxes(None, *image.shape[:2])
                data = processor(image, boxes=[boxes], return_tensors="pt")
                inputs[task] = {"pixel_values": data["pixel_values"], "boxes": boxes,
                                "crop_center": data["crop_center"], "crop_scale": data["crop_scale"]}
            else:
                inputs[task] = {"pixel_values": processor(image, return_tensors="pt")["pixel_values"]}
        return inputs


def predict_rows(pipelines: dict, items: list[Prepared], dense_size: tuple[int, int] | None) -> list[dict]:
    """The rows of a batch of images: every task's model on the batch, post-processed per image."""
    rows = [{"id": item.id, "index": item.index, "height": item.size[0], "width": item.size[1]} for item in items]
    for task, pipe in pipelines.items():
        inputs = [item.inputs[task] for item in items]
        pixel_values = torch.cat([entry["pixel_values"] for entry in inputs]).to(pipe.device, pipe.dtype)
        with torch.inference_mode():
            outputs = pipe.model(pixel_values=pixel_values)
        processor = pipe.image_processor
        dense_sizes = [item.size if dense_size is None else dense_size for item in items]
        if task == "pose":
            people = processor.post_process_pose_estimation(
                SapiensPoseEstimatorOutput(heatmaps=outputs.heatmaps.float().cpu()),
                boxes=[entry["boxes"].tolist() for entry in inputs],
                crop_center=torch.cat([entry["crop_center"] for entry in inputs]),
                crop_scale=torch.cat([entry["crop_scale"] for entry in inputs]),
            )
            for row, persons in zip(rows, people):
                row["pose_boxes"] = [person["bbox_xywh"].tolist() for person in persons]
                row["pose_keypoints"] = [person["keypoints"].tolist() for person in persons]
                row["pose_scores"] = [person["scores"].tolist() for person in persons]
        elif task == "segmentation":
            maps = processor.post_process_semantic_segmentation(
                SemanticSegmenterOutput(logits=outputs.logits.float().cpu()), target_sizes=[i.size for i in items])
            for row, labels in zip(rows, maps):
                labels = labels.numpy().astype(np.uint8 if pipe.model.config.num_labels <= 256 else np.uint16)
                row["segmentation_png"] = cv2.imencode(".png", labels)[1].tobytes()
        elif task == "depth":
            depths = processor.post_process_depth_estimation(
                DepthEstimatorOutput(predicted_depth=outputs.predicted_depth.float().cpu()), target_sizes=dense_sizes)
            for row, depth in zip(rows, depths):
                row["depth_npy"] = npy_bytes(depth["predicted_depth"].numpy().astype(np.float32))
        else:
            normals = processor.post_process_normal_estimation(
                SapiensNormalEstimatorOutput(normals=outputs.normals.float().cpu()), target_sizes=dense_sizes)
            for row, normal in zip(rows, normals):
                row["normal_npy"] = npy_bytes(normal["normals"].numpy().astype(np.float32))
    return rows


@dataclass
class _Chunk:
    pending: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    count: int | None = None  # known once the chunk's end arrives


def _unbatched(item):
    return item


def annotate(source, models: dict[str, str], output, *, batch_size: int = 8, chunk_size: int = 128,
             dense_size: tuple[int, int] | None = (256, 192), dtype: str | None = None, workers: int | None = None,
             device: str | None = None, config_overrides: dict | None = None, overwrite: bool = False,
             quiet: bool = False, push_to_hub: str | None = None) -> dict:
    """Annotates every input of `source` (`sources.FileSource` / `DatasetSource`) with each task's model
    (`{task: model id or path}`) into `output` (see `output.py`); resumes a run with the same settings. Returns
    `{"rows", "errors", "seconds", "images_per_second", "processes"}` (over this run's work, all processes)."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from ..pipelines import load_task_pipeline

    accelerator = Accelerator(cpu=device == "cpu")
    tasks = [task for task in TASK_ORDER if task in models]
    folder = OutputFolder(output, tasks)
    settings = {"tasks": {task: models[task] for task in tasks}, "input": source.describe(), "dtype": dtype,
                "batch_size": batch_size, "chunk_size": chunk_size, "config": config_overrides or {},
                "dense_size": list(dense_size) if dense_size else "image"}
    pipelines = {task: load_task_pipeline(task, models[task], device=accelerator.device, dtype=dtype and getattr(torch, dtype),
                                          **(config_overrides or {})) for task in tasks}
    if accelerator.is_main_process:
        folder.start(_manifest(settings, pipelines), overwrite)
    accelerator.wait_for_everyone()
    if (folder.existing_manifest() or {}).get("settings") != json.loads(json.dumps(settings)):
        raise RuntimeError(f"{output}: the processes were started with different settings")
    done = folder.done_chunks()

    reader = ChunkReader(source, chunk_size, accelerator.process_index, accelerator.num_processes, done,
                         Preparer({task: pipe.image_processor for task, pipe in pipelines.items()}))
    workers = worker_count(workers, accelerator.device.type == "cpu", accelerator.num_processes)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=workers, collate_fn=_unbatched,
                                         prefetch_factor=2 * batch_size if workers else None)
    from tqdm.auto import tqdm

    chunks: dict[int, _Chunk] = {}
    processed, start = 0, time.perf_counter()
    with tqdm(desc=f"annotate [{accelerator.process_index}]", unit="image", position=accelerator.process_index,
              disable=quiet, dynamic_ncols=True) as bar:
        for item in loader:
            chunk = chunks.setdefault(item.chunk, _Chunk())
            if isinstance(item, ChunkEnd):
                chunk.count = item.count
            elif item.error is not None:
                chunk.errors.append({"index": item.index, "id": item.id, "error": item.error})
                bar.update()
            else:
                chunk.pending.append(item)
            if chunk.pending and (len(chunk.pending) == batch_size or chunk.count is not None):
                chunk.rows += predict_rows(pipelines, chunk.pending, dense_size)
                bar.update(len(chunk.pending))
                chunk.pending = []
            if chunk.count is not None and not chunk.pending:
                folder.finish_chunk(item.chunk, chunk.rows, chunk.errors)
                processed += chunk.count
                del chunks[item.chunk]
    seconds = time.perf_counter() - start
    work = gather_object([(processed, seconds)])
    accelerator.wait_for_everyone()
    summary = {"processes": accelerator.num_processes}
    if accelerator.is_main_process:
        folder.collect_errors()
        summary["rows"], summary["errors"] = folder.counts()
        total, slowest = sum(count for count, _ in work), max(elapsed for _, elapsed in work)
        summary.update(seconds=slowest, images_per_second=total / slowest if slowest else 0.0, annotated=total)
        # The aggregate throughput, also with `quiet` (which hides the progress bars).
        print(f"annotated {total} images in {slowest:.1f} s: {summary['images_per_second']:.2f} images/s over "
              f"{accelerator.num_processes} process(es); {summary['rows']} rows, {summary['errors']} unreadable "
              f"inputs in total (see {folder.state / 'errors.jsonl'})", file=sys.stderr)
        if push_to_hub:
            folder.push_to_hub(push_to_hub)
    accelerator.wait_for_everyone()
    return summary


def _manifest(settings: dict, pipelines: dict) -> dict:
    import transformers

    models = {task: {"class": type(pipe.model).__name__, "name_or_path": pipe.model.name_or_path,
                     "revision": getattr(pipe.model.config, "_commit_hash", None), "labels": pipe.model.config.id2label}
              for task, pipe in pipelines.items()}
    versions = {"sapiens_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    columns = {task: [name for name, _ in TASK_SCHEMA[task]] for task in settings["tasks"]}
    return {"settings": json.loads(json.dumps(settings)), "models": models, "versions": versions, "columns": columns,
            "tasks": {task: TASKS[task].description for task in settings["tasks"]}}
