"""Decodes and checks inline request images with Pillow (format, MIME type, pixel count)."""

from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

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
                decoded.append(img.convert("RGB"))
        except InvalidArgumentError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidArgumentError(f"{field}.data", f"cannot be decoded as an image ({exc})") from exc
    return decoded
