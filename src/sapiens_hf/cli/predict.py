"""`sapiens-hf predict`: batch prediction on images, folders and videos. Its guarantees (docs/inference.md): every
argument is checked before any work; it never replaces a file that it did not write unless `--overwrite` is given; it
never reads its own outputs (the output folder is left out of folder searches); it records its progress in a JSON
Lines file in the output folder as results are written, so an interrupted run (SIGINT/SIGTERM) keeps every finished
image and the same command resumes it. The run itself is `sapiens_hf.batch`'s; this module checks the arguments and
presents the errors."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import torch
from huggingface_hub import constants

from ..backends import BackendError, missing_packages, runs_on_cpu
from ..batch.engine import Interrupted, predict_files
from ..batch.inputs import collect_inputs, file_identity, model_identity, name_clashes
from ..batch.writers import STATE_DIR, FileWriter, ProgressFile
from ..families import check_config_overrides
from ..keypoint_formats import NATIVE
from ..modeling_sapiens import WrongModelError
from ..pipelines import DEFAULT_DETECTOR, DetectorUnavailableError, MaskModelUnavailableError, load_task_pipeline
from ..runtime import is_export_folder
from ..tasks import SEGMENTATION, TASKS
from ..tracking import Smoothing, tracker_identity
from .errors import EXIT_FAILED, CommandError, debugging, usage_error, with_cli_hint


# ---------------------------------------------------------------------------------------------------------------
# Checks: before any work, one line per problem
# ---------------------------------------------------------------------------------------------------------------


def device_problem(device: str | None) -> str | None:
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
    problems = []
    for key, value in overrides:
        try:
            check_config_overrides({key: value})
        except TypeError as error:
            problems.append(f"--config {key}: {error}")
    return problems


def input_problems(writer, inputs: list) -> list[str]:
    """Outputs that would replace an input file: refused even with --overwrite, which replaces only outputs."""
    files = {entry.file.resolve(): entry.file for entry in inputs}
    clashes = [(path, files[path.resolve()]) for entry in inputs for path in writer.planned(entry)
               if path.resolve() in files]
    return [f"the outputs of this run would replace the input {source} ({path}): choose another --output folder"
            for path, source in clashes[:5]]


def overwrite_problems(writer, inputs: list, record) -> list[str]:
    """Existing files that the run would replace although neither it nor the run it resumes wrote them."""
    existing = [path for entry in inputs if entry.name not in record.kept
                for path in writer.planned(entry) if path.exists()]
    if writer.records_path is not None and not record.path.is_file():
        existing[:0] = [path for path in (writer.records_path, writer.results_path) if path.exists()]
    problems = [f"{path} exists and this run did not write it (--overwrite replaces it)" for path in existing[:5]]
    if len(existing) > 5:
        problems.append(f"... and {len(existing) - 5} more existing files in {writer.folder}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def backend_problem(backend: str, dtype: str | None, device: str | None, model: str | None) -> str | None:
    """What the arguments alone do not show: an accelerator that --device's default picks, an export folder."""
    if (backend == "onnxruntime" or dtype == "int8") and not runs_on_cpu(device):
        return "the onnxruntime backend runs on the CPU, and --device picks an accelerator here: add --device cpu"
    if (backend == "onnxruntime" or dtype == "int8") and missing_packages():
        return f"the onnxruntime backend needs {missing_packages()}"
    if is_export_folder(model) and backend == "torch":
        return (f"--model {model} is an export folder, which runs with onnxruntime as exported: give the model it was "
                "exported from for --backend torch")
    return None


def load_pipeline(args, images: int | None = None):
    """The task's pipeline. The model is loaded through its Sapiens class, so that besides transformers checkpoints
    (Hub ids, local folders) Meta's original releases load too: their Hub repos, local folders laid out like them and
    `.pth`/`.pt2` files, converted once and cached (see sapiens_hf.releases). A model of another task is refused
    here, before any prediction. The backend for `images` images is printed once (stderr, not with --quiet)."""
    return load_or_explain(args.task, args.model, args.device, args.dtype, args.config, args.backend, images,
                           args.quiet)


def load_or_explain(task: str, model: str | None, device, dtype: str | None, config: list, backend: str = "torch",
                    images: int | None = None, quiet: bool = False):
    """`pipelines.load_task_pipeline`, its failures as one-line CLI errors: a model of another task is a usage error,
    any other loading failure says how to use a local or converted checkpoint (SAPIENS_HF_DEBUG=1: traceback)."""
    model_id = model or TASKS[task].default_checkpoint
    try:
        return load_task_pipeline(task, model_id, device=device, dtype=dtype if dtype == "int8" else
                                  dtype and getattr(torch, dtype), backend=backend, images=images,
                                  report=None if quiet else report_line, **dict(config))
    except WrongModelError as error:
        raise usage_error([f"--model {model_id} does not fit --task {task}: {error}"]) from None
    except BackendError as error:  # the model loaded; its export did not: no Hub advice
        if debugging():
            raise
        raise CommandError(EXIT_FAILED, [f"error: {error}"]) from None
    except Exception as error:
        if debugging():
            raise
        raise CommandError(EXIT_FAILED, _load_error(model_id, task, error)) from None


def report_line(line: str) -> None:
    print(line, file=sys.stderr)


def _load_error(model_id: str, task: str, error: Exception) -> list[str]:
    """The message of a model that cannot be loaded: why, and for a Hub id how to use a local or converted
    checkpoint (a local file or folder gets the reason only)."""
    first = f"error: could not load {model_id} for --task {task}: {with_cli_hint(error)}"
    if Path(model_id).exists():
        return [first]
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
        (f"  - a folder laid out like the original repo (`hf download {hub_id or TASKS[task].default_checkpoint} "
         "--local-dir DIR` on a machine with access) or the original .pth / _torchscript.pt2 file: converted once;"),
        ("  - a converted folder (config.json, model.safetensors, preprocessor_config.json), made from an original "
         f"checkpoint with\n    sapiens-hf convert CHECKPOINT.pth OUT_DIR --task {task}"),
        "With HF_HUB_OFFLINE=1, checkpoints already in the local Hugging Face cache are used.",
    ]


def smoothing(args) -> Smoothing | None:
    """--smooth's One Euro filter, with the defaults of `tracking.Smoothing` for the values not given."""
    if not args.smooth:
        return None
    given = {"min_cutoff": args.smooth_min_cutoff, "beta": args.smooth_beta}
    return Smoothing(**{key: value for key, value in given.items() if value is not None})


def keypoint_format_check(predictor, keypoint_format: str) -> None:
    """A --keypoint-format that the model's keypoints cannot give: a usage error once the model is loaded (its
    keypoint names are in its config), before any image is read."""
    if keypoint_format == NATIVE:
        return
    try:
        predictor.keypoint_conversion(keypoint_format)
    except ValueError as error:
        raise usage_error([f"--keypoint-format {keypoint_format}: {error}"]) from None


def detector_of(args, top_down: bool) -> str | None:
    """The person detector of a run with a top-down task: `--detector` (a model id or folder), the default one when
    it is not given; None (the whole image) for `--detector none` and for runs without a top-down task."""
    if not top_down or (args.detector or "").lower() == "none":
        return None
    return args.detector or DEFAULT_DETECTOR


def detector_error(detector: str, error: DetectorUnavailableError) -> CommandError:
    """One error line for a person detector that cannot be loaded: why, and what to do (predict and annotate)."""
    source = DEFAULT_DETECTOR if Path(detector).exists() else detector
    return CommandError(EXIT_FAILED, [
        f"error: cannot load the person detector {detector} ({with_cli_hint(error.__cause__ or error).rstrip('.')}): "
        "give --detector none to use the whole image as the person's box, or --detector DIR with a local folder of "
        f"an object-detection model (`hf download {source} --local-dir DIR` where the Hub is reachable)"
    ])


def load_detector(pipe, detector: str | None):
    """Loads the person detector into the pose pipeline before any image is read."""
    if detector is None:
        return
    try:
        pipe._resolve_detector(detector)
    except DetectorUnavailableError as error:
        if debugging():
            raise
        raise detector_error(detector, error) from None
    except ValueError as error:  # not a detector of people
        raise usage_error([f"--detector {detector}: {error}"]) from None


def mask_of(args, masked: bool) -> str | None:
    """The segmentation model of the person mask of a run with a masked task (depth, normals): `--mask-model`, the
    released one when it is not given; None (unmasked maps) with `--no-mask` and for runs without a masked task."""
    if not masked or args.no_mask:
        return None
    return args.mask_model or SEGMENTATION.default_checkpoint


def mask_error(model: str, error: Exception) -> CommandError:
    """One error line for a mask model that cannot be loaded or is not a segmentation model (predict, annotate)."""
    if isinstance(error, WrongModelError):
        return usage_error([f"--mask-model {model} is not a body-part segmentation model: {error}"])
    source = SEGMENTATION.default_checkpoint if Path(model).exists() else model
    return CommandError(EXIT_FAILED, [
        f"error: cannot load the segmentation model {model} of the person mask "
        f"({with_cli_hint(error.__cause__ or error).rstrip('.')}): give --no-mask for unmasked maps, or --mask-model "
        f"DIR with a local folder of it (`hf download {source} --local-dir DIR` where the Hub is reachable)"
    ])


def load_mask_model(pipe, model: str | None):
    """The person mask's segmentation pipeline, loaded before any image is read (None: no mask)."""
    if model is None:
        return None
    try:
        return pipe._resolve_mask_model(model)
    except (MaskModelUnavailableError, WrongModelError) as error:
        if debugging():
            raise
        raise mask_error(model, error) from None


def run_settings(args) -> dict:
    """What makes two runs the same for resuming (the inputs may differ): the options, the model's files (and the
    detector's and the mask model's) and, for a top-down task's videos, the tracker that numbers the people (its ids
    continue only with the same one)."""
    keys = ("task", "model", "dtype", "flip_test", "detector", "detector_threshold", "keypoint_threshold",
            "frame_stride", "keypoint_format")
    detector, mask = detector_of(args, TASKS[args.task].top_down), mask_of(args, TASKS[args.task].masked)
    filtering = smoothing(args)
    return {**{key: getattr(args, key) for key in keys}, "detector": detector, "mask": mask,
            "config": dict(args.config), "model_files": model_identity(args.model),
            "detector_files": model_identity(detector), "mask_files": model_identity(mask),
            "smooth": None if filtering is None else dataclasses.asdict(filtering),
            "tracker": tracker_identity() if TASKS[args.task].top_down else None}


def predict(args) -> int:
    output_dir, task = Path(args.output), TASKS[args.task]
    inputs, missing = collect_inputs(args.inputs, exclude=output_dir, frame_stride=args.frame_stride)
    if missing:  # a mistyped path is reported before the model loads
        raise usage_error([f"{path}: {reason}" for path, reason in missing])
    if not inputs:
        raise usage_error([f"no images or videos found (the output folder {output_dir} is never searched)"])
    record = ProgressFile(output_dir, task, run_settings(args))
    writer = FileWriter(task, output_dir, args.keypoint_threshold, frame_stride=args.frame_stride,
                        smoothing=smoothing(args), record=record, masked=mask_of(args, task.masked) is not None)
    problems = name_clashes(inputs, writer.planned) + input_problems(writer, inputs) + config_problems(args.config)
    wrong_device = device_problem(args.device)
    problems += [wrong_device] if wrong_device else [
        p for p in [backend_problem(args.backend, args.dtype, args.device, args.model)] if p]
    record.current, changed, damaged = {entry.name: file_identity(entry.file) for entry in inputs}, [], []
    if not args.overwrite:  # else: start afresh
        mismatch = record.load()
        problems += [mismatch] if mismatch else overwrite_problems(writer, inputs, record)
        changed = record.forget_changed()
        damaged = writer.forget_damaged_videos(inputs)
    if problems:
        raise usage_error(problems)
    predictor = load_pipeline(args, images=sum(len(entry.indices) for entry in inputs if entry.name not in record.done))
    keypoint_format_check(predictor, args.keypoint_format)
    detector = detector_of(args, TASKS[args.task].top_down)
    load_detector(predictor, detector)
    mask = load_mask_model(predictor, mask_of(args, task.masked))

    output_dir.mkdir(parents=True, exist_ok=True)
    if args.overwrite:  # afresh: no frame files of an earlier stride left among this run's
        writer.remove_other_stride_frames(inputs, record.recorded_settings().get("frame_stride", args.frame_stride))
    skipped = sum(entry.name in record.done for entry in inputs)
    continued = {entry.name: len(record.frames_done(entry.name)) for entry in inputs if entry.name not in record.done}
    continued = {name: frames for name, frames in continued.items() if frames}
    call_kwargs = {"flip_test": True} if args.flip_test else {}
    if task.masked:  # the loaded segmentation pipeline, or False: unmasked maps
        call_kwargs["mask"] = False if mask is None else mask
    if TASKS[args.task].top_down:  # the loaded detector, or None: the whole image
        call_kwargs.update(detector=detector and predictor._resolve_detector(detector),
                           detector_threshold=args.detector_threshold)
    if args.keypoint_format != NATIVE:
        call_kwargs["keypoint_format"] = args.keypoint_format
    code = 0
    try:
        predict_files(predictor, inputs, writer, record, args.batch_size, call_kwargs, args.quiet)
    except Interrupted as interruption:
        code = 128 + interruption.signum
        print(f"Interrupted ({interruption}): finished results are kept; run the same command again to resume",
              file=sys.stderr)
    except OSError as error:
        code = EXIT_FAILED
        print(f"error: cannot write the results: {error}", file=sys.stderr)
    if skipped:
        print(f"Resumed: skipped {skipped} input(s) finished by an earlier run")
    if continued:
        print(f"Resumed: went on with {len(continued)} video(s) after the {sum(continued.values())} frame(s) that an "
              "earlier run finished")
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        print(f"Predicted again {len(changed)} input(s) that the earlier run read from another or a changed file: "
              f"{listed}")
    if damaged:
        listed = ", ".join(damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
        print(f"Predicted again from the start {len(damaged)} video(s) whose visualisation segments in "
              f"{output_dir / STATE_DIR} were missing or damaged: {listed}")
    print(f"Wrote results for {writer.written} image(s)/frame(s) to {output_dir}")
    for path, reason in writer.failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return code or (EXIT_FAILED if writer.failures else 0)
