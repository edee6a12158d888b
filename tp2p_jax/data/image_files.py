"""Reading user image files: any PIL-readable format and mode -> uint8 RGB,
or float NHWC batches (`read_image`) for the optimisation tools; PNG writes.

Shared by the dataset builder (`tp2p_jax.data.prepared`) and the
command-line tools, so a file that one of them accepts the others accept too.
"""
from __future__ import annotations

import os
import warnings

from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps

ValueRange = Literal["-1..1", "0..1"]

# Files a folder argument contributes (a file named explicitly is always tried).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp", ".ppm", ".pgm"})


def pil_to_rgb(image: Image.Image) -> np.ndarray:
  """Any PIL image -> uint8 (H, W, 3) RGB.

  Transparency is composited over white; 16-bit and 32-bit integer grey
  (I;16*, I) are scaled from 0..65535 (I only when its values exceed 255),
  float grey (F) from 0..1 when its values fit there; CMYK, YCbCr, LAB, HSV,
  palette and bilevel go through PIL's conversion.
  """
  mode = image.mode
  if mode == "RGB" and not image.has_transparency_data:
    return np.asarray(image, np.uint8)
  if mode.startswith("I") or mode == "F":
    grey = np.asarray(image).astype(np.float64)
    if mode.startswith("I;16") or (mode == "I" and grey.max(initial=0) > 255):
      grey = grey / 257.0
    elif mode == "F" and grey.max(initial=0) <= 1.0:
      grey = grey * 255.0
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)
  if image.has_transparency_data:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
  return np.asarray(image.convert("RGB"), np.uint8)


def load_image(path: str | os.PathLike[str] | BinaryIO,
               min_side: int | None = None) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, 3) RGB, upright per its EXIF.

  Args:
    path: the file, or a binary stream of one (an upload held in memory).
    min_side: if given, JPEGs may be decoded at 1/2, 1/4 or 1/8 scale (much
      faster for large photos) while both sides stay >= `min_side`.

  Raises:
    Whatever PIL raises for unreadable, truncated or non-image files, and
    `PIL.Image.DecompressionBombError` (also for images above
    `Image.MAX_IMAGE_PIXELS`, where PIL would only warn).
  """
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    with Image.open(path) as image:
      if min_side:
        image.draft(None, (min_side, min_side))
      image.load()
      try:
        upright = ImageOps.exif_transpose(image)
      except Exception:  # pylint: disable=broad-except
        # A malformed EXIF block says nothing about the pixels.
        upright = image
      return pil_to_rgb(upright)


def describe_error(error: BaseException) -> str:
  """A one-line reason for a failed image read, for skip lists and CLI errors."""
  text = str(error).strip() or "no details"
  if isinstance(error, Image.UnidentifiedImageError):
    return f"not an image ({text})"
  return f"{type(error).__name__}: {text}"


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
  """Writes uint8 (H, W, 3) as PNG atomically (`atomic_files.replacing`: a
  local temp file + rename, or one upload to a `gs://` URL), creating
  parent folders; a failed write leaves no temporary file.

  Raises:
    OSError: the folder cannot be created or written, or `path` is a folder.
  """
  from tp2p_jax.core import atomic_files, storage
  if not storage.is_url(path) and os.path.isdir(os.fspath(path)):
    # Checked first: the rename would fail only after the image is encoded.
    raise IsADirectoryError(f"{os.fspath(path)}: is a folder")
  with atomic_files.replacing(path, "wb") as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")


class ImageReadError(ValueError):
  """An image file is missing, unreadable or not an image; the message names
  the file and the reason."""


def read_image(path: str | os.PathLike[str], value_range: ValueRange = "-1..1",
               size: int | None = None) -> np.ndarray:
  """Reads one image file as a float32 batch of one.

  Args:
    path: any PIL-readable image file.
    value_range: "-1..1" (the GANs' convention) or "0..1" (VGG input before
      ImageNet normalisation).
    size: if given, the longer side is resized to `size` (aspect kept,
      bilinear, which averages like an area filter when shrinking).

  Returns:
    float32 (1, H, W, 3) NHWC in `value_range`.

  Raises:
    ImageReadError: naming `path` and why it could not be read.
  """
  try:
    image = load_image(path)
  except FileNotFoundError:
    raise ImageReadError(f"{os.fspath(path)}: no such file") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ImageReadError(f"{os.fspath(path)}: cannot read: {describe_error(e)}") from None
  if size is not None:
    image = resize_longer_side(image, size)
  x = image.astype(np.float32)[None] / 255.0
  return x * 2.0 - 1.0 if value_range == "-1..1" else x


def resize_longer_side(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> longer side `size`, aspect ratio kept (bilinear)."""
  if size <= 0:
    raise ValueError(f"size must be > 0, got {size}")
  h, w = image.shape[:2]
  scale = size / max(h, w)
  new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
  if (new_h, new_w) == (h, w):
    return image
  return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").resize(
      (new_w, new_h), Image.Resampling.BILINEAR))


def float_to_uint8(image: np.ndarray, value_range: ValueRange = "-1..1") -> np.ndarray:
  """Float image(s) in `value_range` -> uint8 [0, 255] (clipped, rounded)."""
  x = np.asarray(image, np.float32)
  if value_range == "-1..1":
    x = (x + 1.0) * 0.5
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike[str], image: np.ndarray,
              value_range: ValueRange = "-1..1") -> None:
  """Writes a float (H, W, 3) or (1, H, W, 3) image in `value_range` as PNG,
  atomically (a temporary file renamed into place); creates the folder."""
  x = np.asarray(image)
  if x.ndim == 4:
    if x.shape[0] != 1:
      raise ValueError(f"write_png takes one image, got a batch of {x.shape[0]}")
    x = x[0]
  save_png(path, float_to_uint8(x, value_range))
