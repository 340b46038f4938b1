"""Draw detections with OpenCV: a box, the class name and the score, one colour per class.

    frame = draw_detections(frame_bgr, detector(rgb, threshold=0.5))

Works on BGR images, as everything in OpenCV does (imread, VideoCapture, imshow, imwrite).
numpy and OpenCV only, so edge apps can use it without torch.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np

from .base import Detections

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(label: int) -> tuple[int, int, int]:
    """A BGR colour for a model label, the same in every image and video.

    Hues step by the golden ratio, so neighbouring labels get clearly different colours
    for any number of classes.
    """
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `background` (BGR)."""
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def line_width_for(image: np.ndarray) -> int:
    """Box line width that stays visible from thumbnails to 4K frames."""
    return max(2, round(0.0015 * (image.shape[0] + image.shape[1])))


def label_box(text: str, box, image_shape, line_width: int):
    """Where a box's label goes: its filled background (x, y, w, h), the text origin, font scale, thickness.

    Above the box when there is room, else below it (a box at the top of the image), else
    just inside its top edge; shifted left to stay inside the image.
    """
    x1, y1, _, y2 = box
    scale = max(0.4, line_width / 4)
    thickness = max(1, line_width // 2)
    (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(2, line_width // 2)
    w, h = tw + 2 * pad, th + baseline + 2 * pad
    x = max(0, min(x1, image_shape[1] - w))
    if y1 - h >= 0:
        y = y1 - h
    elif y2 + h <= image_shape[0]:
        y = y2 + 1
    else:
        y = y1
    return (x, y, w, h), (x + pad, y + pad + th), scale, thickness


def draw_detections(image: np.ndarray, detections: Detections, line_width: int | None = None) -> np.ndarray:
    """Draw `detections` (original-image pixels) on `image` (BGR uint8) in place and return it.

    Lower scores are drawn first, so the most confident boxes and labels end up on top.
    """
    lw = line_width or line_width_for(image)
    for i in np.argsort(detections.scores, kind="stable"):
        colour = class_colour(detections.labels[i])
        x1, y1, x2, y2 = box = [int(round(float(v))) for v in detections.boxes[i]]
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, lw, cv2.LINE_8)
        text = f"{detections.names[i]} {detections.scores[i]:.2f}"
        (x, y, w, h), origin, scale, thickness = label_box(text, box, image.shape, lw)
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), colour, -1, cv2.LINE_8)
        cv2.putText(image, text, origin, FONT, scale, text_colour(colour), thickness, cv2.LINE_AA)
    return image
