"""Runs a model exported with `sapiens-hf export … --format onnx` on an image, without torch or transformers
(NumPy, OpenCV, Pillow and onnxruntime), and prints the results as JSON.

    python examples/run_exported.py out/pose-onnx photo.jpg [--box X Y W H ...] [--int8]
"""

import argparse
import json
import sys

import numpy as np

from sapiens_hf.runtime import ExportedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("image")
    parser.add_argument("--box", nargs=4, type=float, action="append", metavar=("X", "Y", "W", "H"))
    parser.add_argument("--int8", action="store_true", help="run the int8 graph of `--quantize int8`")
    args = parser.parse_args()
    try:  # a damaged folder, a Sapiens2 export (processed by the pipelines only), boxes for a dense task: one line
        model = ExportedModel(args.folder, int8=args.int8)
        result = model(args.image, boxes=args.box)  # boxes: pose only
    except ValueError as error:
        parser.error(str(error))
    as_lists = json.loads(json.dumps(result, default=lambda value: np.asarray(value).tolist()))
    loaded = sorted(name for name in ("torch", "transformers") if sys.modules.get(name) is not None)
    print(json.dumps({"task": model.task.name, "result": as_lists, "imported": loaded}))


if __name__ == "__main__":
    main()
