"""Shared test helpers: tiny configs and saved tiny models at the few sizes the tests need, the tiny datasets of the
example scripts, and tiny checkpoints in Meta's original format. Not a test file: tests import it; the fixtures
that save a model once per session are in conftest.py."""

import importlib.util
import json
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch
from PIL import Image


REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# Tiny configs and models
# ---------------------------------------------------------------------------------------------------------------

# Encoders: "tiny" where only the wiring is tested, "small" where training or numerics need a little more room.
ENCODERS = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "small": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
}
HEADS = {
    "tiny": {"decoder_deconv_channels": [8, 8], "decoder_conv_channels": [8]},
    "small": {"decoder_deconv_channels": [16, 16], "decoder_conv_channels": [16]},
}
# The MAE decoder of a tiny pretraining model.
MAE_DECODER = {
    "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 32,
}
# A tiny MAE pretraining model's encoder and decoder (on top of the 0.3b preset's pretraining config).
MAE_TINY = {**ENCODERS["tiny"], "num_hidden_layers": 2, **MAE_DECODER}
IMAGE_SIZE = [128, 96]  # the 4:3 of the released 1024×768, 8×6 patches
# Task names as the command line and the example scripts spell them.
TASK_ALIASES = {"seg": "segmentation"}


def task_labels(task: str) -> dict:
    """The head's labels of a task as released: 17 named COCO keypoints, 28 classes, 1 depth, 3 normal channels."""
    from sapiens_hf.metadata import keypoint_set

    task = TASK_ALIASES.get(task, task)
    if task == "pose":
        return {"num_labels": 17, "id2label": dict(enumerate(keypoint_set(17)["keypoint_names"]))}
    return {"segmentation": {"num_labels": 28}}.get(task, {})


def tiny_config(task: str | None = None, size: str = "tiny", **overrides):
    """A SapiensConfig of `size` ("tiny" or "small") with the head of `task` (pose/seg[mentation]/depth/normal; none:
    the encoder's defaults), an IMAGE_SIZE input, and `overrides` on top."""
    from sapiens_hf import SapiensConfig

    values = {**ENCODERS[size], **HEADS[size], "image_size": list(IMAGE_SIZE)}
    if task is not None:
        values.update(task_labels(task))
    return SapiensConfig(**{**values, **overrides})


def mae_config(image_size=(64, 64), **overrides):
    """A tiny MAE pretraining config (MAE_TINY on the 0.3b preset's pretraining config), `overrides` on top."""
    from sapiens_hf import SapiensConfig

    return SapiensConfig.from_preset("sapiens-0.3b", task="pretraining", **{**MAE_TINY, "image_size": list(image_size),
                                                                             **overrides})


def config_overrides(values: dict) -> str:
    """`values` as the example scripts' --config_overrides string."""
    return ",".join(f"{key}={value}" for key, value in values.items())


def model_class(task: str):
    import sapiens_hf

    return {
        "pose": sapiens_hf.SapiensForPoseEstimation, "segmentation": sapiens_hf.SapiensForSemanticSegmentation,
        "depth": sapiens_hf.SapiensForDepthEstimation, "normal": sapiens_hf.SapiensForNormalEstimation,
        "encoder": sapiens_hf.SapiensModel,
    }[TASK_ALIASES.get(task, task)]


# Two stick figures on a plain background (H, W = 240, 320) and their boxes (x, y, width, height).
TWO_PEOPLE_BOXES = [[30.0, 20.0, 100.0, 205.0], [190.0, 20.0, 100.0, 205.0]]


def two_people_image() -> np.ndarray:
    """A synthetic photo of two people side by side (`TWO_PEOPLE_BOXES`): where a detector's boxes and the whole
    image give different crops, so top-down pose differs."""
    import cv2

    image = np.full((240, 320, 3), 225, np.uint8)
    for x, y, width, height in TWO_PEOPLE_BOXES:
        centre = int(x + width / 2)
        top, shoulders, hips, feet = int(y + 20), int(y + 55), int(y + 125), int(y + height - 5)
        cv2.circle(image, (centre, top), 17, (210, 160, 130), -1)  # head
        cv2.rectangle(image, (centre - 22, shoulders - 15), (centre + 22, hips), (40, 70, 160), -1)  # torso
        for side in (-1, 1):
            cv2.line(image, (centre + side * 22, shoulders - 10), (centre + side * 45, hips - 10), (40, 70, 160), 9)
            cv2.line(image, (centre + side * 12, hips), (centre + side * 25, feet), (50, 50, 50), 11)  # legs
    return image


def save_tiny_detector(path) -> str:
    """A tiny random-weight RT-DETR (the default person detector's architecture) with the COCO labels "person" and
    "bicycle", saved to `path` with a 64×64 image processor: its boxes are arbitrary but valid. Returns the folder."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], layer_type="basic",
                                  out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    config = RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=[8, 8, 8], encoder_hidden_dim=16, encoder_ffn_dim=32,
        encoder_attention_heads=2, encoder_layers=1, d_model=16, decoder_in_channels=[16, 16, 16], decoder_ffn_dim=32,
        decoder_attention_heads=2, decoder_layers=1, decoder_n_points=2, num_queries=10, num_denoising=0,
        id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1},
    )
    torch.manual_seed(0)
    RTDetrForObjectDetection(config).save_pretrained(path)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return str(path)


# The example scripts' models: the "small" encoder with each task's head as the training docs configure it.
EXAMPLE_HEADS = {
    "pose": {"num_labels": 17, "patch_embed_padding": 2, "decoder_deconv_channels": [16, 16]},
    "segmentation": {"num_labels": 28, "decoder_deconv_channels": [16, 16, 16]},
    "depth": {"num_labels": 1, "decoder_deconv_channels": [16, 16, 16, 16]},
    "normal": {"num_labels": 3, "patch_embed_padding": 2, "decoder_deconv_channels": [16, 16, 16]},
}


def save_model(task: str, path, config) -> Path:
    """Saves `task`'s model with `config` (weights drawn after torch.manual_seed(0)) and its image processor."""
    from sapiens_hf import SapiensImageProcessorPil

    torch.manual_seed(0)
    model_class(task)(config).save_pretrained(path)
    height, width = config.image_size
    SapiensImageProcessorPil(size={"height": height, "width": width}).save_pretrained(path)
    return Path(path)


def save_tiny_model(task: str, path) -> Path:
    """The "tiny" model of `task` (the command line's and the exports' tests), saved to `path`; "v2-<task>" the tiny
    Sapiens2 model of the task."""
    if task.startswith("v2-"):
        return save_tiny_sapiens2_model(task.removeprefix("v2-"), path)
    return save_model(task, path, tiny_config(None if task == "encoder" else task))


# Tiny Sapiens2 models (transformers' own classes): a 1-layer encoder with RoPE and registers, each task's head
# upsampling the 8×6 patch grid twice (32×24), at the IMAGE_SIZE input.
SAPIENS2_TASKS = ("pose", "segmentation", "normal", "pointmap", "matting")
SAPIENS2_ENCODER = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_attention_heads": 2, "num_first_full_attention_layers": 1, "num_last_full_attention_layers": 0,
    "num_register_tokens": 2,
}
SAPIENS2_HEADS = {"upsample_out_channels": [8, 8], "conv_out_channels": [8]}


def sapiens2_config(task: str, **overrides):
    """A tiny `Sapiens2Config` with the head of `task` (SAPIENS2_TASKS): 17 named COCO keypoints for pose, Sapiens2's
    29 classes for segmentation, a scale head for pointmaps."""
    from transformers import Sapiens2Config

    from sapiens_hf.metadata import SEGMENTATION_CLASSES_29, flip_pairs, keypoint_set

    head = dict(SAPIENS2_HEADS)
    labels = {
        "pose": {"id2label": dict(enumerate(keypoint_set(17)["keypoint_names"])), "flip_pairs": flip_pairs(17)},
        "segmentation": {"id2label": dict(enumerate(SEGMENTATION_CLASSES_29))},
        "normal": {"num_labels": 3}, "pointmap": {"num_labels": 3}, "matting": {"num_labels": 4},
    }[task]
    if task == "pointmap":
        head.update(scale_conv_out_channels=[8], scale_final_hidden_sizes=[8, 8])
    return Sapiens2Config(**{**SAPIENS2_ENCODER, "image_size": list(IMAGE_SIZE), "head_config": head, **labels,
                             **overrides})


def save_tiny_sapiens2_model(task: str, path) -> Path:
    """The tiny Sapiens2 model of `task` with its processor (normals and pointmaps padded, as released), saved."""
    import transformers

    from sapiens_hf import Sapiens2ImageProcessorPil
    from sapiens_hf.tasks import get_task

    torch.manual_seed(0)
    getattr(transformers, get_task(task).v2_model_class)(sapiens2_config(task)).save_pretrained(path)
    height, width = IMAGE_SIZE
    Sapiens2ImageProcessorPil(size={"height": height, "width": width},
                              do_pad=task in ("normal", "pointmap")).save_pretrained(path)
    return Path(path)


def save_example_model(task: str, path) -> Path:
    """The model the example scripts fine-tune in the tests (`size="small"`, EXAMPLE_HEADS), saved to `path`."""
    task = TASK_ALIASES.get(task, task)
    return save_model(task, path, tiny_config(size="small", **EXAMPLE_HEADS[task]))


# Tiny Sapiens2 (transformers' own model) configs for fine-tuning tests, with the original heads' layouts: 2 blocks (the second with
# grouped-query attention), 2 register tokens.
SAPIENS2_TRAINING_TINY = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
    "num_register_tokens": 2, "num_key_value_attention_heads": 1, "num_first_full_attention_layers": 1,
    "num_last_full_attention_layers": 0, "layerscale_value": 1e-4, "image_size": list(IMAGE_SIZE),
}
SAPIENS2_TRAINING_HEADS = {
    "pose": ({"upsample_out_channels": [16, 16], "conv_out_channels": [16]}, 17),
    "segmentation": ({"upsample_out_channels": [16, 16, 16, 16], "conv_out_channels": [16]}, 29),
    "normal": (
        {"upsample_out_channels": [16, 16, 16, 16], "upsample_kernel_size": 3, "use_pixel_shuffle": True,
         "conv_out_channels": [8], "conv_kernel_size": 3},
        3,
    ),
}


def sapiens2_training_config(task: str, **overrides):
    """A tiny `Sapiens2Config` with `task`'s head (pose: 17 keypoints, segmentation: 29 classes, normal: 3)."""
    from transformers import Sapiens2Config

    head, num_labels = SAPIENS2_TRAINING_HEADS[TASK_ALIASES.get(task, task)]
    return Sapiens2Config(**{**SAPIENS2_TRAINING_TINY, "head_config": head, "num_labels": num_labels, **overrides})


def save_sapiens2_model(task: str, path, **overrides) -> Path:
    """Saves a tiny Sapiens2 model of `task` (weights drawn after torch.manual_seed(0)) with an IMAGE_SIZE processor.
    Its config keeps transformers' default `pos_embed_rescale=2.0`, as a released config may."""
    from transformers import Sapiens2ForNormalEstimation, Sapiens2ForPoseEstimation, Sapiens2ForSemanticSegmentation

    from sapiens_hf import SapiensImageProcessorPil

    task = TASK_ALIASES.get(task, task)
    classes = {"pose": Sapiens2ForPoseEstimation, "segmentation": Sapiens2ForSemanticSegmentation,
               "normal": Sapiens2ForNormalEstimation}
    torch.manual_seed(0)
    classes[task](sapiens2_training_config(task, **overrides)).save_pretrained(path)
    SapiensImageProcessorPil(size=dict(zip(("height", "width"), IMAGE_SIZE))).save_pretrained(path)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# Tiny datasets made from real photos for the example scripts
# ---------------------------------------------------------------------------------------------------------------

# Rough COCO-17 keypoints (x, y) of the two photos, for boxes [x, y, w, h].
PEOPLE = {
    "astronaut.jpg": (
        [150, 10, 290, 502],
        [[263, 150], [285, 127], [242, 128], [312, 140], [220, 147], [350, 260], [180, 265], [400, 400], [160, 420],
         [330, 470], [200, 480], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]],
    ),
    "camera.png": (
        [150, 40, 220, 440],
        [[250, 95], [258, 88], [241, 88], [268, 92], [232, 93], [292, 150], [212, 148], [310, 220], [190, 215],
         [265, 210], [218, 160], [282, 300], [228, 300], [300, 390], [205, 385], [312, 460], [196, 455]],
    ),
}


def photos() -> dict[str, np.ndarray]:
    from skimage import data  # here: the Hub tests' client processes import this module too

    return {"astronaut.jpg": data.astronaut(), "camera.png": data.camera()}


def make_pose_data(root: Path, copies: int = 1) -> tuple[Path, Path]:
    """A COCO keypoint file with one person per photo (each listed `copies` times) and the image folder."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (name, image) in enumerate(photos().items(), start=1):
        Image.fromarray(image).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": 512, "width": 512})
        box, keypoints = PEOPLE[name]
        visibility = [[0] if x == y == 0 else [2] for x, y in keypoints]
        flat = np.hstack([np.asarray(keypoints, float), visibility]).flatten().tolist()
        for _ in range(copies):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "bbox": box,
                    "keypoints": flat,
                    "num_keypoints": sum(v[0] > 0 for v in visibility),
                    "area": box[2] * box[3] * 0.6,
                    "iscrowd": 0,
                    "category_id": 1,
                }
            )
    categories = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]
    path = root / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, root / "images"


def dense_targets(image: np.ndarray) -> dict[str, np.ndarray]:
    """Plausible targets from a photo: the dark person region as foreground, labels split left/right, depth and
    normals from the grey levels."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)
    foreground = grey < 110
    columns = np.arange(grey.shape[1])[None] > grey.shape[1] // 2
    labels = np.where(foreground, np.where(columns, 13, 4), 0).astype(np.uint8)  # Left_Foot / Right_Foot
    gradient_y, gradient_x = np.gradient(grey / 255)
    normals = np.dstack([-gradient_x, -gradient_y, np.ones_like(grey)])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {"labels": labels, "depth": 1 + grey / 255, "normals": normals.astype(np.float32), "masks": foreground}


def make_dense_data(root: Path) -> Path:
    """`root/{train,val}/{images,labels,depth,normals,masks}`, one pair per photo (down-scaled to 256 px)."""
    for split in ("train", "val"):
        for name, image in photos().items():
            image = np.ascontiguousarray(image[::2, ::2])
            stem = Path(name).stem
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "images" / f"{stem}.png")
            for folder, target in dense_targets(image).items():
                (root / split / folder).mkdir(exist_ok=True)
                if folder in ("labels", "masks"):
                    Image.fromarray(target.astype(np.uint8) * (255 if folder == "masks" else 1)).save(
                        root / split / folder / f"{stem}.png"
                    )
                else:
                    np.save(root / split / folder / f"{stem}.npy", target)
    return root


def load_example(name: str, folder: str = "examples"):
    """A script of `folder` (examples/, benchmarks/) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(script: str, args: list[str]) -> None:
    """Runs an example's `main()` in this process, as transformers' example tests do."""
    module = load_example(script)
    with patch.object(sys, "argv", [script, *args]):
        module.main()


# The example scripts' common arguments: 2 steps of batch 2, evaluated, nothing saved on the way.
COMMON = [
    "--do_train", "--do_eval", "--max_steps", "2", "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "2", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
]

# ---------------------------------------------------------------------------------------------------------------
# A tiny video of two people and a stand-in person detector
# ---------------------------------------------------------------------------------------------------------------


def two_people_video(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48), fps: int = 10,
                     codec: str = "mpeg4") -> Path:
    """A video (`size` width × height; MPEG-4 part 2 as older cameras write, or e.g. lossless "ffv1" in .mkv, which
    takes odd sizes) of two white 6×20 rectangles, "people", side by side in the first frame and moving apart by 2
    pixels a frame each."""
    import av

    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec == "mpeg4" else "yuv444p"  # 4:4:4 takes odd sizes
        for index in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            middle = width // 2
            image[10:30, middle - 8 - 2 * index : middle - 2 - 2 * index] = 255
            image[10:30, middle + 2 + 2 * index : middle + 8 + 2 * index] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def rectangles_detector(image) -> list[dict]:
    """A person detector as the pose pipeline calls one: every bright rectangle is a person, listed left to right in
    one frame and right to left in the next (the better score first), so that the people's order in a result says
    nothing about who they are."""
    import cv2

    mask = (np.asarray(image)[..., 0] > 128).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = sorted(stats[1:count, :4].tolist())
    if boxes and boxes[0][0] // 2 % 2:
        boxes.reverse()
    return [{"label": "person", "score": 0.9 - 0.1 * rank,
             "box": {"xmin": x, "ymin": y, "xmax": x + width, "ymax": y + height}}
            for rank, (x, y, width, height) in enumerate(boxes)]


# ---------------------------------------------------------------------------------------------------------------
# Tiny checkpoints in the original format (facebookresearch/sapiens)
# ---------------------------------------------------------------------------------------------------------------

POSE_FILE = "sapiens_0.3b_goliath_best_goliath_AP_573.pth"  # a released name, tiny weights


def original_pose_state_dict(seed: int = 0, hidden: int = 32, layers: int = 2, keypoints: int = 17) -> dict:
    """A tiny pose checkpoint with the original mmpose key names (facebookresearch/sapiens, `pose/configs/sapiens_pose/`)."""
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


def original_depth_state_dict(seed: int = 0) -> dict:
    """A tiny depth checkpoint: the pose checkpoint's backbone with a `decode_head.` depth head (one output)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    weights = {key: value for key, value in original_pose_state_dict(seed).items() if key.startswith("backbone.")}
    for key, shape in [("deconv_layers.0.weight", (32, 8, 4, 4)), ("deconv_layers.3.weight", (8, 8, 4, 4)),
                       ("conv_layers.0.weight", (8, 8, 1, 1)), ("conv_layers.0.bias", (8,)),
                       ("conv_seg.weight", (1, 8, 1, 1)), ("conv_seg.bias", (1,))]:
        weights["decode_head." + key] = torch.randn(*shape, generator=generator)
    return weights


def save_original(path, seed: int = 0, task: str = "pose") -> bytes:
    """Writes a `.pth` like the released task files (`state_dict` + `meta`) and returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = original_pose_state_dict(seed) if task == "pose" else original_depth_state_dict(seed)
    torch.save({"state_dict": weights, "meta": {"epoch": 210}}, path)
    return path.read_bytes()
