"""Attachments to secure messages: the type is judged from the bytes, never the file name;
photos are re-encoded so that nothing but the pixels is kept (EXIF location, camera serial,
the time it was taken, embedded thumbnails and comments all go)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from medmesh.domain.errors import InvalidRequest, PayloadTooLarge, UnsupportedContent

JPEG = "image/jpeg"
PNG = "image/png"
PDF = "application/pdf"
ACCEPTED = (JPEG, PNG, PDF)
# Larger photos than this (pixels) are refused before they are decoded: a small file can
# decode to gigabytes (a "decompression bomb").
MAX_PIXELS = 40_000_000


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    max_bytes: int = 5 * 1024 * 1024
    max_count: int = 4


@dataclass(frozen=True, slots=True)
class CleanAttachment:
    content_type: str
    content: bytes


def sniff(content: bytes) -> str | None:
    """The accepted type these bytes are, from their signature; None: none of them."""
    if content.startswith(b"\xff\xd8\xff"):
        return JPEG
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if content.startswith(b"%PDF-"):
        return PDF
    return None


def _reencode(content: bytes, kind: str) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise InvalidRequest(
                        f"the photo is larger than {MAX_PIXELS // 1_000_000} megapixels"
                    )
                image.load()
                # Keep the way the photo was held (EXIF orientation) in the pixels themselves.
                upright = ImageOps.exif_transpose(image)
                out = io.BytesIO()
                if kind == JPEG:
                    upright.convert("RGB").save(out, format="JPEG", quality=90)
                else:
                    mode = upright.mode if upright.mode in ("RGB", "RGBA", "L", "LA") else "RGBA"
                    upright.convert(mode).save(out, format="PNG")
                return out.getvalue()
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        raise InvalidRequest("the photo could not be read; it may be damaged") from None


def clean(content: bytes, limits: AttachmentLimits) -> CleanAttachment:
    """The attachment as it will be stored, or a refusal that says why. CPU-bound for photos:
    call it in a worker thread."""
    if not content:
        raise InvalidRequest("an attachment is empty")
    if len(content) > limits.max_bytes:
        raise PayloadTooLarge(
            f"an attachment is larger than {limits.max_bytes // (1024 * 1024)} MB"
        )
    kind = sniff(content)
    if kind is None:
        raise UnsupportedContent("attachments may be JPEG or PNG photos, or PDF documents")
    if kind == PDF:
        return CleanAttachment(PDF, content)
    return CleanAttachment(kind, _reencode(content, kind))
