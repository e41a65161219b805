"""Decodes and checks inline request images with Pillow (format, MIME type, pixel count) and makes them upright RGB."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

from guard.errors import InvalidArgumentError
from guard.params import ImageInput, Limits

# MIME type -> Pillow format name.
SUPPORTED_MIME_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}


def decode_images(images: Sequence[ImageInput], limits: Limits) -> list[Any]:
    """Decode every image to RGB, or raise InvalidArgumentError naming the bad image."""
    # Imported here so text-only deployments never pay for Pillow's import.
    from PIL import Image, UnidentifiedImageError

    decoded = []
    for i, image in enumerate(images):
        field = f"images[{i}]"
        expected = SUPPORTED_MIME_TYPES.get(image.mime_type.lower().strip())
        if expected is None:
            raise InvalidArgumentError(
                f"{field}.mime_type", f"unsupported {image.mime_type!r}; use one of {sorted(SUPPORTED_MIME_TYPES)}"
            )
        try:
            with warnings.catch_warnings():
                # Pillow warns, then errors, on decompression bombs; we check the size ourselves first.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(image.data))
                width, height = img.size
                if width * height > limits.max_image_pixels:
                    raise InvalidArgumentError(
                        f"{field}.data",
                        f"is {width}x{height} = {width * height} pixels, the limit is {limits.max_image_pixels}",
                    )
                if img.format != expected:
                    raise InvalidArgumentError(
                        f"{field}.mime_type", f"says {image.mime_type} but the data is {img.format}"
                    )
                img.load()
                decoded.append(_to_rgb(img))
        except InvalidArgumentError:
            raise
        except Image.DecompressionBombError as exc:
            # Pillow's own guard fires in open() for canvases far beyond any sane limit.
            raise InvalidArgumentError(
                f"{field}.data", f"has more pixels than the limit of {limits.max_image_pixels} ({exc})"
            ) from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidArgumentError(f"{field}.data", f"cannot be decoded as an image ({exc})") from exc
    return decoded


def _to_rgb(img: Any) -> Any:
    """Upright RGB, as the model should see it: EXIF rotation applied (phone photos), transparency
    composited onto white (converting RGBA straight to RGB turns transparent areas into whatever
    colour they hide, often black)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img) or img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
