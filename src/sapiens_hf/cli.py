"""`sapiens-hf` command line: batch prediction on images, folders and videos, and checkpoint conversion, e.g.

`sapiens-hf predict --task pose --model facebook/sapiens-pose-0.3b photo.jpg clips/ --output out/`
`sapiens-hf convert sapiens_0.3b_goliath_best_goliath_AP_573.pth out/sapiens-pose-0.3b --task pose`

The parser and everything at module level use the standard library only, and so does `import sapiens_hf` (see its
`__init__`): `sapiens-hf --help` and a mistyped option answer at once. torch, transformers, OpenCV and the models are
imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import cv2
    import numpy as np

TASKS = {"pose": "sapiens-pose", "seg": "sapiens-segmentation", "depth": "sapiens-depth", "normal": "sapiens-normal"}
MODEL_CLASSES = {
    "pose": "SapiensForPoseEstimation",
    "seg": "SapiensForSemanticSegmentation",
    "depth": "SapiensForDepthEstimation",
    "normal": "SapiensForNormalEstimation",
}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes, resolved when the model is loaded
SAMPLE_IMAGE = Path(__file__).parent / "data" / "astronaut.jpg"


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


def collect_inputs(paths: list[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(file, output name) for every image/video given directly or found in a folder (recursively, sorted), and
    (path, reason) for arguments that do not exist. Output names keep sub-folders and are made unique."""
    files, missing, used = [], [], set()
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            entries = [(p, p.relative_to(path).with_suffix("").as_posix()) for p in found]
        elif path.is_file():
            entries = [(path, path.stem)]
        else:
            missing.append((argument, "no such file or folder"))
            continue
        for file, name in entries:
            unique, counter = name, 1
            while unique in used:
                unique, counter = f"{name}_{counter}", counter + 1
            used.add(unique)
            files.append((file, unique))
    return files, missing


def count_frames(file: Path) -> int:
    if file.suffix.lower() not in VIDEO_SUFFIXES:
        return 1
    import cv2

    capture = cv2.VideoCapture(str(file))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(frames, 0)


def read_frames(file: Path):
    """Yields (frame index, or None for a still image; RGB uint8 array; frames per second) and raises ValueError for
    an unreadable file."""
    import cv2

    from .image_processing_sapiens import load_image, to_rgb_uint8

    if file.suffix.lower() not in VIDEO_SUFFIXES:
        yield None, to_rgb_uint8(load_image(file)), 0.0
        return
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        raise ValueError("OpenCV cannot open this video")
    fps, index = capture.get(cv2.CAP_PROP_FPS), 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError("the video has no readable frames")


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


class ResultWriter:
    """Writes each image's / video frame's prediction: machine-readable results (`keypoints.json` in COCO format with
    `[x, y, score]` triplets; `<name>_seg.png` class-index maps; `<name>_depth.npy`, `<name>_normal.npy` float32
    maps; video frames under `<name>/frame_NNNNNN`) and a visualisation (`<name>_<task>_vis.jpg|png`, or
    `<name>_<task>_vis.mp4` for a video)."""

    def __init__(self, task: str, output_dir: Path, model_config, keypoint_threshold: float):
        self.task, self.output_dir, self.config = task, output_dir, model_config
        self.keypoint_threshold = keypoint_threshold
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.coco = {"images": [], "annotations": [], "categories": []}

    def write(self, source: Path, name: str, frame_index: int | None, image: np.ndarray, result, fps: float) -> None:
        import cv2
        import numpy as np

        from . import visualization

        stem = name if frame_index is None else f"{name}/frame_{frame_index:06d}"
        if self.task == "pose":
            self._add_coco(source, frame_index, image, result)
            visual = visualization.draw_keypoints(image, result, keypoint_threshold=self.keypoint_threshold)
        else:
            target = self.output_dir / stem
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.task == "seg":
                result["label_map"].save(f"{target}_seg.png")
                visual = visualization.overlay_segmentation(image, result["segmentation"])
            elif self.task == "depth":
                np.save(f"{target}_depth.npy", result["predicted_depth"].float().numpy())
                visual = result["depth"]
            else:
                np.save(f"{target}_normal.npy", result["normals"].float().permute(1, 2, 0).numpy())
                visual = result["normal_map"]
        if frame_index is None:
            path = self.output_dir / f"{stem}_{self.task}_vis.{'jpg' if self.task in ('pose', 'seg') else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            visual.save(path)
        else:
            self._video(name, visual.size, fps).write(cv2.cvtColor(np.asarray(visual), cv2.COLOR_RGB2BGR))

    def _video(self, name: str, size: tuple[int, int], fps: float) -> cv2.VideoWriter:
        import cv2

        if name not in self.videos:
            path = self.output_dir / f"{name}_{self.task}_vis.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.videos[name] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, size)
        return self.videos[name]

    def _add_coco(self, source: Path, frame_index: int | None, image: np.ndarray, people: list[dict]) -> None:
        import torch

        image_id = len(self.coco["images"]) + 1
        entry = {"id": image_id, "file_name": str(source), "height": image.shape[0], "width": image.shape[1]}
        self.coco["images"].append(entry if frame_index is None else {**entry, "frame": frame_index})
        for person in people:
            keypoints = torch.cat([person["keypoints"], person["scores"][:, None].float()], dim=1)
            x1, y1, x2, y2 = person["bbox"].tolist()
            self.coco["annotations"].append(
                {
                    "id": len(self.coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "keypoints": [round(v, 3) for v in keypoints.flatten().tolist()],
                    "num_keypoints": int((person["scores"] > self.keypoint_threshold).sum()),
                    "score": float(person["scores"].mean()),
                    "bbox_score": person["bbox_score"],
                }
            )

    def close(self) -> None:
        for video in self.videos.values():
            video.release()
        if self.task == "pose":
            from . import metadata

            id2label = self.config.id2label
            category = {"id": 1, "name": "person", "keypoints": [id2label[i] for i in range(len(id2label))]}
            if self.config.num_labels in metadata.KEYPOINT_SET_BY_COUNT:
                links = metadata.keypoint_set(self.config.num_labels)["skeleton_links"]
                category["skeleton"] = [[a + 1, b + 1] for a, b in links]  # COCO skeletons are 1-based
            self.coco["categories"] = [category]
            (self.output_dir / "keypoints.json").write_text(json.dumps(self.coco))


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


def load_pipeline(args):
    """The task's pipeline. The model is loaded through its Sapiens class, so that besides transformers checkpoints
    (Hub ids, local folders) Meta's original releases load too: their Hub repos, local folders laid out like them and
    `.pth`/`.pt2` files, converted on load (see sapiens_hf.hub)."""
    import torch
    from transformers import AutoImageProcessor, pipeline

    from . import modeling_sapiens
    from .image_processing_sapiens import SapiensImageProcessorPil
    from .pipelines import DEFAULT_MODELS

    task = TASKS[args.task]
    model_id = args.model or DEFAULT_MODELS[task]
    try:
        model_class = getattr(modeling_sapiens, MODEL_CLASSES[args.task])
        model = model_class.from_pretrained(model_id, dtype=getattr(torch, args.dtype))
    except (OSError, ValueError) as error:
        raise SystemExit(_load_error(model_id, args.task, error)) from None
    try:  # Meta's original releases ship no processor file: AutoImageProcessor gives the default one for them
        processor = AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):  # a converted folder saved without its processor: the released settings
        processor = SapiensImageProcessorPil()
    return pipeline(task, model=model, image_processor=processor, device=args.device)


def _load_error(model_id: str, task: str, error: Exception) -> str:
    """The message of a model that cannot be loaded: why, and how to use a local or converted checkpoint."""
    from huggingface_hub import constants

    from .pipelines import DEFAULT_MODELS

    convert_task = "segmentation" if task == "seg" else task
    hub_id = model_id if re.fullmatch(r"[\w.-]+/[\w.-]+", model_id) and not Path(model_id).exists() else None
    if constants.is_offline_mode():
        reason = (f"The Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set) and {model_id} is not in the local "
                  "cache: use a local or converted checkpoint as --model:")
    else:
        reason = ("If the Hugging Face Hub cannot be reached (offline, proxy, rate limit) or the repo is gated (the "
                  "facebook/sapiens-* repos need their licence accepted and `hf auth login`), use a local or converted "
                  "checkpoint as --model:")
    return (
        f"error: could not load {model_id} for --task {task}: {error}\n{reason}\n"
        f"  - a folder laid out like the original repo (`hf download {hub_id or DEFAULT_MODELS[TASKS[task]]} "
        "--local-dir DIR` on a machine with access) or the original .pth / _torchscript.pt2 file: converted on load;\n"
        "  - a converted folder (config.json, model.safetensors, preprocessor_config.json), made from an original "
        f"checkpoint with\n    sapiens-hf convert CHECKPOINT.pth OUT_DIR --task {convert_task}\n"
        "With HF_HUB_OFFLINE=1, checkpoints already in the local Hugging Face cache are used."
    )


def predict(args) -> int:
    from tqdm.auto import tqdm

    files, failures = collect_inputs(args.inputs)
    if not files and not failures:
        print("error: no images or videos found", file=sys.stderr)
        return 2
    predictor = load_pipeline(args)
    output_dir = Path(args.output)
    output_dir.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(args.task, output_dir, predictor.model.config, args.keypoint_threshold)
    call_kwargs = {"batch_size": args.batch_size}
    if args.flip_test:
        call_kwargs["flip_test"] = True
    if args.detector:
        call_kwargs.update(detector=args.detector, detector_threshold=args.detector_threshold)

    done, total = 0, sum(count_frames(file) for file, _ in files)
    with tqdm(total=total, desc=f"sapiens {args.task}", unit="image", disable=args.quiet) as progress:
        for file, name in files:
            batch = []
            try:
                for frame_index, image, fps in read_frames(file):
                    batch.append((frame_index, image))
                    if len(batch) == args.batch_size:
                        done += _predict_and_write(predictor, batch, call_kwargs, writer, name, fps, failures, file)
                        progress.update(len(batch))
                        batch = []
            except Exception as error:  # noqa: BLE001  (unreadable or truncated file: report it, go on)
                failures.append((str(file), f"{type(error).__name__}: {error}"))
            if batch:
                done += _predict_and_write(predictor, batch, call_kwargs, writer, name, fps, failures, file)
                progress.update(len(batch))
    writer.close()

    print(f"Wrote results for {done} image(s)/frame(s) to {output_dir}")
    for path, reason in failures:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _predict_and_write(predictor, batch, call_kwargs, writer, name, fps, failures, file) -> int:
    """Predicts a batch of frames and writes the results; if the batch fails, frame by frame, so that one bad frame
    costs only its own result."""
    images = [image for _, image in batch]
    try:
        results = predictor(images, **call_kwargs)
    except Exception:  # noqa: BLE001  (retried one by one below to find the culprit)
        results = []
        for image in images:
            try:
                results.append(predictor([image], **call_kwargs)[0])
            except Exception as error:  # noqa: BLE001  (reported as this frame's failure)
                results.append(error)
    written = 0
    for (frame_index, image), result in zip(batch, results):
        if isinstance(result, Exception):
            where = str(file) if frame_index is None else f"{file} (frame {frame_index})"
            failures.append((where, f"{type(result).__name__}: {result}"))
        else:
            writer.write(file, name, frame_index, image, result, fps)
            written += 1
    return written


def convert(args) -> int:
    from .convert import convert_to_folder

    convert_to_folder(args.checkpoint, args.output_dir, task=args.task, push_to=args.push_to)
    print(f"Converted {args.checkpoint} → {args.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sapiens-hf", description="Meta's Sapiens models with Hugging Face transformers"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("predict", help="predict on images, folders and videos")
    run.add_argument("--task", required=True, choices=sorted(TASKS))
    run.add_argument(
        "--model",
        help="Hub id (converted, or Meta's original release), local folder (converted, or laid out like an original "
        "repo) or original .pth/.pt2 file (default: the task's original 0.3B release, facebook/sapiens-<task>-0.3b)",
    )
    run.add_argument("inputs", nargs="+", help=f"images, folders or videos (e.g. {SAMPLE_IMAGE})")
    run.add_argument("--output", required=True, help="output folder")
    run.add_argument("--batch-size", type=int, default=1)
    run.add_argument("--device", help='"cpu", "cuda", "cuda:1", ... (default: the first GPU if any, else the CPU)')
    run.add_argument("--dtype", choices=DTYPES, default="float32")
    run.add_argument("--flip-test", action="store_true", help="average with the mirrored input (pose, depth)")
    run.add_argument("--detector", help="pose: object-detection model id used to find people (default: whole image)")
    run.add_argument("--detector-threshold", type=float, default=0.3)
    run.add_argument("--keypoint-threshold", type=float, default=0.3, help="pose: keypoints drawn above this score")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=predict)

    conversion = commands.add_parser("convert", help="convert an original Sapiens checkpoint to transformers format")
    conversion.add_argument("checkpoint", help="original .pth / _torchscript.pt2 / .safetensors file")
    conversion.add_argument("output_dir")
    conversion.add_argument("--task", help="pose, segmentation, depth, normal, pretraining (default: detected)")
    conversion.add_argument("--push-to", help="also publish to this Hub repo (org/name)")
    conversion.set_defaults(handler=convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        raise SystemExit("error: --batch-size must be at least 1")
    if args.command == "predict" and args.flip_test and args.task not in ("pose", "depth"):
        raise SystemExit("error: --flip-test applies to --task pose and depth")
    if args.command == "predict" and args.detector and args.task != "pose":
        raise SystemExit("error: --detector applies to --task pose")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
