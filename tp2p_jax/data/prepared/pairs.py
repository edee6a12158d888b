"""Making (photo, sketch) pairs from images and from work items.

Images are uint8 (H, W, 3) RGB arrays in [0, 255] (HWC, no batch axis);
stored pairs are centre-cropped (S, S, 3) squares. `check_item` and
`make_pair` are top-level functions so that the builder's worker processes
can run them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from tp2p_jax.data import sketch as sketch_lib
from tp2p_jax.data.image_files import describe_error, load_image
from tp2p_jax.data.prepared.config import PairsConfig
from tp2p_jax.data.prepared.discovery import Item

# An example as the builder writes it: {'photo', 'sketch': uint8 (S, S, 3),
# 'label': int, 'filename': str (the item's key)}.
Pair = dict[str, Any]


def _centre_square(image: np.ndarray) -> tuple[slice, slice]:
  """Slices of the largest centred square of an (H, W, ...) array."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return slice(top, top + side), slice(left, left + side)


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> (size, size, 3); PIL's bilinear filter averages like
  an area filter when shrinking."""
  if image.shape[:2] == (size, size):
    return np.ascontiguousarray(image)
  return np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").resize(
      (size, size), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  if mask.shape == (height, width):
    return mask
  img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
  return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127


def pair_from_photo(photo: np.ndarray, image_size: int,
                    params: sketch_lib.SketchParams = sketch_lib.SketchParams(),
                    mask: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """A photo of any shape -> (photo, sketch), both centre-cropped squares.

  Args:
    photo: uint8 (H, W, 3) RGB.
    image_size: output side S.
    params: sketcher parameters.
    mask: optional bool (H', W') subject mask (resized to (H, W)).

  Returns:
    (photo uint8 (S, S, 3), sketch uint8 (S, S, 3) dark lines on white).
    The sketch is computed from the crop at `params.supersample` x S.
  """
  rows, cols = _centre_square(photo)
  crop = photo[rows, cols]
  if mask is not None:
    mask = _resize_mask(np.asarray(mask, bool), *photo.shape[:2])[rows, cols]
  work = _resize_rgb(crop, image_size * params.supersample)
  sketch = sketch_lib.sketch_from_photo(work, params, mask=mask,
                                        image_size=image_size)
  return _resize_rgb(crop, image_size), sketch


def pair_from_sketch_and_photo(sketch: np.ndarray, photo: np.ndarray,
                               image_size: int
                               ) -> tuple[np.ndarray, np.ndarray]:
  """An existing aligned pair -> (photo, sketch), same crop and resize.

  Args:
    sketch, photo: uint8 (H, W, 3) RGB of one shape.
    image_size: output side S.

  Returns:
    (photo uint8 (S, S, 3), sketch uint8 (S, S, 3)).
  """
  rows, cols = _centre_square(photo)
  return (_resize_rgb(photo[rows, cols], image_size),
          _resize_rgb(sketch[rows, cols], image_size))


def split_ab(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Halves of an A|B image (H, W, C): (A = left, B = right), each
  (H, W // 2, C); an odd middle column belongs to neither."""
  half = image.shape[1] // 2
  return image[:, :half], image[:, image.shape[1] - half:]


def check_item(item: Item, work_side: int) -> str | None:
  """Decodes the item's files; returns the reason it is unusable, or None."""
  try:
    if item.kind == "photo":
      load_image(item.data[0], work_side)
    elif item.kind == "ab":
      image = load_image(item.data[0])
      if image.shape[1] < 2:
        return f"an A|B file needs a width >= 2, got {image.shape[1]}"
    elif item.kind == "a_b":
      a, b = load_image(item.data[0]), load_image(item.data[1])
      if a.shape != b.shape:
        return (f"A is {a.shape[1]}x{a.shape[0]} but B is "
                f"{b.shape[1]}x{b.shape[0]} (width x height)")
  except Exception as e:  # pylint: disable=broad-except
    return describe_error(e)
  return None


def make_pair(item: Item, config: PairsConfig,
              record: dict[str, Any] | Exception | None = None
               ) -> tuple[Pair | None, str | None]:
  """(example, None) for a usable item, else (None, reason). `record` is
  the decoded TFDS record of a "tfds" item (or the error reading it)."""
  s, params = config.image_size, config.sketch
  try:
    if item.kind == "photo":
      photo, sketch = pair_from_photo(
          load_image(item.data[0], s * params.supersample), s, params)
    elif item.kind == "tfds":
      if isinstance(record, Exception):
        raise record
      assert record is not None
      photo, sketch = pair_from_photo(record["image"], s, params,
                                      record.get("mask"))
    else:
      if item.kind == "ab":
        a, b = split_ab(load_image(item.data[0]))
      else:
        a, b = load_image(item.data[0]), load_image(item.data[1])
        if a.shape != b.shape:
          return None, "A and B sizes differ"
      sketch_half, photo_half = (a, b) if config.direction == "AtoB" else (b, a)
      photo, sketch = pair_from_sketch_and_photo(sketch_half, photo_half, s)
  except Exception as e:  # pylint: disable=broad-except
    return None, describe_error(e)
  return {"photo": photo, "sketch": sketch, "label": item.label,
          "filename": item.key}, None
