#!/usr/bin/env python
"""Throughput of sapiens-hf against timm's and transformers' ViTs at the same dimensions, in one run on one device.

Modes (`--mode`, comma-separated, run in the order given):
  inference  our backbone (attention variants, torch.compile) and task models at the Sapiens sizes, and at the same
             dims transformers' `ViTModel` (sdpa) and timm's `VisionTransformer`; `--interleave` keeps them resident
             and calls them in turn (fair comparisons on a shared CPU);
  train      one training step: bf16 autocast over fp32 weights, AdamW (fused on CUDA), activation checkpointing
             for the 2B;
  pipeline   the top-down pose pipeline: crop (image processor) + model + decode, with the share outside the model;
  check      the fast paths on this device: head-dim padding at the 2B's head dim (60 → 64) against unpadded fp32
             attention, sdpa against eager at head dim 60, and the pose model in bf16 against fp32.

Every timed row gives img/s, TFLOP/s (matmul FLOPs counted by formula: per image
2·(12·d²·N·L + 2·N²·d·L), plus the task head's convolutions), the share of the matmul ceiling measured in the same
run (8192³ on CUDA, 2048³ on CPU, in the run's dtype) and peak memory (CUDA). Size "tiny" is a 2-layer model for
smoke runs and for the pipeline's host-side stages.

  python benchmarks/benchmark.py --device cpu --sizes 0.3b --batch 1 --tasks none --interleave --out cpu.json
  python benchmarks/benchmark.py --device cuda --mode check,inference --sizes 0.3b,2b --compile 0.3b --out gpu.json
  python benchmarks/benchmark.py --report gpu.json cpu.json     # markdown tables of saved runs

On a CUDA machine, `bash benchmarks/run_gpu.sh` runs the GPU steps under one 480 s deadline, together with the
Sapiens-2B ZeRO-3 fine-tuning check (benchmarks/gpu_check_2b_zero3.py); docs/performance.md explains the results.
"""

import argparse
import contextlib
import gc
import importlib.abc
import importlib.machinery
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import ViTConfig, ViTModel

import sapiens_hf
from sapiens_hf import (
    SAPIENS_PRESETS,
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensModel,
)
from sapiens_hf.modeling_sapiens import attention_with_padded_head_dim


SIZES = [name.removeprefix("sapiens-") for name in SAPIENS_PRESETS]  # 0.3b, 0.6b, 1b, 2b
# "tiny": 2 layers and narrow heads, for smoke runs and for timing the pose pipeline's CPU stages (crop, decode), whose
# cost depends on the input size, the number of people and keypoints, not on the backbone.
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "decoder_deconv_channels": [32, 32],
    "decoder_conv_channels": [32],
}
PATCH = 16
# The batches of the peers' H200 figures in docs/performance.md, so that the numbers compare.
CUDA_BATCH = {"0.3b": 16, "0.6b": 8, "1b": 8, "2b": 4}
CUDA_TRAIN_BATCH = {"0.3b": 8, "0.6b": 4, "1b": 4, "2b": 2}
TASKS = {  # name: (class, preset task, num_labels of the released heads)
    "pose": (SapiensForPoseEstimation, "pose", 308),
    "seg": (SapiensForSemanticSegmentation, "segmentation", 28),
    "depth": (SapiensForDepthEstimation, "depth", 1),
    "normal": (SapiensForNormalEstimation, "normal", 3),
}
# Attention variants of our model: (attn_implementation, forced SDPA backend or None for PyTorch's own choice).
ATTENTION = {
    "sdpa": ("sdpa", None),
    "sdpa-flash": ("sdpa", SDPBackend.FLASH_ATTENTION),
    "sdpa-cudnn": ("sdpa", SDPBackend.CUDNN_ATTENTION),
    "sdpa-efficient": ("sdpa", SDPBackend.EFFICIENT_ATTENTION),
    "eager": ("eager", None),
    "flash_attention_2": ("flash_attention_2", None),  # needs the flash-attn package
}
PEERS = ("hf-vit", "timm")


# ---------------------------------------------------------------------------------------------------------------
# FLOPs by formula
# ---------------------------------------------------------------------------------------------------------------


def vit_flops(config: SapiensConfig, tokens: int) -> int:
    """Matmul FLOPs of the transformer blocks for one image (qkv, proj, MLP and both attention products)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    return 2 * (12 * d * d * tokens * layers + 2 * tokens * tokens * d * layers)


def head_flops(config: SapiensConfig, grid: tuple[int, int], out_channels: int) -> int:
    """FLOPs of a decode head for one image: 4×4 stride-2 transposed convs, 1×1 convs, final 1×1 conv."""
    (h, w), channels, flops = grid, config.hidden_size, 0
    for width in config.decoder_deconv_channels:
        flops += 2 * channels * width * 16 * h * w  # each input pixel scatters a 4×4 kernel
        h, w, channels = 2 * h, 2 * w, width
    for width in config.decoder_conv_channels:
        flops += 2 * channels * width * h * w
        channels = width
    return flops + 2 * channels * out_channels * h * w


# ---------------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------------


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty `torchvision` modules, for importing timm where no torchvision matches the installed torch (PyPI has no
    torchvision for the CPU build of torch 2.13). timm imports torchvision at import time only for data loading
    and FrozenBatchNorm; `VisionTransformer` never calls it, so its numbers are timm's own."""

    class _Placeholder(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(cls)(name, (), {})

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torchvision":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def module_getattr(name):
            if name.startswith("__"):
                raise AttributeError(name)
            return self._Placeholder(name, (), {})

        module.__getattr__ = module_getattr
        return module

    def exec_module(self, module):
        pass


def import_timm() -> tuple[type | None, str]:
    """timm's `VisionTransformer` and a note on how it was imported (or why not)."""
    note = ""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001  (absent, or built for another torch: a CUDA wheel fails to register its ops)
        for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.meta_path.insert(0, _TorchvisionStandIn())
        note = " (no usable torchvision here: imported with empty stand-in modules)"
    try:
        import timm
        from timm.models.vision_transformer import VisionTransformer
    except Exception as error:  # noqa: BLE001
        return None, f"timm not importable: {type(error).__name__}: {error}"
    finally:  # nothing imported later may mistake the stand-in for torchvision
        if note:
            sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TorchvisionStandIn)]
            for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
                del sys.modules[name]
    return VisionTransformer, f"timm {timm.__version__}{note}"


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
        self.height, self.width = args.height, args.width
        self.deadline = time.monotonic() + args.budget_s if args.budget_s else math.inf
        self.rows: list[dict] = []
        self.round = 0
        self.timm_vit, timm_note = import_timm() if "timm" in args.peers else (None, "timm not requested")
        ceiling_tflops = self.matmul_ceiling()
        print(f"matmul ceiling ({args.dtype}): {ceiling_tflops:.1f} TFLOP/s; {timm_note}", flush=True)
        self.meta = {
            **machine(),
            "device": args.device,
            "dtype": args.dtype,
            "height": args.height,
            "width": args.width,
            "ceiling_tflops": ceiling_tflops,
            "timm": timm_note,
            "argv": args.argv,
            "statistic": args.statistic,
            "load_avg_1min_at_start": os.getloadavg()[0],
        }

    # -- timing ---------------------------------------------------------------------------------------------------

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def seconds(self, fn: Callable, iters: int | None = None, warmup: int | None = None, wall_clock=False) -> float:
        """Seconds per call: the median on CUDA; on CPU the fastest call (`--statistic`), the one least disturbed by
        other processes on a shared machine. CUDA events time the GPU's work; `wall_clock` times host work instead
        (then `fn` synchronises itself)."""
        iters = iters or self.args.iters
        for _ in range(self.args.warmup if warmup is None else warmup):
            fn()
        times = []
        for _ in range(iters):
            if self.cuda and not wall_clock:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return self.statistic(times)

    def statistic(self, times: list[float]) -> float:
        return min(times) if self.args.statistic == "min" else statistics.median(times)

    def matmul(self) -> tuple[int, Callable]:
        """The square matmul whose speed is the ceiling: its FLOPs and the call."""
        n = 8192 if self.cuda else 2048
        a, b = (torch.randn(n, n, device=self.device, dtype=self.dtype) for _ in range(2))
        return 2 * n**3, lambda: a @ b

    def matmul_ceiling(self) -> float:
        flops, matmul = self.matmul()
        return flops / self.seconds(matmul, iters=10, warmup=3) / 1e12

    def reset_memory(self):
        torch._dynamo.reset()  # compiled graphs of earlier models would keep them alive
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    # -- rows -----------------------------------------------------------------------------------------------------

    def new_row(self, mode, model, variant, size, batch, **extra) -> dict:
        return {
            "mode": mode,
            "model": model,
            "variant": variant,
            "size": size,
            "batch": batch,
            "round": self.round,
            **extra,
        }

    def fail(self, row: dict, error: Exception):
        row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
        self.add(row)
        print(f"{row['mode']:9s} {row['model']:18s} {row['variant']:22s} {row['size']:5s} {row['note']}", flush=True)

    def finish(self, row: dict, seconds: float, flops_per_image: int, peak: bool = True):
        """Completes a timed row: img/s, TFLOP/s, share of the ceiling, peak memory since the last reset."""
        images_per_second = row["batch"] / seconds
        tflops = images_per_second * flops_per_image / 1e12
        row.update(
            seconds_per_batch=seconds,
            img_s=images_per_second,
            tflops=tflops,
            ceiling_pct=100 * tflops / self.meta["ceiling_tflops"],
            peak_gib=torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda and peak else None,
            load_avg_1min=os.getloadavg()[0],
        )
        self.add(row)
        print(
            f"{row['mode']:9s} {row['model']:18s} {row['variant']:22s} {row['size']:5s} bs={row['batch']:<3d} "
            f"{images_per_second:8.2f} img/s {tflops:7.2f} TFLOP/s {row['ceiling_pct']:5.1f}% of ceiling"
            + (f"  peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else ""),
            flush=True,
        )

    def measure(self, mode, model, variant, size, batch, flops_per_image, setup: Callable[[], Callable], **extra):
        """Builds with `setup()`, which returns the step to time (its attribute `extra`, if any, goes into the row),
        times it and appends a row; a failure or a spent budget becomes a row with a note instead of ending the run."""
        row = self.new_row(mode, model, variant, size, batch, **extra)
        if time.monotonic() > self.deadline:
            self.add({**row, "note": "skipped: time budget spent"})
            return
        self.reset_memory()
        try:
            step = setup()
            row.update(getattr(step, "extra", {}))
            seconds = self.seconds(step)
        except Exception as error:  # noqa: BLE001  (a failing variant is a result, e.g. an ineligible kernel)
            self.fail(row, error)
            return
        finally:
            step = None  # release the model before the next one is built
        self.finish(row, seconds, flops_per_image)

    def interleaved(self, mode, size, batch, jobs: list[tuple]):
        """Builds every job `(model, variant, flops_per_image, setup, extra)`, then calls them in turn, one call each
        per turn, so that the changing load of a shared machine slows all of them alike. No peak memory: the models
        are resident together."""
        steps = []
        for model, variant, flops_per_image, setup, extra in jobs:
            row = self.new_row(mode, model, variant, size, batch, **extra)
            try:
                steps.append((row, flops_per_image, setup(), []))
            except Exception as error:  # noqa: BLE001
                self.fail(row, error)
        failed = set()
        matmul_flops, matmul = self.matmul()
        matmul_times = []
        for turn in range(self.args.warmup + self.args.iters):
            start = time.perf_counter()
            matmul()
            self.sync()
            if turn >= self.args.warmup:
                matmul_times.append(time.perf_counter() - start)
            for index, (row, _, step, times) in enumerate(steps):
                if index in failed:
                    continue
                start = time.perf_counter()
                try:
                    step()
                except Exception as error:  # noqa: BLE001
                    failed.add(index)
                    self.fail(row, error)
                self.sync()
                if turn >= self.args.warmup:
                    times.append(time.perf_counter() - start)
        # The ceiling also measured in the turns, under their load: it is the higher of the two.
        in_turns = matmul_flops / self.statistic(matmul_times) / 1e12
        self.meta["ceiling_tflops"] = max(self.meta["ceiling_tflops"], in_turns)
        for index, (row, flops_per_image, _, times) in enumerate(steps):
            if index not in failed:
                row["call_seconds"] = times
                self.finish(row, self.statistic(times), flops_per_image, peak=False)

    def add(self, row: dict):
        """Appends a row and rewrites the JSON, so that a run cut short by a time limit keeps what it measured."""
        self.rows.append(row)
        if self.args.out:
            with open(self.args.out, "w") as file:
                json.dump({"meta": self.meta, "rows": self.rows}, file, indent=1)

    # -- models ---------------------------------------------------------------------------------------------------

    def sapiens_config(self, size: str, task: str | None = None) -> SapiensConfig:
        overrides = {"image_size": [self.height, self.width]}  # native size: no position-table resize
        if task is not None:
            overrides["num_labels"] = self.args.keypoints if task == "pose" else TASKS[task][2]
        if size == "tiny":
            size, overrides = "0.3b", {**overrides, **TINY}
        return SapiensConfig.from_preset(size, task=TASKS[task][1] if task else None, **overrides)

    def sapiens(self, size: str, task: str | None = None, attn_implementation: str = "sdpa", dtype=None):
        model_class = TASKS[task][0] if task else SapiensModel
        with torch.device(self.device):
            model = model_class._from_config(
                self.sapiens_config(size, task), attn_implementation=attn_implementation, dtype=dtype or self.dtype
            )
        return model.eval()

    def hf_vit(self, size: str, dtype=None) -> ViTModel:
        ours = self.sapiens_config(size)
        config = ViTConfig(
            hidden_size=ours.hidden_size,
            num_hidden_layers=ours.num_hidden_layers,
            num_attention_heads=ours.num_attention_heads,
            intermediate_size=ours.intermediate_size,
            image_size=[self.height, self.width],
            patch_size=PATCH,
            layer_norm_eps=1e-6,
        )
        with torch.device(self.device):
            model = ViTModel._from_config(
                config, attn_implementation="sdpa", dtype=dtype or self.dtype, add_pooling_layer=False
            )
        return model.eval()

    def timm(self, size: str, dtype=None):
        ours = self.sapiens_config(size)
        with torch.device(self.device):
            model = self.timm_vit(
                img_size=(self.height, self.width),
                patch_size=PATCH,
                embed_dim=ours.hidden_size,
                depth=ours.num_hidden_layers,
                num_heads=ours.num_attention_heads,
                mlp_ratio=ours.intermediate_size / ours.hidden_size,
                class_token=False,
                global_pool="",
                num_classes=0,
            )
        return model.to(dtype or self.dtype).eval()

    def pixels(self, batch: int, dtype=None) -> torch.Tensor:
        return torch.randn(batch, 3, self.height, self.width, device=self.device, dtype=dtype or self.dtype)

    def tokens(self) -> int:
        return (self.height // PATCH) * (self.width // PATCH)

    def grid(self) -> tuple[int, int]:
        return self.height // PATCH, self.width // PATCH

    def flops(self, size: str, task: str | None = None) -> int:
        """FLOPs per image of our backbone (= the peers', at the same dims) or of a task model."""
        config = self.sapiens_config(size, task)
        flops = vit_flops(config, self.tokens())
        if task is not None:
            flops += head_flops(config, self.grid(), TASKS[task][0].head_out_channels(config))
        return flops

    # -- modes ----------------------------------------------------------------------------------------------------

    def inference(self, size: str, batch: int):
        """Our backbone's attention variants, the peers and the task models: one after another, or interleaved."""
        args = self.args
        x = self.pixels(batch)
        backbone_flops = self.flops(size)

        def timed(model, call):
            def step():
                with torch.inference_mode():
                    return call(model)

            return step

        def ours(implementation, backend, task=None, head_format="contiguous"):
            def setup():
                model = self.sapiens(size, task, attn_implementation=implementation)
                if head_format == "channels_last":  # NHWC weights: cuDNN then runs the head's convs in NHWC
                    model.decode_head.to(memory_format=torch.channels_last)

                def call(m):
                    with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
                        return m(pixel_values=x)

                return timed(model, call)

            return setup

        jobs = [("sapiens-backbone", name, backbone_flops, ours(*ATTENTION[name]), {}) for name in args.attention]
        if "hf-vit" in args.peers:
            setup = lambda: timed(self.hf_vit(size), lambda m: m(pixel_values=x))  # noqa: E731
            jobs.append(("hf-vit", "sdpa", backbone_flops, setup, {}))
        if "timm" in args.peers:
            if self.timm_vit is None:
                self.add(self.new_row("inference", "timm", "sdpa", size, batch, note=self.meta["timm"]))
            else:
                setup = lambda: timed(self.timm(size), lambda m: m(x))  # noqa: E731
                jobs.append(("timm", "sdpa", backbone_flops, setup, {"note": self.meta["timm"]}))
        for task in args.tasks:
            for head_format in args.head_formats:
                variant = "sdpa" if head_format == "contiguous" else "sdpa, channels_last head"
                jobs.append(
                    (f"sapiens-{task}", variant, self.flops(size, task), ours("sdpa", None, task, head_format), {})
                )

        if args.interleave:  # compiled models join the turns, with the first attention variant
            if size in args.compile:
                jobs += self.compiled_jobs(size, x, args.attention[0] if args.attention else "sdpa")
            self.interleaved("inference", size, batch, jobs)
        else:
            for model, variant, flops_per_image, setup, extra in jobs:
                self.measure("inference", model, variant, size, batch, flops_per_image, setup, **extra)

    def inference_compiled(self, size: str, batch: int):
        """torch.compile'd models after all eager rows (compiling takes longer than measuring), with the SDPA variant
        that was fastest for the eager backbone at this size."""
        eager = [
            row
            for row in self.rows
            if row["mode"] == "inference"
            and row["model"] == "sapiens-backbone"
            and row["size"] == size
            and row["variant"] in ATTENTION
            and ATTENTION[row["variant"]][0] == "sdpa"
            and "img_s" in row
        ]
        variant = max(eager, key=lambda row: row["img_s"])["variant"] if eager else "sdpa"
        for job in self.compiled_jobs(size, self.pixels(batch), variant):
            model, variant, flops_per_image, setup, extra = job
            self.measure("inference", model, variant, size, batch, flops_per_image, setup, **extra)

    def compiled_jobs(self, size: str, x: torch.Tensor, variant: str) -> list[tuple]:
        """Jobs for the compiled backbone (and pose model; ViTModel with --compile-peers) with SDPA `variant`."""
        backend = ATTENTION[variant][1]

        def call(m):
            with sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext():
                return m(pixel_values=x)[0]

        jobs = [
            (
                f"sapiens-{task or 'backbone'}",
                f"{variant}+compile",
                self.flops(size, task),
                lambda task=task: self.compiled(self.sapiens(size, task), call),
                {},
            )
            for task in ([None, "pose"] if "pose" in self.args.tasks else [None])
        ]
        if self.args.compile_peers and "hf-vit" in self.args.peers:
            setup = lambda: self.compiled(self.hf_vit(size), lambda m: m(pixel_values=x)[0])  # noqa: E731
            jobs.append(("hf-vit", "sdpa+compile", self.flops(size), setup, {}))
        return jobs

    def compiled(self, model, call: Callable) -> Callable:
        """Compiles (fullgraph: a graph break fails the row) and records compile time and the deviation from eager."""
        with torch.inference_mode():
            expected = call(model).float()
            compiled = torch.compile(model, fullgraph=True)
            began = time.monotonic()
            actual = call(compiled).float()
            self.sync()
            compile_seconds = time.monotonic() - began
        deviation = ((actual - expected).abs().max() / expected.abs().max()).item()
        print(
            f"  compiled in {compile_seconds:.0f}s, max |compiled - eager| / max |eager| = {deviation:.2e}", flush=True
        )

        def step():
            with torch.inference_mode():
                return call(compiled)

        step.extra = {"compile_s": compile_seconds, "max_rel_diff_vs_eager": deviation}
        return step

    def train(self, size: str, batch: int):
        checkpointing = size == "2b" or self.args.checkpointing
        x = self.pixels(batch, dtype=torch.float32)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

        def setup_step(model, loss_of):
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=self.cuda)

            def step():
                with autocast:
                    loss = loss_of(model)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            return step

        def ours(task):
            def setup():
                model = self.sapiens(size, task, dtype=torch.float32)
                if checkpointing:
                    model.gradient_checkpointing_enable()
                if task == "pose":
                    config = model.config
                    labels = torch.rand(batch, config.num_labels, self.height // 4, self.width // 4, device=self.device)
                    return setup_step(model, lambda m: m(pixel_values=x, labels=labels).loss)
                return setup_step(model, lambda m: m(pixel_values=x).last_hidden_state.float().pow(2).mean())

            return setup

        variant = ("bf16-autocast" if self.dtype == torch.bfloat16 else "fp32") + ("+ckpt" if checkpointing else "")
        self.measure("train", "sapiens-backbone", variant, size, batch, 3 * self.flops(size), ours(None))
        if "pose" in self.args.tasks:
            self.measure("train", "sapiens-pose", variant, size, batch, 3 * self.flops(size, "pose"), ours("pose"))
        if "hf-vit" in self.args.peers:

            def setup():
                model = self.hf_vit(size, dtype=torch.float32)
                if checkpointing:
                    model.gradient_checkpointing_enable()
                return setup_step(model, lambda m: m(pixel_values=x).last_hidden_state.float().pow(2).mean())

            self.measure("train", "hf-vit", variant, size, batch, 3 * self.flops(size), setup)

    def pipeline(self, size: str, batch: int):
        """Top-down pose on one 1920×1080 photo with `batch` people: crop + model + decode, each timed apart."""
        row = self.new_row("pipeline", "sapiens-pose", "sdpa", size, batch)
        try:
            from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
        except ImportError as error:
            self.add({**row, "note": f"skipped: no image processor yet ({error})"})
            print(f"pipeline  {row['note']}", flush=True)
            return
        if time.monotonic() > self.deadline:
            self.add({**row, "note": "skipped: time budget spent"})
            return
        processor = SapiensImageProcessorPil()
        model = self.sapiens(size, "pose")
        image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
        boxes = [[[40 + 110 * i % 1700, 60 + 37 * i % 400, 180, 520] for i in range(batch)]]  # COCO xywh, per image
        state = {}

        def crop():
            inputs = processor(images=[image], boxes=boxes, return_tensors="pt")
            state["pixel_values"] = inputs["pixel_values"].to(self.device, self.dtype)
            self.sync()

        def forward():
            with torch.inference_mode():
                state["outputs"] = model(pixel_values=state["pixel_values"])
            self.sync()

        def decode():
            state["results"] = processor.post_process_pose_estimation(state["outputs"], boxes=boxes)

        try:
            stage_ms = {}
            for name, fn in (("crop", crop), ("model", forward), ("decode", decode)):
                stage_ms[name] = 1e3 * self.seconds(fn, wall_clock=True)  # crop and decode run on the host
        except Exception as error:  # noqa: BLE001
            self.fail(row, error)
            return
        outside = stage_ms["crop"] + stage_ms["decode"]
        row.update(
            {f"{name}_ms": ms for name, ms in stage_ms.items()},
            img_s=1e3 * batch / (outside + stage_ms["model"]),
            overhead_pct_of_model=100 * outside / stage_ms["model"],
            keypoints=self.args.keypoints,
        )
        self.add(row)
        print(
            f"pipeline  sapiens-pose {size} bs={batch} crop {stage_ms['crop']:.1f} ms, model {stage_ms['model']:.1f} "
            f"ms, decode {stage_ms['decode']:.1f} ms: outside the model {row['overhead_pct_of_model']:.1f}% of model",
            flush=True,
        )

    def check(self):
        """Fast paths on this device against their plain counterparts, at the 2B's head dim."""
        heads, tokens, head_dim = 32, self.tokens(), 60
        q, k, v = (torch.randn(1, heads, tokens, head_dim, device=self.device, dtype=self.dtype) for _ in range(3))
        with sdpa_kernel([SDPBackend.MATH]):
            reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=head_dim**-0.5)
        sdpa = transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS["sdpa"]
        module = types.SimpleNamespace(is_causal=False, training=False)
        kwargs = {"scaling": head_dim**-0.5, "dropout": 0.0}
        cases = {"unpadded, PyTorch's choice": (None, False), "unpadded, math": (SDPBackend.MATH, False)}
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            cases[f"padded to 64, {name}"] = (backend, True)
        cases["padded to 64, PyTorch's choice"] = (None, True)
        for name, (backend, padded) in cases.items():
            context = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()

            def attend(padded=padded):
                if padded:
                    return attention_with_padded_head_dim(sdpa, module, q, k, v, **kwargs)[0]
                return sdpa(module, q, k, v, None, **kwargs)[0]

            row = self.new_row("check", "attention 32×60", name, "2b", 1)
            try:
                with context:
                    output = attend().transpose(1, 2)
                    row["ms"] = 1e3 * self.seconds(attend)
                row["max_abs_err_vs_fp32"] = (output.float() - reference).abs().max().item()
            except Exception as error:  # noqa: BLE001  (an ineligible kernel is a finding)
                row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            self.add(row)
            print(f"check     {name:32s} {row}", flush=True)

        # SapiensAttention's own wiring (on CUDA it pads; the scale must stay 60^-0.5): a 2-layer model with head dim
        # 60 in the run's dtype with sdpa against eager attention in fp32, same weights.
        def head_dim_60_model(attn_implementation, dtype):  # a config each: _from_config sets the implementation
            config = SapiensConfig(
                hidden_size=120,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=480,
                image_size=[self.height, self.width],
            )
            return SapiensModel._from_config(config, attn_implementation=attn_implementation, dtype=dtype).eval()

        with torch.device(self.device):
            eager, fast = head_dim_60_model("eager", torch.float32), head_dim_60_model("sdpa", self.dtype)
        fast.load_state_dict(eager.state_dict())
        x = self.pixels(2, dtype=torch.float32)
        with torch.inference_mode():
            expected = eager(pixel_values=x).last_hidden_state
            actual = fast(pixel_values=x.to(self.dtype)).last_hidden_state.float()
        deviation = ((actual - expected).abs().max() / expected.abs().max()).item()
        variant = f"sdpa {self.args.dtype} vs eager fp32"
        self.add(self.new_row("check", "tiny backbone, head dim 60", variant, "-", 2, max_rel_diff=deviation))
        print(f"check     tiny model head dim 60, sdpa {self.args.dtype} vs eager fp32: {deviation:.2e}", flush=True)

        # The whole pose model in the run's dtype against fp32 with the same weights (random), at the first size.
        size = self.args.sizes[0]
        model32 = self.sapiens(size, "pose", dtype=torch.float32)
        x = self.pixels(2, dtype=torch.float32)
        with torch.inference_mode():
            expected = model32(pixel_values=x).heatmaps
            low = model32.to(self.dtype)(pixel_values=x.to(self.dtype)).heatmaps.float()
        deviation = ((low - expected).abs().max() / expected.abs().max()).item()
        self.add(self.new_row("check", "sapiens-pose", f"{self.args.dtype} vs fp32", size, 2, max_rel_diff=deviation))
        print(f"check     pose {size} {self.args.dtype} vs fp32: max |diff| / max |fp32| = {deviation:.2e}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sapiens_hf": sapiens_hf.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    with contextlib.suppress(OSError):
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5)
        info["commit"] = commit.stdout.strip() or None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def best_rows(rows: list[dict]) -> list[dict]:
    """One row per measurement (mode, model, variant, size, batch): the fastest of its rounds, with `rounds` set."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = tuple(row.get(k) for k in ("mode", "model", "variant", "size", "batch"))
        kept = best.get(key)
        rounds = (kept or {}).get("rounds", 0) + 1
        if kept is None or row.get("img_s", 0) > kept.get("img_s", 0):
            kept = row
        best[key] = {**kept, "rounds": rounds}
    return list(best.values())


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"### {meta.get('gpu') or meta['cpu']} — {meta['device']}, {meta['dtype']}, {meta['height']}×{meta['width']}",
        "",
        f"torch {meta['torch']}, transformers {meta['transformers']}, {meta['timm']}, {meta['cpu_threads']} CPU "
        f"threads, {meta['date']}; measured matmul ceiling {meta['ceiling_tflops']:.2f} TFLOP/s; per-call time: "
        f"{meta['statistic']} over the timed calls",
        "",
    ]
    rows = best_rows(result["rows"])
    timed = [row for row in rows if row["mode"] in ("inference", "train")]
    if timed:
        speed = {
            (row["mode"], row["model"], row["size"], row["batch"]): row["img_s"]
            for row in timed
            if row["model"] in PEERS and "compile" not in row["variant"] and "img_s" in row
        }
        lines += [
            "| mode | model | variant | size | batch | img/s | TFLOP/s | % of ceiling | peak GiB | × hf-vit | × timm "
            "| note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in timed:
            cells = [row["mode"], row["model"], row.get("variant", ""), row["size"], row.get("batch", "")]
            if "img_s" in row:
                cells += [
                    f"{row['img_s']:.3g}",
                    f"{row['tflops']:.3g}",
                    f"{row['ceiling_pct']:.0f}%",
                    f"{row['peak_gib']:.1f}" if row.get("peak_gib") is not None else "–",
                ]
                for peer in PEERS:
                    reference = speed.get((row["mode"], peer, row["size"], row["batch"]))
                    cells.append(f"{row['img_s'] / reference:.2f}" if reference else "–")
            else:
                cells += ["–"] * 6
            notes = [row.get("note", "")]
            if "compile_s" in row:
                notes.append(f"compile {row['compile_s']:.0f}s, rel. diff vs eager {row['max_rel_diff_vs_eager']:.1e}")
            if "call_seconds" in row:
                notes.append("calls (s): " + ", ".join(f"{t:.3g}" for t in row["call_seconds"]))
            if row["rounds"] > 1:
                notes.append(f"best of {row['rounds']} rounds")
            cells.append("; ".join(note for note in notes if note))
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        lines.append("")
    for row in rows:
        if row["mode"] == "pipeline" and "model_ms" in row:
            lines.append(
                f"- pipeline, pose {row['size']}, {row['batch']} people, {row['keypoints']} keypoints: crop "
                f"{row['crop_ms']:.1f} ms + model {row['model_ms']:.1f} ms + decode {row['decode_ms']:.1f} ms — "
                f"outside the model {row['overhead_pct_of_model']:.1f}% of model time"
            )
        elif row["mode"] in ("pipeline", "check"):
            skip = ("mode", "model", "variant", "size", "batch", "round", "rounds")
            details = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k not in skip
            )
            lines.append(f"- {row['mode']}, {row['model']}, {row.get('variant', '')}: {details}")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--mode", default="inference", help="comma-separated: inference, train, pipeline, check")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated of {', '.join(SIZES)}, tiny")
    parser.add_argument(
        "--batch",
        help="one batch for all sizes or one per size (default on CUDA: 16/8/8/4 for 0.3b/0.6b/1b/2b, halved for "
        "training; 1 on CPU)",
    )
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument(
        "--attention",
        help=f"our attention variants, of {', '.join(ATTENTION)} (default: sdpa; on CUDA also sdpa-flash, sdpa-cudnn)",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="task models to time, or 'none'")
    parser.add_argument(
        "--head-formats", default="contiguous", help="task heads' memory formats to time: contiguous, channels_last"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="peers to time, or 'none'")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="all",
        default="",
        help="also time the torch.compile'd backbone (and pose model) at these sizes (comma-separated; default all)",
    )
    parser.add_argument("--compile-peers", action="store_true", help="also time torch.compile'd ViTModel")
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="activation checkpointing in train mode at every size (always for 2b)",
    )
    parser.add_argument("--keypoints", type=int, default=308, help="pose keypoints (308 Goliath, 133, 17)")
    parser.add_argument("--iters", type=int, help="timed iterations (default 10 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default 3 on CUDA, 1 on CPU)")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="inference: build the backbone variants, peers and task models together and call them in turn (fair "
        "comparisons on a shared CPU; no peak memory)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat everything; the report keeps each row's best round"
    )
    parser.add_argument(
        "--statistic", choices=["median", "min"], help="per-call time: default median on CUDA, min on CPU"
    )
    parser.add_argument("--budget-s", type=float, help="start nothing new after this many seconds (rows say skipped)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="print markdown tables of saved results and exit")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.report:
        return args
    cuda = args.device == "cuda"
    args.mode = args.mode.split(",")
    args.sizes = [size.lower() for size in args.sizes.split(",")]
    unknown = set(args.sizes) - {*SIZES, "tiny"}
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {SIZES + ['tiny']}")
    batches = [int(b) for b in args.batch.split(",")] if args.batch else None
    if batches and len(batches) not in (1, len(args.sizes)):
        parser.error("--batch takes one value or one per size")
    args.batches = {
        size: (batches[min(i, len(batches) - 1)] if batches else (CUDA_BATCH.get(size, 2) if cuda else 1))
        for i, size in enumerate(args.sizes)
    }
    args.train_batches = {
        size: (batches[min(i, len(batches) - 1)] if batches else (CUDA_TRAIN_BATCH.get(size, 2) if cuda else 1))
        for i, size in enumerate(args.sizes)
    }
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.attention = (args.attention or ("sdpa,sdpa-flash,sdpa-cudnn" if cuda else "sdpa")).split(",")
    args.attention = [] if args.attention == ["none"] else args.attention
    args.compile = args.sizes if args.compile == "all" else [s for s in args.compile.split(",") if s]
    if set(args.compile) - set(args.sizes):
        parser.error("--compile sizes must be among --sizes")
    args.tasks = [] if args.tasks == "none" else args.tasks.split(",")
    args.peers = [] if args.peers == "none" else args.peers.split(",")
    args.head_formats = args.head_formats.split(",")
    modes = ("inference", "train", "pipeline", "check")
    for name, given, known in (
        ("attention", args.attention, ATTENTION),
        ("tasks", args.tasks, TASKS),
        ("peers", args.peers, PEERS),
        ("mode", args.mode, modes),
        ("head formats", args.head_formats, ("contiguous", "channels_last")),
    ):
        if set(given) - set(known):
            parser.error(f"unknown {name} {sorted(set(given) - set(known))}; choose from {list(known)}")
    args.statistic = args.statistic or ("median" if cuda else "min")
    args.iters = args.iters or (10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        for path in args.report:
            print(markdown(json.load(open(path))))
        return
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # the heads' convolutions: pick the fastest algorithm, as deployments do
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.manual_seed(0)
    bench = Bench(args)
    for bench.round in range(args.rounds):
        for mode in args.mode:
            if mode == "check":
                bench.check()
                continue
            for size in args.sizes:
                if mode == "inference":
                    bench.inference(size, args.batches[size])
                elif mode == "train":
                    bench.train(size, args.train_batches[size])
                else:
                    bench.pipeline(size, args.batches[size])
            if mode == "inference" and not args.interleave:
                for size in args.compile:
                    bench.inference_compiled(size, args.batches[size])
    print(markdown({"meta": bench.meta, "rows": bench.rows}))


if __name__ == "__main__":
    main()
