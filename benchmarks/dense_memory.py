"""Peak memory (RSS) of dense post-processing at a large target size, from synthetic model outputs.

    python benchmarks/dense_memory.py [--size 12000] [--unbanded]

Each case runs in a fresh subprocess and reports `resource.getrusage(RUSAGE_SELF).ru_maxrss`: segmentation (28 × 512 ×
384 logits → labels, and with `return_segmentation_scores`), depth (512 × 384) and normals (3 × 512 × 384), resized to
the model input (1024 × 768) and then to size × size. `--unbanded` resizes in one F.interpolate call at every size
(the "one `F.interpolate`" column). Not a unit test; results in docs/inference.md, "Large images".
"""

import argparse
import subprocess
import sys


CASE = r"""
import resource, sys, time
import torch
import sapiens_hf.image_processing_sapiens as module
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput
from sapiens_hf.modeling_sapiens import SapiensNormalEstimatorOutput

case, size, unbanded = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if unbanded:
    module.BANDED_RESIZE_MIN_PIXELS = float("inf")
processor = module.SapiensImageProcessorPil()
processor.max_image_pixels = None
generator = torch.Generator().manual_seed(0)
sizes = [(size, size)]
start = time.perf_counter()
if case == "segmentation":
    logits = torch.randn(1, 28, 512, 384, generator=generator)
    processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), sizes)
elif case == "segmentation + scores":
    logits = torch.randn(1, 28, 512, 384, generator=generator)
    processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), sizes, True)
elif case == "depth":
    depth = torch.randn(1, 512, 384, generator=generator)
    processor.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), sizes)
elif case == "normals":
    normals = torch.randn(1, 3, 512, 384, generator=generator)
    processor.post_process_normal_estimation(SapiensNormalEstimatorOutput(normals=normals), sizes)
seconds = time.perf_counter() - start
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, seconds)  # KiB -> GiB
"""

CASES = ("baseline (imports only)", "segmentation", "segmentation + scores", "depth", "normals")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12000, help="target height and width (default 12000)")
    parser.add_argument("--unbanded", action="store_true", help="one F.interpolate call at every size")
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    args = parser.parse_args()
    print(f"target {args.size} × {args.size}, {'unbanded' if args.unbanded else 'banded'}")
    print(f"{'case':<26}{'peak RSS (GiB)':>16}{'seconds':>10}")
    for case in args.cases:
        run = subprocess.run(
            [sys.executable, "-c", CASE, case, str(args.size), str(int(args.unbanded))], capture_output=True, text=True
        )
        if run.returncode:
            print(f"{case:<26}{'failed (' + str(run.returncode) + ')':>16}  {run.stderr.strip().splitlines()[-1:]}")
            continue
        peak, seconds = map(float, run.stdout.split())
        print(f"{case:<26}{peak:>16.2f}{seconds:>10.1f}")


if __name__ == "__main__":
    main()
