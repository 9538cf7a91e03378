"""Hub round trips against the loopback fake Hub (tests/fake_hub.py) with the real huggingface_hub client over HTTP:
every model class, the config, the image processor and the four pipelines; sharded weights and removal of stale
weight files; generated model cards; publishing converted originals; transformers' remote code for users without
sapiens_hf.

huggingface_hub reads HF_ENDPOINT when it is imported, which pytest has done before this module runs (conftest and
the other test modules import transformers), so each client runs in a fresh process whose environment points at
the fake Hub (`client_env`, `run_client`). The server runs in this process, so tests inspect the repos directly.
"""

import json
from pathlib import Path

import pytest
from fake_hub import FakeHub, client_env, run_client
from helpers import POSE_FILE, save_original
from huggingface_hub import ModelCard

from sapiens_hf import hub, releases
from sapiens_hf.tasks import V1_TASKS


# The clients import the tests' helpers (tiny configs) from this folder.
CLIENT = f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n" + """
import json, sys
import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, pipeline

import helpers
import sapiens_hf
from sapiens_hf import SapiensConfig, SapiensImageProcessorPil, hub

torch.manual_seed(0)
IMAGE = Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 60, 3), dtype=np.uint8))
EXTRA = {"SapiensForMaskedImageModeling": dict(use_cls_token=True), "SapiensForPoseEstimation": dict(num_labels=17),
         "SapiensForSemanticSegmentation": dict(num_labels=5), "SapiensBackbone": dict(out_indices=[1, 2])}
PIPELINES = {"sapiens-pose": "SapiensForPoseEstimation", "sapiens-segmentation": "SapiensForSemanticSegmentation",
             "sapiens-depth": "SapiensForDepthEstimation", "sapiens-normal": "SapiensForNormalEstimation"}

def tiny_config(**kwargs):
    return helpers.tiny_config(**{"num_hidden_layers": 2, "image_size": [64, 48], **helpers.MAE_DECODER, **kwargs})

def tiny(name, **kwargs):
    model = getattr(sapiens_hf, name)(tiny_config(**EXTRA.get(name, {}), **kwargs)).eval()
    with torch.no_grad():  # non-trivial values everywhere (biases start at zero)
        for parameter in model.parameters():
            parameter.normal_()
    return model

def processor():
    return SapiensImageProcessorPil(size={"height": 64, "width": 48})

def same_weights(a, b):
    x, y = a.state_dict(), b.state_dict()
    return type(a) is type(b) and x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

def run_pipeline(pipe):
    if pipe.task == "sapiens-pose":
        return pipe(IMAGE, boxes=[[5, 5, 40, 60]])
    return pipe(IMAGE, mask=False) if pipe.task in ("sapiens-depth", "sapiens-normal") else pipe(IMAGE)

def same_output(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_output(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_output(x, y) for x, y in zip(a, b))
    if isinstance(a, Image.Image):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, (torch.Tensor, np.ndarray)):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b
"""


@pytest.fixture
def fake_hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def client(fake_hub, tmp_path):
    """Runs a client script (CLIENT prelude + code) against the fake Hub and returns its last printed JSON."""

    def run(code: str):
        out = run_client(CLIENT + code, client_env(fake_hub, tmp_path / "home"), cwd=tmp_path)
        return json.loads(out.strip().splitlines()[-1])

    return run


def card(fake_hub, repo_id) -> ModelCard:
    return ModelCard(fake_hub.files(repo_id)["README.md"].decode())


@pytest.mark.slow
def test_every_class_the_config_and_the_processor_round_trip(client, fake_hub):
    results = client("""
results = {}
from sapiens_hf.tasks import V1_TASKS
for task in V1_TASKS.values():
    name = task.model_class
    model, repo = tiny(name), f"tester/{name.lower()}"
    model.push_to_hub(repo)
    auto = getattr(transformers, task.auto_class)
    results[name] = [same_weights(model, type(model).from_pretrained(repo)),
                     same_weights(model, auto.from_pretrained(repo))]
config = tiny_config(num_labels=17, patch_embed_padding=2)
config.push_to_hub("tester/config")
loaded = AutoConfig.from_pretrained("tester/config")
results["config"] = [type(loaded).__name__, loaded.to_diff_dict() == config.to_diff_dict()]
processor().push_to_hub("tester/processor")
loaded = AutoImageProcessor.from_pretrained("tester/processor")
results["processor"] = [type(loaded).__name__, loaded.to_dict() == processor().to_dict()]
print(json.dumps(results))
""")
    assert results.pop("config") == ["SapiensConfig", True]
    assert results.pop("processor") == ["SapiensImageProcessorPil", True]
    assert results == {task.model_class: [True, True] for task in V1_TASKS.values()}
    assert "model.safetensors" in fake_hub.files("tester/sapiensforposeestimation")


@pytest.mark.slow
def test_the_four_pipelines_round_trip(client, fake_hub):
    results = client("""
results = {}
for task, name in PIPELINES.items():
    pipe = pipeline(task, model=tiny(name), image_processor=processor())
    pipe.push_to_hub(f"tester/{task}")  # delegates to hub.push_to_hub
    reloaded = pipeline(task, model=f"tester/{task}")
    results[task] = [type(reloaded).__name__, same_weights(pipe.model, reloaded.model),
                     same_output(run_pipeline(pipe), run_pipeline(reloaded))]
print(json.dumps(results))
""")
    assert results == {
        "sapiens-pose": ["SapiensPosePipeline", True, True],
        "sapiens-segmentation": ["SapiensSegmentationPipeline", True, True],
        "sapiens-depth": ["SapiensDepthPipeline", True, True],
        "sapiens-normal": ["SapiensNormalPipeline", True, True],
    }
    files = fake_hub.files("tester/sapiens-depth")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert not any(name.endswith(".py") for name in files)  # a plain checkpoint: no code,
    assert "custom_pipelines" not in json.loads(files["config.json"])  # so no trust_remote_code prompt
    assert card(fake_hub, "tester/sapiens-depth").data.pipeline_tag == "depth-estimation"


@pytest.mark.slow
def test_resharding_removes_stale_weight_files(client, fake_hub):
    results = client("""
repo, model = "tester/sharded", tiny("SapiensForDepthEstimation")
hub.push_to_hub(model, repo, max_shard_size="40KB")
sharded = sorted(hub.HfApi().list_repo_files(repo))
same_sharded = same_weights(model, type(model).from_pretrained(repo))
retrained = tiny("SapiensForDepthEstimation")
hub.push_to_hub(retrained, repo)
single = sorted(hub.HfApi().list_repo_files(repo))
same_single = same_weights(retrained, type(model).from_pretrained(repo))
hub.push_to_hub(model, repo, max_shard_size="60KB")
print(json.dumps(dict(sharded=sharded, single=single, same=[same_sharded, same_single],
                      resharded=same_weights(model, type(model).from_pretrained(repo)))))
""")
    weights = [name for name in results["sharded"] if name.endswith(("safetensors", ".json"))]
    assert "model.safetensors.index.json" in weights and "model-00003-of-00004.safetensors" in weights
    assert "model.safetensors" not in weights
    assert [name for name in results["single"] if "safetensors" in name] == ["model.safetensors"]
    assert results["same"] == [True, True] and results["resharded"]
    files = fake_hub.files("tester/sharded")
    index = json.loads(files["model.safetensors.index.json"])
    assert sorted(name for name in files if name.endswith(".safetensors")) == sorted(set(index["weight_map"].values()))
    assert len(fake_hub.history("tester/sharded")) == 4  # creation + one commit per push (deletions included)


@pytest.mark.slow
def test_generated_model_card_and_hand_written_cards_are_kept(client, fake_hub):
    fake_hub.commit("tester/handwritten", {"README.md": b"# My own card\n"})
    client("""
model = tiny("SapiensForPoseEstimation")
hub.push_to_hub(model, "tester/pose", tags=["fine-tuned"])
hub.push_to_hub(processor(), "tester/pose")  # the processor keeps the model's card
hub.push_to_hub(model, "tester/handwritten")
hub.push_to_hub(model, "tester/pose", revision="v2", commit_message="Second version")
sapiens_hf.SapiensForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
hub.push_to_hub(tiny("SapiensForSemanticSegmentation"), "tester/seg")  # ships its modules: trust_remote_code
print("{}")
""")
    pose = card(fake_hub, "tester/pose")
    assert pose.data.license == "cc-by-nc-4.0" and pose.data.library_name == "transformers"
    assert pose.data.pipeline_tag == "keypoint-detection"
    assert {"sapiens", "sapiens-v1", "human-centric", "fine-tuned"} <= set(pose.data.tags)
    assert "import sapiens_hf" in pose.text and 'AutoModelForPoseEstimation.from_pretrained("tester/pose")' in pose.text
    assert 'pipeline("sapiens-pose", model="tester/pose")' in pose.text
    assert {"preprocessor_config.json", "model.safetensors"} <= set(fake_hub.files("tester/pose"))
    assert fake_hub.files("tester/handwritten")["README.md"] == b"# My own card\n"
    assert "model.safetensors" in fake_hub.files("tester/pose", revision="v2")
    seg = card(fake_hub, "tester/seg")
    assert seg.data.pipeline_tag == "image-segmentation" and "trust_remote_code=True" in seg.text
    assert "import sapiens_hf" not in seg.text and "modeling_sapiens.py" in fake_hub.files("tester/seg")


def test_convert_cli_publishes_with_source_hash_and_removes_stale_weights(client, fake_hub, tmp_path):
    save_original(tmp_path / POSE_FILE)
    # An earlier, sharded upload whose shards must not survive the new publication.
    fake_hub.commit("tester/converted",
                    {"model-00001-of-00002.safetensors": b"old", "model.safetensors.index.json": b"{}"})
    results = client(f"""
from sapiens_hf import convert
from sapiens_hf.cli import main
convert.HEADS_BY_WIDTH[32] = 2  # the tiny checkpoint's width counts as a released size
main(["convert", "{tmp_path / POSE_FILE}", "converted", "--push-to-hub", "tester/converted"])
model = transformers.AutoModelForPoseEstimation.from_pretrained("tester/converted")
print(json.dumps(dict(same=same_weights(model, sapiens_hf.convert_original_checkpoint("{tmp_path / POSE_FILE}")))))
""")
    assert results == {"same": True}
    files = fake_hub.files("tester/converted")
    assert sorted(name for name in files if "safetensors" in name) == ["model.safetensors"]
    published = card(fake_hub, "tester/converted")
    assert releases.file_sha256(tmp_path / POSE_FILE) in published.text and POSE_FILE in published.text
    assert published.data.base_model == "facebook/sapiens-pose-0.3b"
    [result] = published.data.eval_results
    assert (result.dataset_name, result.metric_type, result.metric_value) == ("Goliath (val)", "ap", 57.3)


REMOTE_CLIENT = """
import json, sys
sys.modules["sapiens_hf"] = None  # a user without the package: importing it fails
import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForPoseEstimation, pipeline
"""


@pytest.mark.slow
def test_remote_code_model_and_processor_load_without_sapiens_hf(client, fake_hub, tmp_path):
    """transformers' own remote-code mechanism: classes registered with `register_for_auto_class` save their modules,
    which import only torch, transformers and each other, so users without sapiens_hf load them."""
    client("""
SapiensConfig.register_for_auto_class()
sapiens_hf.SapiensForPoseEstimation.register_for_auto_class("AutoModelForPoseEstimation")
SapiensImageProcessorPil.register_for_auto_class()
model = tiny("SapiensForPoseEstimation")
model.push_to_hub("tester/remote")
processor().push_to_hub("tester/remote")
torch.save({"weights": model.state_dict(), "pixels": processor()(IMAGE, return_tensors="pt")["pixel_values"]},
           "reference.pt")
print("{}")
""")
    files = fake_hub.files("tester/remote")
    assert {"configuration_sapiens.py", "modeling_sapiens.py", "image_processing_sapiens.py"} <= set(files)
    assert json.loads(files["config.json"])["auto_map"] == {
        "AutoConfig": "configuration_sapiens.SapiensConfig",
        "AutoModelForPoseEstimation": "modeling_sapiens.SapiensForPoseEstimation",
    }
    assert json.loads(files["preprocessor_config.json"])["auto_map"] == {
        "AutoImageProcessor": "image_processing_sapiens.SapiensImageProcessorPil"
    }
    out = run_client(REMOTE_CLIENT + """
try:
    import sapiens_hf
    raise SystemExit("sapiens_hf must not be importable here")
except ImportError:
    pass
config = AutoConfig.from_pretrained("tester/remote", trust_remote_code=True)
model = AutoModelForPoseEstimation.from_pretrained("tester/remote", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("tester/remote", trust_remote_code=True)
reference = torch.load("reference.pt")
image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (80, 60, 3), dtype=np.uint8))
same = all(torch.equal(value, reference["weights"][key]) for key, value in model.state_dict().items())
same_pixels = torch.equal(processor(image, return_tensors="pt")["pixel_values"], reference["pixels"])
print(json.dumps([type(config).__module__, type(model).__module__, type(processor).__module__, same, same_pixels]))
""", client_env(fake_hub, tmp_path / "home"), cwd=tmp_path)
    *modules, same, same_pixels = json.loads(out.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in modules), modules
    assert same and same_pixels


# ---------------------------------------------------------------------------------------------------------------
# What a push uploads and deletes (regressions: a convert --push-to-hub deleted the user's *.py files and uploaded
# unrelated files of the output folder; the stale-weight clean-up deleted weights in subfolders of the repo)
# ---------------------------------------------------------------------------------------------------------------


def test_convert_push_uploads_only_the_checkpoint_and_never_touches_other_local_files(client, fake_hub, tmp_path):
    save_original(tmp_path / POSE_FILE)
    output = tmp_path / "converted"
    output.mkdir()
    own = {"my_script.py": b"print('my own code')\n", "README.txt": b"my notes\n", "README.md": b"# My own notes\n",
           "notes/model.safetensors": b"not the conversion"}
    for name, data in own.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(data)
    fake_hub.commit("tester/converted", {"onnx/model.safetensors": b"onnx export"})
    client(f"""
from sapiens_hf import convert
from sapiens_hf.cli import main
convert.HEADS_BY_WIDTH[32] = 2  # the tiny checkpoint's width counts as a released size
main(["convert", "{tmp_path / POSE_FILE}", "converted", "--push-to-hub", "tester/converted"])
print("{{}}")
""")
    assert {name: (output / name).read_bytes() for name in own} == own  # unchanged, and nothing deleted
    assert sorted(path.name for path in output.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessor_config.json", "my_script.py", "README.txt", "README.md",
         "notes"])  # the card went to the Hub only
    files = fake_hub.files("tester/converted")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors",
                             "onnx/model.safetensors", "preprocessor_config.json"]
    assert files["model.safetensors"] == (output / "model.safetensors").read_bytes()
    assert files["onnx/model.safetensors"] == b"onnx export"
    assert hub.CARD_MARKER in files["README.md"].decode()


def test_push_deletes_only_the_replaced_checkpoints_top_level_shards(client, fake_hub):
    kept = {
        "onnx/model.safetensors": b"onnx",
        "variants/fp16/model.safetensors": b"fp16",
        "variants/fp16/model-00001-of-00002.safetensors": b"fp16 shard",
        "checkpoints/epoch10/pytorch_model.bin": b"epoch 10",
        "checkpoints/epoch10/model.safetensors.index.json": b"{}",
        "training_args.bin": b"args",
        "model_fp16.safetensors": b"another name",
        "optimizer.bin": b"optimizer",
    }
    stale = {
        "model-00001-of-00002.safetensors": b"old shard 1",
        "model-00002-of-00002.safetensors": b"old shard 2",
        "model.safetensors.index.json": b"{}",
        "pytorch_model.bin": b"old bin",
        "pytorch_model-00001-of-00002.bin": b"old bin shard",
        "pytorch_model.bin.index.json": b"{}",
    }
    fake_hub.commit("tester/layered", {**kept, **stale})
    client("""
hub.push_to_hub(tiny("SapiensForDepthEstimation"), "tester/layered")
hub.push_to_hub(processor(), "tester/layered")  # no weights: deletes nothing
print("{}")
""")
    files = fake_hub.files("tester/layered")
    assert {name: files.get(name) for name in kept} == kept
    assert not set(stale) & set(files)
    assert sorted(files) == sorted([".gitattributes", "README.md", "config.json", "model.safetensors",
                                    "preprocessor_config.json", *kept])
