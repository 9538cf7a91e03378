"""Bad input is an error before any work, with a message naming the argument, never a silent wrong answer: models of
another task in the pipelines and post-processors (1), numbers and boxes (2), MAE masking (3), image channels and
mean/std (4), unknown keyword arguments of the models' `forward` (5)."""

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import mae_config, tiny_config
from transformers import pipeline
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput

import sapiens_hf  # registers the pipelines
from sapiens_hf import (
    SapiensBackbone,
    SapiensConfig,
    SapiensForDepthEstimation,
    SapiensForMaskedImageModeling,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensImageProcessorPil,
    SapiensModel,
)
from sapiens_hf.modeling_sapiens import SapiensNormalEstimatorOutput, SapiensPoseEstimatorOutput, WrongModelError


PIPELINES = {
    "pose": "sapiens-pose",
    "segmentation": "sapiens-segmentation",
    "depth": "sapiens-depth",
    "normal": "sapiens-normal",
}
IMAGE = np.random.default_rng(0).integers(0, 256, (80, 60, 3), dtype=np.uint8)
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def processor():
    return SapiensImageProcessorPil(size={"height": 64, "width": 48})


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "pose": SapiensForPoseEstimation(tiny_config(num_labels=17, image_size=[64, 48])).eval(),
        "segmentation": SapiensForSemanticSegmentation(tiny_config(num_labels=28, image_size=[64, 48])).eval(),
        "depth": SapiensForDepthEstimation(tiny_config(image_size=[64, 48])).eval(),
        "normal": SapiensForNormalEstimation(tiny_config(image_size=[64, 48])).eval(),
    }


def mae(**kwargs) -> SapiensForMaskedImageModeling:
    return SapiensForMaskedImageModeling(mae_config(num_hidden_layers=1, **kwargs)).eval()


def forbid_forward(model):
    """Makes any forward pass of `model` fail the test: the error must come before the model runs."""

    def hook(*args):
        raise AssertionError("the model ran before the bad argument was rejected")

    return model.register_forward_pre_hook(hook)


# ---------------------------------------------------------------------------------------------------------------
# 1. A model of another task is an error
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task, model_task", list(itertools.permutations(PIPELINES, 2)))
def test_pipeline_rejects_a_model_of_another_task(models, processor, task, model_task):
    with pytest.raises(WrongModelError, match=f"a {model_task} model .*use pipeline\\(\"{PIPELINES[model_task]}\""):
        pipeline(PIPELINES[task], model=models[model_task], image_processor=processor)


@pytest.mark.parametrize("saved, task", [("pose", "segmentation"), ("segmentation", "pose")])
def test_pipeline_rejects_a_checkpoint_of_another_task(models, processor, tmp_path, saved, task):
    """The auto class of the pipeline would build its own head from another task's checkpoint (a pose model's 17
    keypoints would become 17 classes); the saved `architectures` tell the task, and the task model refuses them."""
    models[saved].save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    message = f"configuration of a {saved} model .*pipeline\\(\"{PIPELINES[saved]}\""
    with pytest.raises(WrongModelError, match=message):
        pipeline(PIPELINES[task], model=str(tmp_path))
    with pytest.raises(WrongModelError, match=message):
        type(models[task]).from_pretrained(tmp_path)


@pytest.mark.parametrize("builtin", ["image-segmentation", "depth-estimation"])
def test_builtin_pipelines_refuse_a_pose_checkpoint_in_one_line(models, processor, tmp_path, builtin):
    """transformers' own pipelines load through the Auto classes, which would give a pose checkpoint a new,
    untrained segmentation or depth head (17 keypoint names as classes). The refusal reaches the user as it is, not
    folded into transformers' "Could not load model ... with any of the following classes" report."""
    models["pose"].save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(WrongModelError, match='a pose model .*pipeline\\("sapiens-pose"') as error:
        pipeline(builtin, model=str(tmp_path))
    assert "Could not load model" not in str(error.value) and "\n" not in str(error.value)


def test_a_new_head_from_another_tasks_encoder_is_asked_for_by_name(models, tmp_path):
    """Fine-tuning a segmentation head from a pose model's encoder stays possible, said explicitly: the encoder's
    weights are kept, the head is new."""
    models["pose"].save_pretrained(tmp_path)
    model = SapiensForSemanticSegmentation.from_pretrained(
        tmp_path, architectures=None, num_labels=28, id2label={i: str(i) for i in range(28)},
        ignore_mismatched_sizes=True)
    assert model.config.num_labels == 28
    torch.testing.assert_close(model.model.state_dict(), models["pose"].model.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float8_e4m3fn])
def test_non_float_weights_of_a_saved_model_are_refused(models, processor, tmp_path, dtype):
    """from_pretrained would cast integer or float8 weights into the float model without a word."""
    from safetensors.torch import load_file, save_file

    models["depth"].save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["decode_head.final_layer.bias"] = weights["decode_head.final_layer.bias"].to(dtype)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    message = f"'decode_head.final_layer.bias' of .*model.safetensors is {'I32' if dtype == torch.int32 else 'F8_E4M3'}"
    with pytest.raises(WrongModelError, match=message):
        SapiensForDepthEstimation.from_pretrained(tmp_path)
    with pytest.raises(WrongModelError, match=message):
        pipeline("sapiens-depth", model=str(tmp_path))


def test_non_float_weights_saved_as_pytorch_model_bin_are_refused(models, processor, tmp_path):
    """A folder with `pytorch_model.bin` and no safetensors file (older transformers, other tools) loads too: its
    integer weights are refused as well, read without their data."""
    from safetensors.torch import load_file

    models["depth"].save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(weights, tmp_path / "pytorch_model.bin")
    SapiensForDepthEstimation.from_pretrained(tmp_path)  # float weights load
    weights["decode_head.final_layer.bias"] = weights["decode_head.final_layer.bias"].to(torch.int32)
    torch.save(weights, tmp_path / "pytorch_model.bin")
    message = "'decode_head.final_layer.bias' of .*pytorch_model.bin is int32, not floating point"
    with pytest.raises(WrongModelError, match=message):
        SapiensForDepthEstimation.from_pretrained(tmp_path)
    with pytest.raises(WrongModelError, match=message):
        pipeline("sapiens-depth", model=str(tmp_path))


def test_pipeline_takes_a_task_model_made_from_an_encoder_checkpoint(processor, tmp_path):
    """A task model built from a pretraining or backbone checkpoint has a new head (to be fine-tuned): its class
    tells its task, the `architectures` it was loaded with do not."""
    mae().save_pretrained(tmp_path)
    model = SapiensForPoseEstimation.from_pretrained(tmp_path, num_labels=17)
    assert model.config.architectures == ["SapiensForMaskedImageModeling"]
    pipeline("sapiens-pose", model=model, image_processor=processor)


def test_pipeline_rejects_models_without_a_task_head(processor):
    with pytest.raises(WrongModelError, match="a pretraining model"):
        pipeline("sapiens-pose", model=mae(), image_processor=processor)
    for model in (SapiensModel(tiny_config(image_size=[64, 48])), SapiensBackbone(tiny_config(image_size=[64, 48]))):
        with pytest.raises(WrongModelError, match=f"a model without a task head \\({type(model).__name__}\\)"):
            pipeline("sapiens-depth", model=model, image_processor=processor)


@pytest.mark.parametrize(
    "method, outputs, kwargs",
    [
        ("post_process_pose_estimation", SemanticSegmenterOutput(logits=torch.rand(1, 17, 16, 12)), {"boxes": [[]]}),
        ("post_process_semantic_segmentation", SapiensPoseEstimatorOutput(heatmaps=torch.rand(1, 17, 16, 12)), {}),
        ("post_process_depth_estimation", SapiensNormalEstimatorOutput(normals=torch.rand(1, 3, 32, 24)), {}),
        ("post_process_normal_estimation", DepthEstimatorOutput(predicted_depth=torch.rand(1, 64, 48)), {}),
        ("post_process_normal_estimation", SapiensNormalEstimatorOutput(normals=torch.rand(1, 1, 32, 24)), {}),
        ("post_process_depth_estimation", (torch.rand(1, 64, 48),), {}),
    ],
)
def test_post_processing_rejects_outputs_of_another_task(processor, method, outputs, kwargs):
    with pytest.raises(ValueError, match=f"{method}: `outputs` must be the outputs of a .* model"):
        getattr(processor, method)(outputs, **kwargs)


def test_flipped_outputs_of_another_task_are_rejected(processor):
    heatmaps = SapiensPoseEstimatorOutput(heatmaps=torch.rand(1, 17, 16, 12))
    with pytest.raises(ValueError, match="outputs_flipped"):
        processor.post_process_pose_estimation(heatmaps, boxes=[[[0, 0, 10, 10]]], outputs_flipped=heatmaps.heatmaps)
    depth = DepthEstimatorOutput(predicted_depth=torch.rand(1, 64, 48))
    with pytest.raises(ValueError, match="outputs_flipped"):
        processor.post_process_depth_estimation(depth, outputs_flipped=heatmaps)


# ---------------------------------------------------------------------------------------------------------------
# 2. Numbers and boxes are validated where they enter
# ---------------------------------------------------------------------------------------------------------------

HEATMAPS = SapiensPoseEstimatorOutput(heatmaps=torch.rand(2, 17, 16, 12))


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[[10, 10, 0, 50], [0, 0, 20, 20]]], "Degenerate box"),
        ([[[10, 10, 50, -5], [0, 0, 20, 20]]], "Degenerate box"),
        ([[[10, NAN, 50, 50], [0, 0, 20, 20]]], "Degenerate box"),
        ([[[10, 10, INF, 50], [0, 0, 20, 20]]], "Degenerate box"),
        ([[[0, 0, 1e300, 50], [0, 0, 20, 20]]], "beyond ±10,000,000 pixels"),  # float32 inf, then NaN keypoints
        ([[[-2e7, 0, 3e7, 50]]], "beyond ±10,000,000 pixels"),
        ([[[1, 2, 3], [1, 2, 3]]], "x, y, width, height"),
        ([[1, 2, 3, 4, 5, 6, 7, 8]], "x, y, width, height"),  # not two boxes of one image
        ([[[1, 2, 3, 4], [1, 2, 3]]], "boxes"),
        ([[[1, 2, 3, 4]], [["a", 2, 3, 4]]], "boxes"),
    ],
)
def test_post_process_pose_rejects_bad_boxes(processor, boxes, message):
    with pytest.raises(ValueError, match=message):
        processor.post_process_pose_estimation(HEATMAPS, boxes=boxes)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"threshold": NAN}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": -3}, "kernel_size"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"kernel_size": 11.0}, "kernel_size"),
        ({"kernel_size": True}, "kernel_size"),
        ({"boxes": [[], []], "source_sizes": [(80, 60), (0, 60)]}, "source_sizes"),
        ({"boxes": [[], []], "source_sizes": [(80, 60), (80.5, 60)]}, "source_sizes"),
        ({"boxes": [[], []], "source_sizes": [(80, 60), (80,)]}, "source_sizes"),
    ],
)
def test_post_process_pose_rejects_bad_numbers(processor, kwargs, name):
    kwargs = {"boxes": [[[0, 0, 20, 40], [5, 5, 20, 40]]], **kwargs}
    with pytest.raises(ValueError, match=name):
        processor.post_process_pose_estimation(HEATMAPS, **kwargs)


def test_post_process_pose_kernel_sizes(processor):
    """Every positive odd kernel size decodes (1 means no blur); the default still gives the usual keypoints."""
    boxes = [[[0, 0, 20, 40], [5, 5, 20, 40]]]
    for kernel_size in (1, 3, np.int64(5)):
        people = processor.post_process_pose_estimation(HEATMAPS, boxes=boxes, kernel_size=kernel_size)[0]
        assert all(torch.isfinite(person["keypoints"]).all() for person in people)


@pytest.mark.parametrize(
    "target_sizes",
    [[(0, 48)], [(-64, 48)], [(64.5, 48)], [(64,)], [(64, 48, 3)], [("64", 48)], torch.tensor([[64.5, 48.0]])],
)
@pytest.mark.parametrize("method", ["semantic_segmentation", "depth_estimation", "normal_estimation"])
def test_dense_post_processing_rejects_bad_target_sizes(models, method, target_sizes, processor):
    outputs = {
        "semantic_segmentation": SemanticSegmenterOutput(logits=torch.rand(1, 28, 32, 24)),
        "depth_estimation": DepthEstimatorOutput(predicted_depth=torch.rand(1, 64, 48)),
        "normal_estimation": SapiensNormalEstimatorOutput(normals=torch.rand(1, 3, 32, 24)),
    }[method]
    with pytest.raises(ValueError, match="target_sizes"):
        getattr(processor, f"post_process_{method}")(outputs, target_sizes=target_sizes)


def test_dense_post_processing_accepts_integer_target_sizes(processor):
    outputs = DepthEstimatorOutput(predicted_depth=torch.rand(2, 64, 48))
    for target_sizes in ([(80, 60), (30, 20)], torch.tensor([[80, 60], [30, 20]]), [np.array([80, 60])] * 2):
        depth = processor.post_process_depth_estimation(outputs, target_sizes=target_sizes)
        assert depth[0]["predicted_depth"].shape == (80, 60)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"threshold": NAN}, "threshold"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"detector": lambda image: [], "detector_threshold": NAN}, "detector_threshold"),
        ({"detector": lambda image: [], "detector_threshold": 1.5}, "detector_threshold"),
        ({"boxes": [[10, 10, 0, 20]]}, "Degenerate box"),
        ({"boxes": [[10, 10, NAN, 20]]}, "Degenerate box"),
        ({"boxes": [[0, 0, 1e300, 20]]}, "beyond"),
    ],
)
def test_pose_pipeline_rejects_bad_arguments_before_running_the_model(models, processor, kwargs, name):
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    handle = forbid_forward(models["pose"])
    try:
        with pytest.raises(ValueError, match=name):
            estimator(IMAGE, **kwargs)
    finally:
        handle.remove()


def test_all_boxes_are_checked_before_any_image_is_processed(models, processor, monkeypatch):
    boxes = [[[5, 5, 30, 50]], [[5, 5, 30, NAN]]]
    estimator = pipeline("sapiens-pose", model=models["pose"], image_processor=processor)
    handle = forbid_forward(models["pose"])
    try:
        with pytest.raises(ValueError, match="Degenerate box"):
            estimator([IMAGE, IMAGE], boxes=boxes)
        with pytest.raises(ValueError, match="Degenerate box"):
            estimator([{"image": IMAGE, "boxes": boxes[0]}, {"image": IMAGE, "boxes": boxes[1]}])
    finally:
        handle.remove()

    def no_crop(*args, **kwargs):
        raise AssertionError("an image was cropped before the bad box was rejected")

    monkeypatch.setattr(sapiens_hf.image_processing_sapiens, "warp_affine_bilinear", no_crop)
    with pytest.raises(ValueError, match="Degenerate box"):
        processor([IMAGE, IMAGE], boxes=boxes)
    with pytest.raises(ValueError, match="entirely outside"):
        processor([IMAGE, IMAGE], boxes=[[[5, 5, 30, 50]], [[500, 5, 30, 50]]])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"box_padding": 0.0}, "box_padding"),
        ({"box_padding": NAN}, "box_padding"),
        ({"box_padding": -1.25}, "box_padding"),
        ({"keypoint_heatmap_sigma": 0.0}, "keypoint_heatmap_sigma"),
        ({"keypoint_heatmap_sigma": NAN}, "keypoint_heatmap_sigma"),
        ({"keypoint_heatmap_downscale_factor": 0}, "keypoint_heatmap_downscale_factor"),
        ({"keypoint_heatmap_downscale_factor": -4}, "keypoint_heatmap_downscale_factor"),
    ],
)
def test_processor_rejects_bad_numbers(processor, kwargs, name):
    with pytest.raises(ValueError, match=name):
        processor(IMAGE, boxes=[[[5, 5, 30, 50]]], **kwargs)
    with pytest.raises(ValueError, match=name):
        SapiensImageProcessorPil(**kwargs)(IMAGE, boxes=[[[5, 5, 30, 50]]])


# ---------------------------------------------------------------------------------------------------------------
# 3. MAE masking must mask something
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_ratio", [0.0, 1.0, -0.5, NAN])
def test_config_rejects_mask_ratios_outside_the_open_unit_interval(mask_ratio):
    with pytest.raises(Exception, match=r"mask_ratio must be in \(0, 1\)"):
        SapiensConfig(mask_ratio=mask_ratio)


def test_mae_rejects_masking_that_masks_no_patch():
    model = mae()
    pixel_values = torch.randn(2, 3, 64, 64)
    handle = forbid_forward(model.model.embeddings)
    try:
        with pytest.raises(ValueError, match="bool_masked_pos masks no patch"):
            model(pixel_values, bool_masked_pos=torch.zeros(2, 16, dtype=torch.bool))
        model.config.mask_ratio = 0.0  # set after construction, which the config does not validate
        with pytest.raises(ValueError, match="mask_ratio"):
            model(pixel_values)
        model.config.mask_ratio = 1e-17  # valid, but 16 * (1 - 1e-17) rounds to 16 kept patches
        with pytest.raises(ValueError, match="mask_ratio"):
            model(pixel_values)
    finally:
        handle.remove()
    model.config.mask_ratio = 0.75
    assert torch.isfinite(model(pixel_values).loss)


# ---------------------------------------------------------------------------------------------------------------
# 4. Channels: the processor makes RGB, and says so
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"do_convert_rgb": False}, "do_convert_rgb"),
        ({"image_mean": [123.675, 116.28, 103.53, 100.0]}, "image_mean"),
        ({"image_std": [58.395, 57.12]}, "image_std"),
        ({"image_std": [58.395, 0.0, 57.375]}, "image_std"),
        ({"image_mean": [123.675, NAN, 103.53]}, "image_mean"),
    ],
)
def test_processor_rejects_what_it_would_ignore(processor, kwargs, name):
    with pytest.raises(ValueError, match=name):
        processor(IMAGE, **kwargs)
    with pytest.raises(ValueError, match=name):
        SapiensImageProcessorPil(**kwargs)(IMAGE)


def test_two_channel_images_are_rejected(processor):
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        processor(np.zeros((64, 48, 2), np.uint8), input_data_format="channels_last")
    with pytest.raises(ValueError, match="channel axis"):
        processor(np.zeros((64, 48, 2), np.uint8))


def test_four_channel_model_error_does_not_claim_rgb():
    model = SapiensModel(tiny_config(num_channels=4, image_size=[64, 48]))
    with pytest.raises(ValueError, match="expects 4") as error:
        model(torch.zeros(1, 3, 64, 48))
    assert "RGB" not in str(error.value)


# ---------------------------------------------------------------------------------------------------------------
# 5. Unknown keyword arguments of forward are errors
# ---------------------------------------------------------------------------------------------------------------


def all_models(models):
    return {
        **models,
        "model": SapiensModel(tiny_config(image_size=[64, 48])).eval(),
        "backbone": SapiensBackbone(tiny_config(out_indices=[1], image_size=[64, 48])).eval(),
    }


@pytest.mark.parametrize("name", ["pose", "segmentation", "depth", "normal", "model", "backbone", "mae"])
def test_forward_rejects_unknown_keyword_arguments(models, name):
    model = mae() if name == "mae" else all_models(models)[name]
    pixel_values = torch.randn(1, 3, 64, 64 if name == "mae" else 48)
    handle = forbid_forward(model.get_input_embeddings())
    try:
        with pytest.raises(TypeError, match=f"{type(model).__name__}.forward.* 'crop_center'"):
            model(pixel_values, crop_center=torch.zeros(1, 2))
    finally:
        handle.remove()
    # transformers' own keyword arguments still work
    with torch.no_grad():
        outputs = model(pixel_values, output_attentions=True, output_hidden_states=True, return_dict=False)
    assert isinstance(outputs, tuple)


def test_forward_accepts_the_config_defaults_transformers_adds(models):
    """The Trainer sets `config.use_cache`, which transformers' `merge_with_config_defaults` passes to forward."""
    for model, pixel_values in ((mae(), torch.randn(1, 3, 64, 64)), (models["pose"], torch.randn(1, 3, 64, 48))):
        model.config.use_cache = False
        try:
            with torch.no_grad():
                model(pixel_values)
                model(pixel_values, use_cache=False)
        finally:
            del model.config.use_cache


def test_processor_outputs_of_top_down_pose_are_not_model_inputs(models, processor):
    inputs = processor(IMAGE, boxes=[[[5, 5, 30, 50]]], return_tensors="pt")
    with pytest.raises(TypeError, match="'crop_center', 'crop_scale'"):
        models["pose"](**inputs)
    with torch.no_grad():
        assert models["pose"](inputs["pixel_values"]).heatmaps.shape == (1, 17, 16, 12)


def test_number_checks_do_not_reject_numpy_numbers(processor):
    people = processor.post_process_pose_estimation(
        HEATMAPS, np.array([[[0, 0, 20, 40], [5, 5, 20, 40]]]), threshold=np.float32(0.1), kernel_size=np.int32(11)
    )[0]
    assert len(people) == 2 and not math.isnan(float(people[0]["bbox_xywh"][2]))


@pytest.mark.parametrize("task", ["pose", "segmentation", "depth"])
def test_an_empty_list_of_images_is_a_clear_error(models, processor, task):
    with pytest.raises(ValueError, match="No images given"):
        pipeline(f"sapiens-{task}", model=models[task], image_processor=processor)([])


@pytest.mark.parametrize(
    "heatmaps, message",
    [(torch.zeros(2, 17, 16, 12), None), (torch.full((2, 17, 16, 12), 0.5), None),
     (torch.full((2, 17, 16, 12), 1e-38), None), (-torch.rand(2, 17, 16, 12), None),
     (torch.full((2, 17, 16, 12), 3e38), "overflow the float32 decoding"),
     (torch.rand(2, 17, 1, 1), "at least 2×2"), (torch.rand(2, 17, 1, 12), "at least 2×2")],
)
def test_degenerate_heatmaps_give_finite_keypoints_or_a_clear_error(processor, heatmaps, message):
    """Zero, constant, tiny or negative heatmaps and tiny or huge boxes decode to finite numbers; heatmaps that
    cannot be decoded (1 pixel wide, beyond float32's range in the blur) are an error, never NaN keypoints."""
    boxes = [[[0, 0, 40, 60], [5, 5, 1e-3, 1e-3]]]
    if message is not None:
        with pytest.raises(ValueError, match=message):
            processor.post_process_pose_estimation(SapiensPoseEstimatorOutput(heatmaps=heatmaps), boxes=boxes)
        return
    for person in processor.post_process_pose_estimation(SapiensPoseEstimatorOutput(heatmaps=heatmaps), boxes=boxes)[0]:
        assert torch.isfinite(person["keypoints"]).all() and torch.isfinite(person["scores"]).all()
