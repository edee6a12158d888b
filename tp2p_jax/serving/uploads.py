"""Uploaded images, decoded in memory into a bounded size: the header is
checked first (sides, aspect ratio, pixels), JPEGs are decoded at a reduced
scale, and any other image is shrunk right after decoding, before a single
full-size array or conversion exists. Nothing an upload says is used as a
file path.

Per decode, memory is at most the compressed file (which stays in the
upload's spooled temporary file), PIL's raster of the image (<= 4 bytes a
pixel, so <= 4 * max_pixels) and one transient copy of it where PIL
converts or premultiplies alpha before shrinking (<= 4 * max_pixels), then
arrays at `decode_side` only.
"""
from __future__ import annotations

import dataclasses
import io
import re
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from tp2p_jax.data.image_files import describe_error, pil_to_rgb
from tp2p_jax.serving.errors import RequestError

# EXIF orientation -> the transpose that makes the image upright (as
# PIL.ImageOps.exif_transpose applies it).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_EXIF_ORIENTATION = 0x0112
# PIL names the stream it read from by its repr, which carries a heap address.
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@dataclasses.dataclass(frozen=True)
class ImageLimits:
  """What one uploaded image may be, all checked from its header.

  Attributes:
    max_pixels: the largest width * height.
    max_side: the largest width or height.
    max_aspect: the largest longer / shorter side.
    decode_side: images are decoded (or shrunk right after decoding) so that
      their longer side is at most this; the model never sees more.
  """
  max_pixels: int = 4096 * 4096
  max_side: int = 8192
  max_aspect: float = 16.0
  decode_side: int = 1024

  def __post_init__(self) -> None:
    if min(self.max_pixels, self.max_side, self.decode_side) < 1 or self.max_aspect < 1:
      raise ValueError(f"image limits must be >= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class DecodedImage:
  """An upload decoded into a bounded size.

  Attributes:
    pixels: uint8 (h, w, 3) RGB, upright per EXIF, longer side <= the
      limits' `decode_side` (the upload itself when it is that small).
    size: the upload's own upright (height, width).
  """
  pixels: np.ndarray
  size: tuple[int, int]


def _clean(text: str) -> str:
  return _OBJECT_REPR.sub("the upload", text)


def _open_header(source: BinaryIO, field: str, max_pixels: int) -> Image.Image:
  """Reads only the header (PIL decodes nothing before `load`)."""
  try:
    with warnings.catch_warnings():
      # The limits are ours to check, from the size the header gives.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      return Image.open(source)
  except Image.DecompressionBombError as e:
    # Above twice PIL's own pixel limit, PIL refuses before saying the size.
    found = _BOMB_PIXELS.search(str(e))
    pixels = f"{found.group(1)} pixels" if found else "more pixels than PIL opens"
    raise RequestError(413, "too_many_pixels",
                       f"{field}: the image has {pixels}; the limit is {max_pixels}"
                       ) from None
  except Image.UnidentifiedImageError:
    raise RequestError(400, "not_an_image",
                       f"{field}: not an image (no known image format)") from None
  except Exception as e:  # pylint: disable=broad-except
    raise RequestError(400, "not_an_image", f"{field}: {_clean(describe_error(e))}"
                       ) from None


def check_size(width: int, height: int, field: str, limits: ImageLimits) -> None:
  """Refuses an image size above `limits`.

  Raises:
    RequestError: 413 "too_many_pixels" naming the limit passed.
  """
  size = f"{field}: {width}x{height}"
  if width < 1 or height < 1:
    raise RequestError(400, "not_an_image", f"{size} has no pixels")
  if width * height > limits.max_pixels:
    raise RequestError(413, "too_many_pixels", f"{size} is {width * height} pixels; the "
                       f"limit is {limits.max_pixels}")
  if max(width, height) > limits.max_side:
    raise RequestError(413, "too_many_pixels", f"{size}: a side is above the limit of "
                       f"{limits.max_side}")
  aspect = max(width, height) / min(width, height)
  if aspect > limits.max_aspect:
    raise RequestError(413, "too_many_pixels", f"{size}: the aspect ratio {aspect:.1f}:1 is "
                       f"above the limit of {limits.max_aspect:g}:1")


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
  """(width, height) scaled so that the longer side is `side`."""
  scale = side / max(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def _orientation(image: Image.Image) -> int:
  try:
    return int(image.getexif().get(_EXIF_ORIENTATION, 1))
  except Exception:  # pylint: disable=broad-except
    return 1  # a malformed EXIF block says nothing about the pixels


def _shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  """Lanczos down to `size` (box-reduced first, which is cheap and bounds
  the filter's work by the output)."""
  if image.mode == "1":
    image = image.convert("L")  # a bilevel resize would be nearest-neighbour
  elif image.mode == "P":
    image = image.convert("RGBA" if image.has_transparency_data else "RGB")
  return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _check_not_empty(source: BinaryIO, field: str) -> None:
  start = source.tell()
  if not source.read(1):
    raise RequestError(400, "empty_upload", f"{field}: the uploaded file is empty")
  source.seek(start)


def needs_shrinking(upload: BinaryIO, field: str, limits: ImageLimits) -> bool:
  """Whether `decode_image` would shrink the upload (its longer side is
  above `limits.decode_side`), from its header alone; the stream is left
  where it stood. The server decodes such images apart from small ones.

  Raises:
    RequestError: as `decode_image` for an empty upload, one that is not an
      image, or a size above the limits.
  """
  start = upload.tell()
  try:
    _check_not_empty(upload, field)
    with _open_header(upload, field, limits.max_pixels) as image:
      width, height = image.size
  finally:
    upload.seek(start)
  check_size(width, height, field, limits)
  return max(width, height) > limits.decode_side


def decode_image(upload: bytes | BinaryIO, field: str, limits: ImageLimits) -> DecodedImage:
  """An uploaded image file -> uint8 RGB at most `limits.decode_side` on its
  longer side, upright per EXIF. An upload that is already that small
  decodes exactly as `image_files.load_image` (so the server accepts and
  sees what `predict` does).

  Args:
    upload: the file's bytes or a binary stream of them (any PIL-readable
      format; PNG and JPEG from the page). Read from where it stands.
    field: the form field, named in errors.
    limits: checked from the header before anything is decoded.

  Raises:
    RequestError: 400 "empty_upload", "not_an_image" or "unreadable_image";
      413 "too_many_pixels".
  """
  source = io.BytesIO(upload) if isinstance(upload, (bytes, bytearray)) else upload
  _check_not_empty(source, field)
  with _open_header(source, field, limits.max_pixels) as image:
    width, height = image.size
    check_size(width, height, field, limits)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        target = None
        if max(width, height) > limits.decode_side:
          target = _fit(width, height, limits.decode_side)
          # JPEG: decoded at 1/2, 1/4 or 1/8 scale, no smaller than target.
          image.draft(None, target)
        image.load()
        if target is None:
          try:
            upright = ImageOps.exif_transpose(image)
          except Exception:  # pylint: disable=broad-except
            upright = image
          pixels = pil_to_rgb(upright)
          size = pixels.shape[:2]
        else:
          orientation = _orientation(image)
          small = _shrink(image, target)
          if orientation in _UPRIGHT:
            small = small.transpose(_UPRIGHT[orientation])
          pixels = pil_to_rgb(small)
          size = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    except Exception as e:  # pylint: disable=broad-except
      raise RequestError(400, "unreadable_image",
                         f"{field}: cannot decode the image: {_clean(describe_error(e))}"
                         ) from None
  return DecodedImage(pixels, (int(size[0]), int(size[1])))


def encode_png(image: np.ndarray | Image.Image, compress_level: int = 6) -> bytes:
  """uint8 (H, W, 3) (or a PIL image) -> PNG bytes."""
  if not isinstance(image, Image.Image):
    image = Image.fromarray(np.asarray(image, np.uint8))
  out = io.BytesIO()
  image.save(out, format="PNG", compress_level=compress_level)
  return out.getvalue()
