"""`sapiens-hf evaluate`: its arguments, their checks (before the model loads) and its table; the evaluation itself
is `sapiens_hf.evaluation`'s."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from pathlib import Path

from ..batch.writers import write_atomically
from ..keypoint_formats import KeypointFormatError
from ..tasks import TASKS
from .errors import EXIT_FAILED, CommandError, debugging, usage_error, with_cli_hint


EXAMPLE = """examples:
  sapiens-hf evaluate --task pose --model facebook/sapiens-pose-1b --annotations person_keypoints_val2017.json \\
      --images val2017/ --output pose-1b.json
  sapiens-hf evaluate --task seg --model ./my-seg --dataset user/people-parts --split validation --output seg.json
  sapiens-hf evaluate --task depth --model ./my-depth --dataset data/val --output depth.json   # images/ + depth/"""


def add_arguments(parser: argparse.ArgumentParser, model_type, task_type, task_names: list[str], model_help: str,
                  device_help: str, dtype_help: str, dtype_type, device_type) -> None:
    parser.add_argument("--task", required=True, type=task_type, choices=task_names,
                        help="pose, segmentation (or seg), depth or normal")
    parser.add_argument("--model", type=model_type, help=model_help + " (default: the task's original 0.3B release)")
    parser.add_argument("--output", required=True, help="the JSON file of the figures (and the settings)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--device", type=device_type, help=device_help)
    parser.add_argument("--dtype", type=dtype_type, metavar="DTYPE", help=dtype_help)
    parser.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=None,
                        help="average with the mirrored input (default: on for pose, as the paper's protocol; off "
                             "for the dense tasks)")
    pose = parser.add_argument_group("pose (a COCO keypoints file)")
    pose.add_argument("--annotations", help="COCO keypoints JSON (e.g. person_keypoints_val2017.json)")
    pose.add_argument("--images", help="the folder its images' file_name are relative to")
    pose.add_argument("--boxes", default="gt", metavar="gt|detector|FILE.json",
                      help="person boxes: the annotations' (gt, the default), the person detector's, or those of a "
                           "COCO detection results file (the released evaluation's "
                           "COCO_val2017_detections_AP_H_70_person.json)")
    pose.add_argument("--detector", help="with --boxes detector: the object-detection model id or folder")
    pose.add_argument("--detector-threshold", type=float, default=0.3)
    dense = parser.add_argument_group("segmentation, depth, normal (a datasets dataset or a folder)")
    dense.add_argument("--dataset", help="a Hub dataset id, a local dataset, or a folder with images/ and labels/, "
                       "depth/ or normals/ (optional masks/), directly or under --split")
    dense.add_argument("--split", default="validation")
    dense.add_argument("--image-column", default="image")
    dense.add_argument("--target-column", help="default: label, depth or normal")
    dense.add_argument("--mask-column", default="mask", help="foreground mask column, used when present")


def problems(args) -> list[str]:
    """What the arguments alone show wrong, and the annotations file's problems (before the model loads)."""
    from ..evaluation import BOX_SOURCES, person_boxes, read_coco_keypoints, read_detections
    from .predict import device_problem

    task, found = TASKS[args.task], []
    if args.model is not None:
        named, args.model = args.model
        if named not in (None, args.task):
            found.append(f"--model {named}=...: this run's --task is {args.task}")
    if args.flip_test and not task.flip_test:
        found.append(f"--flip-test: --task {args.task} has no flip test")
    pose_only = [flag for flag, value in (("--annotations", args.annotations), ("--images", args.images),
                                          ("--detector", args.detector)) if value]
    if task.top_down:
        if args.dataset:
            found.append(f"--dataset: --task {args.task} is evaluated on --annotations and --images")
        if not (args.annotations and args.images):
            found.append(f"--task {args.task} needs --annotations FILE.json and --images FOLDER")
        if args.boxes == "detector" and not args.detector:
            found.append("--boxes detector needs --detector MODEL (an object-detection model id or folder)")
        if args.detector and args.boxes != "detector":
            found.append("--detector is used with --boxes detector")
    else:
        if pose_only:
            found.append(f"{', '.join(pose_only)}: --task {args.task} is evaluated on --dataset")
        if not args.dataset:
            found.append(f"--task {args.task} needs --dataset (a datasets dataset or a folder)")
    output = Path(args.output)
    if output.is_dir():
        found.append(f"--output {output} is a folder; name the JSON file to write")
    elif output.exists() and not args.overwrite:
        found.append(f"--output {output} exists (--overwrite replaces it)")
    elif not output.absolute().parent.is_dir():
        found.append(f"--output {output}: the folder {output.absolute().parent} does not exist")
    replaced = [flag for flag, value in (("--annotations", args.annotations), ("--boxes", args.boxes))
                if value and output.resolve() == Path(value).resolve()]
    for flag, value in (("--dataset", args.dataset), ("--model", args.model), ("--detector", args.detector)):
        if value and output.exists() and output.resolve().is_relative_to(Path(value).resolve()):
            replaced.append(f"{output.name}, a file of {flag} {value}")
    found += [f"--output would replace {what}" for what in replaced]
    found += [problem for problem in [device_problem(args.device)] if problem]
    if task.top_down and args.boxes not in BOX_SOURCES and not Path(args.boxes).is_file():
        found.append(f"--boxes {args.boxes}: expected gt, detector or a COCO detection results file")
    if not found and task.top_down:
        try:
            args.document = read_coco_keypoints(args.annotations, args.images)
            args.box_source = args.boxes if args.boxes in BOX_SOURCES else read_detections(args.boxes, args.document)
        except ValueError as error:
            found.append(str(error))
        else:
            if args.box_source != "detector" and not person_boxes(args.document, args.box_source):
                found.append(f"--boxes {args.boxes}: no box the pipeline can crop (some size, inside its image): "
                             "nothing would be predicted")
            image = next((image["file_name"] for image in args.document["images"]
                          if (Path(args.images) / image["file_name"]).resolve() == output.resolve()), None)
            found += [f"--output would replace the image {image} of --annotations"] if image else []
    return found


@contextlib.contextmanager
def datasets_quiet(quiet: bool):
    """--quiet: no progress bars of `datasets` while the dataset is prepared (its setting restored after)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet and was_enabled:
            datasets.enable_progress_bars()


def evaluate(args, load) -> int:
    """Loads the model (`load`: the CLI's pipeline loader), evaluates, prints the table and writes --output."""
    from tqdm.auto import tqdm

    from .. import evaluation

    task = TASKS[args.task]
    if task.top_down and importlib.util.find_spec("pycocotools") is None:
        raise CommandError(EXIT_FAILED, ['error: pose AP needs pycocotools: pip install "sapiens-hf[eval]"'])
    flip_test = task.top_down if args.flip_test is None else args.flip_test
    if task.top_down:
        source = {"annotations": args.annotations, "images": args.images, "boxes": args.boxes,
                  **({"detector": args.detector} if args.detector else {})}
        total = len(args.document["images"])
    else:
        try:
            with datasets_quiet(args.quiet):
                rows = evaluation.dense_dataset(task, args.dataset, args.split, args.image_column,
                                                args.target_column, args.mask_column)
        except Exception as error:  # a missing dataset, split or column: before the model loads
            if debugging():
                raise
            raise usage_error([f"--dataset {args.dataset}: {with_cli_hint(error)}"]) from None
        source, total = {"dataset": args.dataset, "split": args.split}, len(rows)
    pipe = load(args.task, args.model, args.device, args.dtype, [])
    try:
        with tqdm(total=total, desc=f"evaluate {task.name}", unit="image", disable=args.quiet) as bar:
            if task.top_down:
                figures, _ = evaluation.evaluate_pose(pipe, args.document, args.images, args.box_source,
                                                      args.detector, args.detector_threshold, flip_test,
                                                      args.batch_size, progress=bar.update)
            else:
                figures = evaluation.evaluate_dense(pipe, task, rows, flip_test, args.batch_size, bar.update)
    except KeypointFormatError as error:
        raise usage_error([f"--annotations {args.annotations}: {error}"]) from None
    except Exception as error:  # an unreadable image or reference, ... (SAPIENS_HF_DEBUG=1: the traceback)
        if debugging():
            raise
        raise CommandError(EXIT_FAILED, [f"error: evaluate: {with_cli_hint(error)}"]) from None
    model = args.model or task.default_checkpoint
    report = {"task": task.name, "model": model, **source, "images": total,
              "protocol": evaluation.task_protocol(task, flip_test=flip_test, dtype=args.dtype or "float32"),
              "metrics": figures}
    write_atomically(Path(args.output), lambda path: path.write_text(json.dumps(report, indent=2) + "\n"))
    width = max(map(len, figures))
    print(f"{task.name} · {model} · {total} images")
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {name:<{width}}  {value}")
    print(f"Wrote {args.output}", file=sys.stderr)
    return 0
