"""Fine-tuning transformers' Sapiens2 models with the package's example scripts: the original sapiens2 losses
(checked against NumPy transcriptions of facebookresearch/sapiens2's loss formulas), the optimiser's groups, the
size presets, and tiny models trained by run_pose / run_segmentation / run_normal."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import COMMON, make_dense_data, make_pose_data, run_example, sapiens2_training_config, save_sapiens2_model
from transformers import (
    Sapiens2ForNormalEstimation,
    Sapiens2ForPoseEstimation,
    Sapiens2ForSemanticSegmentation,
    TrainerCallback,
)

from sapiens_hf import SapiensForPoseEstimation, metadata
from sapiens_hf.modeling_sapiens import segmentation_loss
from sapiens_hf.training import (
    ModelArguments,
    PoseTransform,
    SapiensTrainer,
    SapiensTrainingArguments,
    load_model,
    parameter_groups,
    uses_sapiens2,
)
from sapiens_hf.training.sapiens2 import (
    dice_loss,
    pose_loss,
    preset_config,
    sapiens2_normal_loss,
    segmentation_dice_loss,
)


# ---------------------------------------------------------------------------------------------------------------
# The original losses
# ---------------------------------------------------------------------------------------------------------------


def test_pose_loss_is_the_original_weighted_mse_times_ten_not_transformers_normalisation():
    generator = torch.Generator().manual_seed(0)
    heatmaps, labels = torch.rand(2, 3, 4, 5, generator=generator), torch.rand(2, 3, 4, 5, generator=generator)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    expected = 10 * np.mean(weights.numpy()[:, :, None, None] * (heatmaps.numpy() - labels.numpy()) ** 2)
    assert pose_loss(heatmaps, labels, weights).item() == pytest.approx(expected, rel=1e-6)
    # transformers' forward divides by the summed (heatmap-sized) weights instead, and has no ×10.
    model = Sapiens2ForPoseEstimation(sapiens2_training_config("pose", num_labels=3))
    model.decode_head.forward = lambda features: heatmaps
    full_weights = weights[:, :, None, None].expand_as(labels)
    ours = model(torch.zeros(2, 3, 128, 96), labels=labels, label_weights=full_weights).loss
    assert ours.item() == pytest.approx(expected / 10 * labels.numel() / full_weights.sum().item(), rel=1e-6)


def reference_dice(logits, labels, ignore_index=255, eps=1e-3):
    """The original DiceLoss (include_background=False, squared denominators) per image, mean over the batch."""
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    losses = []
    for p, label in zip(probabilities, labels):
        valid = label != ignore_index
        dices = []
        for c in range(1, p.shape[0]):
            target = (label == c) & valid
            if not target.any():
                continue
            pred = p[c] * valid
            dices.append((2 * (pred * target).sum() + eps) / ((pred**2).sum() + target.sum() + eps))
        losses.append(1 - np.mean(dices) if dices else 0.0)
    return np.mean(losses)


def test_dice_loss_follows_the_original_formula():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, 6, generator=generator)
    labels = torch.randint(0, 4, (3, 5, 6), generator=generator)
    labels[0, :2] = 255  # ignored pixels
    labels[1] = 0  # only background: no class counts, the image adds 0
    labels[2][labels[2] == 3] = 1  # a class absent from the image is not averaged
    expected = reference_dice(logits.double().numpy(), labels.numpy())
    assert dice_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    weights = list(metadata.SAPIENS2_CLASS_WEIGHTS[:4])
    combined = segmentation_dice_loss(logits, labels, weights, 255)
    assert combined.item() == pytest.approx(segmentation_loss(logits, labels, weights, 255).item() + expected, rel=1e-5)


def test_normal_loss_is_ten_cosine_plus_l1_plus_ten_gradient_over_valid_pixels():
    generator = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 3, 4, 5, generator=generator), torch.randn(2, 3, 4, 5, generator=generator)
    target[0, :, 1, 2] = target[1, :, :, 0] = -1000  # background, as the dense targets mark it
    p, t = pred.double().numpy(), target.double().numpy()
    valid = (t[:, :1] > -100).astype(float)
    cosine = (p * t).sum(1, keepdims=True) / np.linalg.norm(p, axis=1, keepdims=True) / np.linalg.norm(t, axis=1,
                                                                                                      keepdims=True)
    gradient = 0.0
    for axis in (3, 2):
        pair = np.take(valid, range(1, valid.shape[axis]), axis) * np.take(valid, range(valid.shape[axis] - 1), axis)
        gradient += ((np.diff(p, axis=axis) - np.diff(t, axis=axis)) ** 2 * pair).sum() / pair.sum()
    expected = (10 * ((1 - cosine) * valid).sum() / valid.sum() + (np.abs(p - t) * valid).sum() / valid.sum()
                + 10 * gradient)
    assert sapiens2_normal_loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    nothing_valid = torch.full_like(target, -1000.0)
    pred.requires_grad_(True)
    loss = sapiens2_normal_loss(pred, nothing_valid)
    loss.backward()
    assert loss.item() == 0 and pred.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# Optimiser groups, presets, loading
# ---------------------------------------------------------------------------------------------------------------


def test_parameter_groups_follow_the_sapiens2_original_layer_decay():
    model = Sapiens2ForPoseEstimation(sapiens2_training_config("pose"))
    groups = parameter_groups(model, 1e-3, 0.1, layer_decay=0.8)
    by_param = {id(param): group for group in groups for param in group["params"]}
    named = dict(model.named_parameters())
    num_layers = model.config.num_hidden_layers

    def group(name):
        return by_param[id(named[name])]

    # The original: depth 0 for embeddings and tokens, i + 1 for block i, L + 1 above; lr × 0.8^(L + 1 − depth).
    assert group("model.embeddings.patch_embeddings.weight")["lr"] == pytest.approx(1e-3 * 0.8 ** (num_layers + 1))
    assert group("model.model.layer.1.mlp.up_proj.weight")["name"] == "layer_2_decay"
    assert group("model.model.layer.0.attention.q_proj.bias")["name"] == "layer_1_no_decay"
    assert group("model.norm.weight")["name"] == f"layer_{num_layers + 1}_no_decay"
    assert group("decode_head.predictor.weight")["lr"] == pytest.approx(1e-3)
    # Its CLS and register tokens are weight-decayed (only 1-D tensors and biases are not).
    assert group("model.embeddings.cls_token")["name"] == "layer_0_decay"
    assert group("model.embeddings.register_tokens")["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_size_presets_follow_the_original_arch_table():
    config = preset_config("sapiens2-0.4b", "pose")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 24, 16)
    assert config.intermediate_size == 4096 and config.num_register_tokens == 8 and config.num_labels == 308
    assert config.num_key_value_heads_per_layer == [16] * 8 + [8] * 8 + [16] * 8
    assert config.head_config.upsample_out_channels == [1024, 768]
    assert config.head_config.conv_out_channels == [512, 512, 256]
    assert config.pos_embed_rescale is None
    five = preset_config("sapiens2-5b", "normal")
    assert (five.hidden_size, five.num_hidden_layers, five.num_attention_heads) == (2432, 56, 32)
    assert five.head_config.use_pixel_shuffle and five.head_config.upsample_kernel_sizes == [3, 3, 3, 3]
    assert preset_config("sapiens2-1b", "segmentation").num_labels == 29
    with pytest.raises(ValueError, match="no depth head"):
        preset_config("sapiens2-0.4b", "depth")


def test_load_model_gives_sapiens2_classes_set_up_for_fine_tuning(tmp_path):
    folder = save_sapiens2_model("pose", tmp_path / "pose")
    assert json.loads((folder / "config.json").read_text())["pos_embed_rescale"] == 2.0
    args = ModelArguments(model_name_or_path=str(folder))
    assert uses_sapiens2(args)
    model = load_model(SapiensForPoseEstimation, args, num_labels=17)
    assert type(model) is Sapiens2ForPoseEstimation and model.config.pos_embed_rescale is None
    # An explicit override wins over the fine-tuning default.
    kept = load_model(SapiensForPoseEstimation, ModelArguments(model_name_or_path=str(folder),
                                                               config_overrides="pos_embed_rescale=2.0"))
    assert kept.config.pos_embed_rescale == 2.0
    scratch = ModelArguments(config_name="sapiens2-0.4b", config_overrides=(
        'hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,head_config={"upsample_out_'
        'channels":[8,8],"conv_out_channels":[8]}'))
    model = load_model(SapiensForPoseEstimation, scratch, num_labels=17)
    assert type(model) is Sapiens2ForPoseEstimation and model.config.num_labels == 17
    assert model.config.head_config.conv_out_channels == [8]
    with pytest.raises(ValueError, match="no field 'pos_embed_rescal'"):
        load_model(SapiensForPoseEstimation, ModelArguments(model_name_or_path=str(folder),
                                                            config_overrides="pos_embed_rescal=2.0"))
    assert not uses_sapiens2(ModelArguments(config_name="sapiens-0.3b"))  # v1 presets: no lookup
    assert not uses_sapiens2(ModelArguments(model_name_or_path="facebook/sapiens-pretrain-0.3b"))
    # A pretraining checkpoint (a bare Sapiens2Model, no head config) gets the task's original head and labels.
    from transformers import Sapiens2Model

    from sapiens_hf import SapiensForDepthEstimation, SapiensForNormalEstimation

    torch.manual_seed(0)
    backbone = Sapiens2Model(sapiens2_training_config("pose", head_config=None))
    backbone.save_pretrained(tmp_path / "pretrain")
    normal = load_model(SapiensForNormalEstimation, ModelArguments(model_name_or_path=str(tmp_path / "pretrain")))
    assert type(normal) is Sapiens2ForNormalEstimation and normal.config.num_labels == 3
    assert normal.config.head_config.use_pixel_shuffle and normal.config.head_config.upsample_kernel_sizes[0] == 3
    torch.testing.assert_close(normal.model.model.layer[1].mlp.up_proj.weight, backbone.model.layer[1].mlp.up_proj.weight)
    backbone.config.to_json_file(tmp_path / "pretrain.json")  # the same from scratch, from its config.json
    scratch = load_model(SapiensForNormalEstimation, ModelArguments(config_name=str(tmp_path / "pretrain.json")))
    assert type(scratch) is Sapiens2ForNormalEstimation and scratch.config.pos_embed_rescale is None

    with pytest.raises(ValueError, match="no depth head"):
        load_model(SapiensForDepthEstimation, ModelArguments(model_name_or_path=str(folder)))


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------


class _Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def test_trainer_fits_one_pose_sample_with_the_original_loss(tmp_path):
    """A tiny Sapiens2 pose model on one fixed crop: the loss the trainer reports is the original one and falls."""
    from sapiens_hf import SapiensImageProcessorPil

    annotations, images = make_pose_data(tmp_path / "data")
    dataset = json.loads(annotations.read_text())
    annotation = dataset["annotations"][0]
    row = {"image": str(images / dataset["images"][0]["file_name"]), "bbox": annotation["bbox"],
           "keypoints": annotation["keypoints"]}
    sample = PoseTransform(SapiensImageProcessorPil(size={"height": 128, "width": 96}), 17, train=False)(row, None)
    torch.manual_seed(0)
    model = Sapiens2ForPoseEstimation(sapiens2_training_config("pose"))
    with torch.no_grad():
        first = model(sample["pixel_values"][None]).heatmaps
    expected = pose_loss(first, sample["labels"][None], sample["label_weights"][None]).item()
    args = SapiensTrainingArguments(output_dir=str(tmp_path / "out"), max_steps=12, learning_rate=2e-3,
                                    logging_steps=1, report_to="none", save_strategy="no", seed=0, warmup_steps=0,
                                    lr_scheduler_type="constant", dataloader_num_workers=0)
    callback = _Losses()
    trainer = SapiensTrainer(model=model, args=args, train_dataset=[sample] * 12, callbacks=[callback])
    trainer.train()
    assert callback.losses[0] == pytest.approx(expected, rel=1e-4)
    assert all(np.isfinite(callback.losses)) and callback.losses[-1] < 0.5 * callback.losses[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sapiens2-examples")


def check_run(output_dir: Path, model_class) -> tuple[dict, object]:
    results = json.loads((output_dir / "all_results.json").read_text())
    assert np.isfinite(results["train_loss"]) and np.isfinite(results["eval_loss"])
    model = model_class.from_pretrained(output_dir)  # stock transformers reloads the fine-tuned model
    assert model.config.pos_embed_rescale is None
    return results, model


def test_run_pose_fine_tunes_a_sapiens2_model(workdir):
    annotations, images = make_pose_data(workdir / "pose_data")
    output_dir = workdir / "pose_out"
    run_example("run_pose", [
        "--model_name_or_path", str(save_sapiens2_model("pose", workdir / "pose_model")),
        "--train_annotation_file", str(annotations), "--train_image_dir", str(images),
        "--validation_annotation_file", str(annotations), "--validation_image_dir", str(images),
        "--output_dir", str(output_dir), *COMMON,
    ])
    results, model = check_run(output_dir, Sapiens2ForPoseEstimation)
    assert 0 <= results["eval_AP"] <= 1 and np.isfinite(results["eval_PCK"])
    assert model.config.flip_pairs[0] == [1, 2] and model.config.id2label[0] == "nose"


@pytest.mark.parametrize(
    "task, model_class, metric",
    [("segmentation", Sapiens2ForSemanticSegmentation, "mean_iou"),
     ("normal", Sapiens2ForNormalEstimation, "mean_angular_error")],
)
def test_dense_scripts_fine_tune_sapiens2_models(workdir, task, model_class, metric):
    root = workdir / "dense_data"
    if not root.exists():
        make_dense_data(root)
    output_dir = workdir / f"{task}_out"
    run_example(f"run_{task}", [
        "--model_name_or_path", str(save_sapiens2_model(task, workdir / f"{task}_model")),
        "--train_dir", str(root / "train"), "--validation_dir", str(root / "val"),
        "--output_dir", str(output_dir), *COMMON,
    ])
    results, model = check_run(output_dir, model_class)
    assert np.isfinite(results[f"eval_{metric}"])
    if task == "segmentation":  # Sapiens2's 29 classes and their original weights by default
        assert model.config.id2label[2] == "Eyeglass" and model.config.class_weights[2] == 10.0
        assert np.isfinite(results["eval_iou_Left_Foot"])


def test_a_sapiens2_processor_config_loads_as_the_same_preprocessing(tmp_path):
    """The scripts read a Sapiens2 checkpoint's preprocessor_config.json (transformers' torchvision-only
    Sapiens2ImageProcessor, ImageNet statistics on a 0–1 scale) into the package's processor: the same pixels."""
    from sapiens_hf import SapiensImageProcessorPil
    from sapiens_hf.training import load_image_processor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sapiens2ImageProcessor", "do_resize": True, "size": {"height": 1024, "width": 768},
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "keypoint_heatmap_sigma": 6.0,
    }))
    processor = load_image_processor(ModelArguments(model_name_or_path=str(tmp_path)))
    image = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    for boxes in ({"boxes": [[[10, 10, 150, 250]]]}, {}):
        ours = processor(images=image, return_tensors="pt", **boxes)["pixel_values"]
        default = SapiensImageProcessorPil()(images=image, return_tensors="pt", **boxes)["pixel_values"]
        torch.testing.assert_close(ours, default, atol=1e-6, rtol=0)
