"""`SapiensFor*.from_pretrained` on Meta's original releases (`.pth`/`.pt2` files, no config.json): a local folder
laid out like an original repo, a file path, and repos served by the loopback fake Hub, with pinned revisions and
verified downloads (truncated or corrupted files give a clear error and are dropped from the cache)."""

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import FakeHub, client_env, run_client
from helpers import ENCODERS, POSE_FILE, save_original
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForPoseEstimation,
    pipeline,
)

from sapiens_hf import (
    SAPIENS_PRESETS,
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForPoseEstimation,
    SapiensImageProcessorPil,
    SapiensModel,
    SapiensPreTrainedModel,
    convert_original_checkpoint,
    metadata,
    releases,
)
from sapiens_hf.convert import TASK_TO_CLASS


def assert_same_weights(a, b):
    assert type(a) is type(b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.fixture
def isolated_table(monkeypatch):
    """A private copy of the released-checkpoint table, so registered test entries do not leak."""
    monkeypatch.setattr(releases, "ORIGINAL_CHECKPOINTS", list(releases.ORIGINAL_CHECKPOINTS))
    return releases.ORIGINAL_CHECKPOINTS


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------


def test_table_covers_every_release_and_lookup_is_unambiguous():
    table = releases.ORIGINAL_CHECKPOINTS
    assert len({(c.repo_id, c.filename) for c in table}) == len(table) == 52
    assert len({c.filename.rsplit("/", 1)[-1] for c in table}) == len(table)  # base names identify files
    pose = releases.find_original("facebook/sapiens-pose-1b")
    assert (pose.filename, pose.task, pose.model_size, pose.score.value) == (
        "sapiens_1b_goliath_best_goliath_AP_639.pth", "pose", "1b", 63.9)
    assert releases.find_original("facebook/sapiens-seg-1b-torchscript").format == "torchscript"
    assert releases.find_original("facebook/sapiens-seg-2b") is None  # withdrawn by Meta
    assert all(c.revision is None and c.sha256 is None for c in table)  # unknown offline: never invented
    with pytest.raises(ValueError, match="filename="):
        releases.find_original("noahcao/sapiens-pose-coco")
    with pytest.raises(ValueError, match="no released file 'AP_640.pth'"):
        releases.find_original("facebook/sapiens-pose-1b", "AP_640.pth")
    coco = releases.find_original("noahcao/sapiens-pose-coco",
                                  "sapiens_2b_coco_wholebody_best_coco_wholebody_AP_745.pth")
    assert coco.label_set == "coco-wholebody-133" and coco.converted_repo == "sapiens-hf/sapiens-pose-coco-wholebody-2b"


def test_docs_table_lists_every_release():
    docs = (Path(__file__).parents[1] / "docs" / "hub.md").read_text()
    for checkpoint in releases.ORIGINAL_CHECKPOINTS:
        assert checkpoint.filename.rsplit("/", 1)[-1] in docs, checkpoint.filename
        assert checkpoint.converted_repo in docs


# ---------------------------------------------------------------------------------------------------------------
# Local folders laid out like an original repo (offline)
# ---------------------------------------------------------------------------------------------------------------


def test_local_original_folder_converts_on_load(tmp_path):
    folder = tmp_path / "sapiens-pose-0.3b"
    save_original(folder / POSE_FILE)
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    expected = convert_original_checkpoint(folder / POSE_FILE, num_attention_heads=2)

    model = SapiensForPoseEstimation.from_pretrained(folder, num_attention_heads=2)
    assert_same_weights(model, expected)
    assert model.config.id2label[0] == "nose" and not model.training
    assert model.name_or_path == model.config.name_or_path == str(folder)  # named after the release, not the cache
    assert_same_weights(SapiensForPoseEstimation.from_pretrained(folder / POSE_FILE, num_attention_heads=2), expected)

    encoder = SapiensModel.from_pretrained(folder, num_attention_heads=2)
    assert torch.equal(encoder.layers[1].mlp.fc2.weight, expected.model.layers[1].mlp.fc2.weight)
    half = SapiensForPoseEstimation.from_pretrained(folder, num_attention_heads=2, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="pose checkpoint"):
        SapiensForDepthEstimation.from_pretrained(folder, num_attention_heads=2)
    model, info = SapiensForPoseEstimation.from_pretrained(folder, num_attention_heads=2, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()  # every stock option works


def test_an_original_is_converted_once_then_loaded_with_every_from_pretrained_option(tmp_path, isolated_table,
                                                                                      monkeypatch):
    """The first load verifies (hashes) the file once and converts it once into a cached folder; later loads are
    transformers' own `from_pretrained` on that folder: dtype, device_map, the meta device, attention backends."""
    from sapiens_hf import convert

    data = save_original(tmp_path / "release" / POSE_FILE)
    pinned = releases.find_original("facebook/sapiens-pose-0.3b")
    releases.register_original_checkpoint(dataclasses.replace(pinned, sha256=hashlib.sha256(data).hexdigest(),
                                                              file_size=len(data)))
    hashed, read = [], []
    monkeypatch.setattr(releases, "file_sha256", lambda path: hashed.append(path) or hashlib.sha256(data).hexdigest())
    real_read = convert.load_original_state_dict
    monkeypatch.setattr(convert, "load_original_state_dict", lambda path: read.append(path) or real_read(path))
    expected = SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)
    assert (len(hashed), len(read)) == (1, 1)

    half = SapiensForPoseEstimation.from_pretrained(tmp_path / "release", device_map="cpu", dtype=torch.bfloat16)
    assert (half.dtype, half.device.type) == (torch.bfloat16, "cpu")
    assert all(torch.equal(value, expected.state_dict()[key].bfloat16()) for key, value in half.state_dict().items())
    meta = SapiensForPoseEstimation.from_pretrained(tmp_path / "release", device_map="meta")
    assert {parameter.device.type for parameter in meta.parameters()} == {"meta"}
    sdpa = AutoModelForPoseEstimation.from_pretrained(tmp_path / "release", attn_implementation="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    assert (len(hashed), len(read)) == (1, 1)  # none of these hashed or converted anything again

    folder = releases.converted_folder(tmp_path / "release")
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "source.json"]
    assert json.loads((folder / "source.json").read_text())["file"] == POSE_FILE


def test_an_encoder_converted_for_a_task_gets_a_new_head_at_load(tmp_path):
    """A pretrain (encoder-only) release loaded into a task class: the cached folder holds the encoder in the task's
    layout and no head, so head settings such as num_labels are chosen at load time."""
    from golden_utils import load_golden

    checkpoint = tmp_path / "sapiens_tiny_epoch_1_clean.pth"
    torch.save(load_golden("case2_pretrain_checkpoint.safetensors"), checkpoint)
    pose = SapiensForPoseEstimation.from_pretrained(checkpoint, num_attention_heads=2, num_labels=5)
    assert pose.config.num_labels == 5 and pose.config.patch_embed_padding == 2 and not pose.config.use_cls_token
    encoder = SapiensModel.from_pretrained(checkpoint, num_attention_heads=2)
    assert encoder.config.use_cls_token  # its own layout: CLS token and the 64×64 pretraining grid
    folder = releases.converted_folder(checkpoint, "pose")
    assert not any(key.startswith("decode_head.") for key in load_file(folder / "model.safetensors"))


def test_folder_with_several_checkpoints_asks_for_a_file_and_hf_folders_load_as_usual(tmp_path):
    save_original(tmp_path / "a" / "one.pth")
    save_original(tmp_path / "a" / "two.pth", seed=1)
    with pytest.raises(ValueError, match="several checkpoints"):
        SapiensForPoseEstimation.from_pretrained(tmp_path / "a", num_attention_heads=2)
    converted = SapiensForPoseEstimation.from_pretrained(tmp_path / "a" / "two.pth", num_attention_heads=2)
    converted.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "stray.pth").write_bytes(b"not a checkpoint")  # ignored: config.json wins
    assert_same_weights(SapiensForPoseEstimation.from_pretrained(tmp_path / "hf"), converted)


def test_local_file_of_a_pinned_release_is_verified(tmp_path, isolated_table):
    data = save_original(tmp_path / "release" / POSE_FILE)
    pinned = releases.find_original("facebook/sapiens-pose-0.3b")
    releases.register_original_checkpoint(dataclasses.replace(pinned, sha256=hashlib.sha256(data).hexdigest(),
                                                         file_size=len(data)))
    SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)
    (tmp_path / "release" / POSE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(releases.CorruptedCheckpointError, match="truncated"):
        SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "release" / POSE_FILE).write_bytes(bytes(flipped))
    with pytest.raises(releases.CorruptedCheckpointError, match="sha256"):
        SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)


def test_bfloat16_export_repos_are_refused_with_a_pointer_to_the_original():
    with pytest.raises(ValueError, match="facebook/sapiens-normal-2b"):
        SapiensForPoseEstimation.from_pretrained("facebook/sapiens-normal-2b-bfloat16")


# ---------------------------------------------------------------------------------------------------------------
# Plain transformers calls: AutoConfig, AutoImageProcessor, Auto model classes, pipeline() (offline)
# ---------------------------------------------------------------------------------------------------------------


def released_layout(checkpoint: releases.OriginalCheckpoint) -> dict:
    """Meta tensors with the key names and shapes of a released file (facebookresearch/sapiens, `pose/configs/sapiens_pose/`): nothing allocated."""

    def empty(*shape):
        return torch.empty(shape, device="meta")

    preset = SAPIENS_PRESETS[f"sapiens-{checkpoint.model_size}"]
    width, depth = preset["hidden_size"], preset["num_hidden_layers"]
    pretrain = checkpoint.task == "pretraining"
    prefix = "" if pretrain else "backbone."
    weights = {"patch_embed.projection.weight": empty(width, 3, 16, 16), "patch_embed.projection.bias": empty(width),
               "pos_embed": empty(1, 64 * 64 + 1 if pretrain else 64 * 48, width),
               "ln1.weight": empty(width), "ln1.bias": empty(width)}
    if pretrain:
        weights["cls_token"] = empty(1, 1, width)
    for i in range(depth):
        weights.update({f"layers.{i}.{name}": empty(*shape) for name, shape in [
            ("ln1.weight", (width,)), ("ln1.bias", (width,)), ("ln2.weight", (width,)), ("ln2.bias", (width,)),
            ("attn.qkv.weight", (3 * width, width)), ("attn.qkv.bias", (3 * width,)),
            ("attn.proj.weight", (width, width)), ("attn.proj.bias", (width,)),
            ("ffn.layers.0.0.weight", (4 * width, width)), ("ffn.layers.0.0.bias", (4 * width,)),
            ("ffn.layers.1.weight", (width, 4 * width)), ("ffn.layers.1.bias", (width,))]})
    weights = {prefix + key: value for key, value in weights.items()}
    if pretrain:
        return weights
    # (head prefix, deconv stages, conv stages, channels, outputs)
    head_prefix, deconvs, convs, channels, outputs = {
        "pose": ("head", 2, 2, 768, int((checkpoint.label_set or "-0").rsplit("-", 1)[1])),
        "segmentation": ("decode_head", 3, 3, 768, 28),
        "depth": ("decode_head", 4, 2, 384, 1),
        "normal": ("decode_head", 3, 3, 768, 3),
    }[checkpoint.task]
    for stage in range(deconvs):
        weights[f"{head_prefix}.deconv_layers.{3 * stage}.weight"] = empty(width if stage == 0 else channels,
                                                                             channels, 4, 4)
    for stage in range(convs):
        weights[f"{head_prefix}.conv_layers.{3 * stage}.weight"] = empty(channels, channels, 1, 1)
        weights[f"{head_prefix}.conv_layers.{3 * stage}.bias"] = empty(channels)
    final = "final_layer" if checkpoint.task == "pose" else "conv_seg"
    weights[f"{head_prefix}.{final}.weight"] = empty(outputs, channels, 1, 1)
    weights[f"{head_prefix}.{final}.bias"] = empty(outputs)
    return weights


def test_table_configs_equal_the_configs_of_the_released_weights():
    """The table's config of each release (for listings and cards, nothing downloaded) must be the config the
    conversion builds from the released file's weights (same layout, shapes only)."""
    from sapiens_hf.convert import _config_from_weights, _detect_task, _split_original

    for checkpoint in releases.ORIGINAL_CHECKPOINTS:
        encoder, head, decoder = _split_original(released_layout(checkpoint))
        task = _detect_task(head, decoder)
        from_weights = _config_from_weights(encoder, head, decoder, task, task, {})
        from_table = releases.original_config(checkpoint)
        assert from_table.architectures == [TASK_TO_CLASS[task].__name__], checkpoint
        from_table.architectures = None
        assert from_table.to_dict() == {**from_weights.to_dict(), "_name_or_path": checkpoint.repo_id}, checkpoint
    pose = releases.original_config(releases.find_original("facebook/sapiens-pose-1b"))
    assert (pose.hidden_size, pose.num_labels, pose.id2label[0]) == (1536, 308, "nose")
    assert pose.flip_pairs == metadata.flip_pairs(308) and pose.name_or_path == "facebook/sapiens-pose-1b"
    seg = releases.original_config(releases.find_original("facebook/sapiens-seg-0.3b"))
    assert seg.id2label[1] == "Apparel" and seg.class_weights[0] == 0.1
    # Which file of a multi-file repo, and the bf16 exports, are settled before anything is downloaded.
    with pytest.raises(ValueError, match="filename="):
        AutoConfig.from_pretrained("noahcao/sapiens-pose-coco")
    with pytest.raises(ValueError, match="load facebook/sapiens-depth-1b "):
        AutoConfig.from_pretrained("facebook/sapiens-depth-1b-bfloat16")


def test_auto_classes_and_pipelines_load_a_local_original_folder(tmp_path):
    folder = tmp_path / "sapiens-pose-0.3b"
    save_original(folder / POSE_FILE)
    expected = convert_original_checkpoint(folder / POSE_FILE, num_attention_heads=2)

    config = AutoConfig.from_pretrained(folder, num_attention_heads=2)  # the converted checkpoint's config
    assert (config.hidden_size, config.num_labels, config.name_or_path) == (32, 17, str(folder))
    assert type(AutoImageProcessor.from_pretrained(folder)) is SapiensImageProcessorPil  # converted already
    assert_same_weights(AutoModelForPoseEstimation.from_pretrained(folder, num_attention_heads=2), expected)
    assert_same_weights(AutoModel.from_pretrained(folder, num_attention_heads=2), expected.model)
    with pytest.raises(ValueError, match="pose checkpoint"):
        AutoModelForDepthEstimation.from_pretrained(folder, num_attention_heads=2)

    image = np.random.RandomState(0).randint(0, 256, (80, 60, 3), dtype=np.uint8)
    reference = pipeline("sapiens-pose", model=expected, image_processor=SapiensImageProcessorPil())(image,
                                                                                                     detector=None)
    for model in (folder, str(folder / POSE_FILE)):
        pose = pipeline("sapiens-pose", model=model, model_kwargs={"num_attention_heads": 2}, dtype=torch.float32)
        assert type(pose.image_processor) is SapiensImageProcessorPil
        assert_same_weights(pose.model, expected)
        torch.testing.assert_close(pose(image, detector=None)[0]["keypoints"], reference[0]["keypoints"], rtol=0,
                                   atol=0)

    # A file that is not a released one: its config comes from its weights.
    save_original(tmp_path / "finetuned" / "mine.pth", seed=3, task="depth")
    config = AutoConfig.from_pretrained(tmp_path / "finetuned", num_attention_heads=2)
    assert (config.hidden_size, config.architectures) == (32, ["SapiensForDepthEstimation"])
    depth = pipeline("sapiens-depth", model=str(tmp_path / "finetuned"), model_kwargs={"num_attention_heads": 2})
    assert_same_weights(AutoModelForDepthEstimation.from_pretrained(tmp_path / "finetuned", num_attention_heads=2),
                        depth.model)  # the heads, consumed by AutoConfig, reach the conversion through the config
    assert_same_weights(depth.model, convert_original_checkpoint(tmp_path / "finetuned" / "mine.pth",
                                                                 num_attention_heads=2))
    assert depth(image, mask=False)["predicted_depth"].shape == (80, 60)


def test_a_config_passed_for_an_original_overrides_what_it_changes(tmp_path):
    save_original(tmp_path / POSE_FILE)
    config = AutoConfig.from_pretrained(tmp_path, num_attention_heads=2)
    unchanged = SapiensForPoseEstimation.from_pretrained(tmp_path, config=config)
    assert_same_weights(unchanged, convert_original_checkpoint(tmp_path / POSE_FILE, num_attention_heads=2))
    config.image_size, config.decoder_dropout = [512, 384], 0.0
    changed = SapiensForPoseEstimation.from_pretrained(tmp_path, config=config)
    assert changed.config.image_size == [512, 384] and changed.config.decoder_dropout == 0.0
    assert changed.config.hidden_size == 32  # the weights' own dimensions are kept
    with pytest.raises(TypeError, match="positional"):
        SapiensForPoseEstimation.from_pretrained(tmp_path, config, num_attention_heads=2)


def test_other_names_reach_transformers_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("SAPIENS_HF_CACHE", str(tmp_path / "cache"))
    converted = tmp_path / "converted"
    SapiensForDepthEstimation(SapiensConfig(**ENCODERS["tiny"])).save_pretrained(converted)
    SapiensImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(converted)
    save_original(converted / "stray" / POSE_FILE)  # ignored: config.json / preprocessor_config.json win
    assert AutoConfig.from_pretrained(converted).hidden_size == 32
    assert AutoImageProcessor.from_pretrained(converted).size == {"height": 64, "width": 48}
    with pytest.raises(OSError):
        AutoConfig.from_pretrained(tmp_path / "missing")
    hooked = (AutoConfig, AutoImageProcessor, SapiensPreTrainedModel)
    methods = {cls: inspect.getattr_static(cls, "from_pretrained").__func__ for cls in hooked}
    assert all(method.__sapiens_hf_hook__ and "sapiens_hf" in method.__doc__ for method in methods.values())
    releases.install_hooks()  # idempotent: no second wrapper
    assert all(inspect.getattr_static(cls, "from_pretrained").__func__ is method for cls, method in methods.items())
    assert not list((tmp_path / "cache").glob("*"))  # nothing was converted for these names


# ---------------------------------------------------------------------------------------------------------------
# Through the loopback Hub
# ---------------------------------------------------------------------------------------------------------------

CLIENT = """
import dataclasses, json, os
from pathlib import Path
from sapiens_hf import SapiensForPoseEstimation, hub, releases

def weights(model):
    return {k: v.double().sum().item() for k, v in model.state_dict().items()}

def attempt(repo, **kwargs):
    try:
        SapiensForPoseEstimation.from_pretrained(repo, num_attention_heads=2, **kwargs)
        return "loaded"
    except OSError as error:  # CorruptedCheckpointError is an OSError
        return f"{type(error).__name__}: {error}"

def cached(repo):
    blobs = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}" / "blobs"
    return sorted(p.name for p in blobs.glob("*"))
"""


def weight_sums(path) -> dict:
    model = convert_original_checkpoint(path, num_attention_heads=2)
    return {k: v.double().sum().item() for k, v in model.state_dict().items()}


@pytest.fixture
def fake_hub():
    with FakeHub() as server:
        yield server


def test_original_repo_through_the_hub_is_pinned_and_converted(fake_hub, tmp_path):
    first = save_original(tmp_path / "v1" / POSE_FILE, seed=0)
    second = save_original(tmp_path / "v2" / POSE_FILE, seed=1)
    old = fake_hub.commit("facebook/sapiens-pose-0.3b", {POSE_FILE: first, "README.md": b"# Sapiens pose 0.3b\n"})
    new = fake_hub.commit("facebook/sapiens-pose-0.3b", {POSE_FILE: second})
    coco = "sapiens_host/pose/checkpoints/sapiens_1b/sapiens_1b_coco_best_coco_AP_821.pth"
    fake_hub.commit("noahcao/sapiens-pose-coco", {coco: first, coco.replace("sapiens_1b", "sapiens_2b"): second})
    out = run_client(CLIENT + f"""
repo = "facebook/sapiens-pose-0.3b"
latest = SapiensForPoseEstimation.from_pretrained(repo, num_attention_heads=2)
from sapiens_hf import convert
work = []  # a second load: one metadata request, no download, no hashing, no conversion
saved = releases.file_sha256, releases.download_original, convert.load_original_state_dict
releases.file_sha256 = lambda path: work.append("hash")
releases.download_original = lambda *args, **kwargs: work.append("download")
convert.load_original_state_dict = lambda path: work.append("convert")
again = SapiensForPoseEstimation.from_pretrained(repo)
assert work == [] and weights(again) == weights(latest), work
releases.file_sha256, releases.download_original, convert.load_original_state_dict = saved
pinned = SapiensForPoseEstimation.from_pretrained(repo, num_attention_heads=2, revision="{old}")
try:
    SapiensForPoseEstimation.from_pretrained("noahcao/sapiens-pose-coco", num_attention_heads=2)
    ambiguous = "loaded"
except ValueError as error:
    ambiguous = str(error)
coco = SapiensForPoseEstimation.from_pretrained(
    "noahcao/sapiens-pose-coco", num_attention_heads=2, filename="sapiens_1b_coco_best_coco_AP_821.pth")
snapshots = Path(os.environ["HF_HUB_CACHE"]).glob("models--facebook--sapiens-pose-0.3b/snapshots/*")
hub.push_to_hub(latest, "tester/finetuned")  # the card names the original as base model
print(json.dumps(dict(latest=weights(latest), pinned=weights(pinned), coco=weights(coco), ambiguous=ambiguous,
                      snapshots=sorted(p.name for p in snapshots))))
""", client_env(fake_hub, tmp_path / "home"), cwd=tmp_path)
    result = json.loads(out.splitlines()[-1])
    assert result["latest"] == weight_sums(tmp_path / "v2" / POSE_FILE)
    assert result["pinned"] == result["coco"] == weight_sums(tmp_path / "v1" / POSE_FILE)
    assert "filename=" in result["ambiguous"]
    assert result["snapshots"] == sorted([old, new])  # each download is pinned to the commit it came from
    card = ModelCard(fake_hub.files("tester/finetuned")["README.md"].decode())
    assert card.data.base_model == "facebook/sapiens-pose-0.3b"


def test_corrupted_or_truncated_downloads_fail_clearly_and_leave_no_file(fake_hub, tmp_path):
    good = save_original(tmp_path / POSE_FILE)
    sha = hashlib.sha256(good).hexdigest()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    for repo, served in [("tester/flipped", bytes(flipped)), ("tester/truncated", good[:-100]),
                         ("facebook/sapiens-pose-0.3b", good)]:
        fake_hub.commit(repo, {POSE_FILE: good})
        fake_hub.tamper(repo, POSE_FILE, served)  # the metadata still announces `good`
    out = run_client(CLIENT + f"""
release = releases.find_original("facebook/sapiens-pose-0.3b")
for mirror in ["tester/flipped", "tester/truncated"]:
    releases.register_original_checkpoint(dataclasses.replace(release, repo_id=mirror))
results = {{repo: [attempt(repo), cached(repo)] for repo in ["tester/flipped", "tester/truncated", release.repo_id]}}
# A table entry that pins another sha256 is refused from the metadata, before anything is downloaded.
releases.register_original_checkpoint(dataclasses.replace(release, sha256="0" * 64))
results["pinned mismatch"] = [attempt(release.repo_id, force_download=True), cached(release.repo_id)]
releases.register_original_checkpoint(dataclasses.replace(release, sha256="{sha}", file_size={len(good)}))
results["pinned match"] = [attempt(release.repo_id), cached(release.repo_id)]
print(json.dumps(results))
""", client_env(fake_hub, tmp_path / "home"), cwd=tmp_path)
    results = json.loads(out.splitlines()[-1])
    flipped_error, flipped_cache = results["tester/flipped"]
    assert flipped_error.startswith("CorruptedCheckpointError") and "has sha256" in flipped_error
    assert flipped_cache == []  # the bad blob was removed, so a retry downloads again
    assert "Consistency check failed" in results["tester/truncated"][0] and results["tester/truncated"][1] == []
    assert results["facebook/sapiens-pose-0.3b"] == ["loaded", [sha]]
    assert "the file on the Hub changed" in results["pinned mismatch"][0]
    assert results["pinned mismatch"][1] == [sha]  # refused before downloading: the cached good file is untouched
    assert results["pinned match"] == ["loaded", [sha]]


@pytest.mark.slow
def test_plain_transformers_calls_and_default_pipelines_on_original_repos(fake_hub, tmp_path):
    """The headline usage against the loopback Hub: `pipeline("sapiens-depth", model="facebook/sapiens-depth-1b")`,
    the Auto classes, the built-in depth pipeline, the default model of `pipeline("sapiens-pose")` and of
    `sapiens-hf predict`, and a revision pin, all on repos that hold only an original `.pth`."""
    depth_file = releases.find_original("facebook/sapiens-depth-1b").filename
    old = fake_hub.commit("facebook/sapiens-depth-1b", {depth_file: save_original(tmp_path / "d0" / depth_file, 0,
                                                                                   task="depth")})
    fake_hub.commit("facebook/sapiens-depth-1b", {depth_file: save_original(tmp_path / "d1" / depth_file, 1,
                                                                             task="depth")})
    fake_hub.commit("facebook/sapiens-pose-0.3b", {POSE_FILE: save_original(tmp_path / "p" / POSE_FILE)})
    photo = tmp_path / "photo.png"
    torch.manual_seed(0)
    import PIL.Image

    PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 60, 3), dtype=np.uint8)).save(photo)
    out = run_client(CLIENT + f"""
import numpy as np, PIL.Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation, pipeline
from sapiens_hf import convert
from sapiens_hf.cli import main
convert.HEADS_BY_WIDTH[32] = 2  # the tiny checkpoints' width counts as a released size

image = PIL.Image.open("{photo}")
depth = pipeline("sapiens-depth", model="facebook/sapiens-depth-1b")
result = depth(image, mask=False)  # the whole map, as the built-in pipeline's
builtin = pipeline("depth-estimation", model="facebook/sapiens-depth-1b")(image)
pinned = pipeline("sapiens-depth", model="facebook/sapiens-depth-1b", revision="{old}")
auto = AutoModelForDepthEstimation.from_pretrained("facebook/sapiens-depth-1b")
config = AutoConfig.from_pretrained("facebook/sapiens-depth-1b")
processor = AutoImageProcessor.from_pretrained("facebook/sapiens-depth-1b")
pose = pipeline("sapiens-pose")  # no model: DEFAULT_MODELS, Meta's 0.3B release
code = main(["predict", "--task", "pose", "{photo}", "--output", "out", "--quiet", "--detector", "none"])
print(json.dumps(dict(
    depth=weights(depth.model), pinned=weights(pinned.model), auto=weights(auto), pose=weights(pose.model),
    classes=[type(depth).__name__, type(depth.image_processor).__name__, type(config).__name__,
             type(processor).__name__, type(pose).__name__],
    config=[config.hidden_size, config.num_hidden_layers], shape=list(result["predicted_depth"].shape),
    same_builtin=bool((builtin["predicted_depth"] == result["predicted_depth"]).all()),
    keypoints=len(pose(image, detector=None)[0]["keypoints"]), cli=code,
    coco=len(json.loads(Path("out/keypoints.json").read_text())["annotations"]),
)))
""", client_env(fake_hub, tmp_path / "home"), cwd=tmp_path)
    result = json.loads(out.splitlines()[-1])
    assert result["classes"] == ["SapiensDepthPipeline", "SapiensImageProcessorPil", "SapiensConfig",
                                 "SapiensImageProcessorPil", "SapiensPosePipeline"]
    assert result["config"] == [32, 2]  # the converted checkpoint's own config
    assert result["depth"] == result["auto"] == weight_sums(tmp_path / "d1" / depth_file)
    assert result["pinned"] == weight_sums(tmp_path / "d0" / depth_file)
    assert result["pose"] == weight_sums(tmp_path / "p" / POSE_FILE)
    assert result["shape"] == [80, 60] and result["same_builtin"] and result["keypoints"] == 17
    assert result["cli"] == 0 and result["coco"] == 1


def test_an_unreachable_hub_is_reported_as_an_oserror(monkeypatch):
    """No network (DNS failure) raises httpx's ConnectError, which is no OSError: the CLI and callers catching
    OSError must still get a clear message instead of a traceback."""
    from huggingface_hub.utils import httpx

    def unreachable(*args, **kwargs):
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(releases, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(releases.constants, "is_offline_mode", lambda: False)
    with pytest.raises(OSError, match="Could not reach the Hugging Face Hub for facebook/sapiens-pose-0.3b"):
        releases.download_original(releases.find_original("facebook/sapiens-pose-0.3b"))
    with pytest.raises(OSError, match="Could not reach the Hugging Face Hub for facebook/sapiens-pose-0.3b"):
        SapiensForPoseEstimation.from_pretrained("facebook/sapiens-pose-0.3b")


def test_a_local_original_replaced_with_its_size_and_modification_time_kept_is_converted_anew(tmp_path):
    """`cp -p`, `rsync -t` and `tar` keep a file's modification time: another checkpoint of the same size copied
    over the converted one with the old time must not be served from the conversion cache as the old one."""
    path = tmp_path / "release" / POSE_FILE
    save_original(path, seed=0)
    first = SapiensForPoseEstimation.from_pretrained(path, num_attention_heads=2)
    stat = path.stat()
    other = tmp_path / "other" / POSE_FILE  # the same tensors and name (torch.save records it), other values
    other.parent.mkdir()
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "state_dict": {key: value + 1 for key, value in checkpoint["state_dict"].items()}}, other)
    assert other.stat().st_size == stat.st_size
    shutil.copyfile(other, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` leaves it
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    second = SapiensForPoseEstimation.from_pretrained(path, num_attention_heads=2)
    assert_same_weights(second, convert_original_checkpoint(other, num_attention_heads=2))
    assert not torch.equal(second.model.layers[0].mlp.fc1.weight, first.model.layers[0].mlp.fc1.weight)


@pytest.mark.parametrize("damage", ["truncated weights", "no config.json", "garbled config.json"])
def test_a_damaged_conversion_cache_entry_is_rebuilt_not_trusted(tmp_path, caplog, damage):
    """A cached conversion cut short (a full disk, a killed copy) or missing a file is converted again with a
    warning naming it, instead of a raw safetensors error (or `Directory not empty`) on every load."""
    path = tmp_path / "release" / POSE_FILE
    save_original(path)
    SapiensForPoseEstimation.from_pretrained(path, num_attention_heads=2)  # converted into the cache
    expected = convert_original_checkpoint(path, num_attention_heads=2)  # in memory (a load maps the cached file)
    folder = releases.converted_folder(path, "pose")
    if damage == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif damage == "no config.json":
        (folder / "config.json").unlink()
    else:
        (folder / "config.json").write_text('{"model_type": "sapi')
    with caplog.at_level("WARNING"):
        model = SapiensForPoseEstimation.from_pretrained(path, num_attention_heads=2)
    assert_same_weights(model, expected)
    assert f"The cached conversion {folder} is damaged" in caplog.text


def test_a_cache_entry_is_renamed_into_place_whole_or_not_at_all(tmp_path):
    """`releases.write_cache_entry`, which writes the conversion cache's and the export cache's entries: an entry is
    filled in a staging folder and renamed into place; a whole entry that a concurrent writer put there first is
    kept, a damaged one replaced; a failing write leaves no entry and no staging folder; a killed run's staging
    folder (a day old) is removed, a running one's is not."""
    from sapiens_hf.releases import STALE_STAGING_S, write_cache_entry

    def damage(entry):
        return None if (entry / "data").is_file() else "no data"

    def writing(text, before=None):
        def write(staging):
            if before is not None:
                before()
            (staging / "data").write_text(text)
            return "entry"
        return write

    def other_writer():  # another process renames its whole entry into place while this one writes
        theirs = tmp_path / ".staging-theirs"
        theirs.mkdir()
        (theirs / "data").write_text("theirs")
        theirs.rename(tmp_path / "entry")

    killed, running = tmp_path / ".staging-killed", tmp_path / ".staging-running"
    for folder in (killed, running):
        folder.mkdir()
    os.utime(killed, (time.time() - 2 * STALE_STAGING_S,) * 2)
    entry = write_cache_entry(tmp_path, writing("ours", before=other_writer), damage, ".staging-")
    assert entry == tmp_path / "entry" and (entry / "data").read_text() == "theirs"
    assert sorted(tmp_path.iterdir()) == [running, entry]  # ours and the killed run's staging folders are gone

    (entry / "data").unlink()  # damaged (e.g. cut short): replaced by the fresh entry
    assert (write_cache_entry(tmp_path, writing("fresh"), damage, ".staging-") / "data").read_text() == "fresh"

    def failing(staging):
        (staging / "data").write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_cache_entry(tmp_path / "new", failing, damage, ".staging-")
    assert list((tmp_path / "new").iterdir()) == []
