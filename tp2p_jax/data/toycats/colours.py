"""RGB colours as int triples in [0, 255], and the ways the toy cats vary them."""
from __future__ import annotations

import numpy as np

RGB = tuple[int, int, int]


def clip_rgb(c: np.ndarray) -> RGB:
  """A float (3,) colour rounded and clipped to an `RGB` triple."""
  c = np.clip(np.round(c), 0, 255).astype(int)
  return int(c[0]), int(c[1]), int(c[2])


def jitter(rng: np.random.Generator, rgb: RGB, brightness: float = 0.08,
           hue: float = 6.0) -> RGB:
  """Small random variation of a colour (relative brightness, +-hue per
  channel) so a class is not a single flat colour."""
  c = np.asarray(rgb, np.float64) * rng.uniform(1 - brightness, 1 + brightness)
  return clip_rgb(c + rng.uniform(-hue, hue, size=3))


def mix(a: RGB, b: RGB, t: float) -> RGB:
  """Linear blend: `a` at t = 0, `b` at t = 1."""
  return clip_rgb((1 - t) * np.asarray(a, np.float64)
                  + t * np.asarray(b, np.float64))
