"""DeepSpeed ZeRO-3 on CPU (gloo) with 1 and 2 ranks: the pose example trains, writes
per-rank ZeRO checkpoints, resumes from them and saves a consolidated model that `from_pretrained` loads, with the
layer-wise LR decay groups intact. Also the CPU dry run of the GPU check script."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, make_pose_data
from safetensors.torch import load_file

from sapiens_hf import SapiensForPoseEstimation


pytest.importorskip("deepspeed")

ENV = dict(
    os.environ,
    DS_ACCELERATOR="cpu",
    # The shm comm op DeepSpeed compiles on every CPU run (~30 s) is built once: into TORCH_EXTENSIONS_DIR where it
    # is set (CI keeps it between runs), else into the repo's ignored cache.
    TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions")),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(ranks: int, config: str, output_dir: Path, max_steps: int, data: tuple, model: Path) -> str:
    """torchrun for 2 ranks, a bare process (rendezvous in the environment) for 1: both lighter than the `deepspeed`
    launcher, whose extra Python processes each import torch and DeepSpeed (docs/training.md uses all three)."""
    annotations, images = data
    port = str(free_port())
    if ranks == 1:
        launcher, env = (
            [sys.executable],
            dict(ENV, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        )
    else:
        launcher, env = (
            [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}"],
            ENV,
        )
    command = [
        *launcher,
        str(REPO_ROOT / "examples" / "run_pose.py"),
        "--deepspeed",
        str(REPO_ROOT / "examples" / "deepspeed" / config),
        "--model_name_or_path",
        str(model),
        "--train_annotation_file",
        str(annotations),
        "--train_image_dir",
        str(images),
        "--validation_annotation_file",
        str(annotations),
        "--validation_image_dir",
        str(images),
        "--output_dir",
        str(output_dir),
        "--do_train",
        "--do_eval",
        "--max_steps",
        str(max_steps),
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "1",
        "--per_device_eval_batch_size",
        "1",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--log_level",
        "info",
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("ranks, config", [(1, "zero3_persistent_params.json"), (2, "zero3.json")])
def test_zero3_trains_saves_resumes_and_consolidates(tmp_path, ranks, config, example_model):
    data = make_pose_data(tmp_path / "data")  # 2 people
    model = example_model("pose")
    output_dir = tmp_path / "out"

    launch(ranks, config, output_dir, max_steps=2, data=data, model=model)
    checkpoint = output_dir / "checkpoint-2"
    shards = sorted(path.name for path in (checkpoint / "global_step2").iterdir())
    assert shards == sorted(
        f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in range(ranks) for kind in ("model", "optim")
    )
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(ranks)  # each rank reads its own share: 1 person per rank and step
    # The layer-wise LR decay groups went through DeepSpeed: initial LRs 5e-4 · 0.85^(L + 1 − depth), L = 2.
    base_lrs = torch.load(checkpoint / "scheduler.pt", weights_only=False)["base_lrs"]
    assert base_lrs == pytest.approx([5e-4 * 0.85 ** (3 - depth) for depth in range(4) for _ in range(2)])

    log = launch(ranks, config, output_dir, max_steps=3, data=data, model=model)
    assert f"Resuming training from {checkpoint}" in log
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]
    assert "eval_AP" in json.loads((output_dir / "eval_results.json").read_text())

    # save_model() gathered the ZeRO-3 shards into one regular checkpoint.
    trained, info = SapiensForPoseEstimation.from_pretrained(output_dir, output_loading_info=True)
    assert not any(info.values())
    initial = load_file(model / "model.safetensors")
    final = load_file(output_dir / "model.safetensors")
    assert final.keys() == initial.keys() and all(final[k].shape == initial[k].shape for k in initial)
    assert any(not torch.equal(final[k], initial[k]) for k in initial)


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "gpu_check_2b_zero3.py"),
        "--tiny",
        "--modes",
        "plain,zero3_persistent_params",
        "--steps",
        "3",
        "--warmup_steps",
        "1",
        "--output_dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command, env=dict(ENV, MASTER_PORT=str(free_port())), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [result["mode"] for result in report["results"]] == ["plain", "zero3_persistent_params"]
    for result in report["results"]:
        assert (
            result["device"] == "cpu" and result["img_s"] > 0 and result["tflops"] > 0 and result["measured_steps"] == 2
        )
    summary = report["summary"]["runs"]["zero3_persistent_params"]
    assert summary["throughput_vs_plain"] > 0 and summary["goal_met"] is None  # no GPU memory figure on CPU
