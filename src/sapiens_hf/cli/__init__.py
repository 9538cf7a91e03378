"""`sapiens-hf` command line: batch prediction on images, folders and videos, and checkpoint conversion, e.g.
`sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b photo.jpg clips/ --output out/` or
`sapiens-hf convert sapiens_0.3b_goliath_best_goliath_AP_573.pth out/sapiens-pose-0.3b --task pose`. This module
holds the entry point (`main`, the parser, the checks of the arguments alone) and the `convert` command; `predict`
is in `predict` (its files in `files`), the error plumbing in `errors`. The parser and everything at module level
use the standard library only, and so does `import sapiens_hf` (see its `__init__`): `sapiens-hf --help` and a
mistyped option answer at once. torch, transformers, OpenCV and the models are imported inside the commands that
need them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..tasks import TASKS, get_task
from . import predict
from .errors import DEBUG_ENV, EXIT_FAILED, EXIT_USAGE, CommandError, debugging, usage_error, with_cli_hint

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes, resolved when the model is loaded
SAMPLE_IMAGE = Path(__file__).parent.parent / "data" / "astronaut.jpg"
PIPELINE_TASK_NAMES = [name for name, task in TASKS.items() if task.pipeline]


def task_name(text: str) -> str:
    """`--task`: a task name or alias (`seg`), as its canonical name."""
    try:
        return get_task(text).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


def convert(args) -> int:
    from ..convert import convert_to_folder

    try:
        convert_to_folder(args.checkpoint, args.output_dir, task=args.task, **dict(args.config))
        if args.push_to is not None:
            from ..hub import publish_converted

            publish_converted(args.output_dir, args.push_to, source=args.checkpoint)
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
    run.add_argument("--task", required=True, type=task_name, choices=PIPELINE_TASK_NAMES,
                     help="pose, segmentation (or seg), depth or normal")
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
    run.set_defaults(handler=predict.predict)

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
