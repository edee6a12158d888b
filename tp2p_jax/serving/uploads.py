"""Uploaded images, decoded in memory with limits checked from the header
first (nothing an upload says is used as a file path)."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from tp2p_jax.data.image_files import describe_error, load_image
from tp2p_jax.serving.errors import RequestError


def decode_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
  """An uploaded image file's bytes -> uint8 (H, W, 3) RGB, upright per EXIF
  (`image_files.load_image`, so the server accepts what `predict` accepts).

  Args:
    data: the file's bytes (any PIL-readable format; PNG and JPEG from the page).
    field: the form field, named in errors.
    max_pixels: the largest H * W accepted, checked from the header before
      anything is decoded.

  Raises:
    RequestError: 400 "empty_upload", "not_an_image" or "unreadable_image";
      413 "too_many_pixels".
  """
  if not data:
    raise RequestError(400, "empty_upload", f"{field}: the uploaded file is empty")
  try:
    with warnings.catch_warnings():
      # Only the header is read here; PIL's own bomb check comes with decoding.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
  except Exception as e:  # pylint: disable=broad-except
    raise RequestError(400, "not_an_image", f"{field}: {describe_error(e)}") from None
  if width * height > max_pixels:
    raise RequestError(413, "too_many_pixels",
                       f"{field}: {width}x{height} is {width * height} pixels; the "
                       f"limit is {max_pixels}")
  try:
    return load_image(io.BytesIO(data))
  except Exception as e:  # pylint: disable=broad-except
    raise RequestError(400, "unreadable_image",
                       f"{field}: cannot decode the image: {describe_error(e)}") from None


def encode_png(image: np.ndarray) -> bytes:
  """uint8 (H, W, 3) -> PNG bytes."""
  out = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(out, format="PNG")
  return out.getvalue()
