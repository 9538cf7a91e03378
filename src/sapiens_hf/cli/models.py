"""`sapiens-hf models`: every Sapiens and Sapiens2 release in a table people can read (`releases.release_table`),
with which to pick for what."""

import json

from ..releases import Release, release_table


ADVICE = """Which to pick:
  Sapiens2 (2): most jobs - the newer generation, and commercial use is allowed (Sapiens2 License, with use
                restrictions); 308-keypoint pose, 29-class segmentation, normals, and pointmaps (3D) and matting,
                which Sapiens lacks. Its pretraining checkpoints are encoders for transformers' Sapiens2 classes.
  Sapiens  (1): relative depth, 17-keypoint (COCO) or 133-keypoint (COCO-WholeBody) pose, the MAE pretraining
                model; non-commercial use only (CC-BY-NC-4.0).
  Sizes: the smallest for a CPU or many images; larger ones are more accurate and need a GPU.
Load one by its id (--model ID); where a file name follows the id (a repo of several), download that file and
pass its path."""


def format_table(rows: list[Release]) -> str:
    header = ("gen", "task", "size", "keypoints / classes", "licence", "model")
    cells = [header] + [(str(row.generation), row.task, row.size, row.labels, row.licence.split(" (")[0],
                         row.model + (f"  ({row.filename})" if row.filename else "")) for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def models(args) -> int:
    rows = [row for row in release_table() if args.task is None or row.task == args.task]
    if args.generation is not None:
        rows = [row for row in rows if row.generation == args.generation]
    if args.json:
        print(json.dumps([row._asdict() for row in rows], indent=1))
    else:
        print(format_table(rows))
        print()
        print(ADVICE)
    return 0
