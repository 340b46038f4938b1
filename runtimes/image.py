"""Shared numpy image code: input checks, letterbox onto the canvas, boxes back to the image.

Every runtime, the trainer's data pipeline and the benchmarks use these functions, so a
model sees exactly the same pixels in training, in PyTorch and in every exported runtime.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import OneLineError


class ImageError(OneLineError, ValueError):
    """An input to a detector call that cannot be used: an image that cannot be turned into an
    RGB uint8 picture, or a threshold that is not a number."""


def to_rgb_uint8(image) -> np.ndarray:
    """Return `image` as a contiguous HxWx3 RGB uint8 array.

    Converted: grayscale (HxW or HxWx1), RGBA (alpha dropped), uint16 (top 8 bits),
    float in [0, 1], bool. Refused with ImageError: empty arrays, other shapes, other dtypes.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    image = np.asarray(image)  # subclasses (np.matrix, masked arrays) as plain arrays
    if not image.dtype.isnative:  # big-endian data, e.g. from a FITS or TIFF reader
        image = image.astype(image.dtype.newbyteorder("="))
    if image.size == 0:
        raise ImageError(f"empty image array (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"expected HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ImageError("float images must hold finite values in [0, 1]")
        image = np.round(image * 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float in [0, 1])")
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on the canvas: resized by (sx, sy), top-left, zero padding."""

    scale_x: float
    scale_y: float
    height: int  # original image size
    width: int


def letterbox_params(height: int, width: int, canvas: tuple[int, int]) -> tuple[int, int, Letterbox]:
    ch, cw = canvas
    scale = min(ch / height, cw / width)
    nh = min(ch, max(1, int(round(height * scale))))
    nw = min(cw, max(1, int(round(width * scale))))
    return nh, nw, Letterbox(nw / width, nh / height, height, width)


def letterbox(image: np.ndarray, canvas: tuple[int, int], out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and place top-left on a zero canvas of shape (H, W, 3).

    `out` may be a preallocated (H, W, 3) uint8 buffer (for example one slot of a batch).
    """
    h, w = image.shape[:2]
    nh, nw, lb = letterbox_params(h, w, canvas)
    if out is None:
        out = np.zeros((canvas[0], canvas[1], 3), np.uint8)
    else:
        out[nh:] = 0
        out[:nh, nw:] = 0
    if (nh, nw) == (h, w):
        out[:nh, :nw] = image
    else:
        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, lb


def boxes_to_canvas(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Original-image xyxy boxes -> canvas pixels."""
    return (np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32([lb.scale_x, lb.scale_y] * 2))


def boxes_to_image(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Canvas xyxy boxes -> original-image pixels, clipped to the image."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4) / np.float32([lb.scale_x, lb.scale_y] * 2)
    np.clip(out[:, 0::2], 0, lb.width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, lb.height, out=out[:, 1::2])
    return out
