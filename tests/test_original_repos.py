"""`SapiensFor*.from_pretrained` on Meta's original releases (`.pth`/`.pt2` files, no config.json): a local folder
laid out like an original repo, a file path, and repos served by the loopback fake Hub, with pinned revisions and
verified downloads (truncated or corrupted files give a clear error and are dropped from the cache)."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub, client_env, run_client
from huggingface_hub import ModelCard

from sapiens_hf import (
    SapiensForDepthEstimation,
    SapiensForPoseEstimation,
    SapiensModel,
    SapiensPreTrainedModel,
    convert_original_checkpoint,
    hub,
)

POSE_FILE = "sapiens_0.3b_goliath_best_goliath_AP_573.pth"  # a released name, tiny weights


def original_pose_state_dict(seed: int = 0, hidden: int = 32, layers: int = 2, keypoints: int = 17) -> dict:
    """A tiny pose checkpoint with the original mmpose key names (sapiens-original.md §2.2)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    weights = {
        "backbone.pos_embed": rand(1, 64 * 48, hidden),
        "backbone.patch_embed.projection.weight": rand(hidden, 3, 16, 16),
        "backbone.patch_embed.projection.bias": rand(hidden),
        "backbone.ln1.weight": rand(hidden),
        "backbone.ln1.bias": rand(hidden),
        "head.deconv_layers.0.weight": rand(hidden, 8, 4, 4),
        "head.deconv_layers.3.weight": rand(8, 8, 4, 4),
        "head.conv_layers.0.weight": rand(8, 8, 1, 1),
        "head.conv_layers.0.bias": rand(8),
        "head.final_layer.weight": rand(keypoints, 8, 1, 1),
        "head.final_layer.bias": rand(keypoints),
    }
    for i in range(layers):
        prefix = f"backbone.layers.{i}."
        weights.update({
            prefix + "ln1.weight": rand(hidden), prefix + "ln1.bias": rand(hidden),
            prefix + "attn.qkv.weight": rand(3 * hidden, hidden), prefix + "attn.qkv.bias": rand(3 * hidden),
            prefix + "attn.proj.weight": rand(hidden, hidden), prefix + "attn.proj.bias": rand(hidden),
            prefix + "ln2.weight": rand(hidden), prefix + "ln2.bias": rand(hidden),
            prefix + "ffn.layers.0.0.weight": rand(2 * hidden, hidden),
            prefix + "ffn.layers.0.0.bias": rand(2 * hidden),
            prefix + "ffn.layers.1.weight": rand(hidden, 2 * hidden), prefix + "ffn.layers.1.bias": rand(hidden),
        })
    return weights


def save_original(path, seed: int = 0) -> bytes:
    """Writes a `.pth` like the released task files (`state_dict` + `meta`) and returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": original_pose_state_dict(seed), "meta": {"epoch": 210}}, path)
    return path.read_bytes()


def assert_same_weights(a, b):
    assert type(a) is type(b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.fixture
def isolated_table(monkeypatch):
    """A private copy of the released-checkpoint table, so registered test entries do not leak."""
    monkeypatch.setattr(hub, "ORIGINAL_CHECKPOINTS", list(hub.ORIGINAL_CHECKPOINTS))
    return hub.ORIGINAL_CHECKPOINTS


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------


def test_table_covers_every_release_and_lookup_is_unambiguous():
    table = hub.ORIGINAL_CHECKPOINTS
    assert len({(c.repo_id, c.filename) for c in table}) == len(table) == 52
    assert len({c.filename.rsplit("/", 1)[-1] for c in table}) == len(table)  # base names identify files
    pose = hub.find_original("facebook/sapiens-pose-1b")
    assert (pose.filename, pose.task, pose.model_size, pose.score.value) == (
        "sapiens_1b_goliath_best_goliath_AP_639.pth", "pose", "1b", 63.9)
    assert hub.find_original("facebook/sapiens-seg-1b-torchscript").format == "torchscript"
    assert hub.find_original("facebook/sapiens-seg-2b") is None  # withdrawn by Meta
    assert all(c.revision is None and c.sha256 is None for c in table)  # unknown offline: never invented
    with pytest.raises(ValueError, match="filename="):
        hub.find_original("noahcao/sapiens-pose-coco")
    with pytest.raises(ValueError, match="no released file 'AP_640.pth'"):
        hub.find_original("facebook/sapiens-pose-1b", "AP_640.pth")
    coco = hub.find_original("noahcao/sapiens-pose-coco", "sapiens_2b_coco_wholebody_best_coco_wholebody_AP_745.pth")
    assert coco.label_set == "coco-wholebody-133" and coco.converted_repo == "sapiens-hf/sapiens-pose-coco-wholebody-2b"


def test_docs_table_lists_every_release():
    docs = (Path(__file__).parents[1] / "docs" / "hub.md").read_text()
    for checkpoint in hub.ORIGINAL_CHECKPOINTS:
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
    assert_same_weights(SapiensPreTrainedModel.from_pretrained(str(folder), num_attention_heads=2), expected)
    assert_same_weights(SapiensForPoseEstimation.from_pretrained(folder / POSE_FILE, num_attention_heads=2), expected)

    encoder = SapiensModel.from_pretrained(folder, num_attention_heads=2)
    assert torch.equal(encoder.layers[1].mlp.fc2.weight, expected.model.layers[1].mlp.fc2.weight)
    half = SapiensForPoseEstimation.from_pretrained(folder, num_attention_heads=2, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="pose checkpoint"):
        SapiensForDepthEstimation.from_pretrained(folder, num_attention_heads=2)
    with pytest.raises(TypeError, match="output_loading_info"):
        SapiensForPoseEstimation.from_pretrained(folder, num_attention_heads=2, output_loading_info=True)


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
    pinned = hub.find_original("facebook/sapiens-pose-0.3b")
    hub.register_original_checkpoint(dataclasses.replace(pinned, sha256=hashlib.sha256(data).hexdigest(),
                                                         file_size=len(data)))
    SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)
    (tmp_path / "release" / POSE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(hub.CorruptedCheckpointError, match="truncated"):
        SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "release" / POSE_FILE).write_bytes(bytes(flipped))
    with pytest.raises(hub.CorruptedCheckpointError, match="sha256"):
        SapiensForPoseEstimation.from_pretrained(tmp_path / "release", num_attention_heads=2)


def test_bfloat16_export_repos_are_refused_with_a_pointer_to_the_original():
    with pytest.raises(ValueError, match="facebook/sapiens-normal-2b"):
        SapiensForPoseEstimation.from_pretrained("facebook/sapiens-normal-2b-bfloat16")


# ---------------------------------------------------------------------------------------------------------------
# Through the loopback Hub
# ---------------------------------------------------------------------------------------------------------------

CLIENT = """
import dataclasses, json, os
from pathlib import Path
from sapiens_hf import SapiensForPoseEstimation, hub

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
release = hub.find_original("facebook/sapiens-pose-0.3b")
for mirror in ["tester/flipped", "tester/truncated"]:
    hub.register_original_checkpoint(dataclasses.replace(release, repo_id=mirror))
results = {{repo: [attempt(repo), cached(repo)] for repo in ["tester/flipped", "tester/truncated", release.repo_id]}}
# A table entry that pins another sha256 is refused from the metadata, before anything is downloaded.
hub.register_original_checkpoint(dataclasses.replace(release, sha256="0" * 64))
results["pinned mismatch"] = [attempt(release.repo_id, force_download=True), cached(release.repo_id)]
hub.register_original_checkpoint(dataclasses.replace(release, sha256="{sha}", file_size={len(good)}))
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
