"""The sketch: thin dark contour lines of a cat's shapes on white.

It reads only the geometry, so an example's sketch is pixel-identical
whatever its coat and background.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tp2p_jax.data.toycats.canvas import canvas_coords, supersampling
from tp2p_jax.data.toycats.geometry import Geometry
from tp2p_jax.data.toycats.points import Points


def _sketch_line_width(image_size: int) -> float:
  """Sketch line width in output pixels: ~1.5 px at 256, never below 1 px."""
  return max(1.0, 1.5 * image_size / 256.0)


def render_sketch(geo: Geometry, image_size: int) -> np.ndarray:
  """Contour drawing of `geo`: uint8 (S, S, 3), S = `image_size`, dark lines
  (near 0) on white (255), the three channels equal."""
  ss = supersampling(image_size)
  canvas = image_size * ss
  img = Image.new("L", (canvas, canvas), 255)
  draw = ImageDraw.Draw(img)
  lw = max(1, round(_sketch_line_width(image_size) * ss))
  thin = max(1, round(0.75 * _sketch_line_width(image_size) * ss))

  def shape(pts: Points, width: int = lw) -> None:
    # Filling with white first hides the lines of parts behind this one.
    draw.polygon(canvas_coords(pts, canvas), fill=255)
    draw.line(canvas_coords(pts, canvas, closed=True), fill=0, width=width,
              joint="curve")

  def outline(pts: Points, width: int = lw) -> None:
    draw.line(canvas_coords(pts, canvas, closed=True), fill=0, width=width,
              joint="curve")

  def line(pts: Points, width: int = lw) -> None:
    draw.line(canvas_coords(pts, canvas), fill=0, width=width, joint="curve")

  if geo.body is not None:
    shape(geo.tail)
    shape(geo.body)
    for leg in geo.legs:
      draw.polygon(canvas_coords(leg, canvas), fill=255)
    for side in geo.leg_sides:
      line(side)
    for paw in geo.paws:
      shape(paw)
    for toe in geo.toes:
      line(toe, thin)
  for ear, inner in zip(geo.ears, geo.inner_ears):
    shape(ear)
    outline(inner, thin)
  shape(geo.head)
  for eye, pupil in zip(geo.eyes, geo.pupils):
    outline(eye)
    outline(pupil, thin)
  shape(geo.nose)
  for m in geo.mouth:
    line(m)
  for w in geo.whiskers:
    line(w, thin)
  small = np.asarray(img.reduce(ss))
  return np.repeat(small[:, :, None], 3, axis=2)
