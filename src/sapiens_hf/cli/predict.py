"""`sapiens-hf predict`: batch prediction on images, folders and videos. Its guarantees (docs/inference.md): every
argument is checked before any work; it never replaces a file that it did not write unless `--overwrite` is given; it
never reads its own outputs (the output folder is left out of folder searches); it records its progress in a JSON
Lines file in the output folder as results are written, so an interrupted run (SIGINT/SIGTERM) keeps every finished
image and the same command resumes it. The inputs and outputs themselves are in `files`."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
from pathlib import Path

import torch
from huggingface_hub import constants
from tqdm.auto import tqdm

from ..coco import keypoints_document
from ..convert import check_config_overrides
from ..pipelines import WrongModelError, load_task_pipeline
from ..tasks import TASKS
from .errors import EXIT_FAILED, CommandError, debugging, usage_error, with_cli_hint
from .files import (
    KEYPOINTS_FILE,
    Frame,
    Input,
    Progress,
    ResultWriter,
    collect_inputs,
    count_frames,
    name_clashes,
    planned_outputs,
    read_frames,
    write_atomically,
)


class Interrupted(BaseException):
    """SIGINT or SIGTERM during `predict`: a BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def resume_problems(output_dir: Path, task: str, inputs: list[Input], progress: Progress) -> list[str]:
    """Loads the record of an earlier run into `progress`; its settings must be the same, and the run must not
    replace existing files that neither it nor the run it resumes wrote."""
    mismatch = progress.load()
    return [mismatch] if mismatch else overwrite_problems(output_dir, task, inputs, progress)


def overwrite_problems(output_dir: Path, task: str, inputs: list[Input], progress: Progress) -> list[str]:
    """Existing files that the run would replace although neither it nor the run it resumes wrote them."""
    existing = [path for entry in inputs if entry.name not in progress.records
                for path in planned_outputs(output_dir, task, entry) if path.exists()]
    keypoints = output_dir / KEYPOINTS_FILE
    if task == "pose" and keypoints.exists() and not progress.path.is_file():
        existing.insert(0, keypoints)
    problems = [f"{path} exists and this run did not write it (--overwrite replaces it)" for path in existing[:5]]
    if len(existing) > 5:
        problems.append(f"... and {len(existing) - 5} more existing files in {output_dir}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def load_pipeline(args):
    """The task's pipeline. The model is loaded through its Sapiens class, so that besides transformers checkpoints
    (Hub ids, local folders) Meta's original releases load too: their Hub repos, local folders laid out like them and
    `.pth`/`.pt2` files, converted once and cached (see sapiens_hf.releases). A model of another task is refused
    here, before any prediction."""
    return load_or_explain(args.task, args.model, args.device, args.dtype, args.config)


def load_or_explain(task: str, model: str | None, device, dtype: str | None, config: list):
    """`pipelines.load_task_pipeline`, its failures as one-line CLI errors: a model of another task is a usage error,
    any other loading failure says how to use a local or converted checkpoint (SAPIENS_HF_DEBUG=1: traceback)."""
    model_id = model or TASKS[task].default_checkpoint
    try:
        return load_task_pipeline(task, model_id, device=device, dtype=dtype and getattr(torch, dtype),
                                  **dict(config))
    except WrongModelError as error:
        raise usage_error([f"--model {model_id} does not fit --task {task}: {error}"]) from None
    except Exception as error:
        if debugging():
            raise
        raise CommandError(EXIT_FAILED, _load_error(model_id, task, error)) from None


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


def run_settings(args) -> dict:
    """What makes two runs the same for resuming (the inputs may differ)."""
    keys = ("task", "model", "dtype", "flip_test", "detector", "detector_threshold", "keypoint_threshold")
    return {**{key: getattr(args, key) for key in keys}, "config": dict(args.config)}


def predict(args) -> int:
    output_dir = Path(args.output)
    inputs, failures = collect_inputs(args.inputs, exclude=output_dir)
    if not inputs and not failures:
        raise usage_error([f"no images or videos found (the output folder {output_dir} is never searched)"])
    for entry in inputs:
        entry.frames = count_frames(entry.file)
    progress = Progress(output_dir, args.task, run_settings(args))
    problems = name_clashes(inputs) + [p for p in [device_problem(args.device)] if p] + config_problems(args.config)
    if not args.overwrite:  # else: start afresh
        problems += resume_problems(output_dir, args.task, inputs, progress)
    if problems:
        raise usage_error(problems)
    predictor = load_pipeline(args)

    output_dir.mkdir(parents=True, exist_ok=True)
    run = PredictionRun(predictor, ResultWriter(args.task, output_dir, args.keypoint_threshold), progress, args)
    skipped = sum(entry.name in progress.done for entry in inputs)
    code = run.run(inputs)
    if skipped:
        print(f"Resumed: skipped {skipped} input(s) finished by an earlier run")
    print(f"Wrote results for {run.written} image(s)/frame(s) to {output_dir}")
    for path, reason in failures + run.failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return code or (EXIT_FAILED if failures or run.failures else 0)


class PredictionRun:
    """Predicts the inputs in batches of `--batch-size` images/frames (across files), writes each result as it comes
    and records it in the progress file; on SIGINT/SIGTERM or a write error it stops and still writes
    keypoints.json with every finished image."""

    def __init__(self, predictor, writer: ResultWriter, progress: Progress, args):
        self.predictor, self.writer, self.progress, self.args = predictor, writer, progress, args
        self.call_kwargs = {"batch_size": args.batch_size}
        if args.flip_test:
            self.call_kwargs["flip_test"] = True
        if args.detector:
            self.call_kwargs.update(detector=args.detector, detector_threshold=args.detector_threshold)
        self.batch: list[Frame] = []
        self.read: list[Input] = []  # read to the end; finished once their last batch is written
        self.failed: set[str] = set()
        self.failures: list[tuple[str, str]] = []
        self.written = 0

    def run(self, inputs: list[Input]) -> int:
        """0, or the exit code of an interruption (128 + signal) or a write error (1)."""
        total = sum(entry.frames for entry in inputs)
        code = 0
        with tqdm(total=total, desc=f"sapiens {self.args.task}", unit="image", disable=self.args.quiet) as bar:
            self.bar = bar
            self.progress.open()
            with signals_interrupt():  # also during the clean-up, where a second signal is ignored
                try:
                    for entry in inputs:
                        self._read(entry)
                    self._flush()
                except Interrupted as interruption:
                    code = 128 + interruption.signum
                    print(f"Interrupted ({interruption}): finished results are kept; run the same command again to "
                          "resume", file=sys.stderr)
                except OSError as error:
                    code = EXIT_FAILED
                    print(f"error: cannot write the results: {error}", file=sys.stderr)
                finally:
                    self._close(inputs)
        return code

    def _read(self, entry: Input) -> None:
        if entry.name in self.progress.done:
            self.bar.update(entry.frames)
            return
        self.progress.start(entry.name)
        for frame in self._frames(entry):
            self.batch.append(frame)
            if len(self.batch) == self.args.batch_size:
                self._flush()
        self.read.append(entry)
        self._finish_read()

    def _frames(self, entry: Input):
        """The frames of an input; a read error (unreadable or truncated file) is reported and ends it. Errors of the
        consumer (writing) are not caught here."""
        try:
            yield from read_frames(entry)
        except Exception as error:  # noqa: BLE001
            self._fail(entry, None, error)

    def _flush(self) -> None:
        """Predicts and writes the batch, then marks the inputs that it completes as done."""
        for frame, result in zip(self.batch, self._predict([frame.image for frame in self.batch])):
            if isinstance(result, Exception):
                self._fail(frame.source, frame.index, result)
                continue
            record = self.writer.write(frame, result)
            if record is not None:
                self.progress.add(frame.source.name, record)
            self.written += 1
        self.bar.update(len(self.batch))
        self.batch = []
        self._finish_read()

    def _finish_read(self) -> None:
        """Marks the inputs read to the end whose frames are all written as done (unless one failed)."""
        pending = {frame.source.name for frame in self.batch}
        for entry in [entry for entry in self.read if entry.name not in pending]:
            self.writer.finish(entry.name)
            if entry.name not in self.failed:
                self.progress.finish(entry.name)
        self.read = [entry for entry in self.read if entry.name in pending]

    def _predict(self, images: list) -> list:
        """The predictions of a batch; if the batch fails, image by image, so that one bad image costs only its own
        result (an Exception in its place)."""
        if not images:
            return []
        try:
            return self.predictor(images, **self.call_kwargs)
        except Exception:  # noqa: BLE001  (retried one by one below to find the culprit)
            return [self._predict_one(image) for image in images]

    def _predict_one(self, image):
        try:
            return self.predictor([image], **self.call_kwargs)[0]
        except Exception as error:  # noqa: BLE001  (reported as this image's failure)
            return error

    def _fail(self, entry: Input, frame_index: int | None, error: Exception) -> None:
        self.failed.add(entry.name)
        where = str(entry.file) if frame_index is None else f"{entry.file} (frame {frame_index})"
        self.failures.append((where, f"{type(error).__name__}: {error}"))

    def _close(self, inputs: list[Input]) -> None:
        """Closes the videos and the progress file and writes keypoints.json atomically, from the progress records."""
        self.writer.close()
        self.progress.close()
        if self.args.task == "pose":
            document = keypoints_document(self.progress.records_in_order(inputs), self.predictor.model.config)
            write_atomically(self.writer.output_dir / KEYPOINTS_FILE, json.dumps(document))


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
