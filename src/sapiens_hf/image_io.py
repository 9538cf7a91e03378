"""Reading images: the one way the package turns a file, URL or image object into the `(height, width, 3)` uint8 RGB
array that the processor, the pipelines, the command line, the training data and `annotate` work on, as the original
sees an image read by `cv2.imread`. Files and URLs larger than a pixel limit are refused from their header, before
they are decoded. NumPy and Pillow only (torch tensors are read without importing torch), so that the torch-free
runtime reads images as the pipelines do.
"""

import os
from io import BytesIO
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps


SAMPLE_IMAGE = Path(__file__).parent / "data" / "astronaut.jpg"  # the bundled photo (CLI examples, demo)


# Largest image (height × width) processed by default. At 100 megapixels (more than common camera sensors) the
# unavoidable per-pixel outputs stay around 1 GB: the int64 label map is 0.8 GB, depth 0.4 GB, normals 1.2 GB, the
# decoded RGB image 0.3 GB. See docs/inference.md, "Large images".
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
# An image URL is read in pieces, at most this many bytes (a 100 MP 16-bit PNG compresses below it), each piece
# within the timeout (default below): a huge or stalled answer fails instead of filling memory or hanging.
MAX_DOWNLOAD_BYTES = 512 * 2**20
DEFAULT_TIMEOUT_S = 30.0


def check_image_pixels(height: int, width: int, max_pixels: int | None, what: str = "The image") -> None:
    """A ValueError if a `height` × `width` image exceeds `max_pixels` (the processor's `max_image_pixels`)."""
    if max_pixels is not None and height * width > max_pixels:
        raise ValueError(
            f"{what} is {height}×{width} = {height * width / 1e6:.1f} megapixels, more than the processor's "
            f"max_image_pixels = {max_pixels:,} ({max_pixels / 1e6:g} MP), which bounds memory: raise "
            "`processor.max_image_pixels` (or set it to None) to process it anyway"
        )


def download(url: str, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """The body of `url`, refused past `max_bytes` (default `MAX_DOWNLOAD_BYTES`; from its announced length, else as
    it arrives); `timeout` (default `DEFAULT_TIMEOUT_S`) bounds the connection and each read."""
    from huggingface_hub.utils import httpx  # the HTTP client transformers' own image loading uses

    max_bytes, chunks, size = max_bytes or MAX_DOWNLOAD_BYTES, [], 0
    with httpx.stream("GET", url, timeout=timeout or DEFAULT_TIMEOUT_S, follow_redirects=True) as response:
        response.raise_for_status()
        announced = int(response.headers.get("content-length") or 0)
        for chunk in ([] if announced > max_bytes else response.iter_bytes()):
            size += len(chunk)
            if size > max_bytes:
                break
            chunks.append(chunk)
    if max(size, announced) > max_bytes:
        raise ValueError(f"{url} is larger than {max_bytes / 2**20:g} MiB, more than an image this package reads")
    return b"".join(chunks)


def load_image(
    source: str | os.PathLike | bytes, timeout: float | None = None, max_pixels: int | None = None
) -> PIL.Image.Image:
    """Opens an image file, URL (`download`) or encoded bytes (EXIF orientation applied) without converting its mode,
    so that 16-bit and float images reach [`to_rgb_uint8`] intact (`transformers.image_utils.load_image` converts to
    8-bit RGB by clipping). An image of more than `max_pixels` pixels raises a ValueError from its header, before it
    is decoded."""
    if isinstance(source, bytes):
        data, source = BytesIO(source), "the image bytes"
    elif (source := os.fspath(source)).startswith(("http://", "https://")):
        data = BytesIO(download(source, timeout))
    elif os.path.isfile(source):
        data = source
    else:
        raise FileNotFoundError(f"No image file or http(s) URL at {source!r}")
    try:
        image = PIL.Image.open(data)
    except (PIL.UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"Cannot read an image from {source!r}: {error}") from error
    check_image_pixels(image.height, image.width, max_pixels, f"The image {source!r}")
    try:
        image.load()
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read an image from {source!r}: {error}") from error
    return PIL.ImageOps.exif_transpose(image)


def read_image(image, timeout: float | None = None, max_pixels: int | None = None) -> np.ndarray:
    """The one way the package reads an image: a file path, URL or encoded bytes (`load_image`) or an image object,
    as an `(height, width, 3)` uint8 RGB array (`to_rgb_uint8`)."""
    if isinstance(image, (str, os.PathLike, bytes)):
        image = load_image(image, timeout=timeout, max_pixels=max_pixels)
    return to_rgb_uint8(image)


def _channels_last(array: np.ndarray, input_data_format, prefer_first: bool) -> np.ndarray:
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise ValueError(f"An image must have 2 or 3 dimensions, got an array of shape {array.shape}")
    if input_data_format is not None:  # a transformers `ChannelDimension` or its value
        last = getattr(input_data_format, "value", input_data_format) == "channels_last"
        return array if last else np.moveaxis(array, 0, -1)
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if first and (prefer_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ValueError(f"Cannot tell the channel axis of an image of shape {array.shape}; pass input_data_format")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)  # the high byte, as cv2.imread / libpng reduce 16-bit images
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"Integer ({array.dtype}) image values outside [0, 255] have no known bit depth; "
                "pass uint8 (8-bit) or uint16 (16-bit) arrays"
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError("Float images must hold finite values in [0, 1]; pass uint8 arrays for 0–255 values")
        return np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    raise ValueError(f"Unsupported image dtype {array.dtype}")


def to_rgb_uint8(image, input_data_format=None) -> np.ndarray:
    """Any supported image as an `(height, width, 3)` uint8 RGB array, as the original sees an image read by
    `cv2.imread`: grayscale is replicated to three channels, alpha is dropped (not composited), 16-bit values keep
    their high byte. Float images must be in [0, 1]; torch tensors are taken as channels-first when ambiguous."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return np.asarray(image.convert("RGB"))  # palette, CMYK, LA, RGBA, ...: PIL drops alpha
        array = np.asarray(image)
        if image.mode.startswith("I;16"):
            array = array.astype(np.uint16)
        prefer_first = False
    elif type(image).__module__.startswith("torch") and hasattr(image, "detach"):  # a tensor
        tensor = image.detach().cpu()
        array, prefer_first = (tensor.float() if str(tensor.dtype) == "torch.bfloat16" else tensor).numpy(), True
    elif isinstance(image, np.ndarray):
        array, prefer_first = image, False
    else:
        raise TypeError(f"Unsupported image type {type(image).__name__}; pass PIL images, arrays, tensors or paths")
    if array.size == 0:
        raise ValueError(f"Empty image of shape {array.shape}")
    array = _to_uint8(_channels_last(array, input_data_format, prefer_first))
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]
    elif channels != 3:
        raise ValueError(f"Images must have 1, 3 or 4 channels, got {channels}")
    return np.ascontiguousarray(array)


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "check_image_pixels", "download", "load_image", "read_image", "to_rgb_uint8"]
