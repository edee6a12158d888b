"""Reading user image files: any PIL-readable format and mode -> uint8 RGB.

Shared by the dataset builder (`tp2p_jax.data.paired_dataset`) and the
command-line tools, so a file that one of them accepts the others accept too.
"""
from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps

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


def load_image(path: str | os.PathLike[str],
               min_side: int | None = None) -> np.ndarray:
  """Decodes an image file to uint8 (H, W, 3) RGB, upright per its EXIF.

  Args:
    path: the file.
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


def image_files_in(path: str | os.PathLike[str]) -> list[pathlib.Path]:
  """The image files a CLI argument names: the file itself, or a folder's
  files with an image suffix (not recursive), sorted by name.

  Raises:
    FileNotFoundError: `path` does not exist.
  """
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    return sorted((f for f in p.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES), key=lambda f: f.name)
  if p.exists():
    return [p]
  raise FileNotFoundError(f"{path}: no such file or folder")


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
  """Writes uint8 (H, W, 3) as PNG atomically (temp file + rename), creating
  parent folders."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(np.asarray(image, np.uint8)).save(tmp)
  os.replace(tmp, path)
