"""The original's top-down geometry and keypoint heatmap codec, in NumPy and OpenCV only (no torch, no
transformers), shared by the image processor, the pose training transform and the ONNX runtime:

* boxes: `check_boxes` (COCO `(x, y, width, height)`, checked) → `get_box_center_scale` (centre and padded size at
  the input's aspect ratio) → `get_udp_warp_matrix` (image → crop affine, unbiased data processing; composed with
  `rotation_about` for rotated training crops) → `warp_affine_bilinear` (OpenCV 4's exact bilinear warp);
* heatmaps: `generate_udp_heatmaps` (training targets) and `decode_udp_heatmaps` (argmax + DARK refinement), as
  mmpose's `UDPHeatmap` codec.

Bit-exact to the original (facebookresearch/sapiens `pose/mmpose/structures/bbox/transforms.py`,
`pose/mmpose/codecs/udp_heatmap.py`, `pose/mmpose/codecs/utils/`); see tests/test_postprocessing.py.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import pairwise

import cv2
import numpy as np


# ImageNet mean/std on the 0–255 scale: the original normalises un-rescaled pixel values.
SAPIENS_MEAN = (123.675, 116.28, 103.53)
SAPIENS_STD = (58.395, 57.12, 57.375)


def _parallel_map(function, items: list) -> list:
    """`[function(item) for item in items]` on `cv2.getNumThreads()` threads (OpenCV's count, which follows
    `cv2.setNumThreads` and the CPU quota): the OpenCV and NumPy calls inside release the GIL."""
    workers = max(1, min(cv2.getNumThreads(), len(items)))
    if workers == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


# Box coordinates are computed in float32 (as the original), exact to the pixel below 2**24 ≈ 16.7 million.
MAX_BOX_COORDINATE = 10_000_000


def check_boxes(boxes, image_height: int | None = None, image_width: int | None = None) -> np.ndarray:
    """COCO `(x, y, width, height)` boxes of one image as a float64 `(num_boxes, 4)` array; no boxes means the whole
    image, as the original demo does when the detector finds nobody (none when the image size is not given).
    Malformed, non-finite and degenerate boxes are rejected, and so are boxes that do not overlap the image (when its
    size is given). Pre- and post-processing and the pose pipeline all check boxes here."""
    try:
        boxes = np.asarray([] if boxes is None else boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"boxes must be [x, y, width, height] lists of numbers, got {boxes!r}") from error
    if boxes.size == 0:
        return np.zeros((0, 4)) if image_height is None else np.array([[0.0, 0.0, image_width, image_height]])
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Boxes must be [x, y, width, height] lists, got an array of shape {boxes.shape}")
    for box in boxes:
        x, y, width, height = box
        if not np.isfinite(box).all() or width <= 0 or height <= 0:
            raise ValueError(f"Degenerate box {box.tolist()}: boxes are [x, y, width, height] with width, height > 0")
        if np.abs(box).max() > MAX_BOX_COORDINATE:
            raise ValueError(f"Box {box.tolist()} has values beyond ±{MAX_BOX_COORDINATE:,.0f} pixels, where the "
                             "float32 crop geometry loses whole pixels: boxes are pixel coordinates of the image")
        if image_height is not None and (x >= image_width or y >= image_height or x + width <= 0 or y + height <= 0):
            raise ValueError(f"Box {box.tolist()} lies entirely outside the {image_width}×{image_height} image")
    return boxes


def get_box_center_scale(
    boxes: np.ndarray, output_size: tuple[int, int], padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """float32 crop centers and sizes `(num_boxes, 2)` of xywh boxes: the box midpoint, the box size × `padding`,
    then one side enlarged to the aspect ratio of `output_size` `(width, height)`. Computed in float32 from float32
    `(x1, y1, x2, y2)` boxes, as the original."""
    boxes = np.asarray(boxes, dtype=np.float64)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).astype(np.float32)
    center = (xyxy[:, :2] + xyxy[:, 2:]) * 0.5
    scale = (xyxy[:, 2:] - xyxy[:, :2]) * float(padding)
    aspect_ratio = output_size[0] / output_size[1]
    width, height = scale[:, :1], scale[:, 1:]
    scale = np.where(
        width > height * aspect_ratio,
        np.hstack([width, width / aspect_ratio]),
        np.hstack([height * aspect_ratio, height]),
    )
    return center, scale


def get_udp_warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The 2×3 float32 UDP affine (image → crop of `output_size` `(width, height)`) for one crop. Evaluated in float64
    as NumPy 1.x did with the original's float32 scalars (NumPy ≥ 2 would use float32 and change the last bits)."""
    center_x, center_y = float(center[0]), float(center[1])
    scale_w, scale_h = float(scale[0]), float(scale[1])
    scale_x = (output_size[0] - 1) / scale_w
    scale_y = (output_size[1] - 1) / scale_h
    return np.array(
        [[scale_x, 0.0, scale_x * (-center_x + 0.5 * scale_w)], [0.0, scale_y, scale_y * (-center_y + 0.5 * scale_h)]],
        dtype=np.float32,
    )


def rotation_about(center: np.ndarray, degrees: float) -> np.ndarray:
    """3×3 rotation by `degrees` about `center` with mmpose's sign convention (x' = cos·x − sin·y): composed after
    `get_udp_warp_matrix` it gives the rotated crops of the training augmentation."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = float(center[0]), float(center[1])
    return np.array([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy], [0.0, 0.0, 1.0]])


def warp_affine_bilinear(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """`cv2.warpAffine(image, matrix, output_size, flags=cv2.INTER_LINEAR)` with a constant-0 border, bit-exact to
    OpenCV 4.x on any OpenCV version. OpenCV 4 maps destination pixels to the source in fixed point (10 fractional
    bits, rounded to 1/32 pixel) and interpolates with a 1/32-pixel weight table; OpenCV 5's `warpAffine` computes
    positions in floating point instead, which changes up to a few grey levels. The OpenCV 4 maps are built here and
    handed to `cv2.remap`, whose fixed-point path is the one OpenCV 4's `warpAffine` used."""
    m = matrix.astype(np.float64).ravel()
    # Inverse (crop → image) affine, exactly as cv::invertAffineTransform inside warpAffine.
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = m[4] * det, -m[1] * det, -m[3] * det, m[0] * det
    b1 = -a11 * m[2] - a12 * m[5]
    b2 = -a21 * m[2] - a22 * m[5]

    ab_bits, inter_bits = 10, cv2.INTER_BITS  # AB_BITS = max(10, INTER_BITS) in OpenCV
    ab_scale, tab_size = 1 << ab_bits, 1 << inter_bits
    round_delta = ab_scale // tab_size // 2
    xs, ys = np.arange(output_size[0], dtype=np.float64), np.arange(output_size[1], dtype=np.float64)

    def fixed_point(values):  # saturate_cast<int>: rounds half to even, clamps to the int range
        return np.rint(values * ab_scale).clip(-(2**31), 2**31 - 1).astype(np.int32)

    x_delta, y_delta = fixed_point(a11 * xs), fixed_point(a21 * xs)
    x_row, y_row = fixed_point(a12 * ys + b1) + round_delta, fixed_point(a22 * ys + b2) + round_delta
    # Per pixel in int32, as OpenCV: whole source pixels (saturated to int16) and the 1/32-pixel table index.
    x = (x_row[:, None] + x_delta[None]) >> (ab_bits - inter_bits)
    y = (y_row[:, None] + y_delta[None]) >> (ab_bits - inter_bits)
    coords = np.empty((*x.shape, 2), dtype=np.int16)
    coords[..., 0] = np.clip(x >> inter_bits, -32768, 32767)
    coords[..., 1] = np.clip(y >> inter_bits, -32768, 32767)
    fractions = ((y & (tab_size - 1)) * tab_size + (x & (tab_size - 1))).astype(np.uint16)
    return cv2.remap(image, coords, fractions, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------------------------------------------------------
# Heatmap codec (mmpose UDPHeatmap with DARK refinement)
# ---------------------------------------------------------------------------------------------------------------


def generate_udp_heatmaps(
    keypoints: np.ndarray,
    keypoints_visible: np.ndarray,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
    """UDP Gaussian target heatmaps `(K, H, W)` and keypoint weights `(K,)` for one person, as mmpose's
    `UDPHeatmap.encode`: keypoints `(K, 2)` in crop pixels (input space), visibilities `(K,)` (weights; < 0.5 means
    unlabelled); a Gaussian of radius 3σ whose window misses the heatmap gets weight 0. Sizes are `(width, height)`."""
    width, height = heatmap_size
    scale_factor = ((np.array(input_size) - 1) / (np.array(heatmap_size) - 1)).astype(np.float32)
    keypoints = np.asarray(keypoints, dtype=np.float32) / scale_factor
    heatmaps = np.zeros((len(keypoints), height, width), dtype=np.float32)
    weights = np.asarray(keypoints_visible, dtype=np.float32).copy()
    radius = sigma * 3
    size = 2 * radius + 1
    x = np.arange(0, size, 1, dtype=np.float32)
    y = x[:, None]
    for k, keypoint in enumerate(keypoints):
        if weights[k] < 0.5:
            continue
        mu = (keypoint + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= width or top >= height or right < 0 or bottom < 0:
            weights[k] = 0
            continue
        # The sub-pixel centre is float64 and the Gaussian float32, as NumPy 1.x evaluated the original.
        x0 = np.float32(size // 2 + (float(keypoint[0]) - mu[0]))
        y0 = np.float32(size // 2 + (float(keypoint[1]) - mu[1]))
        gaussian = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x1, g_y1 = max(0, -left), max(0, -top)
        g_x2, g_y2 = min(width, right) - left, min(height, bottom) - top
        h_x1, h_y1, h_x2, h_y2 = max(0, left), max(0, top), min(width, right), min(height, bottom)
        region = heatmaps[k, h_y1:h_y2, h_x1:h_x2]
        np.maximum(region, gaussian[int(g_y1) : int(g_y2), int(g_x1) : int(g_x2)], out=region)
    return heatmaps, weights


def get_heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax locations (x, y) as float32 `(..., K, 2)` and max values `(..., K)`; the first maximum wins ties,
    and keypoints whose maximum is ≤ 0 are located at (−1, −1). The argmax runs on OpenCV's threads (NumPy releases
    the GIL); the maximum is read where it was found."""
    *batch, height, width = heatmaps.shape
    flat = heatmaps.reshape(-1, height * width)
    chunks = np.array_split(flat, max(1, min(len(flat), 4 * cv2.getNumThreads())))
    index = np.concatenate(_parallel_map(partial(np.argmax, axis=-1), chunks))
    scores = np.take_along_axis(flat, index[:, None], axis=-1)[:, 0]
    locations = np.stack([index % width, index // width], axis=-1).astype(np.float32)
    locations[scores <= 0] = -1
    return locations.reshape(*batch, 2), scores.reshape(batch)


def _blur_and_rescale_factors(maps: np.ndarray, kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded `cv2.GaussianBlur` of each `(H, W)` map of `(M, H, W)`, and the float32 factors `(M,)` that mmpose's
    `gaussian_blur` multiplies each blurred map by: its original maximum over its blurred maximum (1 for a map whose
    blur has maximum 0: the original divides 0 by 0 there and returns NaN keypoints). The maps are shared out over
    threads; each map is still blurred alone, so the bits do not change."""
    border = (kernel_size - 1) // 2
    inner = np.s_[border : border + maps.shape[-2], border : border + maps.shape[-1]]  # also for border 0
    blurred = np.empty_like(maps)
    factors = np.ones(len(maps), dtype=np.float32)

    def blur(span: tuple[int, int]) -> None:
        padded = np.zeros((maps.shape[-2] + 2 * border, maps.shape[-1] + 2 * border), dtype=np.float32)
        for index in range(*span):
            padded[inner] = maps[index]
            blurred[index] = cv2.GaussianBlur(padded, (kernel_size, kernel_size), 0)[inner]
            blurred_max = blurred[index].max()
            if blurred_max != 0:
                factors[index] = maps[index].max() / blurred_max

    bounds = np.linspace(0, len(maps), min(len(maps), 4 * cv2.getNumThreads()) + 1).astype(int)
    _parallel_map(blur, list(pairwise(bounds)))
    return blurred, factors


def refine_keypoints_dark_udp(keypoints: np.ndarray, heatmaps: np.ndarray, kernel_size: int = 11) -> np.ndarray:
    """DARK sub-pixel refinement (mmpose `refine_keypoints_dark_udp`) of float32 keypoints `(N, K, 2)` on heatmaps
    `(N, K, H, W)`: one Newton step on the log of the blurred maps. Neighbours are read from each instance's
    flattened, edge-padded maps as the original does, so a keypoint at (−1, −1) reads the previous map's last row
    (the last map's end for the first keypoint)."""
    num_instances, num_keypoints, height, width = heatmaps.shape
    blurred, factors = _blur_and_rescale_factors(heatmaps.reshape(-1, height, width), kernel_size)
    # The original rescales, clips and takes the log of every blurred map, then edge-pads them; it reads only seven
    # values around each peak, so those element-wise steps run here on the values read, with the same float32 bits.
    row, plane = width + 2, (width + 2) * (height + 2)
    index = keypoints[..., 0].astype(np.int64) + 1 + (keypoints[..., 1].astype(np.int64) + 1) * row
    index = index + plane * np.arange(num_keypoints)
    first_map = num_keypoints * np.arange(num_instances)[:, None]

    def at(offset):
        map_index, pixel = np.divmod((index + offset) % (num_keypoints * plane), plane)
        map_index += first_map
        y = np.clip(pixel // row - 1, 0, height - 1)  # edge padding: a padded pixel reads its nearest map pixel
        x = np.clip(pixel % row - 1, 0, width - 1)
        return np.log(np.clip(blurred[map_index, y, x] * factors[map_index], 1e-3, 50.0))

    i_, ix1, iy1, ix1y1, ix1_y1_, ix1_, iy1_ = (at(o) for o in (0, 1, row, row + 1, -row - 1, -1, -row))
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    dyy = iy1 - 2 * i_ + iy1_
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))  # float64 from here on
    step = np.einsum("...mn,...n->...m", hessian, np.stack([dx, dy], -1))
    refined = keypoints.copy()
    refined -= step  # the float64 step is subtracted in place from the float32 keypoints
    return refined


MAX_HEATMAP_MAGNITUDE = 1e30


def decode_udp_heatmaps(
    heatmaps: np.ndarray, input_size: tuple[int, int], kernel_size: int = 11
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints `(N, K, 2)` (float64, crop pixels of an `input_size` `(width, height)` input) and float32 scores
    `(N, K)` from float32 heatmaps `(N, K, H, W)`: argmax, DARK refinement, then `kp / (W − 1, H − 1) × input_size`."""
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    height, width = heatmaps.shape[-2:]
    # Checked here so that no NaN reaches a keypoint: the scale divides by (W − 1, H − 1), and the DARK blur sums up
    # to kernel_size² values in float32.
    if height < 2 or width < 2:
        raise ValueError(f"Heatmaps of {height}×{width} pixels: keypoints are decoded from heatmaps of at least 2×2")
    if heatmaps.size and np.abs(heatmaps).max() > MAX_HEATMAP_MAGNITUDE:
        raise ValueError(f"Heatmap values beyond ±{MAX_HEATMAP_MAGNITUDE:g} overflow the float32 decoding: these are "
                         "not a pose model's heatmaps")
    keypoints, scores = get_heatmap_maximum(heatmaps)
    keypoints = refine_keypoints_dark_udp(keypoints, heatmaps, kernel_size)
    return keypoints / [width - 1, height - 1] * np.asarray(input_size), scores

