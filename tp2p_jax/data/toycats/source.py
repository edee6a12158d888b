"""Rendering examples by (index, seed), and the grain source of them.

Every example's randomness comes from independent streams derived from
``(seed, index)``: geometry, label, coat, background and eye colour.
"""
from __future__ import annotations

import grain.python as grain
import numpy as np

from tp2p_jax.data.toycats.backgrounds import BACKGROUNDS, render_background
from tp2p_jax.data.toycats.canvas import supersampling
from tp2p_jax.data.toycats.coats import NUM_STYLES, make_coat
from tp2p_jax.data.toycats.geometry import sample_geometry
from tp2p_jax.data.toycats.lines import render_sketch
from tp2p_jax.data.toycats.photo import iris_colour, render_photo

# Stream ids for `_stream`. Keeping them apart is what makes the sketch
# independent of the coat and the background independent of the label.
_GEOMETRY_STREAM = 0
_LABEL_STREAM = 1
_COAT_STREAM = 2
_BACKGROUND_STREAM = 3
_EYE_STREAM = 4

_MIN_IMAGE_SIZE = 16


def _stream(seed: int, index: int, stream: int) -> np.random.Generator:
  """The generator of one stream (an id above) of example `index`."""
  return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def render_example(index: int, image_size: int, *, seed: int = 0,
                   body_probability: float = 0.5,
                   style: int | None = None,
                   background: str = "varied") -> dict[str, np.ndarray]:
  """Renders one toy-cat example.

  Args:
    index: example index (>= 0).
    image_size: output side S in pixels (>= 16; any size, geometry is
      resolution independent).
    seed: dataset seed (>= 0); with `index` it determines everything.
    body_probability: chance that the cat has a sitting body (else a head).
    style: None draws the coat class uniformly from the example's own label
      stream; an int in [0, NUM_STYLES) forces that coat while keeping the
      geometry, background and eye colour of the example.
    background: "varied" (six kinds of patterned, coloured backgrounds that
      the sketch says nothing about) or "studio" (pale, nearly neutral
      plain or gradient backdrops, like cut-out cat photos).

  Returns:
    {'sketch': uint8 (S, S, 3) dark lines on white (255),
     'photo': uint8 (S, S, 3) RGB in [0, 255],
     'label': int32 0-d array in [0, NUM_STYLES), index into STYLE_NAMES}.
    The layout is HWC. Deterministic in (index, seed, image_size,
    body_probability, style).
  """
  index, image_size, seed = int(index), int(image_size), int(seed)
  if index < 0:
    raise ValueError(f"index must be >= 0, got {index}")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  if image_size < _MIN_IMAGE_SIZE:
    raise ValueError(
        f"image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}")
  if not 0.0 <= body_probability <= 1.0:
    raise ValueError(
        f"body_probability must be in [0, 1], got {body_probability}")
  if background not in BACKGROUNDS:
    raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
  if style is None:
    label = int(_stream(seed, index, _LABEL_STREAM).integers(NUM_STYLES))
  else:
    label = int(style)
    if not 0 <= label < NUM_STYLES:
      raise ValueError(f"style must be in [0, {NUM_STYLES}), got {style}")

  geo = sample_geometry(_stream(seed, index, _GEOMETRY_STREAM),
                        body_probability)
  coat = make_coat(label, geo, _stream(seed, index, _COAT_STREAM))
  iris = iris_colour(_stream(seed, index, _EYE_STREAM))
  canvas = image_size * supersampling(image_size)
  background = render_background(
      _stream(seed, index, _BACKGROUND_STREAM), canvas, background)
  return {
      "sketch": render_sketch(geo, image_size),
      "photo": render_photo(geo, coat, iris, background, image_size),
      "label": np.asarray(label, np.int32),
  }


class ToyCatsSource(grain.RandomAccessDataSource):
  """Random-access source of `num_examples` toy cats for grain pipelines.

  Records are the dicts of `render_example` (sketch/photo uint8 (S, S, 3),
  label int32 scalar), rendered on demand; nothing is cached. The repr lists
  every parameter, which grain uses to check a restored iterator state
  belongs to the same source.
  """

  def __init__(self, num_examples: int, image_size: int, *, seed: int = 0,
               body_probability: float = 0.5, background: str = "varied"):
    if num_examples <= 0:
      raise ValueError(f"num_examples must be > 0, got {num_examples}")
    if image_size < _MIN_IMAGE_SIZE:
      raise ValueError(
          f"image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}")
    if seed < 0:
      raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= body_probability <= 1.0:
      raise ValueError(
          f"body_probability must be in [0, 1], got {body_probability}")
    self._num_examples = int(num_examples)
    self._image_size = int(image_size)
    self._seed = int(seed)
    if background not in BACKGROUNDS:
      raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    self._body_probability = float(body_probability)
    self._background = background

  def __len__(self) -> int:
    return self._num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if index < 0:
      index += self._num_examples
    if not 0 <= index < self._num_examples:
      raise IndexError(
          f"index {index} out of range for {self._num_examples} examples")
    return render_example(index, self._image_size, seed=self._seed,
                          body_probability=self._body_probability,
                          background=self._background)

  def __repr__(self) -> str:
    return (f"ToyCatsSource(num_examples={self._num_examples}, "
            f"image_size={self._image_size}, seed={self._seed}, "
            f"body_probability={self._body_probability}"
            + (f", background={self._background!r})" if self._background != "varied" else ")"))
