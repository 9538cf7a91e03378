"""The output folder of `sapiens-hf annotate`, readable with `datasets.load_dataset("parquet", data_dir=OUT)`:

    OUT/shard-000000.parquet, shard-000001.parquet, …   one per chunk with a readable image, rows in input order
    OUT/.sapiens-hf/annotate.json                       the manifest: models and revisions, versions, settings
    OUT/.sapiens-hf/chunks/000000.json, …               one per finished chunk: its row count and its errors
    OUT/.sapiens-hf/errors.jsonl                        every unreadable input with the reason (rebuilt at the end)

(`datasets` reads every file of `data_dir`, so everything but the shards lives in the hidden folder.) Every file is
written to a temporary name and renamed into place, and a chunk counts as done only once its record exists, written
after its shard: a run killed at any point and started again redoes exactly the chunks without a record, and
replaces (never duplicates) a shard written just before the kill. Nothing else in the folder is read or touched.
"""

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


STATE_DIR = ".sapiens-hf"
MANIFEST = "annotate.json"
ERRORS = "errors.jsonl"

# Columns of every shard; a task's columns are present when the task was asked for.
BASE_SCHEMA = [("id", pa.string()), ("index", pa.int64()), ("height", pa.int32()), ("width", pa.int32())]
TASK_SCHEMA = {
    "pose": [("pose_boxes", pa.list_(pa.list_(pa.float32(), 4))),  # (x, y, width, height) per person
             ("pose_keypoints", pa.list_(pa.list_(pa.list_(pa.float32(), 2)))),  # person × keypoint × (x, y)
             ("pose_scores", pa.list_(pa.list_(pa.float32())))],
    "segmentation": [("segmentation_png", pa.binary())],  # class indices, 8-bit PNG at the image's size
    "depth": [("depth_npy", pa.binary())],  # float32 (H, W) as .npy bytes, at --dense-size
    "normal": [("normal_npy", pa.binary())],  # float32 (3, H, W) unit vectors as .npy bytes, at --dense-size
}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_atomically(path: Path, write) -> None:
    """`write(temporary_path)` next to `path`, then the rename (atomic): readers see the old file or the new one. Each
    file is written by one process only (a chunk belongs to one process), so the temporary name can be fixed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


class OutputFolder:
    def __init__(self, folder: str | os.PathLike, tasks: list[str]):
        self.folder = Path(folder)
        self.state = self.folder / STATE_DIR
        self.schema = pa.schema(BASE_SCHEMA + [column for task in tasks for column in TASK_SCHEMA[task]])

    def shard(self, number: int) -> Path:
        return self.folder / f"shard-{number:06d}.parquet"

    def record(self, number: int) -> Path:
        return self.state / "chunks" / f"{number:06d}.json"

    def existing_manifest(self) -> dict | None:
        path = self.state / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def start(self, manifest: dict, overwrite: bool) -> None:
        """Writes the manifest of a new run; a folder holding a run with other settings is an error unless
        `overwrite` (then only this command's files are removed)."""
        existing = self.existing_manifest()
        if existing is not None and existing["settings"] != manifest["settings"]:
            if not overwrite:
                changed = sorted(key for key in {**existing["settings"], **manifest["settings"]}
                                 if existing["settings"].get(key) != manifest["settings"].get(key))
                raise ValueError(f"{self.folder} holds an annotation run with other settings ({', '.join(changed)}): "
                                 "re-run the same command to resume it, pass --overwrite to start afresh, or choose "
                                 "another output folder")
            self.remove_run()
        if self.existing_manifest() is None:
            write_atomically(self.state / MANIFEST, lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))

    def remove_run(self) -> None:
        for path in self.folder.glob("shard-*.parquet"):
            path.unlink()
        for path in self.state.glob("chunks/*.json"):
            path.unlink()
        for name in (MANIFEST, ERRORS):
            (self.state / name).unlink(missing_ok=True)

    def done_chunks(self) -> set[int]:
        return {int(path.stem) for path in self.state.glob("chunks/*.json") if path.stem.isdigit()}

    def finish_chunk(self, number: int, rows: list[dict], errors: list[dict]) -> None:
        """The shard (when a row was read), then the record that marks the chunk done."""
        if rows:
            table = pa.Table.from_pylist(sorted(rows, key=lambda row: row["index"]), schema=self.schema)
            write_atomically(self.shard(number), lambda p: pq.write_table(table, p))
        else:
            self.shard(number).unlink(missing_ok=True)
        record = {"rows": len(rows), "errors": errors}
        write_atomically(self.record(number), lambda p: Path(p).write_text(json.dumps(record)))

    def collect_errors(self) -> int:
        """Rebuilds errors.jsonl from the chunk records, in input order; returns how many inputs failed."""
        errors = []
        for path in sorted(self.state.glob("chunks/*.json")):
            errors += json.loads(path.read_text())["errors"]
        lines = "".join(json.dumps(error) + "\n" for error in sorted(errors, key=lambda error: error["index"]))
        write_atomically(self.state / ERRORS, lambda p: Path(p).write_text(lines))
        return len(errors)

    def counts(self) -> tuple[int, int]:
        """(rows, errors) over the finished chunks."""
        records = [json.loads(path.read_text()) for path in self.state.glob("chunks/*.json")]
        return sum(record["rows"] for record in records), sum(len(record["errors"]) for record in records)

    def push_to_hub(self, repo_id: str, token=None, private: bool | None = None):
        """Uploads the shards and the manifest and error list as a dataset repo (nothing else in the folder)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
        return api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=self.folder,
            allow_patterns=["shard-*.parquet", f"{STATE_DIR}/{MANIFEST}", f"{STATE_DIR}/{ERRORS}"],
            commit_message="Sapiens annotations (sapiens-hf annotate)",
        )
