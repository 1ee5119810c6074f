"""One encoded image in, what a shard stores out: a fully decoded-and-checked RGB JPEG and its size.

This module runs in the converter's worker processes, so it uses PIL and numpy only (no
TensorFlow: workers start from a small fork server, not from the TensorFlow-laden parent).

Policy:
  - An RGB JPEG is stored byte for byte, unless `max_side` asks for a smaller image.
  - Anything else PIL can decode (PNG, GIF's first frame, BMP, WEBP, TIFF, grayscale, CMYK,
    palette, 16-bit, alpha) becomes an RGB JPEG at `quality`. Alpha is composited over white
    rather than dropped: dropping it exposes whatever colour transparent pixels happen to hold.
  - `max_side` bounds the SHORTER side: an image whose shorter side exceeds it is downscaled
    (aspect kept) so that the shorter side equals it. The crops a model sees are defined by the
    shorter side (evaluation keeps 87.5% of it), so max_side=256 never upsamples a 224 model's
    evaluation crop whatever the aspect ratio, while bounding the longer side would shrink
    panoramas below the model size. Smaller stored images are the main lever on input speed.
  - EXIF orientation is not applied: TensorFlow's decoders (training, export, inference) ignore
    it too, so every path sees the same pixels.
  - Empty, truncated, corrupt and non-image inputs raise BadImage with a one-line reason. The
    check is a full decode, not a header sniff: a truncated JPEG has a valid header.
"""

from __future__ import annotations

import io
from typing import NamedTuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

WHITE = (255, 255, 255)


class BadImage(ValueError):
    """The input cannot become a training image; str(e) is the reason recorded in the manifest."""


class Prepared(NamedTuple):
    data: bytes  # JPEG bytes to store
    height: int
    width: int
    action: str  # "kept" (original bytes), "reencoded" or "resized"


def bounded_size(width: int, height: int, max_side: int) -> tuple:
    """(width, height) with the shorter side at most max_side (0: no bound), aspect kept."""
    shorter = min(width, height)
    if max_side <= 0 or shorter <= max_side:
        return width, height
    if width <= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16/32-bit grayscale: PIL's convert("L") clips instead of scaling
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        pixels = np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(pixels, "L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def signature(data: bytes) -> str:
    """The image format its first bytes announce ("JPEG", "PNG", "WEBP", ...), or "" if none."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in SIGNATURES if data.startswith(magic)), "")


def _decode_failure(error: Exception, what: str) -> BadImage:
    message = str(error) or type(error).__name__
    if "truncated" in message.lower():
        return BadImage(f"truncated image: {message}")
    return BadImage(f"{what}: {message}")


def prepare_image(data: bytes, max_side: int = 0, quality: int = 90) -> Prepared:
    """Validate encoded image bytes and return what to store (see the module policy)."""
    if not data:
        raise BadImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        kind = signature(data)
        if kind:
            raise BadImage(f"corrupt image: a {kind} signature but an unreadable header") from None
        raise BadImage("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"image too large: {e}") from None
    except Exception as e:  # PIL raises many kinds on malformed headers
        raise _decode_failure(e, "corrupt image header") from None

    source_format = image.format
    width, height = image.size
    target = bounded_size(width, height, max_side)
    try:
        if target != (width, height) and source_format == "JPEG":
            image.draft(image.mode, target)  # let libjpeg scale by 1/2, 1/4, 1/8 while decoding
        image.load()
    except Exception as e:
        raise _decode_failure(e, "corrupt image") from None
    if width <= 0 or height <= 0:
        raise BadImage("image has no pixels")

    if target == (width, height) and source_format == "JPEG" and image.mode == "RGB":
        return Prepared(data, height, width, "kept")
    try:
        rgb = _to_rgb(image)
        if rgb.size != target:  # draft() may already have scaled part of the way
            rgb = rgb.resize(target, Image.Resampling.LANCZOS)
        encoded = _encode_jpeg(rgb, quality)
    except Exception as e:
        raise BadImage(f"cannot convert {source_format} {image.mode} image: {e}") from None
    action = "resized" if target != (width, height) else "reencoded"
    return Prepared(encoded, target[1], target[0], action)


def prepare_source(source: Union[str, bytes], max_side: int = 0, quality: int = 90) -> Prepared:
    """prepare_image on a file path (read here, in the worker) or on bytes already in hand."""
    if isinstance(source, str):
        try:
            with open(source, "rb") as f:
                source = f.read()
        except OSError as e:
            raise BadImage(f"unreadable file: {e.strerror or e}") from None
    return prepare_image(source, max_side, quality)


def prepare_task(task: tuple):
    """Worker entry point: task = (source, max_side, quality) -> Prepared, or the reason (str)
    it was skipped. Never raises for a bad input: a conversion must not stop on one file."""
    source, max_side, quality = task
    try:
        return prepare_source(source, max_side, quality)
    except BadImage as e:
        return str(e)
    except Exception as e:  # a PIL bug on a hostile file is still that file's problem
        return f"unexpected error while decoding: {type(e).__name__}: {e}"


def prepare_tasks(tasks: list) -> list:
    """prepare_task over a chunk (one inter-process round trip per chunk, not per image)."""
    return [prepare_task(t) for t in tasks]
