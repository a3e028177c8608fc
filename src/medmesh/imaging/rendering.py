"""Frames rendered for people: one frame of a stored instance as an 8-bit PNG or JPEG, with the
window (centre/width) the viewer asks for, else the file's own, else the frame's range.

Pixels are decoded by pydicom with NumPy and Pillow (uncompressed, RLE, JPEG baseline, JPEG
2000); a syntax those cannot decode (12-bit JPEG, JPEG-LS) raises Undecodable, which the
viewer shows as a placeholder."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.pixels.processing import apply_modality_lut

from medmesh.domain.errors import UnsupportedContent


class Undecodable(UnsupportedContent):
    """The frame's pixel data cannot be decoded here; the message names no patient data."""


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float


def parse_window(value: str | None) -> Window | None:
    """DICOMweb's `window=center,width[,function]` (only the linear function)."""
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise ValueError("window must be center,width (numbers)") from None
    if width <= 0:
        raise ValueError("window width must be positive")
    if len(parts) > 2 and parts[2].strip().lower() not in ("linear", ""):
        raise ValueError("only the linear window function is supported")
    return Window(center, width)


def _frame(dataset: Dataset, index: int) -> NDArray[np.float64]:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if not 0 <= index < frames:
        raise IndexError(f"the instance has {frames} frame(s)")
    try:
        pixels = dataset.pixel_array
    except Exception:
        raise Undecodable("the pixel data cannot be decoded by this server") from None
    if frames > 1:
        pixels = pixels[index]
    return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)


def _own_window(dataset: Dataset) -> Window | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        first_center = float(
            center[0] if hasattr(center, "__len__") and not isinstance(center, str) else center
        )
        first_width = float(
            width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width
        )
    except (TypeError, ValueError, IndexError):
        return None
    return Window(first_center, first_width) if first_width > 0 else None


def to_8bit(values: NDArray[np.float64], window: Window) -> NDArray[np.uint8]:
    """Linear windowing (PS3.3 C.11.2.1.2.1) to 0–255."""
    low = window.center - 0.5 - (window.width - 1) / 2
    high = window.center - 0.5 + (window.width - 1) / 2
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class Rendered:
    image: bytes
    media_type: str
    window: Window  # the window applied (asked for, the file's own, or the frame's range)


def render_frame(
    content: bytes,
    index: int = 0,
    window: Window | None = None,
    media_type: str = "image/png",
    *,
    max_side: int | None = None,
) -> Rendered:
    """One frame (0-based) as PNG or JPEG, at most `max_side` pixels a side when given."""
    dataset = dcmread(io.BytesIO(content))
    values = _frame(dataset, index)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    chosen = window
    if values.ndim == 2:
        chosen = window or _own_window(dataset)
    if chosen is None:
        low, high = float(values.min()), float(values.max())
        chosen = Window(center=(low + high) / 2 + 0.5, width=max(high - low + 1, 1.0))
    if values.ndim == 3:  # colour: pydicom gives RGB; window each channel alike
        image = Image.fromarray(to_8bit(values, chosen))
    else:
        gray = to_8bit(values, chosen)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        image = Image.fromarray(gray)
    if max_side is not None:
        image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    if media_type == "image/jpeg":
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            out, format="JPEG", quality=90
        )
    else:
        image.save(out, format="PNG")
    return Rendered(out.getvalue(), media_type, chosen)
