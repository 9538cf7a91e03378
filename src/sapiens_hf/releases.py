"""Meta's released Sapiens (v1) checkpoints: the table of released files, verified downloads, and the conversion
that turns one into a transformers folder once, so that every later load is the stock `from_pretrained`.

* `ORIGINAL_CHECKPOINTS`: every released original file (repo, path, task, size, label set, published score, where
  its conversion would be published, and the pinned revision/sha256/size where known).
* `download_original`: downloads a released file with huggingface_hub and verifies its sha256 and size.
* `converted_folder`: an original release (a repo id of the table, a local folder laid out like one, or a
  `.pth`/`.pt2` path) as a cached transformers folder (config.json, model.safetensors, preprocessor_config.json):
  downloaded, verified and converted on first use, then found again by the file's content id without hashing or
  converting anything.
* `resolve_original_name`: the one hook. After `import sapiens_hf`, `from_pretrained` of the Sapiens models, of
  `AutoConfig` and of `AutoImageProcessor` (and so the Auto model classes and `pipeline()`) map an original release to
  its converted folder and load that like any transformers checkpoint; every other name is passed on unchanged.
"""

import contextlib
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.utils.sha import sha_fileobj
from transformers.utils import logging

from .configuration_sapiens import SapiensConfig
from .modeling_sapiens import WrongModelError
from .runtime import pipeline_export_problem
from .tasks import ENCODER, Task, get_task, task_of_class


logger = logging.get_logger(__name__)

# Where converted originals would be published (nothing has been uploaded there by this project).
CONVERTED_NAMESPACE = "sapiens-hf"

# ---------------------------------------------------------------------------------------------------------------
# Released originals
# ---------------------------------------------------------------------------------------------------------------


class Score(NamedTuple):
    """A published evaluation figure (from the checkpoint's file name: best validation score during fine-tuning)."""

    dataset: str
    metric: str
    value: float


@dataclass(frozen=True)
class OriginalCheckpoint:
    """One released original Sapiens (v1) checkpoint file.

    `revision`, `sha256` and `file_size` pin the file when known; `None` means unknown to this package (we had no
    access to the Hub when the table was written), in which case downloads are pinned to the commit the Hub serves
    and verified against the sha256/size the Hub announces for the file.
    """

    repo_id: str
    filename: str
    task: str
    model_size: str
    label_set: str | None
    converted_repo: str
    score: Score | None = None
    revision: str | None = None
    sha256: str | None = None
    file_size: int | None = None

    @property
    def format(self) -> str:
        return "torchscript" if self.filename.endswith("_torchscript.pt2") else "pth"


def _releases() -> list[OriginalCheckpoint]:
    """Meta's released checkpoints (the `facebook/sapiens-*` Hub repositories): original `.pth` files and their fp32
    TorchScript copies."""
    goliath, coco, whole_body = "Goliath (val)", "COCO val2017", "COCO-WholeBody val2017"
    # (kind of the facebook repo, task, label set, converted name, {size: (file stem, score)})
    families = [
        ("pretrain", "pretraining", None, "pretrain", {
            "0.3b": ("sapiens_0.3b_epoch_1600_clean", None),
            "0.6b": ("sapiens_0.6b_epoch_1600_clean", None),
            "1b": ("sapiens_1b_epoch_173_clean", None),
            "2b": ("sapiens_2b_epoch_660_clean", None),
        }),
        ("pose", "pose", "goliath-308", "pose-goliath", {
            "0.3b": ("sapiens_0.3b_goliath_best_goliath_AP_573", Score(goliath, "AP", 57.3)),
            "0.6b": ("sapiens_0.6b_goliath_best_goliath_AP_609", Score(goliath, "AP", 60.9)),
            "1b": ("sapiens_1b_goliath_best_goliath_AP_639", Score(goliath, "AP", 63.9)),
        }),
        ("seg", "segmentation", "goliath-28", "seg", {
            "0.3b": ("sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194", Score(goliath, "mIoU", 76.73)),
            "0.6b": ("sapiens_0.6b_goliath_best_goliath_mIoU_7777_epoch_178", Score(goliath, "mIoU", 77.77)),
            "1b": ("sapiens_1b_goliath_best_goliath_mIoU_7994_epoch_151", Score(goliath, "mIoU", 79.94)),
        }),
        ("depth", "depth", None, "depth", {
            "0.3b": ("sapiens_0.3b_render_people_epoch_100", None),
            "0.6b": ("sapiens_0.6b_render_people_epoch_70", None),
            "1b": ("sapiens_1b_render_people_epoch_88", None),
            "2b": ("sapiens_2b_render_people_epoch_25", None),
        }),
        ("normal", "normal", None, "normal", {
            "0.3b": ("sapiens_0.3b_normal_render_people_epoch_66", None),
            "0.6b": ("sapiens_0.6b_normal_render_people_epoch_200", None),
            "1b": ("sapiens_1b_normal_render_people_epoch_115", None),
            "2b": ("sapiens_2b_normal_render_people_epoch_70", None),
        }),
    ]
    table = []
    for kind, task, labels, converted, files in families:
        for size, (stem, score) in files.items():
            common = {"task": task, "model_size": size, "label_set": labels, "score": score,
                          "converted_repo": f"{CONVERTED_NAMESPACE}/sapiens-{converted}-{size}"}
            table.append(OriginalCheckpoint(f"facebook/sapiens-{kind}-{size}", f"{stem}.pth", **common))
            torchscript = f"{stem.removesuffix('_clean')}_torchscript.pt2"
            table.append(OriginalCheckpoint(f"facebook/sapiens-{kind}-{size}-torchscript", torchscript, **common))
    # The 17- and 133-keypoint pose checkpoints are hosted in one community repo that the original docs link to.
    coco_families = [
        ("coco-17", "pose-coco", {"0.3b": ("coco_best_coco_AP_796", 79.6), "0.6b": ("coco_best_coco_AP_812", 81.2),
                                   "1b": ("coco_best_coco_AP_821", 82.1), "2b": ("coco_best_coco_AP_822", 82.2)}, coco),
        ("coco-wholebody-133", "pose-coco-wholebody", {
            "0.3b": ("coco_wholebody_best_coco_wholebody_AP_620", 62.0),
            "0.6b": ("coco_wholebody_best_coco_wholebody_AP_695", 69.5),
            "1b": ("coco_wholebody_best_coco_wholebody_AP_727", 72.7),
            "2b": ("coco_wholebody_best_coco_wholebody_AP_745", 74.5),
        }, whole_body),
    ]
    for labels, converted, files, dataset in coco_families:
        for size, (suffix, ap) in files.items():
            stem = f"sapiens_{size}_{suffix}"
            common = {"task": "pose", "model_size": size, "label_set": labels, "score": Score(dataset, "AP", ap),
                          "converted_repo": f"{CONVERTED_NAMESPACE}/sapiens-{converted}-{size}"}
            table.append(OriginalCheckpoint(
                "noahcao/sapiens-pose-coco", f"sapiens_host/pose/checkpoints/sapiens_{size}/{stem}.pth", **common
            ))
            table.append(OriginalCheckpoint(
                "noahcao/sapiens-pose-coco",
                f"sapiens_lite_host/torchscript/pose/checkpoints/sapiens_{size}/{stem}_torchscript.pt2",
                **common,
            ))
    return table


ORIGINAL_CHECKPOINTS: list[OriginalCheckpoint] = _releases()

# ---------------------------------------------------------------------------------------------------------------
# Every release of both generations, for people choosing one (`sapiens-hf models`)
# ---------------------------------------------------------------------------------------------------------------

LICENCES = {
    # facebookresearch/sapiens, LICENSE
    1: "CC-BY-NC-4.0 (non-commercial use only)",
    # facebookresearch/sapiens2, LICENSE.md: royalty-free use, modification and redistribution, commercial use
    # included, with use restrictions (e.g. no surveillance or biometric processing)
    2: "Sapiens2 License (commercial use allowed, with use restrictions)",
}
# The Sapiens2 checkpoints transformers loads as they are (facebookresearch/sapiens2, docs/MODEL_ZOO.md; matting:
# the checkpoint transformers' Sapiens2ForImageMatting documents).
SAPIENS2_SIZES = ("0.4b", "0.8b", "1b", "5b")
SAPIENS2_LABELS = {"pose": "goliath-308", "segmentation": "29 classes", "normal": "XYZ normals",
                   "pointmap": "XYZ + scale", "matting": "alpha + foreground", "pretraining": "encoder"}
SAPIENS2_REPO_KINDS = {"segmentation": "seg", "pretraining": "pretrain"}
SAPIENS2_TASK_SIZES = {"matting": ("1b",), "pretraining": ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b")}


class Release(NamedTuple):
    """One released model as `sapiens-hf models` lists it: `model` is what `--model` / `from_pretrained` take
    (`filename` names the file of a repo holding several)."""

    generation: int
    task: str
    size: str
    labels: str
    licence: str
    model: str
    filename: str | None = None


def release_table() -> list[Release]:
    """Every Sapiens release (Meta's original files, converted on first use; `.pth` only, their TorchScript copies
    hold the same weights) and every Sapiens2 release (transformers' own checkpoints), by generation and task."""
    rows = []
    for checkpoint in ORIGINAL_CHECKPOINTS:
        if checkpoint.format != "pth":
            continue
        several = sum(c.repo_id == checkpoint.repo_id for c in ORIGINAL_CHECKPOINTS if c.format == "pth") > 1
        labels = checkpoint.label_set or {"segmentation": "goliath-28", "depth": "relative depth",
                                          "normal": "XYZ normals", "pretraining": "MAE encoder"}[checkpoint.task]
        rows.append(Release(1, checkpoint.task, checkpoint.model_size, labels, LICENCES[1], checkpoint.repo_id,
                            Path(checkpoint.filename).name if several else None))
    for task, labels in SAPIENS2_LABELS.items():
        sizes = SAPIENS2_TASK_SIZES.get(task, SAPIENS2_SIZES)
        kind = SAPIENS2_REPO_KINDS.get(task, task)
        rows += [Release(2, task, size, labels, LICENCES[2], f"facebook/sapiens2-{kind}-{size}") for size in sizes]
    order = ["pose", "segmentation", "depth", "normal", "pointmap", "matting", "pretraining"]
    return sorted(rows, key=lambda row: (order.index(row.task), row.generation,
                                         float(re.match(r"[\d.]+", row.size)[0]), row.size, row.labels))


def register_original_checkpoint(checkpoint: OriginalCheckpoint) -> None:
    """Adds (or replaces, by repo and file) an entry, e.g. a private mirror of a released file with its sha256."""
    ORIGINAL_CHECKPOINTS[:] = [
        c for c in ORIGINAL_CHECKPOINTS if (c.repo_id, c.filename) != (checkpoint.repo_id, checkpoint.filename)
    ]
    ORIGINAL_CHECKPOINTS.append(checkpoint)


def find_original(repo_id: str, filename: str | None = None) -> OriginalCheckpoint | None:
    """The released checkpoint in `repo_id` (`filename`, a path or a base name, picks one in a multi-file repo);
    None for a repo that is not in the table."""
    in_repo = [c for c in ORIGINAL_CHECKPOINTS if c.repo_id == repo_id]
    matches = in_repo if filename is None else [c for c in in_repo if filename in (c.filename, Path(c.filename).name)]
    if in_repo and len(matches) != 1:
        problem = "holds several released checkpoints" if filename is None else f"has no released file {filename!r}"
        names = "\n  ".join(c.filename for c in in_repo)
        raise ValueError(f"{repo_id} {problem}; pick one with filename=...:\n  {names}")
    return matches[0] if matches else None


def find_original_file(path: str | os.PathLike) -> OriginalCheckpoint | None:
    """The released checkpoint whose file has the base name of `path` (released base names are unique)."""
    path = Path(path)
    return next((c for c in ORIGINAL_CHECKPOINTS if Path(c.filename).name == path.name), None)


# ---------------------------------------------------------------------------------------------------------------
# Verified downloads
# ---------------------------------------------------------------------------------------------------------------


class CorruptedCheckpointError(OSError):
    """A checkpoint file does not have the size or sha256 it must have."""


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as file:
        return sha_fileobj(file).hex()


def verify_file(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> None:
    """Raises `CorruptedCheckpointError` when `path` does not have the given size or sha256 (unknown = not checked)."""
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        raise CorruptedCheckpointError(
            f"{path} has {actual_size} bytes but the checkpoint has {size} (truncated or another file)"
        )
    if sha256 is not None and (actual := file_sha256(path)) != sha256.lower():
        raise CorruptedCheckpointError(f"{path} has sha256 {actual} but the checkpoint has {sha256}")


def download_original(
    checkpoint: OriginalCheckpoint,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
) -> Path:
    """Downloads a released checkpoint into the Hugging Face cache and verifies it.

    The download is pinned to `revision`, else to the table's revision, else to the commit the Hub serves now (so
    the expected hash and the bytes come from the same commit). The file is checked against the table's sha256/size,
    or, when the table has none, against the sha256/size the Hub announces for the LFS file. A file that fails the
    check is removed from the cache and `CorruptedCheckpointError` is raised: nothing is ever loaded from it.
    """
    revision = revision or checkpoint.revision
    sha256, size = checkpoint.sha256, checkpoint.file_size
    offline = local_files_only or constants.is_offline_mode()
    if not offline:
        url = hf_hub_url(checkpoint.repo_id, checkpoint.filename, revision=revision)
        try:
            metadata = get_hf_file_metadata(url, token=token)
        except Exception as error:  # httpx transport errors (no network, DNS) are not OSErrors: report them as one
            raise OSError(f"Could not reach the Hugging Face Hub for {checkpoint.repo_id}: {error}") from error
        revision = metadata.commit_hash
        # The Hub's ETag of an LFS file is its sha256; a 40-hex git blob id (non-LFS file) says nothing about it.
        hub_sha256 = metadata.etag if re.fullmatch(r"[0-9a-f]{64}", metadata.etag or "") else None
        if sha256 is not None and hub_sha256 is not None and hub_sha256 != sha256:
            raise CorruptedCheckpointError(
                f"{checkpoint.repo_id}/{checkpoint.filename} at revision {revision} has sha256 {hub_sha256}, not the "
                f"pinned {sha256}: the file on the Hub changed. Pass revision= to load the pinned release."
            )
        sha256 = sha256 or hub_sha256
        size = size or metadata.size
    path = Path(hf_hub_download(
        checkpoint.repo_id, checkpoint.filename, revision=revision, cache_dir=cache_dir, token=token,
        force_download=force_download, local_files_only=local_files_only,
    ))
    if sha256 is None and size is None:
        logger.info(f"{path} is not re-verified offline (it was verified when it was downloaded).")
    try:
        verify_file(path, sha256, size)
    except CorruptedCheckpointError as error:
        # Drop the blob and its snapshot link so the next call downloads again instead of reusing the bad file.
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise CorruptedCheckpointError(
            f"Download of {checkpoint.repo_id}/{checkpoint.filename} is corrupted and was removed from the cache: "
            f"{error}. Retry, or pass force_download=True."
        ) from error
    return path


def _released_task(checkpoint: OriginalCheckpoint) -> Task:
    """The task the released file converts into: its own, but the encoder for pretraining (the `_clean` files hold
    the encoder only; the MAE decoder was dropped)."""
    task = get_task(checkpoint.task)
    return ENCODER if task.decoder else task


def original_config(checkpoint: OriginalCheckpoint) -> SapiensConfig:
    """The config of a released checkpoint from its table entry alone (size, task, label set; nothing is
    downloaded): what converting the released file gives, for listings and model cards."""
    task = get_task(checkpoint.task)
    num_labels = int(checkpoint.label_set.rsplit("-", 1)[1]) if checkpoint.label_set else None
    labels = {} if num_labels is None else {"num_labels": num_labels, **task.label_metadata(num_labels)}
    config = SapiensConfig.from_preset(checkpoint.model_size, checkpoint.task, **labels)
    config.architectures = [_released_task(checkpoint).model_class]
    config.name_or_path = checkpoint.repo_id
    return config


# ---------------------------------------------------------------------------------------------------------------
# Converting once into a cached transformers folder
# ---------------------------------------------------------------------------------------------------------------

_CHECKPOINT_SUFFIXES = (".pth", ".pt2")


def _local_checkpoint(path: Path) -> tuple[Path, OriginalCheckpoint | None] | None:
    """The original checkpoint in a file path or in a folder laid out like an original repo (no config.json)."""
    if path.is_file():
        return (path, find_original_file(path)) if path.suffix in _CHECKPOINT_SUFFIXES else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    files = sorted(
        p for p in path.rglob("*")
        if p.suffix in _CHECKPOINT_SUFFIXES and ".cache" not in p.parts and not p.name.endswith("_bfloat16.pt2")
    )
    known = [p for p in files if find_original_file(p)]
    candidates = known or files
    if len(candidates) > 1:
        names = "\n  ".join(str(p) for p in candidates)
        raise ValueError(f"{path} holds several checkpoints; pass the path of one of them:\n  {names}")
    return (candidates[0], find_original_file(candidates[0])) if candidates else None


def _original_source(name_or_path, filename: str | None = None) -> tuple[Path | None, OriginalCheckpoint | None] | None:
    """`(local file or None, table entry or None)` when `name_or_path` is an original release — a repo id of the
    table, a local folder laid out like an original repo or a `.pth`/`.pt2` path — else None. Refuses the bf16
    export repos with a pointer to the fp32 one."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    local = _local_checkpoint(Path(name_or_path))
    if local is not None:
        return local
    if re.fullmatch(r"facebook/sapiens-\w+-[\d.]+b-bfloat16", str(name_or_path)):
        raise ValueError(
            f"{name_or_path} holds bfloat16 torch.export programs, which cannot be converted exactly; load "
            f"{str(name_or_path).removesuffix('-bfloat16')} (or its -torchscript copy) instead."
        )
    checkpoint = find_original(str(name_or_path), filename)
    return None if checkpoint is None else (None, checkpoint)


def conversion_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted originals are kept: `$SAPIENS_HF_CACHE`, else `sapiens-hf/` in the Hugging Face home (or in
    the `cache_dir` given to `from_pretrained`)."""
    if cache_dir is not None:
        return Path(cache_dir) / "sapiens-hf"
    return Path(os.environ.get("SAPIENS_HF_CACHE") or Path(constants.HF_HOME) / "sapiens-hf")


STALE_STAGING_S = 86400  # a staging folder this old is a killed run's: no conversion or export takes a day


def write_cache_entry(folder: Path, write, damage, prefix: str) -> Path:
    """Writes an entry of a cache `folder` (a conversion, a checked export) so that no reader ever trusts half of
    one: `write(staging)` fills a new temporary folder in `folder` (named `prefix`...) and returns the entry's name,
    and the folder is renamed to it. An entry of that name that `damage` (entry → what is wrong, or None) finds damaged
    is replaced; a whole one that a concurrent writer renamed into place first is kept. A failure leaves no staging
    folder and no new entry. Staging folders of `prefix` that a killed run left are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):  # another process may remove it first
            if time.time() - stale.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=prefix))
    try:
        target = folder / write(staging)
        if target.exists() and damage(target) is not None:
            shutil.rmtree(target, ignore_errors=True)  # left damaged: the fresh entry replaces it
        try:
            staging.rename(target)
        except OSError:  # written meanwhile by another process: keep its entry
            if damage(target) is not None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _hub_content_id(checkpoint: OriginalCheckpoint, revision, token, local_files_only) -> tuple[str, str | None]:
    """`(content id, revision)` of a released file: the sha256 the Hub announces for the LFS file (online, one
    metadata request), or the name of the blob the Hugging Face cache holds for it (offline: the same sha256).
    Refuses a file whose announced sha256 is not the table's pin, before anything is downloaded."""
    revision = revision or checkpoint.revision
    if local_files_only or constants.is_offline_mode():
        cached = try_to_load_from_cache(checkpoint.repo_id, checkpoint.filename, revision=revision)
        if not isinstance(cached, str):
            raise OSError(f"{checkpoint.repo_id}/{checkpoint.filename} is not in the Hugging Face cache and the "
                          "Hub may not be contacted (offline mode or local_files_only=True)")
        return Path(cached).resolve().name, revision
    url = hf_hub_url(checkpoint.repo_id, checkpoint.filename, revision=revision)
    try:
        metadata = get_hf_file_metadata(url, token=token)
    except Exception as error:  # httpx transport errors (no network, DNS) are not OSErrors: report them as one
        raise OSError(f"Could not reach the Hugging Face Hub for {checkpoint.repo_id}: {error}") from error
    # The Hub's ETag of an LFS file is its sha256; a 40-hex git blob id (non-LFS file) says nothing about it.
    sha256 = metadata.etag if re.fullmatch(r"[0-9a-f]{64}", metadata.etag or "") else None
    if checkpoint.sha256 is not None and sha256 is not None and sha256 != checkpoint.sha256:
        raise CorruptedCheckpointError(
            f"{checkpoint.repo_id}/{checkpoint.filename} at revision {metadata.commit_hash} has sha256 {sha256}, not "
            f"the pinned {checkpoint.sha256}: the file on the Hub changed. Pass revision= to load the pinned release."
        )
    return (sha256 or f"{metadata.commit_hash}-{metadata.etag}"), metadata.commit_hash


def converted_folder(
    name_or_path,
    task: str | None = None,
    *,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    num_attention_heads: int | None = None,
) -> Path | None:
    """The cached transformers folder of an original release converted into a `task` model (its own task when
    None), converting it first if needed; None when `name_or_path` is not an original release.

    A Hub file is keyed by its content id (its LFS sha256), so a second load makes one metadata request (none
    offline) and neither downloads, hashes nor converts; a new revision of the file is a new key. A local file is
    keyed by its path, size, modification and status-change times and inode. The source is verified (table pin,
    else the Hub's announced sha256 and size) once, when it is converted. `num_attention_heads` is needed only for a width that is not a
    released size (it is not visible in the weights).
    """
    source = _original_source(name_or_path, filename)
    if source is None:
        return None
    local, checkpoint = source
    if local is not None:
        # The status-change time and inode are set by the file system, never restored by `cp -p`, `rsync -t` or
        # `tar`: a file replaced by another of the same size and modification time is a new key.
        stat = local.stat()
        identity = f"{local.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"
        key = "local-" + hashlib.sha256(identity.encode()).hexdigest()[:32]
    else:
        key, revision = _hub_content_id(checkpoint, revision, token, local_files_only)
    entry = conversion_cache(cache_dir) / key
    if task is None and (entry / "task").is_file():
        task = (entry / "task").read_text().strip()
    elif task is None and checkpoint is not None:
        task = _released_task(checkpoint).name
    if task is not None:
        task = get_task(task).name
        problem = _damage(entry / task)
        if problem is None and not force_download:
            return entry / task
        if problem is not None and (entry / task).exists():
            # replaced once the new conversion is written (`write_cache_entry`), kept if it fails
            logger.warning(f"The cached conversion {entry / task} is damaged ({problem}): converting again")
    if local is not None:
        if checkpoint is not None:
            verify_file(local, checkpoint.sha256, checkpoint.file_size)
        path = local
    else:
        path = download_original(checkpoint, revision=revision, cache_dir=cache_dir, token=token,
                                 force_download=force_download, local_files_only=local_files_only)
    return _convert_into(entry, path, task, num_attention_heads,
                         source={"name": str(name_or_path), "file": checkpoint.filename if checkpoint else str(local),
                                 "revision": revision, "content_id": key})


def _damage(folder: Path) -> str | None:
    """What is wrong with a converted folder of the cache (a file cut short by a full disk or a killed copy, a file
    removed), or None when it loads: a readable config.json and safetensors files whose data covers their header."""
    from safetensors import safe_open

    if not (folder / "config.json").is_file():
        return "no config.json"
    try:
        json.loads((folder / "config.json").read_text())
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            return "no weights"
        for path in weights:
            with safe_open(path, "np"):  # checks that the file holds every byte its header announces
                pass
    except Exception as error:  # noqa: BLE001  (any unreadable file: the entry is rebuilt)
        return f"{type(error).__name__}: {error}"
    return None


def _convert_into(entry: Path, path: Path, task: str | None, num_attention_heads: int | None, source: dict) -> Path:
    """Converts `path` into `entry/<task>` (`write_cache_entry`: a concurrent or killed conversion never leaves a
    half-written folder that a later load would trust)."""
    from .convert import convert_to_folder

    overrides = {} if num_attention_heads is None else {"num_attention_heads": num_attention_heads}

    def write(staging: Path) -> str:
        logger.info(f"Converting {path} into a transformers checkpoint (once; later loads reuse it)")
        model = convert_to_folder(path, staging, task=task, **overrides)
        name = task or task_of_class(type(model).__name__).name
        (staging / "source.json").write_text(json.dumps({**source, "task": name}, indent=2) + "\n")
        return name

    target = write_cache_entry(entry, write, _damage, prefix=".converting-")
    if not (entry / "task").is_file():
        (entry / "task").write_text(target.name + "\n")
    return target


# Arguments of `from_pretrained` that say which original file to convert; the folder's own load does not take them.
_SOURCE_KWARGS = ("filename", "revision", "force_download")
# Arguments of `from_pretrained` that say where a folder's files are.
_HUB_KWARGS = ("cache_dir", "revision", "subfolder", "token")


def resolve_original_name(name_or_path, kwargs: dict, task: str | None = None):
    """Maps an original release to its converted folder (converting it on first use) and removes the arguments
    that picked the source file from `kwargs`; returns every other name unchanged. `task` is the task of the class
    being loaded (None: the release's own). This is what `from_pretrained` calls before loading as usual."""
    if not isinstance(name_or_path, (str, os.PathLike)) or (Path(name_or_path) / "config.json").is_file():
        return name_or_path
    download = {key: kwargs[key] for key in ("cache_dir", "token", "local_files_only") if key in kwargs}
    heads = kwargs.get("num_attention_heads")
    config = kwargs.get("config")
    if heads is None and isinstance(config, SapiensConfig):
        heads = config.num_attention_heads  # a config from AutoConfig.from_pretrained carries them
    folder = converted_folder(name_or_path, task, **{key: kwargs.get(key) for key in _SOURCE_KWARGS},
                              **download, num_attention_heads=heads)
    if folder is None:
        return name_or_path
    for key in _SOURCE_KWARGS:
        kwargs.pop(key, None)
    return str(folder)


def _hook(cls, task_of, weights_checked: bool = False) -> None:
    """Wraps `cls.from_pretrained` so that an original release loads from its converted folder (and is named after
    the release, which a later push gives as the base model). Idempotent."""
    function = inspect.getattr_static(cls, "from_pretrained").__func__
    if getattr(function, "__sapiens_hf_hook__", False):
        return

    def from_pretrained(klass, pretrained_model_name_or_path, *args, **kwargs):
        # An older export folder has a manifest but no config.json: one line, not transformers' "Unrecognized
        # model" (`pipeline()` loads the config before any model class, so this is where it first sees the folder).
        problem = pipeline_export_problem(pretrained_model_name_or_path)
        if problem:
            raise WrongModelError(problem)
        name = resolve_original_name(pretrained_model_name_or_path, kwargs, task_of(klass))
        loaded = function(klass, name, *args, **kwargs)
        if weights_checked:  # after the load, which found (or downloaded) the files whose headers are read
            from .convert import check_saved_weight_dtypes

            check_saved_weight_dtypes(name, **{key: kwargs[key] for key in _HUB_KWARGS if kwargs.get(key)})
        if name != pretrained_model_name_or_path:
            for obj in (loaded[0] if isinstance(loaded, tuple) else loaded, getattr(loaded, "config", None)):
                if hasattr(obj, "name_or_path"):
                    obj.name_or_path = str(pretrained_model_name_or_path)
        return loaded

    from_pretrained.__sapiens_hf_hook__ = True
    from_pretrained.__wrapped__ = function
    from_pretrained.__doc__ = (function.__doc__ or "") + (
        "\n    sapiens_hf: Meta's original Sapiens releases (repo ids of `sapiens_hf.releases.ORIGINAL_CHECKPOINTS`, "
        "local folders laid out like one, `.pth`/`.pt2` paths) are converted once into a cached folder, which is then "
        "loaded as usual (`filename=` picks a file of a multi-file repo). See docs/hub.md.\n")
    cls.from_pretrained = classmethod(from_pretrained)


def install_hooks() -> None:
    """Lets `from_pretrained` of the Sapiens models, `AutoConfig` and `AutoImageProcessor` (and so the Auto model
    classes and `pipeline()`) resolve original releases; called when `sapiens_hf` registers with transformers."""
    from transformers import AutoConfig, AutoImageProcessor

    from .modeling_sapiens import SapiensPreTrainedModel

    def class_task(model_class):
        task = task_of_class(model_class.__name__)
        return task.name if task else None

    _hook(SapiensPreTrainedModel, class_task, weights_checked=True)
    _hook(AutoConfig, lambda _: None)
    _hook(AutoImageProcessor, lambda _: None)


__all__ = [
    "CONVERTED_NAMESPACE",
    "ORIGINAL_CHECKPOINTS",
    "CorruptedCheckpointError",
    "OriginalCheckpoint",
    "Score",
    "conversion_cache",
    "converted_folder",
    "download_original",
    "file_sha256",
    "find_original",
    "find_original_file",
    "install_hooks",
    "original_config",
    "register_original_checkpoint",
    "resolve_original_name",
    "verify_file",
    "write_cache_entry",
]
