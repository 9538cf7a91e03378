"""Image processor for Sapiens (v1): the original's pre- and post-processing, reproduced exactly.

Pre-processing works on uint8 RGB arrays with OpenCV, as the original pipelines do: whole images are resized to the
model input with `cv2.resize` (segmentation, depth, normals); for top-down pose each person box is cropped with the UDP
affine warp of mmpose's `TopdownAffine`. Both are normalised on the 0–255 scale. Post-processing decodes heatmaps with
mmpose's UDP codec and DARK refinement (in NumPy/OpenCV, with the original's float32/float64 steps) and resizes dense
maps back to the image twice, as mmseg does. Original code (github.com/facebookresearch/sapiens):
`pose/mmpose/datasets/transforms/topdown_transforms.py`, `pose/mmpose/codecs/udp_heatmap.py`,
`pose/mmpose/codecs/utils/{post_processing,refinement}.py`, `seg/mmseg/models/segmentors/encoder_decoder.py`; the
reference outputs it is tested against are in tests/fixtures/.
"""

import os
from functools import partial

import cv2
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_utils import ChannelDimension, ImageInput, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .geometry import (
    SAPIENS_MEAN,
    SAPIENS_STD,
    _parallel_map,
    check_boxes,
    decode_udp_heatmaps,
    generate_udp_heatmaps,
    get_box_center_scale,
    get_udp_warp_matrix,
    warp_affine_bilinear,
)
from .image_io import DEFAULT_MAX_IMAGE_PIXELS, check_image_pixels, load_image, to_rgb_uint8
from .validation import check_kernel_size, check_number


_CV2_INTERPOLATION = {
    PILImageResampling.NEAREST: cv2.INTER_NEAREST,
    PILImageResampling.BILINEAR: cv2.INTER_LINEAR,
    PILImageResampling.BICUBIC: cv2.INTER_CUBIC,
    PILImageResampling.LANCZOS: cv2.INTER_LANCZOS4,
    PILImageResampling.BOX: cv2.INTER_AREA,
}


class SapiensImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    box_padding (`float`, *optional*, defaults to 1.25):
        Factor by which person boxes are enlarged before cropping (top-down pose).
    return_flipped_pixel_values (`bool`, *optional*, defaults to `False`):
        Also return `pixel_values_flipped`, the horizontally flipped inputs for test-time flip augmentation.
    keypoint_heatmap_downscale_factor (`int`, *optional*, defaults to 4):
        Input size / heatmap size of the pose targets.
    keypoint_heatmap_sigma (`float`, *optional*, defaults to 6):
        Standard deviation (heatmap pixels) of the UDP Gaussian pose targets.
    max_image_pixels (`int`, *optional*, defaults to 100_000_000):
        Largest image (height × width) accepted by pre-processing and as a post-processing `target_sizes` entry;
        larger ones raise a ValueError before any work. Set the attribute to `None` to remove the limit.
    """

    box_padding: float
    return_flipped_pixel_values: bool
    keypoint_heatmap_downscale_factor: int
    keypoint_heatmap_sigma: float
    max_image_pixels: int


# ---------------------------------------------------------------------------------------------------------------
# Checks of model outputs and post-processing arguments
# ---------------------------------------------------------------------------------------------------------------


def _check_finite(values: torch.Tensor, name: str) -> None:
    """Raise on NaN / infinite model outputs, which would otherwise decode to an arbitrary but plausible answer. The
    minimum and maximum are NaN or infinite exactly when a value is (on the CPU, 20× faster than `isfinite().all()`)."""
    if values.numel() and not torch.isfinite(torch.stack(torch.aminmax(values))).all():
        raise ValueError(
            f"The model's {name} hold NaN or infinite values (NaN inputs or weights, or an fp16 overflow: run the "
            "model in float32 or bfloat16); there is no prediction to post-process"
        )


def check_sizes(sizes, name: str, count: int) -> list:
    """`count` image sizes `(height, width)` of positive integers (a list, or a `(count, 2)` tensor / array), as a list
    of int pairs; `None` gives `count` times `None`."""
    if sizes is None:
        return [None] * count
    if isinstance(sizes, (torch.Tensor, np.ndarray)):
        sizes = sizes.tolist()
    if len(sizes) != count:
        raise ValueError(f"Got {len(sizes)} {name.replace('_', ' ')} for a batch of {count}: one per image in {name}")
    checked = []
    for size in sizes:
        size = size.tolist() if isinstance(size, (torch.Tensor, np.ndarray)) else size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"{name} must be (height, width) pairs of positive integers, got {size!r}")
        checked.append(tuple(int(check_number(side, name, integer=True, positive=True)) for side in size))
    return checked


# The model output each post-processing method reads, and its shape.
_MODEL_OUTPUTS = {
    "post_process_pose_estimation": ("heatmaps", "(batch, num_keypoints, height, width)"),
    "post_process_semantic_segmentation": ("logits", "(batch, num_classes, height, width)"),
    "post_process_depth_estimation": ("predicted_depth", "(batch, height, width)"),
    "post_process_normal_estimation": ("normals", "(batch, 3, height, width)"),
}


def _model_output(outputs, method: str, argument: str = "outputs") -> torch.Tensor:
    """The model output `method` reads, as a detached float32 tensor, if it has the documented number of dimensions
    (and 3 channels for normals); else a clear error: the outputs of another task's model have other fields."""
    name, shape = _MODEL_OUTPUTS[method]
    values = getattr(outputs, name, None)
    tensor = isinstance(values, torch.Tensor) and values.ndim == shape.count(",") + 1
    if tensor and (name != "normals" or values.shape[1] == 3):
        return values.detach().float()
    task = method.removeprefix("post_process_").replace("_", " ")
    got = type(outputs).__name__
    if isinstance(values, torch.Tensor):
        got += f" with {name} of shape {tuple(values.shape)}"
    raise ValueError(f"{method}: `{argument}` must be the outputs of a {task} model, with {name} {shape}; got {got}")


def _as_list(inputs, single_ndims: tuple[int, ...]) -> list:
    """A single item or a (possibly batched / nested) collection of items as a flat list."""
    if isinstance(inputs, (list, tuple)):
        return [item for entry in inputs for item in _as_list(entry, single_ndims)]
    if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == max(single_ndims) + 1:
        return list(inputs)
    return [inputs]


def _crop_parameters(value, name: str, num_crops: int) -> np.ndarray:
    """`crop_center` / `crop_scale` as given back to post-processing: `(num_crops, 2)` finite numbers."""
    array = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    if array.shape != (num_crops, 2) or not np.isfinite(array).all():
        raise ValueError(f"{name} must be {num_crops} finite (x, y) pairs, one per box, as preprocess returned it; "
                         f"got shape {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------------------------
# Dense maps at image size: the bilinear resize in bands of output rows
# ---------------------------------------------------------------------------------------------------------------

# Target sizes up to this many pixels are resized with one F.interpolate call; larger ones in bands of output rows.
BANDED_RESIZE_MIN_PIXELS = 1 << 22  # 4.2 MP, e.g. 2048 × 2048
_BAND_ELEMENTS = 1 << 21  # floats per band (channels × rows × width): 8 MB


def assemble_bands(bands, target_size) -> torch.Tensor:
    """One `(channels, *target_size)` tensor from `(start, stop, band)` row bands (`_bilinear_bands`), filled in
    place; a single band of every row (a target size resized at once, or None: the maps' own) is returned as it is."""
    output = None
    for start, stop, band in bands:
        if start == 0 and stop == (target_size or band.shape[1:])[0]:
            return band
        if output is None:
            output = band.new_empty(len(band), *target_size)
        output[:, start:stop] = band
    return output


def _bilinear_bands(maps: torch.Tensor, size: tuple[int, int], rows_per_band: int | None = None):
    """Yields `(start, stop, band)` for consecutive bands of output rows of `maps` `(channels, h, w)` resized
    bilinearly to `size` (align_corners=False), each computed from the source rows it needs: F.interpolate resizes
    them in width, then each output row y weighs its two source rows at the source coordinate F.interpolate samples,
    max(0, (y + 0.5) · h / height − 0.5). The coordinates are computed in float64, where F.interpolate rounds them to
    float32 (tests/test_dense_memory.py says by how much that differs)."""
    channels, (height, width), last = len(maps), size, maps.shape[1] - 1
    source = ((torch.arange(height, dtype=torch.float64) + 0.5) * (maps.shape[1] / height) - 0.5).clamp_(min=0)
    row0 = source.long().clamp_(max=last)
    row1 = (row0 + 1).clamp_(max=last)
    weight1 = (source - row0).float()[:, None]
    step = rows_per_band or max(1, _BAND_ELEMENTS // (channels * width))
    for start in range(0, height, step):
        stop = min(height, start + step)
        low, high = int(row0[start]), int(row1[stop - 1]) + 1
        rows = F.interpolate(maps[None, :, low:high], size=(high - low, width), mode="bilinear", align_corners=False)
        weight = weight1[start:stop]
        band = rows[0, :, row0[start:stop] - low] * (1 - weight) + rows[0, :, row1[start:stop] - low] * weight
        yield start, stop, band


# ---------------------------------------------------------------------------------------------------------------
# Image processor
# ---------------------------------------------------------------------------------------------------------------


class SapiensImageProcessorPil(PilBackend):
    r"""
    Constructs a Sapiens image processor (NumPy/OpenCV backend) that reproduces the original pipelines exactly.

    Without `boxes` every image is resized to `size` (`cv2.resize`, INTER_LINEAR for the default `resample`), as for
    body-part segmentation, depth and normals. With `boxes` (top-down pose) every box gives one crop: the box is
    padded by `box_padding`, widened to the aspect ratio of `size` and cut out with the UDP affine warp (bilinear,
    zero border); an image with an empty box list is used whole. Pixels are then normalised as
    `(x − image_mean) / image_std` on the 0–255 scale, in float32.

    Images may be PIL images, NumPy arrays or torch tensors (grayscale, RGB or RGBA; uint8, uint16, or float in
    [0, 1]), file paths or URLs. Internally images are `(height, width, 3)` uint8 RGB arrays (OpenCV's layout).
    """

    valid_kwargs = SapiensImageProcessorKwargs
    model_input_names = ["pixel_values"]

    size = {"height": 1024, "width": 768}
    resample = PILImageResampling.BILINEAR
    do_resize = True
    do_rescale = False
    do_normalize = True
    image_mean = SAPIENS_MEAN
    image_std = SAPIENS_STD
    box_padding = 1.25
    return_flipped_pixel_values = False
    keypoint_heatmap_downscale_factor = 4
    keypoint_heatmap_sigma = 6.0
    max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS

    def __init__(self, **kwargs: Unpack[SapiensImageProcessorKwargs]):
        super().__init__(**kwargs)

    def preprocess(
        self,
        images: ImageInput,
        boxes: list | None = None,
        keypoints: list | None = None,
        segmentation_maps: ImageInput | None = None,
        depth_maps: ImageInput | None = None,
        normal_maps: ImageInput | None = None,
        **kwargs: Unpack[SapiensImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        boxes (`list[list[list[float]]]`, *optional*):
            Per image, the person boxes in COCO format `[x, y, width, height]` (absolute pixels). Switches to top-down
            pose mode: one crop per box, in order; an empty list uses the whole image as its box. The crops' float32
            `crop_center` and `crop_scale` `(num_crops, 2)` are returned as well.
        keypoints (`list[list[list[list[float]]]]`, *optional*):
            Per image, per box, the person's keypoints `[x, y, visibility]` (or `[x, y]`) in image pixels: returned as
            UDP heatmap `labels` `(num_crops, K, H/4, W/4)` and `label_weights` `(num_crops, K)` (= min(1,
            visibility), 0 where the target misses the heatmap). Needs `boxes`.
        segmentation_maps (`ImageInput`, *optional*):
            Class-index maps `(H, W)`, resized with nearest-neighbour interpolation into `labels`.
        depth_maps (`ImageInput`, *optional*):
            Depth maps `(H, W)` (invalid pixels ≤ 0), resized with nearest-neighbour interpolation into `labels`.
        normal_maps (`ImageInput`, *optional*):
            Normal maps `(H, W, 3)` (background −1000), resized with nearest-neighbour interpolation into `labels`
            `(batch, 3, height, width)`.
        """
        return super().preprocess(
            images,
            image_like_kwargs={
                "boxes": boxes,
                "keypoints": keypoints,
                "segmentation_maps": segmentation_maps,
                "depth_maps": depth_maps,
                "normal_maps": normal_maps,
            },
            **kwargs,
        )

    def _validate_preprocess_kwargs(
        self,
        do_convert_rgb=None,
        image_mean=None,
        image_std=None,
        box_padding=None,
        keypoint_heatmap_downscale_factor=None,
        keypoint_heatmap_sigma=None,
        max_image_pixels=None,
        **kwargs,
    ):
        """transformers' checks, then those of what this processor would otherwise ignore or get wrong silently: it
        always makes 3-channel RGB images (as the Sapiens models take), so `do_convert_rgb=False` is unsupported and
        the mean and std hold 3 values."""
        super()._validate_preprocess_kwargs(image_mean=image_mean, image_std=image_std, **kwargs)
        if do_convert_rgb is False:
            raise ValueError(
                "do_convert_rgb=False is not supported: the Sapiens processor always converts images to 3-channel RGB "
                "(grayscale replicated, alpha dropped), as the Sapiens models take"
            )
        for name, values in (("image_mean", image_mean), ("image_std", image_std)):
            array = np.asarray(values, dtype=np.float64)
            if array.shape != (3,) or not np.isfinite(array).all() or (name == "image_std" and (array <= 0).any()):
                requirement = "3 positive numbers" if name == "image_std" else "3 finite numbers"
                raise ValueError(f"{name} must be {requirement}, one per RGB channel (images are made RGB): {values!r}")
        check_number(box_padding, "box_padding", positive=True)
        check_number(keypoint_heatmap_sigma, "keypoint_heatmap_sigma", positive=True)
        check_number(
            keypoint_heatmap_downscale_factor, "keypoint_heatmap_downscale_factor", integer=True, positive=True
        )
        if max_image_pixels is not None:
            check_number(max_image_pixels, "max_image_pixels", integer=True, positive=True)

    def _prepare_images_structure(self, images: ImageInput, expected_ndims: int = 3) -> list:
        images = _as_list(images, single_ndims=(2, 3))
        return [load_image(image) if isinstance(image, (str, os.PathLike)) else image for image in images]

    def process_image(
        self, image: ImageInput, input_data_format: str | ChannelDimension | None = None, **kwargs
    ) -> np.ndarray:
        return to_rgb_uint8(image, input_data_format)

    def _preprocess_image_like_inputs(
        self,
        images: ImageInput,
        boxes: list | None,
        keypoints: list | None,
        segmentation_maps: ImageInput | None,
        depth_maps: ImageInput | None,
        normal_maps: ImageInput | None,
        input_data_format: str | ChannelDimension | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        # The size limit is checked before any work: from the header for files and URLs, before decoding.
        limit = kwargs.get("max_image_pixels")
        images = [
            load_image(image, max_pixels=limit) if isinstance(image, (str, os.PathLike)) else image
            for image in _as_list(images, single_ndims=(2, 3))
        ]
        for image in images:
            if isinstance(image, PIL.Image.Image):
                check_image_pixels(image.height, image.width, limit)
        images = self._prepare_image_like_inputs(images, input_data_format=input_data_format)
        for image in images:  # arrays and tensors: checked once their layout is known, before resizing
            check_image_pixels(*image.shape[:2], limit)
        targets = {"segmentation_maps": segmentation_maps, "depth_maps": depth_maps, "normal_maps": normal_maps}
        targets = {name: value for name, value in targets.items() if value is not None}
        if len(targets) + (keypoints is not None) > 1:
            raise ValueError(f"Pass one kind of training target at a time, got {[*targets, 'keypoints'][:2]}")
        if boxes is None:
            if keypoints is not None:
                raise ValueError("`keypoints` need the person `boxes` they belong to (top-down pose)")
            data = self._preprocess(images, **kwargs)
            for name, maps in targets.items():
                data["labels"] = self._resize_targets(maps, name, len(images), kwargs["size"])
        else:
            if targets:
                raise ValueError(f"{next(iter(targets))} are resized whole; they cannot be used with `boxes`")
            if len(boxes) != len(images):
                raise ValueError(
                    f"Got boxes for {len(boxes)} images but {len(images)} images; boxes are given per image: "
                    "[[[x, y, width, height], ...], ...]"
                )
            data = self._preprocess_top_down(images, boxes, keypoints, **kwargs)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _normalize(self, images: list[np.ndarray], do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        """uint8 HWC → float32 CHW, `(x − mean) / std` in float32 (subtraction, then division), as the original. One
        stacked `(N, 3, H, W)` array when the images share a size (always, unless `do_resize=False`), filled channel by
        channel in place: the same float32 operations, without the temporaries or a stacking copy afterwards."""
        if len({image.shape for image in images}) == 1:
            processed = np.empty((len(images), 3, *images[0].shape[:2]), dtype=np.float32)
        else:
            processed = [np.empty((3, *image.shape[:2]), dtype=np.float32) for image in images]

        def normalize(pair: tuple[np.ndarray, np.ndarray]) -> None:
            image, target = pair
            for channel, plane in enumerate(target):
                plane[...] = image[..., channel]
                if do_rescale:
                    plane *= np.float32(rescale_factor)
                if do_normalize:
                    plane -= np.float32(image_mean[channel])
                    plane /= np.float32(image_std[channel])

        _parallel_map(normalize, list(zip(images, processed)))
        return processed

    def _output(self, images: list[np.ndarray], return_flipped_pixel_values: bool, **normalize_kwargs) -> dict:
        pixel_values = self._normalize(images, **normalize_kwargs)
        data = {"pixel_values": pixel_values}
        if return_flipped_pixel_values:
            if isinstance(pixel_values, np.ndarray):
                data["pixel_values_flipped"] = np.ascontiguousarray(pixel_values[..., ::-1])
            else:
                data["pixel_values_flipped"] = [np.ascontiguousarray(image[..., ::-1]) for image in pixel_values]
        return data

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_flipped_pixel_values: bool = False,
        **kwargs,
    ) -> dict:
        """Whole-image mode: `cv2.resize` of the uint8 image to `size`, then normalisation."""
        if do_resize:
            if resample not in _CV2_INTERPOLATION:
                raise ValueError(f"Unsupported resample {resample!r}; use one of {list(_CV2_INTERPOLATION)}")
            images = [
                cv2.resize(image, (size.width, size.height), interpolation=_CV2_INTERPOLATION[resample])
                for image in images
            ]
        return self._output(
            images,
            return_flipped_pixel_values,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
        )

    def _preprocess_top_down(
        self,
        images: list[np.ndarray],
        boxes: list,
        keypoints: list | None,
        size: SizeDict,
        box_padding: float,
        keypoint_heatmap_downscale_factor: int,
        keypoint_heatmap_sigma: float,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        return_flipped_pixel_values: bool = False,
        **kwargs,
    ) -> dict:
        """Top-down mode: one UDP crop per box (always bilinear, as the original), then normalisation."""
        output_size = (size.width, size.height)
        if keypoints is not None and len(keypoints) != len(images):
            raise ValueError(f"Got keypoints for {len(keypoints)} images but {len(images)} images")
        boxes = [check_boxes(image_boxes, *image.shape[:2]) for image_boxes, image in zip(boxes, images)]
        crops, centers, scales, labels, label_weights = [], [], [], [], []
        for index, (image, image_boxes) in enumerate(zip(images, boxes)):
            center, scale = get_box_center_scale(image_boxes, output_size, box_padding)
            matrices = [get_udp_warp_matrix(c, s, output_size) for c, s in zip(center, scale)]
            crops += _parallel_map(partial(warp_affine_bilinear, image, output_size=output_size), matrices)
            centers.append(center)
            scales.append(scale)
            if keypoints is not None:
                if len(keypoints[index]) != len(image_boxes):
                    raise ValueError(
                        f"Image {index}: {len(keypoints[index])} keypoint sets for {len(image_boxes)} boxes"
                    )
                heatmap_size = (
                    size.width // keypoint_heatmap_downscale_factor,
                    size.height // keypoint_heatmap_downscale_factor,
                )
                for person, matrix in zip(keypoints[index], matrices):
                    person = np.asarray(person, dtype=np.float32)
                    if person.ndim != 2 or person.shape[1] not in (2, 3):
                        raise ValueError(f"Keypoints must be [x, y, visibility] rows, got shape {person.shape}")
                    visible = np.minimum(1, person[:, 2]) if person.shape[1] == 3 else np.ones(len(person), np.float32)
                    in_crop = cv2.transform(np.ascontiguousarray(person[None, :, :2]), matrix)[0]
                    heatmaps, weights = generate_udp_heatmaps(
                        in_crop, visible, output_size, heatmap_size, keypoint_heatmap_sigma
                    )
                    labels.append(heatmaps)
                    label_weights.append(weights)
        data = self._output(
            crops,
            return_flipped_pixel_values,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
        )
        data["crop_center"] = np.concatenate(centers)
        data["crop_scale"] = np.concatenate(scales)
        if keypoints is not None:
            data["labels"], data["label_weights"] = labels, label_weights
        return data

    def _resize_targets(self, maps: ImageInput, name: str, num_images: int, size: SizeDict) -> list[np.ndarray]:
        """Training targets resized to `size` with nearest-neighbour interpolation (a bilinear resize would blend
        labels and invalid-pixel markers)."""
        single_ndims = (3,) if name == "normal_maps" else (2,)
        maps = [np.asarray(item) for item in _as_list(maps, single_ndims)]
        if len(maps) != num_images:
            raise ValueError(f"Got {len(maps)} {name} for {num_images} images")
        resized = []
        for item in maps:
            if item.ndim != single_ndims[0] or (name == "normal_maps" and item.shape[-1] != 3):
                expected = "(height, width, 3)" if name == "normal_maps" else "(height, width)"
                raise ValueError(f"{name} must be {expected} arrays, got shape {item.shape}")
            if name == "segmentation_maps":
                if not np.issubdtype(item.dtype, np.integer) or item.min() < 0 or item.max() > 255:
                    raise ValueError("segmentation_maps must hold integer class indices in [0, 255]")
                item = item.astype(np.uint8)
            else:
                item = item.astype(np.float32)
            item = cv2.resize(item, (size.width, size.height), interpolation=cv2.INTER_NEAREST)
            if name == "segmentation_maps":
                item = item.astype(np.int64)
            elif name == "normal_maps":
                item = np.ascontiguousarray(item.transpose(2, 0, 1))
            resized.append(item)
        return resized

    # -----------------------------------------------------------------------------------------------------------
    # Post-processing
    # -----------------------------------------------------------------------------------------------------------

    def post_process_pose_estimation(
        self,
        outputs,
        boxes: list,
        outputs_flipped=None,
        kernel_size: int = 11,
        threshold: float | None = None,
        source_sizes: list[tuple[int, int]] | None = None,
        crop_center=None,
        crop_scale=None,
    ) -> list[list[dict[str, torch.Tensor]]]:
        """
        Keypoints in image coordinates from the heatmaps of top-down crops (mmpose's UDP + DARK decoding).

        Args:
            outputs: model output with `heatmaps` `(num_crops, K, H/4, W/4)`, crops in the order of `boxes`.
            boxes (`list[list[list[float]]]`): the per-image `[x, y, width, height]` boxes given to `preprocess`.
            outputs_flipped (*optional*): for the original's flip test, the model output on the horizontally flipped
                crops called with `flip_pairs` (`model(pixel_values_flipped, flip_pairs=model.config.flip_pairs)`),
                which mirrors the heatmaps back and swaps left/right keypoints, as Sapiens2's. It is averaged with
                `outputs` before decoding.
            kernel_size (`int`, *optional*, defaults to 11): Gaussian blur kernel of the DARK refinement.
            threshold (`float`, *optional*): drop keypoints whose score is not above it.
            source_sizes (`list[tuple[int, int]]`, *optional*): `(height, width)` of each image; needed only for
                images with an empty box list (the whole image is then the box).
            crop_center, crop_scale (`(num_crops, 2)`, *optional*): the crops `preprocess` returned, which map the
                heatmaps back to the image; computed from `boxes` (as `preprocess` does) when not given.

        Returns:
            Per image a list with one dict per box: `keypoints` `(K, 2)` (x, y in image pixels), `scores` `(K,)`,
            `labels` `(K,)` (keypoint indices) and `bbox_xywh` `(4,)`: the person's box as given, (x, y, width, height).
        """
        heatmaps = _model_output(outputs, "post_process_pose_estimation")
        if outputs_flipped is not None:
            flipped = _model_output(outputs_flipped, "post_process_pose_estimation", "outputs_flipped")
            heatmaps = 0.5 * (heatmaps + flipped)
        check_kernel_size(kernel_size)
        if threshold is not None:
            check_number(threshold, "threshold")
        sizes = check_sizes(source_sizes, "source_sizes", len(boxes))

        per_image = []
        for index, (image_boxes, size) in enumerate(zip(boxes, sizes)):
            per_image.append(check_boxes(image_boxes, *(size or ())))
            if len(per_image[-1]) == 0:
                raise ValueError(f"Image {index} has no boxes: pass `source_sizes` to use the whole image as its box")
        all_boxes = np.concatenate(per_image) if per_image else np.zeros((0, 4))
        if len(all_boxes) != len(heatmaps):
            raise ValueError(f"{len(heatmaps)} heatmaps for {len(all_boxes)} boxes: pass the boxes given to preprocess")

        input_size = (self.size["width"], self.size["height"])
        if (crop_center is None) != (crop_scale is None):
            raise ValueError("Pass both crop_center and crop_scale (as preprocess returned them), or neither")
        if crop_center is None:
            center, scale = get_box_center_scale(all_boxes, input_size, self.box_padding)
        else:
            center, scale = (_crop_parameters(value, name, len(all_boxes))
                             for value, name in ((crop_center, "crop_center"), (crop_scale, "crop_scale")))
            if (scale <= 0).any():
                raise ValueError("crop_scale must be positive")
        _check_finite(heatmaps, "heatmaps")
        keypoints, scores = decode_udp_heatmaps(heatmaps.cpu().numpy(), input_size, kernel_size)
        keypoints = keypoints / np.asarray(input_size) * scale[:, None] + center[:, None] - 0.5 * scale[:, None]

        results, start = [], 0
        for image_boxes in per_image:
            people = []
            for person in range(start, start + len(image_boxes)):
                result = {
                    "keypoints": torch.from_numpy(keypoints[person]).float(),
                    "scores": torch.from_numpy(scores[person]),
                    "labels": torch.arange(keypoints.shape[1]),
                    "bbox_xywh": torch.from_numpy(all_boxes[person]).float(),
                }
                if threshold is not None:
                    keep = result["scores"] > threshold
                    result.update({key: result[key][keep] for key in ("keypoints", "scores", "labels")})
                people.append(result)
            results.append(people)
            start += len(image_boxes)
        return results

    def _dense_bands(self, maps: torch.Tensor, target_size):
        """`(start, stop, band)` covering `maps` `(channels, h, w)` resized bilinearly (align_corners=False) to the
        model input size, then to `target_size` (when given) — the two resizes of mmseg's `predict_by_feat` and
        `postprocess_result`. Up to `BANDED_RESIZE_MIN_PIXELS` one band (one F.interpolate call), above that bands
        of about 8 MB (`_bilinear_bands`), so that memory does not grow with classes × image size."""
        size = (self.size["height"], self.size["width"])
        maps = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
        if target_size is None:
            yield 0, size[0], maps
        elif target_size[0] * target_size[1] <= BANDED_RESIZE_MIN_PIXELS:
            yield (
                0,
                target_size[0],
                F.interpolate(maps[None], size=target_size, mode="bilinear", align_corners=False)[0],
            )
        else:
            yield from _bilinear_bands(maps, target_size)

    def _resize_twice(self, maps: torch.Tensor, target_size, each_band=None) -> torch.Tensor:
        """The resized maps `(channels, height, width)`, `each_band` applied band by band, assembled in place."""
        bands = self._dense_bands(maps, target_size)
        if each_band is not None:
            bands = ((start, stop, each_band(band)) for start, stop, band in bands)
        return assemble_bands(bands, target_size)

    def _check_target_sizes(self, target_sizes, count: int) -> list:
        target_sizes = check_sizes(target_sizes, "target_sizes", count)
        for size in target_sizes:
            if size is not None:
                check_image_pixels(*size, self.max_image_pixels, "A target size")
        return target_sizes

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None, return_segmentation_scores: bool = False
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """
        Class-index maps (int64) from the segmentation logits: bilinear resize to the model input, then to
        `target_sizes` `(height, width)` (the original image sizes; the input size when `None`), then argmax over
        classes. Large target sizes are resized and reduced in bands of rows, so that only the label map is held at
        full size. With `return_segmentation_scores`, each item also carries the resized logits `(num_classes,
        height, width)`: num_classes × height × width × 4 bytes (3.2 GB for 28 classes at 5000 × 5800).
        Target sizes above `max_image_pixels` raise a ValueError.
        """
        logits = _model_output(outputs, "post_process_semantic_segmentation")
        target_sizes = self._check_target_sizes(target_sizes, len(logits))
        _check_finite(logits, "logits")
        results = []
        for item, target_size in zip(logits, target_sizes):
            if return_segmentation_scores:
                scores = self._resize_twice(item, target_size)
                data = {"segmentation": scores.argmax(dim=0), "segmentation_scores": scores}
                results.append(SemanticSegmentationPostProcessorOutput(data=data))
                continue
            segmentation = torch.empty(target_size or (self.size["height"], self.size["width"]), dtype=torch.long)
            for start, stop, band in self._dense_bands(item, target_size):
                torch.argmax(band, dim=0, out=segmentation[start:stop])
            results.append(segmentation)
        return results

    def post_process_depth_estimation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None, outputs_flipped=None
    ) -> list[dict[str, torch.Tensor]]:
        """
        Relative depth `(height, width)` per image: the model's map resized to the model input, then to
        `target_sizes` (the input size when `None`; at most `max_image_pixels`). With `outputs_flipped` (the model
        output on `pixel_values_flipped`, as returned) that prediction is mirrored back and averaged in, as the
        original depth demo's `--flip`.
        """
        depth = _model_output(outputs, "post_process_depth_estimation")
        if outputs_flipped is not None:
            flipped = _model_output(outputs_flipped, "post_process_depth_estimation", "outputs_flipped")
            depth = 0.5 * (depth + flipped.flip(-1))
        target_sizes = self._check_target_sizes(target_sizes, len(depth))
        _check_finite(depth, "depth maps")
        return [
            {"predicted_depth": self._resize_twice(item[None], target_size)[0]}
            for item, target_size in zip(depth, target_sizes)
        ]

    def post_process_normal_estimation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """
        Unit surface normals `(3, height, width)` per image: the raw normals resized to the model input, then to
        `target_sizes` (the input size when `None`; at most `max_image_pixels`), then divided by their length +
        1e-5, as the original demo (band by band for large sizes).
        """
        normals = _model_output(outputs, "post_process_normal_estimation")
        target_sizes = self._check_target_sizes(target_sizes, len(normals))
        _check_finite(normals, "normals")
        return [
            {"normals": self._resize_twice(item, target_size, _unit_length)}
            for item, target_size in zip(normals, target_sizes)
        ]


def _unit_length(normals: torch.Tensor) -> torch.Tensor:
    return normals / (torch.linalg.vector_norm(normals, dim=0, keepdim=True) + 1e-5)


__all__ = ["SapiensImageProcessorPil"]
