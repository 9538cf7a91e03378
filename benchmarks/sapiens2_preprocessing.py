"""Sapiens2 pre-processing: sapiens-hf's torchvision-free `Sapiens2ImageProcessorPil` against transformers'
`Sapiens2ImageProcessor` on one 1920×1080 photo (whole image, padded, three person crops); the fastest of 7 calls.
Needs torchvision beside transformers (the environment of tests/fixtures/README.md), and the package on PYTHONPATH:

    PYTHONPATH=src python benchmarks/sapiens2_preprocessing.py
"""

import time

import numpy as np
import torch
from transformers.models.sapiens2.image_processing_sapiens2 import Sapiens2ImageProcessor

from sapiens_hf.image_processing_sapiens2 import Sapiens2ImageProcessorPil


def fastest(function, calls: int = 7) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    torch.set_num_threads(2)
    photo = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    boxes = [[[400.0, 100.0, 300.0, 800.0], [900.0, 150.0, 280.0, 760.0], [1300.0, 200.0, 250.0, 700.0]]]
    cases = (("whole image", {}, {}), ("padded", {"do_pad": True}, {}), ("three person crops", {}, {"boxes": boxes}))
    for name, settings, arguments in cases:
        transformers_ms, ours_ms = (
            fastest(lambda processor=processor, arguments=arguments: processor(photo, return_tensors="pt", **arguments))
            for processor in (Sapiens2ImageProcessor(**settings), Sapiens2ImageProcessorPil(**settings))
        )
        print(f"{name}: transformers {transformers_ms:.1f} ms, sapiens-hf {ours_ms:.1f} ms")


if __name__ == "__main__":
    main()
