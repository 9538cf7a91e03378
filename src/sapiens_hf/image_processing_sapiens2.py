"""Image processor for Sapiens2 without torchvision: transformers' `Sapiens2ImageProcessor` (models/sapiens2 in
transformers) runs on torchvision only, which is not installable beside every torch build. This processor gives the
same pixel values and results with torch, NumPy and OpenCV, on the machinery of the Sapiens (v1) processor:

- whole images (segmentation, normals, pointmaps, matting): the antialiased bilinear (or bicubic, per `resample`)
  resize torchvision runs on the CPU (torch's own `F.interpolate(antialias=True)` on the uint8 image), or with
  `do_pad` (normals, pointmaps) the aspect-preserving resize into `size` and a centred zero border;
- top-down pose crops: the padded, aspect-corrected box sampled with `F.grid_sample` (align_corners, bilinear when
  shrinking, bicubic when enlarging, zero border), as transformers' `crop_and_resize`, on the 0–255 float image;
- normalisation `(x − 255·mean) / (255·std)` with ImageNet's mean and std, as torchvision's fused rescale+normalise;
- pose decoding: the UDP + DARK decoding of `geometry.py` (the same maths as transformers'
  `post_dark_unbiased_data_processing`; the blur is OpenCV's rather than torchvision's, see docs/sapiens2.md);
- dense maps: one bilinear resize to the image (padding removed first), per transformers' `_post_process_maps`.

tests/test_sapiens2_processing.py compares every step with references made by transformers' processor
(tests/fixtures/make_sapiens2_reference.py), at the tolerances stated there.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict

from .geometry import _parallel_map, check_boxes, get_box_center_scale, get_udp_warp_matrix
from .image_processing_sapiens import (
    BANDED_RESIZE_MIN_PIXELS,
    SapiensImageProcessorKwargs,
    SapiensImageProcessorPil,
    _bilinear_bands,
    _check_finite,
    _model_output,
    assemble_bands,
    check_sizes,
)


class Sapiens2ImageProcessorKwargs(SapiensImageProcessorKwargs, total=False):
    r"""
    do_pad (`bool`, *optional*, defaults to `False`):
        Resize whole images keeping their aspect ratio into `size` and centre them on a zero border (the released
        normal and pointmap processors set it); post-processing removes that border again.
    """

    do_pad: bool
    resize_as_original: bool


def padded_region(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`(top, left, height, width)` of an image of `image_size` resized into `size` (height, width) keeping its aspect
    ratio, as transformers' `get_image_size_for_max_height_width` and torchvision's centre crop place it."""
    height, width = image_size
    scale = min(size[0] / height, size[1] / width)
    new_height, new_width = max(int(height * scale), 1), max(int(width * scale), 1)
    return (size[0] - new_height) // 2, (size[1] - new_width) // 2, new_height, new_width


# transformers' resample values → torch's interpolation on uint8 images, as torchvision's `resize` runs them on the
# CPU (antialiased bilinear and bicubic; nearest as NEAREST_EXACT, which transformers maps NEAREST to).
_TORCH_RESAMPLE = {
    PILImageResampling.BILINEAR: ("bilinear", True),
    PILImageResampling.BICUBIC: ("bicubic", True),
    PILImageResampling.NEAREST: ("nearest-exact", False),
}


def _resize_uint8(image: np.ndarray, size: tuple[int, int], resample=PILImageResampling.BILINEAR) -> np.ndarray:
    """`image` `(H, W, 3)` uint8 resized to `size` (height, width) in uint8, with the kernel torchvision's `resize`
    calls for `resample`."""
    if resample not in _TORCH_RESAMPLE:
        raise ValueError(f"Unsupported resample {resample!r} for Sapiens2; use one of {list(_TORCH_RESAMPLE)}")
    mode, antialias = _TORCH_RESAMPLE[resample]
    tensor = torch.tensor(image).permute(2, 0, 1)[None]  # a copy: decoded images may be read-only arrays
    align_corners = False if antialias else None
    resized = F.interpolate(tensor, size=size, mode=mode, antialias=antialias, align_corners=align_corners)
    return resized[0].permute(1, 2, 0).numpy()


def crop_boxes(image: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> list:
    """One float32 `(H, W, 3)` crop (0–255 scale) of `output_size` (width, height) per crop centre/size: the grid of
    transformers' `crop_and_resize` (the UDP affine with rotation 0), bilinear where the crop shrinks the image and
    bicubic where it enlarges it, zeros outside."""
    out_width, out_height = output_size
    source = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    height, width = image.shape[:2]
    rows = torch.arange(out_height, dtype=torch.float32)[:, None]
    cols = torch.arange(out_width, dtype=torch.float32)[None, :]
    crops = []
    for (center_x, center_y), (box_width, box_height) in zip(center.tolist(), scale.tolist()):
        center_x, center_y, box_width, box_height = (torch.tensor(v, dtype=torch.float32)
                                                     for v in (center_x, center_y, box_width, box_height))
        scale_x, scale_y = (out_width - 1) / box_width, (out_height - 1) / box_height
        in_x = cols / scale_x + center_x - 0.5 * box_width
        in_y = rows / scale_y + center_y - 0.5 * box_height
        grid = torch.stack(torch.broadcast_tensors(2.0 * in_x / (width - 1) - 1.0, 2.0 * in_y / (height - 1) - 1.0),
                           dim=-1)
        mode = "bilinear" if min(scale_x, scale_y) < 1.0 else "bicubic"
        crop = F.grid_sample(source, grid[None], mode=mode, padding_mode="zeros", align_corners=True)
        crops.append(crop[0].permute(1, 2, 0).numpy())
    return crops


def original_crops(image: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> list:
    """The original Sapiens2's person crops (`PoseTopdownAffine`): `cv2.warpAffine` of the uint8 image with the UDP
    matrix, INTER_CUBIC where the crop enlarges the image, else INTER_AREA (which `warpAffine` runs as bilinear)."""
    crops = []
    for box_center, box_scale in zip(center, scale):
        matrix = get_udp_warp_matrix(box_center, box_scale, output_size)
        enlarges = min(np.linalg.norm(matrix[0, :2]), np.linalg.norm(matrix[1, :2])) >= 1.0
        crops.append(cv2.warpAffine(image, matrix, output_size, flags=cv2.INTER_CUBIC if enlarges else cv2.INTER_AREA))
    return crops


class Sapiens2ImageProcessorPil(SapiensImageProcessorPil):
    r"""
    Constructs a Sapiens2 image processor without torchvision (torch/NumPy/OpenCV), equal to transformers'
    `Sapiens2ImageProcessor` at the tolerances of tests/test_sapiens2_processing.py, with the Sapiens (v1)
    processor's interface: `boxes` switch to top-down pose (one crop per box, `crop_center`/`crop_scale` returned),
    post-processing returns the same result schema as for v1 (`bbox_xywh`, class maps, unit normals), plus
    `post_process_pointmap_estimation` and `post_process_image_matting`. Loaded by `AutoImageProcessor` for a
    Sapiens2 checkpoint (its `preprocessor_config.json` gives `size`, `do_pad`, mean and std).
    """

    valid_kwargs = Sapiens2ImageProcessorKwargs

    do_rescale = True
    rescale_factor = 1 / 255
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_pad = False
    resize_as_original = False

    def preprocess(self, images, boxes=None, keypoints=None, segmentation_maps=None, depth_maps=None,
                   normal_maps=None, **kwargs):
        """Model inputs of `images` (with `boxes`: person crops), as the Sapiens processor's `preprocess`. Training
        targets are not made here: sapiens-hf does not train Sapiens2 models (transformers' processor makes them)."""
        targets = {"keypoints": keypoints, "segmentation_maps": segmentation_maps, "depth_maps": depth_maps,
                   "normal_maps": normal_maps}
        given = [name for name, value in targets.items() if value is not None]
        if given:
            raise ValueError(f"Sapiens2ImageProcessorPil makes model inputs only, not training targets ({given[0]}): "
                             "use transformers' Sapiens2ImageProcessor for Sapiens2 training targets")
        return super().preprocess(images, boxes=boxes, **kwargs)

    def _validate_preprocess_kwargs(self, do_pad=None, resize_as_original=None, **kwargs):
        super()._validate_preprocess_kwargs(**kwargs)  # do_pad and resize_as_original are flags, checked by use

    def _normalize(self, images, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        """torchvision's fused rescale and normalisation: `(x − mean/rescale_factor) / (std/rescale_factor)` in
        float32."""
        if do_rescale and do_normalize:
            factor = np.float32(1.0 / rescale_factor)
            image_mean = [np.float32(value) * factor for value in image_mean]
            image_std = [np.float32(value) * factor for value in image_std]
            do_rescale = False
        return super()._normalize(images, do_rescale, rescale_factor, do_normalize, image_mean, image_std)

    def _preprocess(self, images, do_resize, size: SizeDict, resample, do_rescale, rescale_factor, do_normalize,
                    image_mean, image_std, return_flipped_pixel_values=False, do_pad=False, resize_as_original=False,
                    **kwargs) -> dict:
        """Whole-image mode: the antialiased bilinear resize to `size` (with `do_pad`: into `size`, aspect kept, on a
        centred zero border), then normalisation."""
        if do_resize:
            target = (size.height, size.width)

            def scaled(image: np.ndarray, height: int, width: int) -> np.ndarray:
                if not resize_as_original:
                    return _resize_uint8(image, (height, width), resample)
                # The original's SegResize (INTER_AREA down, INTER_CUBIC up) and NormalResizePadImage (INTER_LINEAR).
                flags = cv2.INTER_LINEAR if do_pad else cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_CUBIC
                return cv2.resize(image, (width, height), interpolation=flags)

            def resize(image: np.ndarray) -> np.ndarray:
                if not do_pad:
                    return scaled(image, *target)
                top, left, height, width = padded_region(image.shape[:2], target)
                canvas = np.zeros((*target, 3), dtype=np.uint8)
                canvas[top : top + height, left : left + width] = scaled(image, height, width)
                return canvas

            images = _parallel_map(resize, images)
        return self._output(images, return_flipped_pixel_values, do_rescale=do_rescale, rescale_factor=rescale_factor,
                            do_normalize=do_normalize, image_mean=image_mean, image_std=image_std)

    def _preprocess_top_down(self, images, boxes, keypoints, size: SizeDict, box_padding, do_rescale, rescale_factor,
                             do_normalize, image_mean, image_std, return_flipped_pixel_values=False,
                             resize_as_original=False, **kwargs) -> dict:
        """Top-down mode: one `crop_boxes` crop per box (`original_crops` with `resize_as_original`), then
        normalisation."""
        output_size = (size.width, size.height)
        crops, centers, scales = [], [], []
        for image, image_boxes in zip(images, boxes):
            image_boxes = check_boxes(image_boxes, *image.shape[:2])
            center, scale = get_box_center_scale(image_boxes, output_size, box_padding)
            crops += (original_crops if resize_as_original else crop_boxes)(image, center, scale, output_size)
            centers.append(center)
            scales.append(scale)
        data = self._output(crops, return_flipped_pixel_values, do_rescale=do_rescale, rescale_factor=rescale_factor,
                            do_normalize=do_normalize, image_mean=image_mean, image_std=image_std)
        data["crop_center"] = np.concatenate(centers)
        data["crop_scale"] = np.concatenate(scales)
        return data

    # -----------------------------------------------------------------------------------------------------------
    # Dense post-processing: padding removed, one bilinear resize
    # -----------------------------------------------------------------------------------------------------------

    def _unpadded(self, maps: torch.Tensor, source_size) -> torch.Tensor:
        """`maps` `(C, h, w)` without the border `do_pad` added around an image of `source_size` (scaled from the
        model input to the maps' resolution)."""
        if not self.do_pad or source_size is None:
            return maps
        size = (self.size["height"], self.size["width"])
        top, left, height, width = padded_region(source_size, size)
        factor_y, factor_x = maps.shape[1] / size[0], maps.shape[2] / size[1]
        return maps[:, round(top * factor_y) : round((top + height) * factor_y),
                    round(left * factor_x) : round((left + width) * factor_x)]

    def _dense_bands(self, maps: torch.Tensor, target_size, source_size=None):
        """`(start, stop, band)` covering `maps` `(C, h, w)`, unpadded, resized bilinearly (align_corners=False) once to
        `target_size` (the maps as they are when None); above `BANDED_RESIZE_MIN_PIXELS` in bands of rows."""
        maps = self._unpadded(maps, source_size)
        if target_size is None:
            yield 0, maps.shape[1], maps
        elif target_size[0] * target_size[1] <= BANDED_RESIZE_MIN_PIXELS:
            yield 0, target_size[0], F.interpolate(maps[None], size=target_size, mode="bilinear",
                                                   align_corners=False)[0]
        else:
            yield from _bilinear_bands(maps, target_size)

    def _resize(self, maps: torch.Tensor, target_size, source_size=None) -> torch.Tensor:
        return assemble_bands(self._dense_bands(maps, target_size, source_size), target_size)

    def _sizes(self, target_sizes, source_sizes, count: int) -> tuple[list, list]:
        """Checked target sizes and the images' sizes (`source_sizes`, by default the target sizes), which say where
        `do_pad` put each image: pass them when the maps are resized to another size than the image's."""
        target_sizes = self._check_target_sizes(target_sizes, count)
        return target_sizes, check_sizes(source_sizes, "source_sizes", count) if source_sizes is not None else target_sizes

    def post_process_semantic_segmentation(self, outputs, target_sizes=None, return_segmentation_scores=False,
                                           source_sizes=None):
        """Class-index maps (int64): the logits (unpadded) resized once to `target_sizes` (the image sizes; the
        logits' resolution when `None`), then argmax; as transformers' processor (see the v1 processor for the
        arguments; `source_sizes` as in `_sizes`)."""
        logits = _model_output(outputs, "post_process_semantic_segmentation")
        target_sizes, source_sizes = self._sizes(target_sizes, source_sizes, len(logits))
        _check_finite(logits, "logits")
        results = []
        for item, target_size, source_size in zip(logits, target_sizes, source_sizes):
            if return_segmentation_scores:
                from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

                scores = self._resize(item, target_size, source_size)
                results.append(SemanticSegmentationPostProcessorOutput(
                    data={"segmentation": scores.argmax(dim=0), "segmentation_scores": scores}))
                continue
            segmentation = None
            for start, stop, band in self._dense_bands(item, target_size, source_size):
                if segmentation is None:
                    segmentation = torch.empty(target_size or band.shape[1:], dtype=torch.long)
                torch.argmax(band, dim=0, out=segmentation[start:stop])
            results.append(segmentation)
        return results

    def post_process_normal_estimation(self, outputs, target_sizes=None, source_sizes=None, unit_length=True):
        """Surface normals `(3, height, width)` per image: made unit length (eps 1e-8), unpadded and resized to
        `target_sizes`, as transformers' processor and the original demo; then, with `unit_length` (the default),
        unit length again, since the bilinear resize shortens the vectors where directions change (the result the
        Sapiens pipelines give; `unit_length=False` returns the original's vectors)."""
        normals = _model_output(outputs, "post_process_normal_estimation")
        target_sizes, source_sizes = self._sizes(target_sizes, source_sizes, len(normals))
        _check_finite(normals, "normals")
        normals = F.normalize(normals, p=2, dim=1, eps=1e-8)
        results = [self._resize(*item) for item in zip(normals, target_sizes, source_sizes)]
        return [{"normals": F.normalize(item, p=2, dim=0, eps=1e-8) if unit_length else item} for item in results]

    def post_process_pointmap_estimation(self, outputs, target_sizes=None, source_sizes=None):
        """Per image `pointmap` `(3, height, width)`: XYZ per pixel in the camera frame, divided by the model's
        `scales` (metres, as the original demo) when it predicts one, unpadded and resized to `target_sizes`; and
        `scale` (the predicted scale, None without a scale head)."""
        pointmaps = getattr(outputs, "pointmaps", None)
        if not isinstance(pointmaps, torch.Tensor) or pointmaps.ndim != 4 or pointmaps.shape[1] != 3:
            raise ValueError("post_process_pointmap_estimation: `outputs` must be the outputs of a pointmap model, "
                             f"with pointmaps (batch, 3, height, width); got {type(outputs).__name__}")
        pointmaps, scales = pointmaps.detach().float(), outputs.scales
        target_sizes, source_sizes = self._sizes(target_sizes, source_sizes, len(pointmaps))
        _check_finite(pointmaps, "pointmaps")
        if scales is not None:
            scales = scales.detach().float()
            if not torch.isfinite(scales).all() or (scales == 0).any():
                raise ValueError(f"The model's scales must be finite, non-zero numbers to divide the pointmaps by; "
                                 f"got {scales.flatten().tolist()}")
            pointmaps = pointmaps / scales[:, :, None, None]
        return [{"pointmap": self._resize(*item), "scale": None if scales is None else float(scales[index, 0])}
                for index, item in enumerate(zip(pointmaps, target_sizes, source_sizes))]

    def post_process_image_matting(self, outputs, target_sizes=None):
        """Per image `alpha` `(height, width)` in [0, 1] and the pre-multiplied RGB `foreground` `(3, height, width)`
        in [0, 1], resized to `target_sizes` and clipped, as transformers' processor (without its compositing)."""
        alphas, foregrounds = getattr(outputs, "alphas", None), getattr(outputs, "foregrounds", None)
        if not all(isinstance(value, torch.Tensor) and value.ndim == 4 for value in (alphas, foregrounds)):
            raise ValueError("post_process_image_matting: `outputs` must be the outputs of a matting model, with "
                             f"alphas (batch, 1, height, width) and foregrounds (batch, 3, height, width); got "
                             f"{type(outputs).__name__}")
        matting = torch.cat([foregrounds.detach().float(), alphas.detach().float()], dim=1)
        target_sizes = self._check_target_sizes(target_sizes, len(matting))
        _check_finite(matting, "matting outputs")
        results = []
        for item, size in zip(matting, target_sizes):
            if size is not None:  # in bands of rows for large images, as the dense maps
                item = self._resize(item, size).clamp_(0, 1)
            results.append({"alpha": item[3], "foreground": item[:3]})
        return results


__all__ = ["Sapiens2ImageProcessorPil"]
