"""Fine-tuning building blocks: layer-wise LR decay groups (golden case 7), the Trainer's optimiser, the pose and
dense-task augmentations and targets, the data loaders, argument presets and the GPU check's FLOP count."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_utils import golden_path, load_golden
from helpers import ENCODERS, REPO_ROOT, load_example, tiny_config
from PIL import Image
from skimage import data
from transformers import TrainerCallback, TrainingArguments

from sapiens_hf import (
    SapiensConfig,
    SapiensForMaskedImageModeling,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
)
from sapiens_hf.convert import _rename_encoder
from sapiens_hf.image_processing_sapiens import SapiensImageProcessorPil
from sapiens_hf.metadata import SEGMENTATION_CLASSES, keypoint_set
from sapiens_hf.modeling_sapiens import flip_back
from sapiens_hf.training import (
    DenseAugmentation,
    DenseTransform,
    PoseAugmentation,
    PoseTransform,
    SapiensTrainer,
    SapiensTrainingArguments,
    TransformedDataset,
    load_coco_keypoints,
    load_dense_folder,
    parameter_groups,
    parse_arguments,
    segmentation_flip_pairs,
)


# ---------------------------------------------------------------------------------------------------------------
# Layer-wise LR decay
# ---------------------------------------------------------------------------------------------------------------


def our_name(original: str) -> str:
    """An original parameter name in our model, through the converter's renaming."""
    if original.startswith("backbone."):
        return "model." + next(iter(_rename_encoder({original[len("backbone.") :]: None})))
    return "decode_head." + original.split(".", 1)[1].replace("conv_seg.", "final_layer.")


def grouped(model, groups) -> dict[str, tuple]:
    names = {id(param): name for name, param in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g["name"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize(
    "case, model_class, head",
    [
        (
            "pose17",
            SapiensForPoseEstimation,
            {"num_labels": 17, "decoder_deconv_channels": [32, 32], "decoder_conv_channels": [32, 32]},
        ),
        (
            "seg",
            SapiensForSemanticSegmentation,
            {"num_labels": 28, "decoder_deconv_channels": [32] * 3, "decoder_conv_channels": [32] * 3},
        ),
    ],
)
def test_parameter_groups_equal_the_original_constructors(case, model_class, head):
    golden = json.loads(golden_path("case7_layer_decay.json").read_text())[case]
    config = SapiensConfig(
        hidden_size=96, num_hidden_layers=golden["num_layers"], num_attention_heads=2, intermediate_size=384, **head
    )
    model = model_class(config)
    groups = parameter_groups(model, golden["base_lr"], golden["base_weight_decay"], golden["layer_decay_rate"])
    actual = grouped(model, groups)
    expected = {our_name(name): (v["lr"], v["weight_decay"], v["group"]) for name, v in golden["params"].items()}
    assert actual.keys() == expected.keys()
    for name, (lr, weight_decay, group) in expected.items():
        assert actual[name][0] == pytest.approx(lr, rel=1e-12), name
        assert actual[name][1:] == (weight_decay, group), name


def test_parameter_groups_without_layer_decay_follow_the_mae_recipe():
    config = SapiensConfig(
        **ENCODERS["small"],
        image_size=[64, 64],
        use_cls_token=True,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )
    model = SapiensForMaskedImageModeling(config)
    groups = parameter_groups(model, 1e-3, 0.05)
    assert [g["name"] for g in groups] == ["no_decay", "decay"]
    assert all(g["lr"] == 1e-3 for g in groups)
    actual = grouped(model, groups)
    for name in ("model.embeddings.cls_token", "decoder.mask_token", "model.layernorm.weight", "decoder.pred.bias"):
        assert actual[name][1] == 0.0, name
    for name in (
        "model.layers.0.attention.qkv.weight",
        "decoder.embed.weight",
        "model.embeddings.patch_embeddings.projection.weight",
    ):
        assert actual[name][1] == 0.05, name
    # The fixed sin-cos tables are frozen, so no optimiser sees them.
    assert "model.embeddings.position_embeddings" not in actual and "decoder.position_embeddings" not in actual


def test_parameter_groups_read_zero3_shapes():
    """Under ZeRO-3 every local parameter is an empty (0,) shard; the decay rule must use the full `ds_shape`."""
    model = SapiensForPoseEstimation(
        tiny_config(size="small", num_labels=17, decoder_deconv_channels=[8], decoder_conv_channels=[8])
    )
    for param in model.parameters():
        param.ds_shape = param.shape
        param.data = torch.empty(0)
    actual = grouped(model, parameter_groups(model, 1.0, 0.1, 0.5))
    assert actual["model.layers.1.mlp.fc1.weight"][1:] == (0.1, "layer_2_decay")
    assert actual["model.layers.1.layernorm_before.weight"][1:] == (0.0, "layer_2_no_decay")
    assert actual["model.embeddings.patch_embeddings.projection.weight"] == (0.5**3, 0.1, "layer_0_decay")


def test_trainer_builds_layer_decay_groups_from_its_arguments(tmp_path):
    model = SapiensForPoseEstimation(
        tiny_config(size="small", num_labels=17, decoder_deconv_channels=[8], decoder_conv_channels=[8])
    )
    args = SapiensTrainingArguments(output_dir=str(tmp_path), layer_decay=0.5, learning_rate=1e-3, report_to=[])
    assert (args.weight_decay, args.batch_eval_metrics) == (0.1, True)  # the original recipe's defaults
    optimizer = SapiensTrainer(model=model, args=args).create_optimizer()
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs == pytest.approx(
        {
            "layer_0_no_decay": 1.25e-4,
            "layer_0_decay": 1.25e-4,
            "layer_1_no_decay": 2.5e-4,
            "layer_1_decay": 2.5e-4,
            "layer_2_no_decay": 5e-4,
            "layer_2_decay": 5e-4,
            "layer_3_no_decay": 1e-3,
            "layer_3_decay": 1e-3,
        }
    )
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    plain = SapiensTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    assert [g["name"] for g in plain.create_optimizer().param_groups] == ["no_decay", "decay"]  # e.g. MAE
    trainer = SapiensTrainer(model=model, args=args, optimizer_cls_and_kwargs=(torch.optim.AdamW, {"params": []}))
    with pytest.raises(ValueError, match="layer-wise LR decay"):
        trainer.create_optimizer()


# ---------------------------------------------------------------------------------------------------------------
# Pose data and augmentations
# ---------------------------------------------------------------------------------------------------------------

PROCESSOR = SapiensImageProcessorPil(size={"height": 128, "width": 96})
NO_AUGMENTATION = {
    "flip_prob": 0.0,
    "half_body_prob": 0.0,
    "shift_prob": 0.0,
    "scale_prob": 0.0,
    "rotate_prob": 0.0,
    "photometric_prob": 0.0,
    "blur_prob": 0.0,
    "median_blur_prob": 0.0,
    "dropout_prob": 0.0,
}


def astronaut_person(num_keypoints=17) -> dict:
    rng = np.random.default_rng(0)
    keypoints = np.c_[
        rng.uniform(160, 360, num_keypoints), rng.uniform(40, 480, num_keypoints), np.full(num_keypoints, 2.0)
    ]
    keypoints[3, 2] = 0  # one unlabelled keypoint
    return {"image": data.astronaut(), "bbox": [135.0, 15.0, 255.0, 490.0], "keypoints": keypoints.flatten().tolist()}


def test_pose_flip_mirrors_the_crop_and_swaps_left_right_keypoints():
    example = astronaut_person()
    plain = PoseTransform(PROCESSOR, 17, train=False)(example, np.random.default_rng(0))
    flip_only = PoseTransform(
        PROCESSOR, 17, train=True, augmentation=PoseAugmentation(**{**NO_AUGMENTATION, "flip_prob": 1.0})
    )
    flipped = flip_only(example, np.random.default_rng(0))
    # UDP maps x → W − 1 − x onto crop column j → 95 − j, so the crop is the mirror image (up to 1/32-px warp rounding).
    assert (flipped["pixel_values"] - plain["pixel_values"].flip(-1)).abs().mean() < 0.02
    pairs = [[i, j] for i, j in enumerate(keypoint_set(17)["flip_indices"]) if i < j]
    torch.testing.assert_close(flipped["labels"], flip_back(plain["labels"][None], pairs)[0], atol=2e-3, rtol=0)
    swapped = plain["label_weights"][keypoint_set(17)["flip_indices"]]
    torch.testing.assert_close(flipped["label_weights"], swapped)
    assert plain["label_weights"][3] == 0 and plain["label_weights"].sum() == 16


def test_pose_train_transform_without_augmentation_equals_the_processor_crop():
    example = astronaut_person()
    plain = PoseTransform(PROCESSOR, 17, train=False)(example, np.random.default_rng(0))
    same = PoseTransform(PROCESSOR, 17, train=True, augmentation=PoseAugmentation(**NO_AUGMENTATION))(
        example, np.random.default_rng(0)
    )
    assert (same["pixel_values"] - plain["pixel_values"]).abs().max() < 0.1
    torch.testing.assert_close(same["labels"], plain["labels"], atol=1e-5, rtol=0)


def test_pose_half_body_and_box_jitter():
    transform = PoseTransform(PROCESSOR, 17, train=True, augmentation=PoseAugmentation(half_body_upper_prob=1.0))
    keypoints = np.asarray(astronaut_person()["keypoints"], np.float32).reshape(17, 3)
    center, scale = transform._half_body(keypoints, np.zeros(2), np.ones(2), np.random.default_rng(0))
    upper = [i for i in keypoint_set(17)["upper_body_ids"] if keypoints[i, 2] > 0]
    np.testing.assert_allclose(center, keypoints[upper, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(scale, np.ptp(keypoints[upper, :2], axis=0) * 1.5, rtol=1e-6)
    keypoints[:, 2] = 0  # too few visible keypoints: the box is kept
    assert transform._half_body(keypoints, np.zeros(2), np.ones(2), np.random.default_rng(0))[1].tolist() == [1, 1]

    always = PoseTransform(PROCESSOR, 17, train=True, augmentation=PoseAugmentation(shift_prob=1.0, rotate_prob=1.0))
    base_center, base_scale = np.array([100.0, 200.0], np.float32), np.array([50.0, 80.0], np.float32)
    draws = [always._jitter_box(base_center, base_scale, np.random.default_rng(i)) for i in range(200)]
    shifts = np.array([(c - base_center) / base_scale for c, _, _ in draws])
    factors = np.array([s / base_scale for _, s, _ in draws])
    rotations = np.array([r for _, _, r in draws])
    assert np.abs(shifts).max() <= 0.16 + 1e-6 and np.abs(shifts).max() > 0.1
    assert factors.min() >= 0.5 and factors.max() <= 1.5 and np.allclose(factors[:, 0], factors[:, 1])
    assert np.abs(rotations).max() <= 80 and np.abs(rotations).max() > 50


def test_pose_augmentation_is_reproducible_per_sample_and_epoch():
    dataset = TransformedDataset([astronaut_person()] * 2, PoseTransform(PROCESSOR, 17, train=True), seed=3)
    first = dataset[0]
    assert torch.equal(dataset[0]["pixel_values"], first["pixel_values"])  # same (seed, epoch, index)
    assert not torch.equal(dataset[1]["pixel_values"], first["pixel_values"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["pixel_values"], first["pixel_values"])
    wrong = dict(astronaut_person(), keypoints=astronaut_person(133)["keypoints"])
    with pytest.raises(ValueError, match="133 keypoints, the model predicts 17"):
        dataset.transform(wrong, np.random.default_rng(0))


def write_coco(tmp_path: Path, annotations: list[dict], num_keypoints=17) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(data.astronaut()).save(tmp_path / "images" / "a.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(num_keypoints)]}],
    }
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(coco))
    return path


def test_load_coco_keypoints_keeps_labelled_people_and_reports_bad_data(tmp_path):
    good = {
        "id": 1,
        "image_id": 1,
        "bbox": [10, 10, 100, 200],
        "keypoints": astronaut_person()["keypoints"],
        "area": 900,
    }
    crowd = dict(good, id=2, iscrowd=1)
    empty = dict(good, id=3, keypoints=[0.0] * 51)
    dataset, num_keypoints = load_coco_keypoints(write_coco(tmp_path, [good, crowd, empty]), tmp_path / "images")
    assert num_keypoints == 17 and len(dataset) == 1
    assert dataset[0]["image"].endswith("a.jpg") and dataset[0]["bbox"] == [10, 10, 100, 200]

    with pytest.raises(ValueError, match="has 48 keypoint values, expected 51"):
        load_coco_keypoints(write_coco(tmp_path, [dict(good, keypoints=[1.0] * 48)]), tmp_path / "images")
    with pytest.raises(ValueError, match="NaN"):
        load_coco_keypoints(write_coco(tmp_path, [dict(good, keypoints=[float("nan")] * 51)]), tmp_path / "images")
    with pytest.raises(ValueError, match="No released keypoint set has 5"):
        load_coco_keypoints(write_coco(tmp_path, [dict(good, keypoints=[5.0, 5.0, 2.0] * 5)], 5), tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="missing in"):
        load_coco_keypoints(write_coco(tmp_path, [good]), tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="No COCO annotation file"):
        load_coco_keypoints(tmp_path / "nope.json", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Dense tasks
# ---------------------------------------------------------------------------------------------------------------

ID2LABEL = dict(enumerate(SEGMENTATION_CLASSES))


def dense_example(task: str) -> dict:
    image = np.ascontiguousarray(data.astronaut()[::4, ::4][:128, 16:112])  # already 128×96
    labels = np.zeros((128, 96), np.uint8)
    labels[40:100, 10:40], labels[40:100, 50:80], labels[5:30, 30:60] = 4, 21, 2  # Left_Foot, Torso, Face_Neck
    if task == "segmentation":
        return {"image": image, "target": labels, "mask": None}
    if task == "depth":
        return {"image": image, "target": np.where(labels > 0, 2.0 + labels / 10, 0).astype(np.float32), "mask": None}
    normals = np.zeros((128, 96, 3), np.float32)
    normals[labels > 0] = [0.6, 0.0, 0.8]
    return {"image": image, "target": normals, "mask": None}


@pytest.mark.parametrize("task", ["segmentation", "depth", "normal"])
def test_dense_flip_swaps_labels_and_negates_normal_x(task):
    example = dense_example(task)
    plain = DenseTransform(task, PROCESSOR, train=False)(example, np.random.default_rng(0))
    no_aug = {"background_prob": 0.0, "scale_range": (1.0, 1.0), "rotate_degrees": 0.0, "flip_prob": 0.0, "photometric_prob": 0.0}
    same = DenseTransform(
        task, PROCESSOR, True, DenseAugmentation(**no_aug), flip_pairs=segmentation_flip_pairs(ID2LABEL)
    )
    flip = DenseTransform(
        task,
        PROCESSOR,
        True,
        DenseAugmentation(**{**no_aug, "flip_prob": 1.0}),
        flip_pairs=segmentation_flip_pairs(ID2LABEL),
    )
    unchanged, flipped = same(example, np.random.default_rng(0)), flip(example, np.random.default_rng(0))
    torch.testing.assert_close(unchanged["labels"], plain["labels"])
    torch.testing.assert_close(flipped["pixel_values"], plain["pixel_values"].flip(-1))
    expected = plain["labels"].flip(-1)
    if task == "segmentation":
        expected = torch.where(expected == 4, 13, expected)  # Left_Foot ↔ Right_Foot
        assert set(flipped["labels"].unique().tolist()) == {0, 2, 13, 21}
    if task == "normal":
        expected = expected * torch.tensor([-1.0, 1.0, 1.0])[:, None, None]
        expected[plain["labels"].flip(-1) == -1000] = -1000
    torch.testing.assert_close(flipped["labels"], expected)


def test_dense_targets_follow_the_original_target_generators():
    depth = DenseTransform("depth", PROCESSOR, train=False)(dense_example("depth"), np.random.default_rng(0))["labels"]
    foreground = depth > -1
    assert depth[~foreground].unique().tolist() == [-1.0]
    assert depth[foreground].min() == 0 and depth[foreground].max() == 1  # foreground min-max normalised
    normal = DenseTransform("normal", PROCESSOR, train=False)(dense_example("normal"), np.random.default_rng(0))[
        "labels"
    ]
    assert normal.shape == (3, 128, 96) and set(normal.unique().tolist()) == {
        -1000.0,
        0.0,
        0.6000000238418579,
        0.800000011920929,
    }


def test_dense_random_background_replaces_only_background(tmp_path):
    Image.fromarray(np.full((50, 40, 3), 7, np.uint8)).save(tmp_path / "bg.png")
    example = dense_example("segmentation")
    augmentation = DenseAugmentation(background_prob=1.0, scale_range=(1, 1), flip_prob=0, photometric_prob=0)
    transform = DenseTransform(
        "segmentation", PROCESSOR, True, augmentation, background_images=[str(tmp_path / "bg.png")]
    )
    out = transform(example, np.random.default_rng(0))
    background = (out["labels"] == 0)[None].expand(3, -1, -1)
    seven = (7 - torch.tensor(PROCESSOR.image_mean)) / torch.tensor(PROCESSOR.image_std)
    torch.testing.assert_close(
        out["pixel_values"][background].view(3, -1), seven[:, None].expand(3, int(background[0].sum()))
    )
    plain = DenseTransform("segmentation", PROCESSOR, train=False)(example, np.random.default_rng(0))
    torch.testing.assert_close(out["pixel_values"][~background], plain["pixel_values"][~background])


def test_dense_train_augmentation_keeps_the_input_size_and_valid_labels():
    transform = DenseTransform("segmentation", PROCESSOR, True, flip_pairs=segmentation_flip_pairs(ID2LABEL))
    big = {
        "image": data.astronaut(),
        "target": np.kron(dense_example("segmentation")["target"], np.ones((4, 4), np.uint8))[:512, :512],
        "mask": None,
    }
    big["target"] = np.pad(big["target"], ((0, 0), (0, 512 - big["target"].shape[1])))
    for seed in range(6):
        out = transform(big, np.random.default_rng(seed))
        assert out["pixel_values"].shape == (3, 128, 96) and out["labels"].shape == (128, 96)
        assert set(out["labels"].unique().tolist()) <= {0, 2, 4, 13, 21, 255}


def test_dense_inputs_are_checked(tmp_path):
    bad = dict(dense_example("segmentation"), target=np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        DenseTransform("segmentation", PROCESSOR, train=False)(bad, np.random.default_rng(0))
    with pytest.raises(ValueError, match="integer class indices"):
        DenseTransform("segmentation", PROCESSOR, train=False)(dict(bad, target=np.zeros((128, 96))), None)
    with pytest.raises(ValueError, match="\\(height, width, 3\\)"):
        DenseTransform("normal", PROCESSOR, train=False)(dense_example("depth"), None)
    (tmp_path / "images").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "images" / "a.png")
    with pytest.raises(FileNotFoundError, match="have no file in"):
        load_dense_folder(tmp_path, "depth")
    np.save(tmp_path / "depth" / "a.npy", np.ones((512, 512), np.float32))
    assert load_dense_folder(tmp_path, "depth")[0]["target"].endswith("a.npy")
    with pytest.raises(FileNotFoundError, match="Expected a folder"):
        load_dense_folder(tmp_path, "normals")


def test_segmentation_flip_pairs_reproduce_the_original_table():
    assert segmentation_flip_pairs(ID2LABEL) == [
        [4, 13],
        [5, 14],
        [6, 15],
        [7, 16],
        [8, 17],
        [9, 18],
        [10, 19],
        [11, 20],
    ]


# ---------------------------------------------------------------------------------------------------------------
# Presets and the GPU check
# ---------------------------------------------------------------------------------------------------------------


SCRIPT_ARGUMENTS = {
    "pose": ("run_pose", "DataTrainingArguments"),
    "segmentation": ("run_segmentation", "DenseDataArguments", "SegmentationArguments"),
    "depth": ("run_depth", "DenseDataArguments", "DepthArguments"),
    "normal": ("run_normal", "DenseDataArguments"),
}


@pytest.mark.parametrize("task", SCRIPT_ARGUMENTS)
def test_2b_presets_parse_with_their_scripts(task, tmp_path):
    preset = REPO_ROOT / "examples" / "deepspeed" / f"sapiens_2b_{task}.json"
    assert (REPO_ROOT / json.loads(preset.read_text())["deepspeed"]).is_file()
    script, *names = SCRIPT_ARGUMENTS[task]
    module = load_example(script)
    types = [module.ModelArguments, *(getattr(module, name) for name in names), module.SapiensTrainingArguments]
    # bf16 and DeepSpeed cannot be set up on this CPU machine; everything else is parsed as given.
    parsed = parse_arguments(
        *types, args=[str(preset), "--output_dir", str(tmp_path), "--bf16", "False", "--deepspeed", ""]
    )
    training_args = parsed[-1]
    assert training_args.activation_checkpointing and training_args.layer_decay == 0.85
    assert training_args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert training_args.per_device_train_batch_size == 2 and training_args.output_dir == str(tmp_path)
    assert parsed[0].model_name_or_path == "facebook/sapiens-pretrain-2b"
    if task == "pose":  # the original's MultiStepLR
        assert training_args.lr_scheduler_type == "constant_with_warmup" and training_args.lr_milestones == [170, 200]


def test_gpu_check_flop_count_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    gpu_check = load_example("gpu_check_2b_zero3", folder="benchmarks")
    config = gpu_check.pose_config(tiny=True)
    config._attn_implementation = "eager"  # matmul attention, which the flop counter sees on CPU
    model = SapiensForPoseEstimation(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, *config.image_size))
    assert gpu_check.forward_flops(config) == counter.get_total_flops()
    assert gpu_check.forward_flops(gpu_check.pose_config(tiny=False)) == pytest.approx(17.03e12, rel=1e-3)


def test_load_model_from_a_size_preset_with_overrides():
    from sapiens_hf import SapiensForDepthEstimation
    from sapiens_hf.training import ModelArguments, load_model

    args = ModelArguments(
        config_name="sapiens-2b",
        config_overrides="hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128,"
        "image_size=[128,96],decoder_deconv_channels=[8,8,8,8],decoder_conv_channels=[8]",
    )
    model = load_model(SapiensForDepthEstimation, args)
    assert type(model).__name__ == "SapiensForDepthEstimation"
    assert (model.config.hidden_size, model.config.image_size, model.config.patch_embed_padding) == (64, [128, 96], 0)
    assert model(torch.zeros(1, 3, 128, 96)).predicted_depth.shape == (1, 128, 96)
    with pytest.raises(ValueError, match="--model_name_or_path"):
        load_model(SapiensForDepthEstimation, ModelArguments())


def test_load_model_from_an_original_pretrain_checkpoint(tmp_path):
    """What the 2B presets do with facebook/sapiens-pretrain-2b, offline: an original (flat, CLS + 64×64 position
    table) pretraining checkpoint becomes a pose model with a new head and the config kwargs of the script."""
    from sapiens_hf.metadata import flip_pairs
    from sapiens_hf.training import ModelArguments, load_model

    checkpoint = tmp_path / "sapiens_tiny_epoch_1_clean.pth"
    torch.save(load_golden("case2_pretrain_checkpoint.safetensors"), checkpoint)
    args = ModelArguments(model_name_or_path=str(checkpoint), config_overrides="num_attention_heads=2")
    model = load_model(SapiensForPoseEstimation, args, num_labels=17, flip_pairs=flip_pairs(17))
    assert type(model).__name__ == "SapiensForPoseEstimation" and model.config.num_labels == 17
    assert model.model.embeddings.position_embeddings.shape == (1, 64 * 48, 64)  # 4097 rows → 64×48 grid
    assert model.decode_head.final_layer.out_channels == 17 and model.config.flip_pairs == flip_pairs(17)


def test_lr_milestones_reproduce_the_original_multistep_schedule(tmp_path):
    """mmengine's MultiStepLR (pose recipe: ×0.1 at epochs 170 and 200) after transformers' constant warm-up, through a
    real Trainer run: 3 epochs of 2 steps, milestones at epochs 1 and 2, 1 warm-up step."""
    model = SapiensForPoseEstimation(
        tiny_config(size="small", num_labels=17, decoder_deconv_channels=[8], decoder_conv_channels=[8])
    )
    generator = torch.Generator().manual_seed(0)
    samples = [
        {
            "pixel_values": torch.randn(3, 128, 96, generator=generator),
            "labels": torch.rand(17, 16, 12, generator=generator),  # one 2× deconv: 1/8 of the input
            "label_weights": torch.ones(17),
        }
        for _ in range(4)
    ]
    args = SapiensTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        num_train_epochs=3,
        per_device_train_batch_size=2,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=1,
        lr_milestones=[1, 2],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    learning_rates = []  # the head's (full) rate at each optimizer step

    class RecordLearningRate(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            learning_rates.append(optimizer.param_groups[-1]["lr"])

    SapiensTrainer(model=model, args=args, train_dataset=samples, callbacks=[RecordLearningRate()]).train()
    top = 1e-3
    assert learning_rates == pytest.approx([0, top, 0.1 * top, 0.1 * top, 0.01 * top, 0.01 * top])
    with pytest.raises(ValueError, match="constant_with_warmup"):
        SapiensTrainingArguments(output_dir=str(tmp_path), lr_milestones=[170, 200], report_to=[])
