"""Load time of an original release through `from_pretrained`: the first load (verify + convert once) and later
loads (the cached folder), against loading the converted folder directly — the same work, so the ratio should be 1.

    python benchmarks/original_load.py [--size 0.3b] [--repeats 3]

Writes a pose checkpoint with the original key names and the released shapes of `--size` (random weights, named
like Meta's release, with its sha256 pinned in the release table so that the first load verifies it), then times
each load in a fresh process (page cache warm for all, after one untimed read). Not a unit test; results in
docs/hub.md, "Loading Meta's releases".
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


FILES = {"0.3b": "sapiens_0.3b_goliath_best_goliath_AP_573.pth", "1b": "sapiens_1b_goliath_best_goliath_AP_639.pth"}

LOAD = r"""
import dataclasses, json, sys, time
start = time.perf_counter()
import torch
from sapiens_hf import SapiensForPoseEstimation, convert, releases

path, sha256, size, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
release = releases.find_original_file(path)
releases.register_original_checkpoint(dataclasses.replace(release, sha256=sha256, file_size=size))
calls = {"hashed": 0, "converted": 0}
hash_file, read_original = releases.file_sha256, convert.load_original_state_dict
def counting_hash(file):
    calls["hashed"] += 1
    return hash_file(file)
def counting_read(file):
    calls["converted"] += 1
    return read_original(file)
releases.file_sha256, convert.load_original_state_dict = counting_hash, counting_read
source = path if mode == "original" else str(releases.converted_folder(path, "pose"))
imported = time.perf_counter()
model = SapiensForPoseEstimation.from_pretrained(source)
loaded = time.perf_counter()
print(json.dumps({"seconds": loaded - imported, "import_seconds": imported - start, **calls,
                  "parameters": sum(p.numel() for p in model.parameters())}))
"""


def original_pose_checkpoint(size: str) -> dict:
    """Random weights with the original key names and the released shapes (facebookresearch/sapiens,
    `pose/configs/sapiens_pose/goliath/`: 308 keypoints, two 768-wide deconv and conv stages)."""
    from sapiens_hf import SAPIENS_PRESETS

    preset = SAPIENS_PRESETS[f"sapiens-{size}"]
    width, depth = preset["hidden_size"], preset["num_hidden_layers"]
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    weights = {"backbone.patch_embed.projection.weight": rand(width, 3, 16, 16),
               "backbone.patch_embed.projection.bias": rand(width), "backbone.pos_embed": rand(1, 64 * 48, width),
               "backbone.ln1.weight": rand(width), "backbone.ln1.bias": rand(width)}
    for i in range(depth):
        for name, shape in [("ln1.weight", (width,)), ("ln1.bias", (width,)), ("ln2.weight", (width,)),
                            ("ln2.bias", (width,)), ("attn.qkv.weight", (3 * width, width)),
                            ("attn.qkv.bias", (3 * width,)), ("attn.proj.weight", (width, width)),
                            ("attn.proj.bias", (width,)), ("ffn.layers.0.0.weight", (4 * width, width)),
                            ("ffn.layers.0.0.bias", (4 * width,)), ("ffn.layers.1.weight", (width, 4 * width)),
                            ("ffn.layers.1.bias", (width,))]:
            weights[f"backbone.layers.{i}.{name}"] = rand(*shape)
    for stage in range(2):
        weights[f"head.deconv_layers.{3 * stage}.weight"] = rand(width if stage == 0 else 768, 768, 4, 4)
        weights[f"head.conv_layers.{3 * stage}.weight"] = rand(768, 768, 1, 1)
        weights[f"head.conv_layers.{3 * stage}.bias"] = rand(768)
    weights["head.final_layer.weight"], weights["head.final_layer.bias"] = rand(308, 768, 1, 1), rand(308)
    return {"state_dict": weights, "meta": {}}


def load(path: Path, sha256: str, size: int, mode: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, str(path), sha256, str(size), mode], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(FILES), default="0.3b")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILES[args.size]
        torch.save(original_pose_checkpoint(args.size), path)
        data = path.read_bytes()  # also warms the page cache
        sha256, size = hashlib.sha256(data).hexdigest(), len(data)
        del data
        env = {**os.environ, "SAPIENS_HF_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        first = load(path, sha256, size, "original", env)
        print(f"first load (verify + convert): {first['seconds']:.2f} s, hashed {first['hashed']}×, "
              f"converted {first['converted']}× ({time.perf_counter() - started:.1f} s with the process)")
        load(path, sha256, size, "folder", env)  # untimed: the converted file into the page cache
        original, folder = [], []
        for _ in range(args.repeats):
            again = load(path, sha256, size, "original", env)
            assert again["hashed"] == again["converted"] == 0, again
            original.append(again["seconds"])
            folder.append(load(path, sha256, size, "folder", env)["seconds"])
        print(f"later loads of the original (median of {args.repeats}): {statistics.median(original):.2f} s, "
              "hashed 0×, converted 0×")
        print(f"the converted folder directly (median of {args.repeats}): {statistics.median(folder):.2f} s")
        print(f"ratio: {statistics.median(original) / statistics.median(folder):.3f}  "
              f"({first['parameters'] / 1e6:.0f} M parameters, {size / 2**30:.2f} GiB checkpoint)")


if __name__ == "__main__":
    main()
