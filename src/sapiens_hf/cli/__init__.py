"""`sapiens-hf` command line: batch prediction on images, folders and videos, dataset-scale annotation into Parquet
shards (`annotate`), and checkpoint conversion, e.g.
`sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b photo.jpg clips/ --output out/` or
`sapiens-hf convert sapiens_0.3b_goliath_best_goliath_AP_573.pth out/sapiens-pose-0.3b --task pose`. This module
holds the entry point (`main`, the parser, the checks of the arguments alone) and the `convert` command; `predict`'s
checks and messages are in `predict`, `evaluate`'s in `evaluate` (the evaluation is `sapiens_hf.evaluation`'s), the
error plumbing in `errors`; both batch commands run on `sapiens_hf.batch`.
The `annotate` and `demo` commands import their modules when they run: they bring pyarrow and Gradio, which the
other commands do not need."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path

from .. import __version__, hub
from .. import convert as conversion
from ..backends import BACKENDS
from ..export import ExportError
from ..export import export as export_model
from ..image_io import SAMPLE_IMAGE
from ..keypoint_formats import FORMAT_NAMES, NATIVE, KeypointFormatError
from ..modeling_sapiens import WrongModelError
from ..runtime import pipeline_export_problem
from ..tasks import TASKS, get_task
from . import evaluate as evaluating
from . import predict
from .errors import DEBUG_ENV, EXIT_FAILED, EXIT_USAGE, CommandError, debugging, usage_error, with_cli_hint
from .models import models as list_models


DTYPES = ("float32", "float16", "bfloat16")  # names of torch dtypes, resolved when the model is loaded
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
EXPORT_DTYPES = {name: short for short, name in DTYPE_ALIASES.items()}  # the export manifest's names
KEYPOINT_FORMAT_HELP = ("pose: the model's own keypoints (native, the default) or the same keypoints by name in "
                        "COCO 17, COCO-WholeBody 133 or OpenPose 18 (docs/keypoint-formats.md)")
DETECTOR_HELP = (f"pose: the person detector, an object-detection model id or local folder (default "
                 f"{predict.DEFAULT_DETECTOR}, RT-DETR), or 'none' to use the whole image as the person's box")
MASK_HELP = ("depth, normal: the body-part segmentation model whose person mask (class != background) the maps are "
             f"cut with (default {predict.SEGMENTATION.default_checkpoint}); saved as <name>_<task>_mask.png")
PIPELINE_TASK_NAMES = [name for name, task in TASKS.items() if task.pipeline]
FLIP_TEST_TASKS = [name for name, task in TASKS.items() if task.flip_test]
TOP_DOWN_TASKS = [name for name, task in TASKS.items() if task.top_down]
MASKED_TASKS = [name for name, task in TASKS.items() if task.masked]
TASK_SPELLINGS = {spelling for task in TASKS.values() for spelling in (task.name, *task.aliases)}


def task_name(text: str) -> str:
    """`--task`: a task name or alias (`seg`), as its canonical name."""
    try:
        return get_task(text).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def dtype_name(text: str) -> str:
    """`--dtype`: a torch dtype name (float32, float16, bfloat16), or its short form (fp32, fp16, bf16)."""
    name = DTYPE_ALIASES.get(text, text)
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DTYPES)} (or fp32, fp16, bf16), got {text!r}")
    return name


def run_dtype_name(text: str) -> str:
    """`--dtype` of the commands that run a model: a torch dtype (`dtype_name`), or int8 (an onnxruntime graph
    quantised with calibration, sapiens_hf.backends)."""
    return text if text == "int8" else dtype_name(text)


def device_name(text: str) -> str | None:
    """`--device`: "auto" (the default: the first GPU if any, else the CPU) or a torch device."""
    return None if text == "auto" else text


def config_override(text: str) -> tuple[str, object]:
    """`--config KEY=VALUE`: the value is read as JSON (numbers, true/false, lists), else kept as a string."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_attention_heads=16), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ---------------------------------------------------------------------------------------------------------------
# Checks: before any work, one line per problem
# ---------------------------------------------------------------------------------------------------------------


def argument_problems(args) -> list[str]:
    """The problems that the arguments alone show (standard library only)."""
    problems = backend_problems(args) if hasattr(args, "backend") else []
    problems += older_export_problems(args)
    if getattr(args, "batch_size", 1) < 1:
        problems.append("--batch-size must be at least 1")
    # As the pose pipeline checks them (a detector score is in [0, 1]), but before any work: NaN would draw and
    # count no keypoint without a word, a threshold above 1 fail every image.
    for option, value, unit in (("--detector-threshold", getattr(args, "detector_threshold", None), True),
                                ("--keypoint-threshold", getattr(args, "keypoint_threshold", None), False)):
        if value is not None and not (math.isfinite(value) and (not unit or 0 <= value <= 1)):
            problems.append(f"{option} must be a finite number{' in [0, 1]' if unit else ''}, got {value}")
    if args.command == "annotate":
        return problems + annotate_problems(args)
    if args.command == "evaluate":
        return problems + evaluating.problems(args)
    if args.command != "predict":
        return problems
    if args.model is not None:  # MODEL or TASK=MODEL, as in the other commands
        task, args.model = args.model
        if task not in (None, args.task):
            problems.append(f"--model {task}=...: this run's --task is {args.task}")
    if args.flip_test and not TASKS[args.task].flip_test:
        problems.append(f"--flip-test applies to --task {' and '.join(FLIP_TEST_TASKS)}")
    if args.detector and not TASKS[args.task].top_down:
        problems.append(f"--detector applies to --task {' and '.join(TOP_DOWN_TASKS)}")
    if args.frame_stride < 1:
        problems.append("--frame-stride must be at least 1")
    if args.smooth and not TASKS[args.task].top_down:
        problems.append(f"--smooth applies to --task {' and '.join(TOP_DOWN_TASKS)}")
    for option, value, allowed in (("--smooth-min-cutoff", args.smooth_min_cutoff, "above 0"),
                                   ("--smooth-beta", args.smooth_beta, "0 or more")):
        if value is not None and not args.smooth:
            problems.append(f"{option} sets the filter of --smooth: add --smooth")
        elif value is not None and not (math.isfinite(value) and (value > 0 if allowed == "above 0" else value >= 0)):
            problems.append(f"{option} must be a finite number {allowed}, got {value}")
    if args.keypoint_format != NATIVE and not TASKS[args.task].top_down:
        problems.append(f"--keypoint-format applies to --task {' and '.join(TOP_DOWN_TASKS)}")
    if (args.mask_model or args.no_mask) and not TASKS[args.task].masked:
        problems.append(f"--mask-model and --no-mask apply to --task {' and '.join(MASKED_TASKS)}")
    if args.mask_model and args.no_mask:
        problems.append("--mask-model and --no-mask: give one of them")
    return problems + [problem for problem in [output_problem(Path(args.output))] if problem]


def older_export_problems(args) -> list[str]:
    """Export folders given as the model (--model MODEL or TASK=MODEL, once or several times; export's MODEL) or as
    --mask-model that no pipeline can run: written by an older sapiens-hf, without config.json."""
    given = getattr(args, "model", None)
    given = [given] if isinstance(given, (tuple, str)) else given or []
    models = [entry[1] if isinstance(entry, tuple) else entry for entry in given]
    models += [getattr(args, "mask_model", None)] if getattr(args, "mask_model", None) else []
    return [problem for problem in map(pipeline_export_problem, models) if problem]


def backend_problems(args) -> list[str]:
    """--backend and --dtype that cannot go together (predict, annotate, demo)."""
    dtype = getattr(args, "dtype", None)
    if dtype == "int8" and args.backend == "torch":
        return ["--dtype int8 runs a quantised onnxruntime graph: use --backend auto or onnxruntime"]
    if args.backend == "onnxruntime" and dtype not in (None, "float32", "int8"):
        return [f"--backend onnxruntime runs float32 or int8 graphs, not --dtype {dtype}: use --backend torch or auto"]
    if (args.backend == "onnxruntime" or dtype == "int8") and args.device not in (None, "cpu"):
        return [f"--device {args.device}: the onnxruntime backend runs on the CPU (--device cpu)"]
    return []


def annotate_problems(args) -> list[str]:
    problems = []
    if sum(map(bool, (args.inputs, args.list, args.dataset))) != 1:
        problems.append("give the images as paths, or --list FILE, or --dataset NAME (one of them)")
    if args.chunk_size < 1:
        problems.append("--chunk-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        problems.append("--workers must be 0 (decode in the main process) or more")
    if args.keypoint_format != NATIVE and not any(TASKS[task].top_down for task in args.task):
        problems.append(f"--keypoint-format applies to --task {' and '.join(TOP_DOWN_TASKS)}")
    if args.device not in (None, "cpu"):
        problems.append("--device: annotate takes 'cpu' or nothing (accelerate gives each process its GPU)")
    if args.detector and not any(TASKS[task].top_down for task in args.task):
        problems.append(f"--detector applies to --task {' and '.join(TOP_DOWN_TASKS)}")
    if (args.mask_model or args.no_mask) and not any(TASKS[task].masked for task in args.task):
        problems.append(f"--mask-model and --no-mask apply to --task {' and '.join(MASKED_TASKS)}")
    if args.mask_model and (args.no_mask or predict.SEGMENTATION.name in args.task):
        problems.append("--mask-model: give it without --no-mask, and without --task seg (whose model then gives "
                        "the person mask)")
    unknown = [task for task in models_by_task(args, args.task) if task not in args.task]
    if unknown:
        problems.append(f"--model given for {unknown}, which --task does not ask for")
    problems += predict.config_problems(args.config)
    return problems + [problem for problem in [output_problem(Path(args.output))] if problem]


def task_model(text: str) -> tuple[str | None, str]:
    """`--model MODEL` (the model of the one task asked for) or `--model TASK=MODEL`, as in every command."""
    task, equals, model = text.partition("=")
    if not equals or task not in TASK_SPELLINGS:  # a path may hold "=" too (runs/lr=1e-4/model)
        return None, text
    if not model:
        raise argparse.ArgumentTypeError(f"expected MODEL or TASK=MODEL (e.g. pose=facebook/sapiens-pose-1b), got "
                                         f"{text!r}")
    return task_name(task), model


def models_by_task(args, tasks: list[str]) -> dict[str, str]:
    """The `--model` arguments by task: a bare MODEL belongs to the one task of `tasks`."""
    models = {}
    for task, model in args.model:
        if task is None:
            if len(tasks) != 1:
                raise usage_error([f"--model {model}: name its task (--model TASK={model}) when there are several"])
            task = tasks[0]
        models[task] = model
    return models


def dense_size(text: str) -> tuple[int, int] | None:
    """`--dense-size HxW` or `image`."""
    if text == "image":
        return None
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 256x192) or 'image', got {text!r}")
    return int(height), int(width)


def port_problem(port: int) -> str | None:
    """Whether the demo can serve on `port` (at the address Gradio listens on), checked before the models load."""
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            return f"--port {port}: cannot serve on {host}:{port} ({error.strerror}); choose another --port"
    return None


def output_problem(output: Path) -> str | None:
    if output.exists() and not output.is_dir():
        return f"--output {output} is a file, not a folder"
    existing = next(path for path in [output.absolute(), *output.absolute().parents] if path.exists())
    if not existing.is_dir():
        return f"--output {output} cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--output {output} is not writable ({existing})"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


def convert(args) -> int:
    try:
        conversion.convert_to_folder(args.checkpoint, args.output_dir, task=args.task, overwrite=args.overwrite,
                                     **dict(args.config))
        if args.push_to_hub is not None:
            hub.publish_converted(args.output_dir, args.push_to_hub, source=args.checkpoint)
    except Exception as error:  # one line (SAPIENS_HF_DEBUG=1: the traceback)
        if debugging():
            raise
        # TypeError: an unknown --config key; FileExistsError: an earlier conversion there, without --overwrite
        code = EXIT_USAGE if isinstance(error, (TypeError, FileExistsError)) else EXIT_FAILED
        raise CommandError(code, [f"error: cannot convert {args.checkpoint}: {with_cli_hint(error)}"]) from None
    print(f"Converted {args.checkpoint} → {args.output_dir}")
    return 0


def export(args) -> int:
    try:
        manifest = export_model(args.model, args.output_dir, format=args.format, dtype=EXPORT_DTYPES[args.dtype],
                                dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                                input_size=args.input_size, quantize=args.quantize, opset=args.opset,
                                config_overrides=dict(args.config), overwrite=args.overwrite)
    except Exception as error:  # one line (SAPIENS_HF_DEBUG=1: the traceback)
        if debugging():
            raise
        code = EXIT_USAGE if isinstance(error, (TypeError, ExportError)) else EXIT_FAILED  # a request it refuses
        raise CommandError(code, [f"error: cannot export {args.model}: {with_cli_hint(error)}"]) from None
    print(f"Exported {args.model} → {args.output_dir}/{manifest['file']} ({manifest['task']}, {manifest['dtype']}); "
          f"largest difference to the eager model: {max(manifest['max_abs_difference_to_eager'].values()):.2g}")
    if "int8" in manifest:
        print("int8: " + ", ".join(f"{key} {value}" for key, value in manifest["int8"].items()))
    return 0


def annotate(args) -> int:
    from ..batch.engine import annotate
    from ..batch.inputs import DatasetSource, FileSource, read_list_file

    try:
        if args.dataset:
            source = DatasetSource(args.dataset, args.dataset_config, args.split, args.image_column, args.id_column,
                                   args.streaming)
        else:
            source = FileSource(read_list_file(args.list) if args.list else args.inputs, exclude=Path(args.output))
        models = {task: models_by_task(args, args.task).get(task) for task in args.task}
        detector = predict.detector_of(args, any(TASKS[task].top_down for task in args.task))
        summary = annotate(source, models, args.output, batch_size=args.batch_size, chunk_size=args.chunk_size,
                           dense_size=args.dense_size, dtype=args.dtype, workers=args.workers, device=args.device,
                           config_overrides=dict(args.config), overwrite=args.overwrite, quiet=args.quiet,
                           push_to_hub=args.push_to_hub, keypoint_format=args.keypoint_format, detector=detector,
                           detector_threshold=args.detector_threshold,
                           mask_model=predict.mask_of(args, any(TASKS[task].masked for task in args.task)),
                           backend=args.backend)
    except WrongModelError as error:  # a usage error, as in predict
        raise usage_error([f"annotate: --model does not fit --task: {error}"]) from None
    except Exception as error:  # one line (SAPIENS_HF_DEBUG=1: the traceback)
        if debugging():
            raise
        if isinstance(error, predict.DetectorUnavailableError):
            raise predict.detector_error(detector, error) from None
        if isinstance(error, predict.MaskModelUnavailableError):
            raise predict.mask_error(args.mask_model or predict.SEGMENTATION.default_checkpoint, error) from None
        code = EXIT_USAGE if isinstance(error, KeypointFormatError) else EXIT_FAILED  # the model cannot give it
        raise CommandError(code, [f"error: annotate: {with_cli_hint(error)}"]) from None
    return EXIT_FAILED if summary.get("errors") else 0


def evaluate(args) -> int:
    return evaluating.evaluate(args, predict.load_or_explain)


def demo(args) -> int:
    import importlib.util

    from .predict import device_problem

    models = models_by_task(args, PIPELINE_TASK_NAMES)
    problems = [f"--model {task}=...: the demo runs {', '.join(PIPELINE_TASK_NAMES)}" for task in models
                if task not in PIPELINE_TASK_NAMES] + [problem for problem in [device_problem(args.device)] if problem]
    problems += [problem for problem in [port_problem(args.port)] if problem]
    if problems:
        raise usage_error(problems)
    if importlib.util.find_spec("gradio") is None:
        raise CommandError(EXIT_FAILED, ['error: the demo needs Gradio: pip install "sapiens-hf[demo]"'])
    from .. import demo as web_demo  # Gradio loads only here

    detector = predict.detector_of(args, top_down=True)
    try:
        return web_demo.serve(models, device=args.device, port=args.port, share=args.share, detector=detector,
                              backend=args.backend, quiet=args.quiet)
    except predict.DetectorUnavailableError as error:  # loaded before the page is served
        if debugging():
            raise
        raise predict.detector_error(detector, error) from None
    except web_demo.DemoError as error:  # a model that does not load or does not fit its task
        raise CommandError(EXIT_FAILED, [f"error: {error}"]) from None


EXAMPLES = {
    "predict": f"""examples:
  sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b {SAMPLE_IMAGE} --output out/
  sapiens-hf predict --task depth --model ./sapiens-depth-0.3b photos/ clip.mp4 --output out/ --device auto""",
    "annotate": """examples:
  sapiens-hf annotate photos/ --task pose --task depth --output annotations/
  accelerate launch -m sapiens_hf.cli annotate --dataset user/people --task seg --model seg=./my-seg --output out/""",
    "export": """examples:
  sapiens-hf export facebook/sapiens-pose-0.3b out/pose-onnx --dynamic-batch --quantize int8
  sapiens-hf export ./sapiens-depth-0.3b out/depth-pt2 --format exported-program --dtype bfloat16
  sapiens-hf export facebook/sapiens2-seg-0.4b out/seg2-onnx --dynamic-size    # Sapiens2: RoPE follows the size""",
    "convert": """examples:
  sapiens-hf convert sapiens_0.3b_goliath_best_goliath_AP_573.pth out/sapiens-pose-0.3b --task pose
  sapiens-hf convert sapiens_1b_epoch_173_clean.pth out/encoder-1b --push-to-hub me/sapiens-1b""",
    "evaluate": evaluating.EXAMPLE,
    "models": """examples:
  sapiens-hf models
  sapiens-hf models --task pose --generation 2
  sapiens-hf models --json""",
    "demo": """examples:
  sapiens-hf demo
  sapiens-hf demo --model pose=facebook/sapiens-pose-1b --model seg=./my-seg --device cuda --share""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sapiens-hf",
        description="Meta's Sapiens models with Hugging Face transformers",
        epilog=f"Exit codes: 0 done, 1 some inputs failed or the model/checkpoint could not be loaded, 2 bad arguments "
        f"(nothing done), 128+N stopped by signal N. {DEBUG_ENV}=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"sapiens-hf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config_help = "override a model config field, e.g. num_attention_heads=16 (VALUE read as JSON); repeatable"
    device_help = '"auto" (the default: the first GPU if any, else the CPU), "cpu", "cuda", "cuda:1", ...'
    dtype_help = ("float32 (default; an export folder: the dtype it was exported in), float16, bfloat16, or int8 (an "
                  "onnxruntime graph quantised with calibration images; docs/deployment.md)")
    backend_help = ("auto (default: onnxruntime on a CPU where it ran faster than torch and the run pays for its "
                    "one-time export, else torch; docs/performance.md), torch or onnxruntime")
    model_help = ("MODEL, or TASK=MODEL: a Hub id (converted, or Meta's original release), a local folder (converted, "
                  "laid out like an original repo, or written by sapiens-hf export) or an original .pth/.pt2 file")

    def command(name: str, help: str):
        sub = commands.add_parser(name, help=help, description=help, epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--quiet", action="store_true", help="no progress bars, no loading messages")
        if name in ("predict", "annotate", "demo"):
            sub.add_argument("--backend", choices=BACKENDS, default="auto", help=backend_help)
        return sub

    run = command("predict", "predict on images, folders and videos")
    run.add_argument("--task", required=True, type=task_name, choices=PIPELINE_TASK_NAMES,
                     help="pose, segmentation (or seg), depth, normal, pointmap or matting (the last two: Sapiens2 "
                          "models)")
    run.add_argument("--model", type=task_model,
                     help=model_help + " (default: the task's original 0.3B release, facebook/sapiens-<task>-0.3b)")
    run.add_argument("inputs", nargs="+", help=f"images, folders or videos (e.g. {SAMPLE_IMAGE})")
    run.add_argument("--output", required=True, help="output folder (never searched for inputs)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing files that this run did not write, and start afresh instead of resuming")
    run.add_argument("--batch-size", type=int, default=1, help="images/frames per forward pass")
    run.add_argument("--device", type=device_name, help=device_help)
    run.add_argument("--dtype", type=run_dtype_name, metavar="DTYPE", help=dtype_help)
    run.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                     help=config_help)
    run.add_argument("--flip-test", action="store_true",
                     help=f"average with the mirrored input ({', '.join(FLIP_TEST_TASKS)})")
    run.add_argument("--detector", help=DETECTOR_HELP)
    run.add_argument("--detector-threshold", type=float, default=0.3, help="pose: people kept above this score")
    run.add_argument("--keypoint-threshold", type=float, default=0.3, help="pose: keypoints drawn above this score")
    run.add_argument("--frame-stride", type=int, default=1, metavar="N",
                     help="videos: predict every Nth frame (the first, the N+1th, ...); the visualisation video's frame "
                          "rate is divided by N")
    run.add_argument("--smooth", action="store_true",
                     help="pose on videos: smooth each tracked person's keypoints with the One Euro filter")
    run.add_argument("--smooth-min-cutoff", type=float, metavar="HZ",
                     help="--smooth: cutoff frequency at rest (default 1.0; lower: less jitter, more lag)")
    run.add_argument("--smooth-beta", type=float,
                     help="--smooth: how fast the cutoff rises with speed in pixels/s (default 0.01; higher: less lag)")
    run.add_argument("--keypoint-format", choices=FORMAT_NAMES, default=NATIVE, help=KEYPOINT_FORMAT_HELP)
    run.add_argument("--mask-model", help=MASK_HELP)
    run.add_argument("--no-mask", action="store_true", help="depth, normal: the whole map, not masked to the people")
    run.set_defaults(handler=predict.predict)

    notes = command("annotate", "annotate a folder tree, a file list or a datasets dataset into Parquet shards, "
                    "resumably; in parallel with `accelerate launch -m sapiens_hf.cli annotate ...`")
    notes.add_argument("inputs", nargs="*", help="images and folders (searched recursively)")
    notes.add_argument("--list", help="a text file with one image path per line (relative to the file)")
    notes.add_argument("--dataset", help="a datasets dataset: Hub id or local imagefolder/parquet folder")
    notes.add_argument("--dataset-config", help="its configuration name")
    notes.add_argument("--split", default="train")
    notes.add_argument("--image-column", default="image")
    notes.add_argument("--id-column", help="column identifying each row (default: split/index)")
    notes.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it first")
    notes.add_argument("--task", required=True, action="append", type=task_name, choices=PIPELINE_TASK_NAMES,
                       help="pose, segmentation (or seg), depth, normal, pointmap or matting; repeat it for several "
                            "tasks in one pass")
    notes.add_argument("--model", action="append", default=[], type=task_model,
                       help=model_help + " (default: the task's default checkpoint, see sapiens-hf models); repeatable")
    notes.add_argument("--output", required=True, help="output folder: Parquet shards + .sapiens-hf/ (manifest, "
                       "errors); a re-run of the same command resumes it")
    notes.add_argument("--overwrite", action="store_true", help="start afresh over a run with other settings")
    notes.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    notes.add_argument("--chunk-size", type=int, default=128, help="images per shard (the unit of work and resume)")
    notes.add_argument("--dense-size", type=dense_size, default=(256, 192), metavar="HxW",
                       help="size of the stored depth and normal maps, or 'image' (default 256x192)")
    notes.add_argument("--workers", type=int, help="DataLoader workers decoding per process (default: none on the "
                       "CPU, else the process's spare cores, at most 4)")
    notes.add_argument("--device", type=device_name,
                       help='"auto" (the default: what accelerate picks for each process) or "cpu"')
    notes.add_argument("--dtype", type=run_dtype_name, metavar="DTYPE", help=dtype_help)
    notes.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                       help=config_help)
    notes.add_argument("--keypoint-format", choices=FORMAT_NAMES, default=NATIVE, help=KEYPOINT_FORMAT_HELP)
    notes.add_argument("--detector", help=DETECTOR_HELP)
    notes.add_argument("--detector-threshold", type=float, default=0.3, help="pose: people kept above this score")
    notes.add_argument("--mask-model", help=MASK_HELP.replace("saved as <name>_<task>_mask.png", "stored as the "
                                                                  "column person_mask_png; with --task seg, its model"))
    notes.add_argument("--no-mask", action="store_true", help="depth, normal: the whole maps, not masked to the people")
    notes.add_argument("--push-to-hub", metavar="REPO", help="also upload the shards as a Hub dataset repo")
    notes.set_defaults(handler=annotate)

    exporting = command("export", "export a model as an ONNX graph or a torch.export program, checked against the "
                        "eager model (docs/deployment.md)")
    exporting.add_argument("model", help="anything from_pretrained takes: Hub id, folder, original release or file")
    exporting.add_argument("output_dir")
    exporting.add_argument("--format", choices=("onnx", "exported-program"), default="onnx")
    exporting.add_argument("--dtype", type=dtype_name, default="float32", metavar="DTYPE",
                           help="float32 (default), float16 or bfloat16")
    exporting.add_argument("--dynamic-batch", action="store_true", help="any batch size (else 1)")
    exporting.add_argument("--dynamic-size", action="store_true",
                           help="any input size: Sapiens2 models except pointmaps (refused when the graph cannot "
                           "follow it: use --input-size)")
    exporting.add_argument("--input-size", type=dense_size, metavar="HxW", help="a fixed input size other than the "
                           "processor's (e.g. 512x384)")
    exporting.add_argument("--quantize", choices=("int8",), help="also write model.int8.onnx (static int8: the "
                           "linear layers, calibrated on the bundled photo) and print its change against fp32")
    exporting.add_argument("--overwrite", action="store_true", help="replace the files of an earlier export there")
    exporting.add_argument("--opset", type=int, default=23, help="ONNX opset; 23 fuses attention into one operator")
    exporting.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                           help=config_help)
    exporting.set_defaults(handler=export)

    conversion = command("convert", "convert an original Sapiens checkpoint to transformers format")
    conversion.add_argument("checkpoint", help="original .pth / _torchscript.pt2 / .safetensors file")
    conversion.add_argument("output_dir")
    conversion.add_argument("--task", help="pose, segmentation, depth, normal, pretraining (default: detected)")
    conversion.add_argument("--push-to-hub", metavar="REPO", help="also publish to this Hub model repo (org/name)")
    conversion.add_argument("--overwrite", action="store_true", help="replace the files of an earlier conversion there")
    conversion.add_argument("--config", action="append", default=[], type=config_override, metavar="KEY=VALUE",
                            help=config_help)
    conversion.set_defaults(handler=convert)

    scoring = command("evaluate", "a model's figures on a labelled set: pose AP on a COCO keypoints file, "
                      "segmentation mIoU, depth and normal errors on a dataset (docs/metrics.md)")
    evaluating.add_arguments(scoring, task_model, task_name, PIPELINE_TASK_NAMES, model_help, device_help, dtype_help,
                             dtype_name, device_name)
    scoring.set_defaults(handler=evaluate)
    listing = command("models", "list every Sapiens and Sapiens2 release: task, size, labels, licence, model id")
    listing.add_argument("--task", type=task_name, choices=PIPELINE_TASK_NAMES + ["pretraining"],
                         help="only this task's releases")
    listing.add_argument("--generation", type=int, choices=(1, 2), help="only Sapiens (1) or Sapiens2 (2)")
    listing.add_argument("--json", action="store_true", help="the table as JSON")
    listing.set_defaults(handler=list_models)

    web = command("demo", 'a web app for the four tasks on uploaded images (needs Gradio: pip install '
                  '"sapiens-hf[demo]")')
    web.add_argument("--model", action="append", default=[], type=task_model, metavar="TASK=MODEL",
                     help=model_help + " (default: the task's default checkpoint, see sapiens-hf models); repeatable")
    web.add_argument("--device", type=device_name, help=device_help)
    web.add_argument("--port", type=int, default=7860, help="local port to serve on (default 7860)")
    web.add_argument("--share", action="store_true", help="also open a temporary public Gradio link")
    web.add_argument("--detector", help=DETECTOR_HELP + "; the page offers no other model")
    web.set_defaults(handler=demo)
    return parser


@contextlib.contextmanager
def quiet_libraries(quiet: bool):
    """--quiet: no loading bars or messages of transformers, huggingface_hub and DeepSpeed (warnings stay) while the
    command runs; the libraries' settings are restored after it (`main` may be called from Python)."""
    if not quiet:
        yield
        return
    import huggingface_hub
    import transformers

    verbosity, bars = transformers.utils.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled()
    hub_bars_off, deepspeed = huggingface_hub.utils.are_progress_bars_disabled(), logging.getLogger("DeepSpeed")
    deepspeed_level = deepspeed.level
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    deepspeed.setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
        if not hub_bars_off:
            huggingface_hub.utils.enable_progress_bars()
        deepspeed.setLevel(deepspeed_level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        problems = argument_problems(args)
        if problems:
            raise usage_error(problems)
        with quiet_libraries(args.quiet):
            return args.handler(args)
    except CommandError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return error.code
