"""Coats: the nine style classes, their colours and their markings.

`make_coat` draws everything from the coat stream and reads the geometry
only to place markings (tabby stripes, white patches, Siamese points,
spots) on the parts they belong to.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from tp2p_jax.data.toycats.colours import RGB, jitter, mix
from tp2p_jax.data.toycats.geometry import Geometry
from tp2p_jax.data.toycats.points import Points, apply_affine, bezier, chaikin, ellipse

STYLE_NAMES: tuple[str, ...] = (
    "black",
    "black-white",
    "gray",
    "siberian",
    "siamese",
    "ginger",
    "ginger-white",
    "white",
    "other",
)
NUM_STYLES: int = 9
assert len(STYLE_NAMES) == NUM_STYLES


@dataclasses.dataclass
class Mark:
  """A coat marking drawn on one part's layer and clipped to that part."""
  kind: Literal["poly", "line"]
  pts: Points  # image fractions
  colour: RGB
  width: float = 0.0  # line width, image fractions


@dataclasses.dataclass
class Coat:
  """Colours of every part plus the markings (stripes, patches, points)."""
  base: dict[str, RGB]
  marks: dict[str, list[Mark]]
  inner_ear: RGB
  nose: RGB
  mouth: RGB
  whisker: RGB

  def poly(self, part: str, pts: Points, colour: RGB) -> None:
    self.marks[part].append(Mark("poly", pts, colour))

  def line(self, part: str, pts: Points, colour: RGB, width: float) -> None:
    self.marks[part].append(Mark("line", pts, colour, width))


_PARTS = ("tail", "body", "legs", "ears", "head")
_PINK: RGB = (226, 152, 160)
_WHITE_FUR: RGB = (244, 242, 236)
_BLACK_FUR: RGB = (30, 27, 30)
_GINGER_FUR: RGB = (214, 122, 48)


def _new_coat(fur: RGB, inner_ear: RGB, nose: RGB) -> Coat:
  return Coat(base={p: fur for p in _PARTS}, marks={p: [] for p in _PARTS},
              inner_ear=inner_ear, nose=nose,
              mouth=mix(fur, (20, 12, 12), 0.6),
              whisker=(236, 234, 228))


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> Points:
  """Irregular rounded patch (local units)."""
  n = 9
  t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) + rng.uniform(0, 1)
  rad = r * rng.uniform(0.65, 1.25, size=n)
  aspect = rng.uniform(0.7, 1.3)
  pts = np.stack([cx + rad * np.cos(t) * aspect, cy + rad * np.sin(t)], -1)
  return chaikin(pts, 2)


def _tail_ring(geo: Geometry, u: float, half_len: float) -> Points:
  """Segment across the tail at fraction `u` of its length (image fractions)."""
  c = geo.tail_center
  i = min(len(c) - 2, int(u * (len(c) - 1)))
  d = c[i + 1] - c[i]
  d = d / (np.linalg.norm(d) + 1e-12)
  n = np.array([-d[1], d[0]])
  return np.stack([c[i] - n * half_len, c[i] + n * half_len])


def _add_white_patches(coat: Coat, geo: Geometry,
                       rng: np.random.Generator) -> None:
  """Bicolour (tuxedo / van-ish) white muzzle, chest, paws and extras."""
  white = jitter(rng, _WHITE_FUR, 0.03, 4.0)
  for m in geo.muzzle:
    coat.poly("head", m, white)
  h = geo.head_local
  hp = lambda p: apply_affine(geo.head_to_image, p)  # noqa: E731
  if rng.random() < 0.5:  # blaze up the forehead
    w = rng.uniform(0.05, 0.14)
    coat.poly("head", hp(np.array(
        [[-w - 0.1, h.nose_y], [w + 0.1, h.nose_y],
         [w, -h.ry * 1.1], [-w, -h.ry * 1.1]])), white)
  if geo.body is None:
    return
  b = geo.body_local
  bp = lambda p: apply_affine(geo.body_to_image, p)  # noqa: E731
  grow = rng.uniform(0.9, 1.5)
  coat.poly("body", bp(ellipse(0.0, -0.1 * b.ry, 0.5 * b.rx * grow,
                               0.7 * b.ry * min(grow, 1.3), 32)), white)
  sock = b.paw_y - (b.paw_y - b.leg_top) * rng.uniform(0.2, 0.8)
  for side in (-1.0, 1.0):
    x = side * b.leg_x
    coat.poly("legs", bp(np.array(
        [[x - 2 * b.leg_half_width, sock], [x + 2 * b.leg_half_width, sock],
         [x + 2 * b.leg_half_width, b.paw_y + 2 * b.paw_ry],
         [x - 2 * b.leg_half_width, b.paw_y + 2 * b.paw_ry]])), white)
  if rng.random() < 0.4:  # white tail tip
    tip = geo.tail_center[-1]
    coat.poly("tail", ellipse(tip[0], tip[1], 3 * geo.tail_half_width,
                              3 * geo.tail_half_width, 16), white)


def _add_tabby(coat: Coat, geo: Geometry, rng: np.random.Generator,
               stripe: RGB) -> None:
  """Classic tabby marks: forehead 'M', cheek lines, body bars, tail rings."""
  s = geo.scale
  h = geo.head_local
  hp = lambda p: apply_affine(geo.head_to_image, p)  # noqa: E731
  w = rng.uniform(0.06, 0.09)
  for x in (-0.34, -0.17, 0.0, 0.17, 0.34):
    top = -h.ry * 1.05
    bottom = h.eye_y - h.eye_r * (1.6 if x == 0 else 1.3) + abs(x) * 0.3
    x0 = x * h.rx + rng.uniform(-0.03, 0.03)
    coat.line("head", hp(bezier(np.array(
        [[x0 * 1.1, top], [x0 * 0.9, 0.5 * (top + bottom)], [x0, bottom]]),
                                6)), stripe, w * s)
  for side in (-1.0, 1.0):
    for k in range(2):
      y0 = h.eye_y + 0.18 + 0.15 * k + rng.uniform(-0.03, 0.03)
      coat.line("head", hp(np.array(
          [[side * h.rx * 1.1, y0 - 0.04],
           [side * h.rx * 0.8, y0],
           [side * h.rx * 0.58, y0 + 0.06]])), stripe, w * s)
    # The line running back from the outer corner of the eye.
    coat.line("head", hp(np.array(
        [[side * (h.eye_x + h.eye_r * 1.1), h.eye_y],
         [side * h.rx * 1.05, h.eye_y - 0.06]])), stripe, 0.8 * w * s)
  if geo.body is None:
    return
  b = geo.body_local
  bp = lambda p: apply_affine(geo.body_to_image, p)  # noqa: E731
  bw = rng.uniform(0.09, 0.13)
  # Necklace arcs across the chest.
  for k in range(2):
    y = -0.45 * b.ry + 0.22 * k + rng.uniform(-0.04, 0.04)
    coat.line("body", bp(bezier(np.array(
        [[-0.6 * b.rx, y], [0.0, y + 0.25], [0.6 * b.rx, y]]), 10)),
              stripe, 0.8 * bw * s)
  # Bars down the flanks.
  n = int(rng.integers(3, 5))
  for side in (-1.0, 1.0):
    for k in range(n):
      y = -0.7 * b.ry + k * 1.5 * b.ry / n + rng.uniform(-0.05, 0.05)
      coat.line("body", bp(np.array(
          [[side * 1.3 * b.rx, y - 0.1], [side * 0.62 * b.rx, y + 0.12]])),
                stripe, bw * s)
  for k in range(3):
    y = b.leg_top + (k + 0.7) * (b.paw_y - b.leg_top) / 3.6
    for side in (-1.0, 1.0):
      x = side * b.leg_x
      coat.line("legs", bp(np.array(
          [[x - 1.5 * b.leg_half_width, y], [x + 1.5 * b.leg_half_width,
                                             y + 0.03]])),
                stripe, 0.7 * bw * s)
  for u in np.linspace(0.3, 0.92, int(rng.integers(4, 6))):
    coat.line("tail", _tail_ring(geo, float(u), 2 * geo.tail_half_width),
              stripe, 0.9 * bw * s)


def _add_siamese_points(coat: Coat, geo: Geometry, rng: np.random.Generator,
                        point: RGB) -> None:
  """Dark ears, face mask, lower legs and tail over a cream coat."""
  cream = coat.base["head"]
  mid = mix(cream, point, 0.5)
  h = geo.head_local
  hp = lambda p: apply_affine(geo.head_to_image, p)  # noqa: E731
  coat.base["ears"] = point
  grow = rng.uniform(0.9, 1.15)
  cy = h.nose_y - 0.08
  # Two rings approximate the soft edge of the mask around muzzle and eyes.
  coat.poly("head", hp(ellipse(0.0, cy, 0.62 * h.rx * grow, 0.52 * h.ry * grow,
                               40)), mid)
  coat.poly("head", hp(ellipse(0.0, cy + 0.05, 0.46 * h.rx * grow,
                               0.4 * h.ry * grow, 40)), point)
  if geo.body is None:
    return
  b = geo.body_local
  bp = lambda p: apply_affine(geo.body_to_image, p)  # noqa: E731
  coat.base["tail"] = point
  ring = _tail_ring(geo, 0.0, 3 * geo.tail_half_width)
  coat.poly("tail", ellipse(ring.mean(0)[0], ring.mean(0)[1],
                            4 * geo.tail_half_width,
                            4 * geo.tail_half_width, 16), mid)
  for frac, colour in ((0.35, mid), (0.6, point)):
    y = b.leg_top + frac * (b.paw_y - b.leg_top)
    for side in (-1.0, 1.0):
      x = side * b.leg_x
      coat.poly("legs", bp(np.array(
          [[x - 2 * b.leg_half_width, y], [x + 2 * b.leg_half_width, y],
           [x + 2 * b.leg_half_width, b.paw_y + 2 * b.paw_ry],
           [x - 2 * b.leg_half_width, b.paw_y + 2 * b.paw_ry]])), colour)


def _add_blobs(coat: Coat, geo: Geometry, rng: np.random.Generator,
               colours: list[RGB], n_head: int, n_body: int,
               radius: float) -> None:
  """Random irregular patches (calico, tortoiseshell, spots)."""
  h = geo.head_local
  for _ in range(n_head):
    cx, cy = rng.uniform(-h.rx, h.rx), rng.uniform(-h.ry, h.ry * 0.8)
    pts = _blob(rng, cx, cy, radius * rng.uniform(0.6, 1.3))
    coat.poly("head", apply_affine(geo.head_to_image, pts),
              colours[int(rng.integers(len(colours)))])
  if geo.body is None:
    return
  b = geo.body_local
  for _ in range(n_body):
    cx, cy = rng.uniform(-1.1 * b.rx, 1.1 * b.rx), rng.uniform(-b.ry, b.ry)
    pts = _blob(rng, cx, cy, radius * rng.uniform(0.8, 1.6))
    coat.poly("body", apply_affine(geo.body_to_image, pts),
              colours[int(rng.integers(len(colours)))])
  for u in rng.uniform(0.1, 1.0, size=max(1, n_body // 3)):
    c = _tail_ring(geo, float(u), 0.0)[0]
    r = 2.0 * geo.tail_half_width * rng.uniform(0.7, 1.2)
    coat.poly("tail", ellipse(c[0], c[1], r, r, 12),
              colours[int(rng.integers(len(colours)))])


def make_coat(style: int, geo: Geometry, rng: np.random.Generator) -> Coat:
  """Colours and markings for class `style`, drawn from the coat stream."""
  name = STYLE_NAMES[style]
  dark_nose: RGB = (48, 38, 40)
  if name == "black":
    coat = _new_coat(jitter(rng, _BLACK_FUR, 0.2, 4.0), (112, 82, 88),
                     dark_nose)
  elif name == "black-white":
    coat = _new_coat(jitter(rng, _BLACK_FUR, 0.2, 4.0), (120, 88, 94),
                     dark_nose if rng.random() < 0.5 else _PINK)
    _add_white_patches(coat, geo, rng)
  elif name == "gray":
    coat = _new_coat(jitter(rng, (124, 128, 138), 0.12, 5.0), (196, 150, 160),
                     (118, 100, 108))
  elif name == "siberian":
    fur = jitter(rng, (132, 114, 90), 0.1, 6.0)
    coat = _new_coat(fur, (200, 146, 140), (156, 92, 84))
    _add_tabby(coat, geo, rng, mix(fur, (28, 22, 16), 0.65))
  elif name == "siamese":
    cream = jitter(rng, (232, 218, 188), 0.04, 5.0)
    coat = _new_coat(cream, (96, 68, 60), (70, 50, 44))
    _add_siamese_points(coat, geo, rng, jitter(rng, (74, 52, 40), 0.15, 5.0))
  elif name == "ginger":
    fur = jitter(rng, _GINGER_FUR, 0.08, 8.0)
    coat = _new_coat(fur, _PINK, (204, 118, 108))
    if rng.random() < 0.7:  # most ginger cats are faint tabbies
      _add_tabby(coat, geo, rng, mix(fur, (130, 50, 10), 0.35))
  elif name == "ginger-white":
    fur = jitter(rng, _GINGER_FUR, 0.08, 8.0)
    coat = _new_coat(fur, _PINK, (214, 128, 120))
    _add_white_patches(coat, geo, rng)
  elif name == "white":
    coat = _new_coat(jitter(rng, _WHITE_FUR, 0.03, 4.0), _PINK,
                     (232, 148, 158))
    coat.whisker = (172, 168, 164)
  else:  # "other": brown-spotted
    # One coat, not a mixture: at inference a class is drawn from its
    # average embedding, and the average of unrelated coats (calico,
    # tortoiseshell, spotted) is a blend that belongs to none of them.
    fur = jitter(rng, (192, 152, 104), 0.06, 6.0)
    coat = _new_coat(fur, _PINK, (150, 90, 80))
    colours = [jitter(rng, (84, 56, 34), 0.1, 4.0)]
    _add_blobs(coat, geo, rng, colours, 5, 18, 0.1)
  return coat
