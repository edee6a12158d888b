"""Photo backgrounds, drawn from the background stream alone so that they
carry no information about the coat class.

Backgrounds are RGB PIL images of the supersampled canvas (see `canvas`);
the photo is painted over them.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from tp2p_jax.data.toycats.canvas import canvas_coords
from tp2p_jax.data.toycats.colours import RGB, clip_rgb, mix

# "varied": six kinds of patterned, coloured backgrounds; "studio": pale,
# nearly neutral plain or gradient backdrops, like cut-out cat photos.
BACKGROUNDS: tuple[str, ...] = ("varied", "studio")


def _random_colour(rng: np.random.Generator) -> RGB:
  """Any hue, low to medium saturation, medium to high value."""
  h, s, v = rng.random(), rng.uniform(0.05, 0.55), rng.uniform(0.3, 0.95)
  return clip_rgb(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0)


def _gradient(c1: RGB, c2: RGB, angle: float, canvas: int) -> Image.Image:
  """(canvas x canvas) RGB linear ramp from `c1` to `c2` along `angle`."""
  # A small linear ramp upsampled bilinearly is still linear and far cheaper
  # than evaluating it at every canvas pixel.
  n = 16
  y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
  t = x * math.cos(angle) + y * math.sin(angle)
  t = (t - t.min()) / (t.max() - t.min())
  img = ((1 - t[..., None]) * np.asarray(c1, np.float64)
         + t[..., None] * np.asarray(c2, np.float64))
  small = Image.fromarray(np.round(img).astype(np.uint8), "RGB")
  return small.resize((canvas, canvas), Image.Resampling.BILINEAR)


def _studio_colour(rng: np.random.Generator) -> RGB:
  """A pale, nearly grey colour."""
  h, s, v = rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.82, 0.97)
  return clip_rgb(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0)


def _render_studio_background(rng: np.random.Generator, canvas: int) -> Image.Image:
  """A pale, nearly neutral backdrop, plain or a soft gradient: the look of
  a cut-out (segmented) cat photo."""
  c1 = _studio_colour(rng)
  if rng.random() < 0.5:
    return Image.new("RGB", (canvas, canvas), c1)
  c2 = mix(c1, _studio_colour(rng), rng.uniform(0.25, 0.6))
  return _gradient(c1, c2, rng.uniform(0, 2 * math.pi), canvas)


def render_background(rng: np.random.Generator, canvas: int,
                      background: str = "varied") -> Image.Image:
  """A background from the background stream only: "varied" is one of six
  kinds (plain, gradient, stripes, dots, wall and floor, two-tone) in random
  colours; "studio" a pale plain or gradient backdrop."""
  if background == "studio":
    return _render_studio_background(rng, canvas)
  kind = int(rng.integers(6))
  c1 = _random_colour(rng)
  c2 = mix(c1, _random_colour(rng), rng.uniform(0.25, 0.6))
  if kind == 0:  # plain
    return Image.new("RGB", (canvas, canvas), c1)
  if kind == 1:  # gradient
    return _gradient(c1, c2, rng.uniform(0, 2 * math.pi), canvas)
  if kind == 5:  # two-tone split
    img = Image.new("RGB", (canvas, canvas), c1)
    a = rng.uniform(0, 2 * math.pi)
    d = np.array([math.cos(a), math.sin(a)])
    n = np.array([-d[1], d[0]])
    c = rng.uniform(0.3, 0.7, size=2)
    pts = np.stack([c + 2 * d, c + 2 * d + 2 * n, c - 2 * d + 2 * n, c - 2 * d])
    ImageDraw.Draw(img).polygon(canvas_coords(pts, canvas), fill=c2)
    return img
  img = Image.new("RGB", (canvas, canvas), c1)
  draw = ImageDraw.Draw(img)
  if kind == 2:  # stripes
    period = rng.uniform(0.06, 0.16)
    duty = rng.uniform(0.3, 0.6)
    a = math.radians(float(rng.choice([0.0, 90.0, 45.0, 135.0]))
                     + rng.uniform(-8, 8))
    d = np.array([math.cos(a), math.sin(a)])  # along the stripes
    n = np.array([-d[1], d[0]])  # across the stripes
    phase = rng.uniform(0, period)
    centre = np.array([0.5, 0.5])
    for k in range(-int(1.5 / period) - 1, int(1.5 / period) + 2):
      o = centre + n * (k * period + phase)
      hw = 0.5 * duty * period
      pts = np.stack([o - 1.5 * d - hw * n, o + 1.5 * d - hw * n,
                      o + 1.5 * d + hw * n, o - 1.5 * d + hw * n])
      draw.polygon(canvas_coords(pts, canvas), fill=c2)
  elif kind == 3:  # dots
    step = rng.uniform(0.07, 0.15)
    r = step * rng.uniform(0.12, 0.3)
    ox, oy = rng.uniform(0, step, size=2)
    for row, y in enumerate(np.arange(oy - step, 1.0 + step, step)):
      shift = 0.5 * step * (row % 2)
      for x in np.arange(ox - step + shift, 1.0 + step, step):
        draw.ellipse([(x - r) * canvas, (y - r) * canvas, (x + r) * canvas,
                      (y + r) * canvas], fill=c2)
  else:  # wall and floor
    y0 = rng.uniform(0.55, 0.85)
    tilt = rng.uniform(-0.05, 0.05)
    floor = mix(c2, (60, 45, 30), rng.uniform(0.0, 0.5))
    pts = np.array([[-0.1, y0 - tilt], [1.1, y0 + tilt], [1.1, 1.1],
                    [-0.1, 1.1]])
    draw.polygon(canvas_coords(pts, canvas), fill=floor)
    draw.line(canvas_coords(pts[:2], canvas), fill=mix(floor, (0, 0, 0), 0.35),
              width=max(1, round(0.012 * canvas)))
  return img
