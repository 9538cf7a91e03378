"""MAE pretraining: parity with the original (golden case 8), the masking contracts, the fixed sin-cos tables, the
hand-over of MAE / `_clean` encoders to every model class through `from_pretrained`, and a short real-photo
pretraining run of examples/run_mae_pretraining.py (also under DeepSpeed ZeRO-3)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from golden_utils import ATOL, RTOL, arch, images, load_golden, manifest, normalize, recipe
from helpers import MAE_TINY, REPO_ROOT, config_overrides, mae_config
from safetensors.torch import load_file
from transformers import AutoModelForMaskedImageModeling, AutoModelForPreTraining

import sapiens_hf
from sapiens_hf import (
    SapiensBackbone,
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForMaskedImageModeling,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensModel,
)
from sapiens_hf.modeling_sapiens import convert_position_embeddings, sincos_position_embeddings


TINY_DECODER = {key: value for key, value in MAE_TINY.items() if key.startswith("decoder_")}
TINY_OVERRIDES = config_overrides(MAE_TINY)


def tiny_mae(image_size=(64, 64), **kwargs) -> SapiensForMaskedImageModeling:
    model = SapiensForMaskedImageModeling(mae_config(image_size, **kwargs)).eval()
    with torch.no_grad():  # a random encoder table, so that a wrong row drop or resize shows
        model.model.embeddings.position_embeddings.normal_()
    return model


def tables_frozen(model: SapiensForMaskedImageModeling) -> bool:
    tables = (model.model.embeddings.position_embeddings, model.decoder.position_embeddings)
    return not any(table.requires_grad for table in tables)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture
def one_thread():
    """Tiny models: OpenMP threads only add overhead, which dominates on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# Golden case 8: the original MAE on a recorded mask
# ---------------------------------------------------------------------------------------------------------------


def test_mae_matches_original():
    shape = arch("mae")
    model = sapiens_hf.convert_original_checkpoint(
        load_golden("weights_mae.safetensors"), num_attention_heads=shape["H"], decoder_num_attention_heads=shape["dH"]
    )
    config = model.config
    assert type(model) is SapiensForMaskedImageModeling and config.use_cls_token
    # Decoder sizes come from the weights (only the head count is not visible in them).
    assert (config.decoder_hidden_size, config.decoder_num_hidden_layers) == (shape["dC"], shape["dL"])
    assert config.image_size == [shape["img"]] * 2 and config.patch_embed_padding == 0
    size = shape["img"]
    pixel_values = torch.stack(
        [
            normalize(images()["mae_input0_rgb"]),
            normalize(recipe(manifest()["seed"], "mae_random_image", (size, size, 3), u8=True)),
        ]
    )
    golden = load_golden("case8_mae.safetensors")
    latents = []
    hook = model.model.layernorm.register_forward_hook(lambda module, args, output: latents.append(output))
    with torch.no_grad():
        outputs = model(pixel_values, noise=golden["noise"])
    hook.remove()

    # The same mask, reproduced from the recorded noise.
    assert torch.equal(outputs.ids_restore, golden["ids_restore"])
    assert torch.equal(outputs.mask, golden["mask"])
    torch.testing.assert_close(latents[0], golden["latent"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(outputs.logits[:, ::32], golden["pred.tokens_stride32"], atol=ATOL, rtol=RTOL)
    prediction = outputs.logits.double()
    total, total_sq = golden["pred.stats"]
    assert abs(prediction.sum() - total) <= 1e-4 * total_sq.sqrt() + ATOL
    torch.testing.assert_close((prediction**2).sum(), total_sq, rtol=1e-5, atol=ATOL)
    torch.testing.assert_close(outputs.loss.reshape(1), golden["loss"], rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Masking and outputs
# ---------------------------------------------------------------------------------------------------------------


def test_random_masking_per_sample():
    model = tiny_mae()
    outputs = model(torch.randn(3, 3, 64, 64))
    assert outputs.logits.shape == (3, 16, 16 * 16 * 3) and outputs.reconstruction.shape == (3, 3, 64, 64)
    assert outputs.mask.sum(dim=1).tolist() == [12.0] * 3  # 16 − int(16 · 0.25)
    assert len({tuple(row.tolist()) for row in outputs.mask}) > 1  # drawn per sample
    # ids_restore undoes the shuffle that put the kept patches first.
    order = torch.argsort(outputs.ids_restore, dim=1)
    assert torch.equal(torch.gather(outputs.mask, 1, order)[:, :4], torch.zeros(3, 4))


def test_bool_masked_pos_contract():
    model = tiny_mae()
    pixel_values = torch.randn(2, 3, 64, 64)
    bool_masked_pos = torch.zeros(2, 16, dtype=torch.bool)
    bool_masked_pos[0, :10] = True
    bool_masked_pos[1, 6:] = True
    with torch.no_grad():
        outputs = model(pixel_values, bool_masked_pos=bool_masked_pos)  # 10 of 16 masked: not the config's ratio
    assert torch.equal(outputs.mask, bool_masked_pos.float())
    assert outputs.reconstruction.shape == pixel_values.shape and torch.isfinite(outputs.loss)
    # At the config's ratio, the same as noise that ranks the masked patches last.
    bool_masked_pos = torch.rand(2, 16).argsort(dim=1) >= 4
    with torch.no_grad():
        outputs = model(pixel_values, bool_masked_pos=bool_masked_pos)
        from_noise = model(pixel_values, noise=bool_masked_pos.float())
    assert torch.equal(outputs.mask, bool_masked_pos.float())
    assert torch.equal(outputs.logits, from_noise.logits) and torch.equal(outputs.loss, from_noise.loss)
    uneven = bool_masked_pos.clone()
    uneven[0] = True
    with pytest.raises(ValueError, match="same number"):
        model(pixel_values, bool_masked_pos=uneven)
    with pytest.raises(ValueError, match="not both"):
        model(pixel_values, bool_masked_pos=bool_masked_pos, noise=torch.rand(2, 16))
    with pytest.raises(ValueError, match="shape"):
        model(pixel_values, noise=torch.rand(2, 15))


def test_perfect_prediction_has_zero_loss_and_reconstructs_the_input():
    """A decoder that predicts the normalised target patches: loss 0, reconstruction = input (non-square input)."""
    model = tiny_mae(image_size=(64, 48))
    pixel_values = torch.randn(2, 3, 64, 48) * 3 + 1
    patches = model.patchify(pixel_values)
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    model.decoder.forward = lambda latent, ids_restore, grid, **kwargs: target
    outputs = model(pixel_values)
    assert outputs.loss.item() == 0.0
    torch.testing.assert_close(outputs.reconstruction, pixel_values, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.unpatchify(patches, (4, 3)), pixel_values)


@pytest.mark.parametrize("size", [(1024, 1024), (1024, 768), (64, 48)])
def test_input_sizes(size, one_thread):
    """Native 1024², and non-square sizes (the position tables are bicubically resized)."""
    model = tiny_mae(image_size=(1024, 1024))
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, *size), output_hidden_states=True)
    patches = (size[0] // 16) * (size[1] // 16)
    assert outputs.logits.shape == (1, patches, 768) and outputs.reconstruction.shape == (1, 3, *size)
    assert outputs.mask.sum() == patches - int(patches * 0.25) and torch.isfinite(outputs.loss)
    # hidden_states are the encoder's (visible tokens + CLS), as ViTMAE's.
    assert [h.shape for h in outputs.hidden_states] == [(1, 1 + int(patches * 0.25), 32)] * 3
    with pytest.raises(ValueError, match="divisible by the patch size"):
        model(torch.randn(1, 3, 64, 40))


# ---------------------------------------------------------------------------------------------------------------
# Fixed sin-cos tables
# ---------------------------------------------------------------------------------------------------------------


def test_position_tables_are_frozen_sincos(tmp_path):
    model = SapiensForMaskedImageModeling(mae_config(image_size=(64, 48)))
    encoder_table, decoder_table = model.model.embeddings.position_embeddings, model.decoder.position_embeddings
    assert torch.equal(encoder_table, sincos_position_embeddings((4, 3), 32, with_cls=True))
    assert torch.equal(decoder_table, sincos_position_embeddings((4, 3), 16, with_cls=True))
    assert encoder_table[0, 0].abs().sum() == 0  # CLS row
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert {"model.embeddings.cls_token", "decoder.mask_token"} <= trainable
    assert not {"model.embeddings.position_embeddings", "decoder.position_embeddings"} & trainable

    model.save_pretrained(tmp_path)
    reloaded = SapiensForMaskedImageModeling.from_pretrained(tmp_path)
    assert tables_frozen(reloaded)
    reloaded.train()
    reloaded(torch.randn(2, 3, 64, 48)).loss.backward()
    assert reloaded.model.embeddings.position_embeddings.grad is None
    assert reloaded.decoder.position_embeddings.grad is None


def test_save_and_reload_round_trip_is_bit_exact(tmp_path):
    model = tiny_mae()
    model.save_pretrained(tmp_path / "a")
    reloaded = SapiensForMaskedImageModeling.from_pretrained(tmp_path / "a")
    assert same_state(model.state_dict(), reloaded.state_dict())
    reloaded.save_pretrained(tmp_path / "b")
    assert same_state(load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors"))


def test_activation_checkpointing_covers_encoder_and_decoder():
    model = tiny_mae().train()
    pixel_values, noise = torch.randn(2, 3, 64, 64), torch.rand(2, 16)
    model(pixel_values, noise=noise).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in [*model.model.layers, *model.decoder.layers])
    model(pixel_values, noise=noise).loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(parameter.grad, expected[name], atol=1e-7, rtol=0, msg=name)


@pytest.mark.parametrize("auto_class", [AutoModelForMaskedImageModeling, AutoModelForPreTraining])
def test_auto_classes(auto_class, tmp_path):
    assert type(auto_class.from_config(mae_config())) is SapiensForMaskedImageModeling
    tiny_mae().save_pretrained(tmp_path)
    assert type(auto_class.from_pretrained(tmp_path)) is SapiensForMaskedImageModeling


# ---------------------------------------------------------------------------------------------------------------
# Encoders into every model class, and `_clean` checkpoints into the MAE
# ---------------------------------------------------------------------------------------------------------------

FINE_TUNE_LAYOUT = {"use_cls_token": False, "image_size": [64, 48]}


@pytest.mark.parametrize(
    "model_class, overrides",
    [
        (SapiensForPoseEstimation, {"patch_embed_padding": 2, "num_labels": 17}),
        (SapiensForSemanticSegmentation, {"num_labels": 28}),
        (SapiensForDepthEstimation, {}),
        (SapiensForNormalEstimation, {"patch_embed_padding": 2}),
        (SapiensModel, {}),
        (SapiensBackbone, {}),
    ],
)
def test_mae_encoder_loads_into_every_model_class(model_class, overrides, tmp_path):
    mae = tiny_mae()
    mae.save_pretrained(tmp_path / "mae")
    model = model_class.from_pretrained(tmp_path / "mae", **FINE_TUNE_LAYOUT, **overrides)
    encoder = model if model_class is SapiensModel else model.model
    loaded = encoder.state_dict()
    for key, value in mae.model.state_dict().items():
        if key == "embeddings.position_embeddings":  # CLS row dropped, 4×4 squashed to 4×3 (the original hook)
            value = convert_position_embeddings(value, (4, 3), target_has_cls=False)
        if key == "embeddings.cls_token":
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], value), key
    assert encoder.embeddings.position_embeddings.requires_grad  # trained when fine-tuning
    # The converted model saves and reloads bit-exactly.
    model.save_pretrained(tmp_path / "task")
    assert same_state(load_file(tmp_path / "task" / "model.safetensors"), model.state_dict())
    assert same_state(model_class.from_pretrained(tmp_path / "task").state_dict(), model.state_dict())


def test_pretrain_checkpoint_via_from_pretrained_matches_original_hook(tmp_path):
    """Golden case 2 through transformers' loader: a `_clean` encoder saved as a SapiensModel (CLS + 64×64), then
    `from_pretrained` into a 1024×768 pose model gives the table of the original load hook."""
    heads = arch("pretrain")["H"]
    encoder = sapiens_hf.convert_original_checkpoint(
        load_golden("case2_pretrain_checkpoint.safetensors"), task="model", num_attention_heads=heads
    )
    assert encoder.config.use_cls_token and encoder.config.image_size == [1024, 1024]
    encoder.save_pretrained(tmp_path)
    # No overrides: a task class switches a pretraining config to the original fine-tuning layout by itself.
    pose = SapiensForPoseEstimation.from_pretrained(tmp_path, num_labels=17)
    assert not pose.config.use_cls_token and pose.config.image_size == [1024, 768]
    assert pose.config.patch_embed_padding == 2
    expected = load_golden("case2_outputs.safetensors")["pos_embed_converted"]
    torch.testing.assert_close(pose.model.embeddings.position_embeddings.detach(), expected, atol=1e-6, rtol=0)


def test_clean_checkpoint_into_mae_with_fresh_decoder(tmp_path):
    checkpoint = load_golden("case2_pretrain_checkpoint.safetensors")
    heads = arch("pretrain")["H"]
    mae = sapiens_hf.convert_original_checkpoint(
        checkpoint, task="pretraining", num_attention_heads=heads, **TINY_DECODER
    )
    assert type(mae) is SapiensForMaskedImageModeling
    assert torch.equal(mae.model.embeddings.position_embeddings, checkpoint["pos_embed"])
    assert torch.equal(mae.model.embeddings.cls_token, checkpoint["cls_token"])
    assert torch.equal(mae.model.layers[1].attention.qkv.weight, checkpoint["layers.1.attn.qkv.weight"])
    assert torch.equal(mae.decoder.position_embeddings, sincos_position_embeddings((64, 64), 16, with_cls=True))
    assert tables_frozen(mae)
    assert 0 < mae.decoder.mask_token.std() < 0.05

    # The same through from_pretrained: encoder-only folder → MAE, decoder initialised after meta-device loading.
    encoder = sapiens_hf.convert_original_checkpoint(checkpoint, task="model", num_attention_heads=heads)
    encoder.save_pretrained(tmp_path)
    loaded = SapiensForMaskedImageModeling.from_pretrained(tmp_path, **TINY_DECODER)
    assert same_state(loaded.model.state_dict(), encoder.state_dict())
    assert torch.equal(loaded.decoder.position_embeddings, mae.decoder.position_embeddings)
    assert tables_frozen(loaded)
    with torch.no_grad():
        assert torch.isfinite(loaded(torch.randn(1, 3, 64, 64)).loss)


def test_task_checkpoint_into_mae_fails_clearly(tmp_path):
    head = {"decoder_deconv_channels": [8], "decoder_conv_channels": [8]}
    config = SapiensConfig(**MAE_TINY, **head, image_size=[64, 48], num_labels=17)
    SapiensForPoseEstimation(config).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="conversion"):
        SapiensForMaskedImageModeling.from_pretrained(tmp_path, use_cls_token=True)


REMOTE_CODE = """
import json, sys
sys.modules["sapiens_hf"] = None  # a user without the package
import torch
from transformers import AutoModelForMaskedImageModeling
mae = AutoModelForMaskedImageModeling.from_pretrained(sys.argv[1], trust_remote_code=True)
remote = sys.modules[type(mae).__module__]
pose = remote.SapiensForPoseEstimation.from_pretrained(
    sys.argv[1], use_cls_token=False, image_size=[64, 48], patch_embed_padding=2, num_labels=17)
expected = torch.load(sys.argv[2])
print(json.dumps([type(mae).__module__, mae.model.embeddings.position_embeddings.requires_grad,
                  mae.decoder.position_embeddings.requires_grad,
                  torch.equal(pose.model.embeddings.position_embeddings, expected)]))
"""


def test_remote_code_converts_and_keeps_tables_frozen(tmp_path, monkeypatch):
    for cls in (SapiensConfig, SapiensForMaskedImageModeling):  # undone after the test
        monkeypatch.setattr(cls, "_auto_class", None)
    SapiensConfig.register_for_auto_class()
    SapiensForMaskedImageModeling.register_for_auto_class("AutoModelForMaskedImageModeling")
    mae = tiny_mae()
    mae.save_pretrained(tmp_path / "mae")  # with its modules: transformers' remote code
    expected = convert_position_embeddings(mae.model.embeddings.position_embeddings.detach(), (4, 3), False)
    torch.save(expected, tmp_path / "expected.pt")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE, str(tmp_path / "mae"), str(tmp_path / "expected.pt")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    module, encoder_grad, decoder_grad, same = json.loads(result.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.")
    assert (encoder_grad, decoder_grad, same) == (False, False, True)


# ---------------------------------------------------------------------------------------------------------------
# examples/run_mae_pretraining.py
# ---------------------------------------------------------------------------------------------------------------

SCRIPT = REPO_ROOT / "examples" / "run_mae_pretraining.py"


def run_mae_pretraining():
    spec = importlib.util.spec_from_file_location("run_mae_pretraining", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the Trainer pickles the script's TrainingArguments subclass
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A small real-photo set: the RGB photographs scikit-image ships (astronaut, cat, coffee, rocket, …)."""
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    arrays = {name: getattr(skimage.data, name)() for name in (
        "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")}
    arrays["motorcycle_left"], arrays["motorcycle_right"], _ = skimage.data.stereo_motorcycle()
    for name, array in arrays.items():
        image = PIL.Image.fromarray(array)
        image.thumbnail((256, 256), PIL.Image.Resampling.BICUBIC)
        image.save(folder / f"{name}.png")
    return folder


@pytest.mark.slow
def test_pretraining_run_lowers_the_loss_and_hands_the_encoder_to_pose(photos, tmp_path, one_thread):
    output_dir = tmp_path / "mae"
    trainer = run_mae_pretraining().main(
        ["--config_overrides", TINY_OVERRIDES, "--train_dir", str(photos), "--output_dir", str(output_dir)]
        + "--config_name sapiens-0.3b --image_size 64 --do_train --max_steps 300 --per_device_train_batch_size 8 "
        "--dataloader_drop_last --base_learning_rate 0.1 --logging_steps 25 --save_strategy no --report_to none "
        "--seed 0 --num_visualizations 3 --dataloader_pin_memory false".split()
    )
    # The recipe: lr scaled by batch / 256, betas (0.9, 0.95), cosine, no decay on norms, biases and tokens.
    assert trainer.args.learning_rate == pytest.approx(0.1 * 8 / 256)
    assert (trainer.args.adam_beta2, trainer.args.weight_decay, trainer.args.max_grad_norm) == (0.95, 0.05, 1.0)
    assert trainer.args.lr_scheduler_type == "cosine" and trainer.args.warmup_steps == 0.025
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    groups = {group["weight_decay"]: {names[id(p)] for p in group["params"]}
              for group in trainer.optimizer.param_groups}
    assert {"model.embeddings.cls_token", "decoder.mask_token", "decoder.layernorm.weight"} <= groups[0.0]
    assert "decoder.pred.weight" in groups[0.05]
    assert not any("position_embeddings" in name for group in groups.values() for name in group)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12
    assert 0.9 < losses[0] < 1.1  # norm-pix targets: predicting nothing costs ~1
    assert np.mean(losses[-3:]) < 0.85 * losses[0], losses

    picture = PIL.Image.open(output_dir / "reconstructions.png")
    assert picture.size == (3 * 64, 3 * 64)  # original | masked | reconstruction, 3 images

    mae = SapiensForMaskedImageModeling.from_pretrained(output_dir)
    assert same_state(mae.state_dict(), trainer.model.state_dict())
    pose = SapiensForPoseEstimation.from_pretrained(
        output_dir, use_cls_token=False, image_size=[64, 48], patch_embed_padding=2, num_labels=17
    )
    assert torch.equal(pose.model.layers[1].mlp.fc2.weight, mae.model.layers[1].mlp.fc2.weight)
    expected = convert_position_embeddings(mae.model.embeddings.position_embeddings, (4, 3), target_has_cls=False)
    assert torch.equal(pose.model.embeddings.position_embeddings, expected)
    with torch.no_grad():
        assert pose(torch.randn(1, 3, 64, 48)).heatmaps.shape == (1, 17, 16, 12)


@pytest.mark.slow
def test_pretraining_run_with_deepspeed_zero3(photos, tmp_path):
    """The shipped ZeRO-3 config on CPU (one process): the model is built under zero.Init, trained with the MAE
    optimizer groups and saved consolidated, with the frozen sin-cos tables exactly as `_init_weights` wrote them."""
    pytest.importorskip("deepspeed")
    with socket.socket() as sock:  # a free rendezvous port
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = dict(os.environ, DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", LOCAL_RANK="0",
               WORLD_SIZE="1", OMP_NUM_THREADS="1")
    # The shm comm op DeepSpeed compiles on CPU (~30 s) is built once (as test_deepspeed): into TORCH_EXTENSIONS_DIR
    # where it is set (CI keeps it between runs), else into the repo's ignored cache.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions"))
    config = REPO_ROOT / "examples" / "deepspeed" / "zero3_mae_2b.json"
    command = [sys.executable, str(SCRIPT), "--deepspeed", str(config), "--config_overrides", TINY_OVERRIDES]
    command += ["--train_dir", str(photos), "--output_dir", str(tmp_path)]
    command += (
        "--config_name sapiens-2b --image_size 64 --do_train --max_steps 3 --per_device_train_batch_size 4 "
        "--logging_steps 1 --save_strategy no --report_to none --log_level info"
    ).split()
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "activating zero.init()" in result.stdout + result.stderr
    saved = load_file(tmp_path / "model.safetensors")
    assert torch.equal(saved["model.embeddings.position_embeddings"], sincos_position_embeddings((4, 4), 32, True))
    assert torch.equal(saved["decoder.position_embeddings"], sincos_position_embeddings((4, 4), 16, True))
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3]
