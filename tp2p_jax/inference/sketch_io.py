"""User sketches in, generated photos out, at the user's own image size.

The generator works on S x S squares (its transformer sequence lengths and
positional tables follow S), so every input, whatever its size, is mapped
to the square and back: `prepare_sketch` fits the drawing into the square
(longer side = S, centred) and `restore_size` cuts that box out of the
output and resizes it to the input's height and width.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from tp2p_jax.data import sketch as sketch_lib
from tp2p_jax.data.image_files import float_to_uint8

PREPARE_MODES = ("hand_drawn", "pad")


@dataclasses.dataclass(frozen=True)
class PreparedSketch:
  """A model-ready sketch and how to map the output back.

  Attributes:
    image: (S, S, 3) float32 in [-1, 1].
    box: (top, left, h, w) of the drawing inside the square.
    size: the input's (height, width).
  """
  image: np.ndarray
  box: tuple[int, int, int, int]
  size: tuple[int, int]


def _pad_to_square(image: np.ndarray, image_size: int) -> np.ndarray:
  """Resize (longer side = S) and centre on white, no line processing."""
  h, w = image.shape[:2]
  top, left, bh, bw = sketch_lib.content_box(h, w, image_size)
  resized = np.asarray(Image.fromarray(image).resize((bw, bh), Image.Resampling.LANCZOS))
  square = np.full((image_size, image_size, 3), 255, np.uint8)
  square[top:top + bh, left:left + bw] = resized
  return square


def prepare_sketch(image: np.ndarray, image_size: int, mode: str = "hand_drawn"
                   ) -> PreparedSketch:
  """A user's drawing -> generator input.

  Args:
    image: uint8 (H, W, 3) RGB, any size (`image_files.load_image`).
    image_size: the generator's S.
    mode: "hand_drawn": the training line style from any drawing, scan or
      photo of one (background flattening, thinning, redrawing;
      `sketch.prepare_hand_drawn`); "pad": only resize and pad on white, for
      sketches already in the training style.
  """
  if mode not in PREPARE_MODES:
    raise ValueError(f"unknown sketch preparation {mode!r}; expected one of {PREPARE_MODES}")
  h, w = image.shape[:2]
  if mode == "hand_drawn":
    square = sketch_lib.prepare_hand_drawn(image, image_size)
  else:
    square = _pad_to_square(image, image_size)
  return PreparedSketch(square.astype(np.float32) / 127.5 - 1.0,
                        sketch_lib.content_box(h, w, image_size), (h, w))


def restore_size(output: np.ndarray, prepared: PreparedSketch) -> np.ndarray:
  """Generator output (S, S, 3) in [-1, 1] -> uint8 (H, W, 3) at the input's
  size (the drawing's box, resized with Lanczos)."""
  top, left, bh, bw = prepared.box
  crop = float_to_uint8(np.asarray(output[top:top + bh, left:left + bw]))
  h, w = prepared.size
  if (bh, bw) == (h, w):
    return crop
  return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS))
