"""The supersampled PIL canvas both images are drawn on.

Shapes are drawn at `supersampling(S)` times the output side S and
box-downsampled (`Image.reduce`), which anti-aliases lines and edges.
"""
from __future__ import annotations

import numpy as np

from tp2p_jax.data.toycats.points import Points


def supersampling(image_size: int) -> int:
  """Canvas pixels per output pixel (each axis) for output side `image_size`."""
  # Small images need more supersampling for smooth 1-px lines; large ones
  # already have enough pixels and would only get slower.
  return 4 if image_size <= 96 else 2


def canvas_coords(pts: Points, canvas: int, closed: bool = False) -> list[float]:
  """Image-fraction points as PIL's flat [x0, y0, x1, y1, ...] on a canvas
  of side `canvas`; `closed` repeats the first two points so a line drawn
  through them closes with a proper joint."""
  p = pts * canvas
  if closed:
    p = np.concatenate([p, p[:2]], axis=0)
  return p.ravel().tolist()
