"""Procedural toy cats: a built-in sketch-to-photo dataset that needs no download.

Each example is a cartoon cat (a head, optionally on a sitting body) drawn
twice from one set of shapes:

* ``photo``: filled shapes with one of nine coat styles, soft shading, eyes,
  nose, mouth and whiskers, on a varied background;
* ``sketch``: thin dark contour lines of the same shapes on white.

Randomness comes from independent streams derived from ``(seed, index)``:
geometry, label, coat, background and eye colour. The sketch reads only the
geometry stream, so for a given example it is pixel-identical whatever the
coat, and nothing about the coat (or the background) can be read from it. The
background stream is likewise independent of the label, so backgrounds carry
no information about the class.

Geometry is sampled in fractions of the image side, so an ``(index, seed)``
pair gives the same cat at every resolution; only line widths and the
supersampling factor depend on the output size. Shapes are drawn with PIL at
2x-4x the output size and box-downsampled, which anti-aliases both images.
"""
from __future__ import annotations

import colorsys
import dataclasses
import math
from typing import Literal

import grain.python as grain
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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

RGB = tuple[int, int, int]
# (N, 2) float64 x/y coordinates. Inside this module they are either
# part-local (units of the head radius) or image fractions in [0, 1] (x to the
# right, y down); functions say which.
Points = np.ndarray

# Stream ids for `_stream`. Keeping them apart is what makes the sketch
# independent of the coat and the background independent of the label.
_GEOMETRY_STREAM = 0
_LABEL_STREAM = 1
_COAT_STREAM = 2
_BACKGROUND_STREAM = 3
_EYE_STREAM = 4

_MIN_IMAGE_SIZE = 16


def _stream(seed: int, index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


# --------------------------------------------------------------------------
# Small geometry helpers (all on float64 point arrays).


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> Points:
  t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
  return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def _bezier(ctrl: Points, n: int) -> Points:
  """Samples a Bezier curve of any degree at `n` evenly spaced parameters."""
  ctrl = np.asarray(ctrl, np.float64)
  deg = len(ctrl) - 1
  t = np.linspace(0.0, 1.0, n)[:, None]
  out = np.zeros((n, 2))
  for k in range(deg + 1):
    out += math.comb(deg, k) * t**k * (1.0 - t) ** (deg - k) * ctrl[k]
  return out


def _chaikin(pts: Points, iterations: int) -> Points:
  """Rounds the corners of a closed polygon by Chaikin corner cutting."""
  for _ in range(iterations):
    nxt = np.roll(pts, -1, axis=0)
    pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt],
                   axis=1).reshape(-1, 2)
  return pts


def _rotation(angle: float) -> np.ndarray:
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, -s], [s, c]])


def _affine(angle: float = 0.0, scale: float = 1.0, tx: float = 0.0,
            ty: float = 0.0) -> np.ndarray:
  """(2, 3) matrix: rotate by `angle`, scale, then translate."""
  m = np.zeros((2, 3))
  m[:, :2] = _rotation(angle) * scale
  m[:, 2] = (tx, ty)
  return m


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
  """(2, 3) affine equal to applying `inner` first, then `outer`."""
  m = np.zeros((2, 3))
  m[:, :2] = outer[:, :2] @ inner[:, :2]
  m[:, 2] = outer[:, :2] @ inner[:, 2] + outer[:, 2]
  return m


def _apply(m: np.ndarray, pts: Points) -> Points:
  return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def _mirror(pts: Points) -> Points:
  """Mirrors part-local points across the vertical axis, keeping winding."""
  return (pts * np.array([-1.0, 1.0]))[::-1]


def _polyline_outline(center: Points, widths: np.ndarray) -> Points:
  """Closed polygon around a centre line with per-point half-widths and a
  round cap at the end (the start is meant to be hidden under another part)."""
  d = np.gradient(center, axis=0)
  d /= np.linalg.norm(d, axis=-1, keepdims=True) + 1e-12
  normal = np.stack([-d[:, 1], d[:, 0]], axis=-1)
  left = center + normal * widths[:, None]
  right = center - normal * widths[:, None]
  end_angle = math.atan2(normal[-1, 1], normal[-1, 0])
  t = end_angle - np.linspace(0.0, math.pi, 9)[1:-1]
  cap = center[-1] + widths[-1] * np.stack([np.cos(t), np.sin(t)], axis=-1)
  return np.concatenate([left, cap, right[::-1]], axis=0)


# --------------------------------------------------------------------------
# Geometry.


@dataclasses.dataclass(frozen=True)
class _HeadLocal:
  """Head parameters in head-local units (head radius 1, origin head centre,
  y down, before tilt)."""
  rx: float
  ry: float
  eye_x: float
  eye_y: float
  eye_r: float
  nose_y: float


@dataclasses.dataclass(frozen=True)
class _BodyLocal:
  """Body parameters in body-local units (head radius 1, origin body centre)."""
  rx: float
  ry: float
  leg_x: float
  leg_half_width: float
  leg_top: float
  paw_y: float
  paw_rx: float
  paw_ry: float


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """A cat's shapes. Points are image fractions unless noted.

  `head_to_image` / `body_to_image` map part-local coordinates (see
  `_HeadLocal` / `_BodyLocal`) to image fractions; `scale` is the head radius
  as a fraction of the image side.
  """
  scale: float
  head_to_image: np.ndarray
  head_local: _HeadLocal
  head: Points
  ears: tuple[Points, Points]
  inner_ears: tuple[Points, Points]
  eyes: tuple[Points, Points]
  pupils: tuple[Points, Points]
  highlights: tuple[Points, Points]
  nose: Points
  mouth: tuple[Points, ...]
  whiskers: tuple[Points, ...]
  # Photo-only regions used by coat patterns (never drawn in the sketch).
  muzzle: tuple[Points, ...]
  # Body parts; all None / empty for a head-only cat.
  body_to_image: np.ndarray | None
  body_local: _BodyLocal | None
  body: Points | None
  tail: Points | None
  tail_center: Points | None
  tail_half_width: float
  legs: tuple[Points, ...]
  leg_sides: tuple[Points, ...]
  paws: tuple[Points, ...]
  toes: tuple[Points, ...]
  chest: Points | None


def _ear(g: np.random.Generator, rx: float, ry: float) -> tuple[Points, Points]:
  """Right ear (x > 0) outer and inner outline in head-local units."""
  phi = g.uniform(0.55, 0.85)  # base centre, radians from the top of the head
  dphi = g.uniform(0.28, 0.42)  # half the angular width of the base
  height = g.uniform(0.5, 0.85)
  lean = g.uniform(0.55, 1.05)
  pointy = g.random() < 0.5

  def boundary(a: float) -> np.ndarray:
    t = -math.pi / 2 + a
    return np.array([rx * math.cos(t), ry * math.sin(t)])

  # The base sits inside the head so the head outline hides it.
  b1 = 0.86 * boundary(phi - dphi)
  b2 = 0.86 * boundary(phi + dphi)
  mid = 0.5 * (b1 + b2)
  psi = phi * lean
  tip = boundary(phi) + height * np.array([math.sin(psi), -math.cos(psi)])
  if pointy:
    centroid = (b1 + b2 + tip) / 3.0
    c1 = 0.5 * (b1 + tip)
    c1 = c1 + 0.18 * (c1 - centroid)
    c2 = 0.5 * (tip + b2)
    c2 = c2 + 0.18 * (c2 - centroid)
    outer = np.concatenate(
        [_bezier(np.stack([b1, c1, tip]), 10),
         _bezier(np.stack([tip, c2, b2]), 10)[1:]], axis=0)
  else:
    up = tip - mid
    c1 = tip + 0.3 * (b1 - b2) + 0.25 * up
    c2 = tip + 0.3 * (b2 - b1) + 0.25 * up
    outer = _bezier(np.stack([b1, c1, c2, b2]), 22)
  inner = mid + 0.6 * (outer - mid) + 0.1 * (tip - mid)
  return outer, inner


def _eye(g: np.random.Generator,
         r: float) -> tuple[Points, Points, Points, float]:
  """Right eye outline, pupil, highlight (relative to the eye centre, before
  slant) and the slant angle; head-local units."""
  almond = g.random() < 0.5
  t = np.linspace(0.0, 2.0 * math.pi, 36, endpoint=False)
  if almond:
    a, b = 1.2 * r, 0.78 * r
    s = np.sin(t)
    outline = np.stack([a * np.cos(t), b * s * np.abs(s) ** 0.35], axis=-1)
  else:
    a, b = r, r * g.uniform(0.86, 1.0)
    outline = np.stack([a * np.cos(t), b * np.sin(t)], axis=-1)
  slant = g.uniform(0.0, 0.28) if almond else g.uniform(0.0, 0.1)
  pupil_w = r * g.uniform(0.16, 0.55)
  pupil_h = 0.85 * b
  gaze = g.uniform(-0.15, 0.15, size=2) * r * np.array([1.0, 0.4])
  pupil = _ellipse(gaze[0], gaze[1], pupil_w, pupil_h, 28)
  highlight = _ellipse(gaze[0] - 0.22 * r, gaze[1] - 0.3 * b, 0.13 * r,
                       0.13 * r, 12)
  return outline, pupil, highlight, slant


def _sample_geometry(g: np.random.Generator,
                     body_probability: float) -> _Geometry:
  """Samples a cat from the geometry stream `g` only."""
  has_body = g.random() < body_probability

  # ---- Head, in head-local units.
  rx, ry = g.uniform(1.0, 1.15), g.uniform(0.86, 0.98)
  cheek = g.uniform(0.0, 0.12)
  t = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
  head = np.stack(
      [rx * np.cos(t) * (1.0 + cheek * np.clip(np.sin(t), 0.0, None)),
       ry * np.sin(t)], axis=-1)

  ear_r, inner_r = _ear(g, rx, ry)
  # A little asymmetry keeps the ears from looking stamped.
  ear_l = _mirror(ear_r * g.uniform(0.95, 1.05))
  inner_l = _mirror(inner_r * g.uniform(0.95, 1.05))

  eye_x, eye_y = g.uniform(0.34, 0.46), g.uniform(-0.12, 0.06)
  eye_r = g.uniform(0.14, 0.21)
  outline, pupil, highlight, slant = _eye(g, eye_r)
  eye_to_head_r = _affine(-slant, 1.0, eye_x, eye_y)
  # Pupils stay vertical: only translate them with the eye.
  pupil_to_head_r = _affine(0.0, 1.0, eye_x, eye_y)
  eye_r_pts = _apply(eye_to_head_r, outline)
  pupil_r_pts = _apply(pupil_to_head_r, pupil)
  highlight_r_pts = _apply(pupil_to_head_r, highlight)
  eyes = (eye_r_pts, _mirror(eye_r_pts))
  # Both pupils look the same way and both highlights face the same light, so
  # only the eye position is mirrored, not the pupil offset.
  pupil_l_pts = pupil + np.array([-eye_x, eye_y])
  highlight_l_pts = highlight + np.array([-eye_x, eye_y])
  pupils = (pupil_r_pts, pupil_l_pts)
  highlights = (highlight_r_pts, highlight_l_pts)

  nose_y = g.uniform(0.28, 0.4)
  nose_w = g.uniform(0.09, 0.16)
  nose_h = nose_w * g.uniform(0.75, 1.0)
  nose = _chaikin(
      np.array([[-nose_w, nose_y - nose_h / 2], [nose_w, nose_y - nose_h / 2],
                [0.0, nose_y + nose_h / 2]]), 3)
  nose_bottom = float(nose[:, 1].max())
  drop = g.uniform(0.05, 0.11)
  mouth_w = g.uniform(0.13, 0.23)
  joint = np.array([0.0, nose_bottom + drop])
  arc_r = _bezier(
      np.stack([joint, joint + [0.45 * mouth_w, 0.55 * mouth_w],
                joint + [mouth_w, 0.05 * mouth_w]]), 12)
  mouth = (np.stack([[0.0, nose_bottom], joint]), arc_r,
           arc_r * np.array([-1.0, 1.0]))

  whiskers = []
  n_whiskers = int(g.integers(2, 4))
  w_x0, w_y0 = g.uniform(0.17, 0.26), nose_y + g.uniform(0.08, 0.14)
  w_len = g.uniform(0.65, 0.95)
  w_base = g.uniform(-0.12, 0.08)
  w_fan = g.uniform(0.1, 0.2)
  droop = g.uniform(-0.04, 0.1)
  for k in range(n_whiskers):
    off = k - (n_whiskers - 1) / 2
    ang = w_base + off * w_fan
    length = w_len * (1.0 - 0.1 * abs(off))
    start = np.array([w_x0, w_y0 + 0.05 * off])
    end = start + length * np.array([math.cos(ang), math.sin(ang)])
    ctrl = 0.5 * (start + end) + [0.0, droop * length]
    w = _bezier(np.stack([start, ctrl, end]), 10)
    whiskers += [w, w * np.array([-1.0, 1.0])]

  muzzle = (_ellipse(0.19, nose_y + 0.12, 0.3, 0.24, 32),
            _ellipse(-0.19, nose_y + 0.12, 0.3, 0.24, 32),
            _ellipse(0.0, nose_y + 0.33, 0.24, 0.16, 24))
  head_local = _HeadLocal(rx=rx, ry=ry, eye_x=eye_x, eye_y=eye_y, eye_r=eye_r,
                          nose_y=nose_y)
  tilt = g.uniform(-0.22, 0.22)
  head_to_cat = _affine(tilt)

  # ---- Body, in body-local units; body_to_cat places it under the head.
  body_to_cat = None
  body_local = None
  body = tail = tail_center = chest = None
  tail_half_width = 0.0
  legs: list[Points] = []
  leg_sides: list[Points] = []
  paws: list[Points] = []
  toes: list[Points] = []
  if has_body:
    brx, bry = g.uniform(0.85, 1.1), g.uniform(1.05, 1.35)
    body_to_cat = _affine(0.0, 1.0, g.uniform(-0.12, 0.12),
                          g.uniform(0.35, 0.5) + bry)
    t = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
    # Pear shape: wider towards the haunches.
    body = np.stack(
        [brx * np.cos(t) * (1.0 + 0.16 * np.sin(t)), bry * np.sin(t)], axis=-1)
    leg_x = brx * g.uniform(0.22, 0.34)
    leg_hw = g.uniform(0.15, 0.21)
    leg_top = bry * g.uniform(0.0, 0.2)
    paw_y = bry * g.uniform(0.92, 1.02)
    paw_rx, paw_ry = 1.2 * leg_hw, 0.72 * leg_hw
    body_local = _BodyLocal(rx=brx, ry=bry, leg_x=leg_x, leg_half_width=leg_hw,
                            leg_top=leg_top, paw_y=paw_y, paw_rx=paw_rx,
                            paw_ry=paw_ry)
    for side in (-1.0, 1.0):
      x = side * leg_x
      legs.append(np.array([[x - leg_hw, leg_top], [x + leg_hw, leg_top],
                            [x + leg_hw, paw_y], [x - leg_hw, paw_y]]))
      leg_sides += [np.array([[x - leg_hw, leg_top], [x - leg_hw, paw_y]]),
                    np.array([[x + leg_hw, leg_top], [x + leg_hw, paw_y]])]
      paws.append(_ellipse(x, paw_y, paw_rx, paw_ry, 28))
      for dx in (-0.33, 0.33):
        toes.append(np.array([[x + dx * paw_rx, paw_y + 0.95 * paw_ry],
                              [x + dx * paw_rx, paw_y + 0.3 * paw_ry]]))
    side = 1.0 if g.random() < 0.5 else -1.0
    ctrl = np.array([
        [0.55 * brx, 0.75 * bry],
        [brx + 0.45, 0.95 * bry],
        [brx + g.uniform(0.5, 0.9), bry * g.uniform(0.2, 0.5)],
        [brx + g.uniform(0.15, 0.5), -bry * g.uniform(0.0, 0.5)],
    ]) * np.array([side, 1.0])
    tail_center = _bezier(ctrl, 24)
    tail_half_width = g.uniform(0.12, 0.18)
    widths = tail_half_width * np.linspace(1.0, 0.75, len(tail_center))
    tail = _polyline_outline(tail_center, widths)
    chest = _ellipse(0.0, -0.3 * bry, 0.5 * brx, 0.55 * bry, 32)

  # ---- Place the cat in the image: global tilt, scale and position.
  cat_angle = g.uniform(-0.08, 0.08)
  rot = _affine(cat_angle)
  extent = [_apply(_compose(rot, head_to_cat), p) for p in (head, ear_r, ear_l)]
  if body_to_cat is not None:
    extent += [_apply(_compose(rot, body_to_cat), p)
               for p in [body, tail] + paws]
  extent_pts = np.concatenate(extent, axis=0)
  lo, hi = extent_pts.min(axis=0), extent_pts.max(axis=0)
  scale = g.uniform(0.13, 0.19) if has_body else g.uniform(0.24, 0.34)
  margin = 0.04
  scale = min(scale, (1.0 - 2 * margin) / float((hi - lo).max()))
  offset = np.empty(2)
  for axis in range(2):
    low = margin - lo[axis] * scale
    high = 1.0 - margin - hi[axis] * scale
    offset[axis] = g.uniform(low, high) if high > low else 0.5 * (low + high)
  cat_to_image = _affine(cat_angle, scale, offset[0], offset[1])

  h2i = _compose(cat_to_image, head_to_cat)
  hp = lambda p: _apply(h2i, p)  # noqa: E731
  b2i = None
  if body_to_cat is not None:
    b2i = _compose(cat_to_image, body_to_cat)
    bp = lambda p: _apply(b2i, p)  # noqa: E731
  return _Geometry(
      scale=scale,
      head_to_image=h2i,
      head_local=head_local,
      head=hp(head),
      ears=(hp(ear_r), hp(ear_l)),
      inner_ears=(hp(inner_r), hp(inner_l)),
      eyes=tuple(hp(e) for e in eyes),
      pupils=tuple(hp(p) for p in pupils),
      highlights=tuple(hp(h) for h in highlights),
      nose=hp(nose),
      mouth=tuple(hp(m) for m in mouth),
      whiskers=tuple(hp(w) for w in whiskers),
      muzzle=tuple(hp(m) for m in muzzle),
      body_to_image=b2i,
      body_local=body_local,
      body=None if body is None else bp(body),
      tail=None if tail is None else bp(tail),
      tail_center=None if tail_center is None else bp(tail_center),
      tail_half_width=tail_half_width * scale,
      legs=tuple(bp(p) for p in legs),
      leg_sides=tuple(bp(p) for p in leg_sides),
      paws=tuple(bp(p) for p in paws),
      toes=tuple(bp(p) for p in toes),
      chest=None if chest is None else bp(chest),
  )


# --------------------------------------------------------------------------
# Drawing helpers.


def _supersampling(image_size: int) -> int:
  # Small images need more supersampling for smooth 1-px lines; large ones
  # already have enough pixels and would only get slower.
  return 4 if image_size <= 96 else 2


def _flat(pts: Points, canvas: int, closed: bool = False) -> list[float]:
  p = pts * canvas
  if closed:
    p = np.concatenate([p, p[:2]], axis=0)
  return p.ravel().tolist()


def _sketch_line_width(image_size: int) -> float:
  """Sketch line width in output pixels: ~1.5 px at 256, never below 1 px."""
  return max(1.0, 1.5 * image_size / 256.0)


# --------------------------------------------------------------------------
# Sketch.


def _render_sketch(geo: _Geometry, image_size: int) -> np.ndarray:
  """Contour drawing of `geo`: uint8 (H, W, 3), dark lines on white (255)."""
  ss = _supersampling(image_size)
  canvas = image_size * ss
  img = Image.new("L", (canvas, canvas), 255)
  draw = ImageDraw.Draw(img)
  lw = max(1, round(_sketch_line_width(image_size) * ss))
  thin = max(1, round(0.75 * _sketch_line_width(image_size) * ss))

  def shape(pts: Points, width: int = lw) -> None:
    # Filling with white first hides the lines of parts behind this one.
    draw.polygon(_flat(pts, canvas), fill=255)
    draw.line(_flat(pts, canvas, closed=True), fill=0, width=width,
              joint="curve")

  def outline(pts: Points, width: int = lw) -> None:
    draw.line(_flat(pts, canvas, closed=True), fill=0, width=width,
              joint="curve")

  def line(pts: Points, width: int = lw) -> None:
    draw.line(_flat(pts, canvas), fill=0, width=width, joint="curve")

  if geo.body is not None:
    shape(geo.tail)
    shape(geo.body)
    for leg in geo.legs:
      draw.polygon(_flat(leg, canvas), fill=255)
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


# --------------------------------------------------------------------------
# Coats.


def _clip_rgb(c: np.ndarray) -> RGB:
  c = np.clip(np.round(c), 0, 255).astype(int)
  return int(c[0]), int(c[1]), int(c[2])


def _jitter(rng: np.random.Generator, rgb: RGB, brightness: float = 0.08,
            hue: float = 6.0) -> RGB:
  """Small random variation of a colour (relative brightness, +-hue per
  channel) so a class is not a single flat colour."""
  c = np.asarray(rgb, np.float64) * rng.uniform(1 - brightness, 1 + brightness)
  return _clip_rgb(c + rng.uniform(-hue, hue, size=3))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
  return _clip_rgb((1 - t) * np.asarray(a, np.float64)
                   + t * np.asarray(b, np.float64))


@dataclasses.dataclass
class _Mark:
  """A coat marking drawn on one part's layer and clipped to that part."""
  kind: Literal["poly", "line"]
  pts: Points  # image fractions
  colour: RGB
  width: float = 0.0  # line width, image fractions


@dataclasses.dataclass
class _Coat:
  """Colours of every part plus the markings (stripes, patches, points)."""
  base: dict[str, RGB]
  marks: dict[str, list[_Mark]]
  inner_ear: RGB
  nose: RGB
  mouth: RGB
  whisker: RGB

  def poly(self, part: str, pts: Points, colour: RGB) -> None:
    self.marks[part].append(_Mark("poly", pts, colour))

  def line(self, part: str, pts: Points, colour: RGB, width: float) -> None:
    self.marks[part].append(_Mark("line", pts, colour, width))


_PARTS = ("tail", "body", "legs", "ears", "head")
_PINK: RGB = (226, 152, 160)
_WHITE_FUR: RGB = (244, 242, 236)
_BLACK_FUR: RGB = (30, 27, 30)
_GINGER_FUR: RGB = (214, 122, 48)


def _new_coat(fur: RGB, inner_ear: RGB, nose: RGB) -> _Coat:
  return _Coat(base={p: fur for p in _PARTS}, marks={p: [] for p in _PARTS},
               inner_ear=inner_ear, nose=nose,
               mouth=_mix(fur, (20, 12, 12), 0.6),
               whisker=(236, 234, 228))


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> Points:
  """Irregular rounded patch (local units)."""
  n = 9
  t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) + rng.uniform(0, 1)
  rad = r * rng.uniform(0.65, 1.25, size=n)
  aspect = rng.uniform(0.7, 1.3)
  pts = np.stack([cx + rad * np.cos(t) * aspect, cy + rad * np.sin(t)], -1)
  return _chaikin(pts, 2)


def _tail_ring(geo: _Geometry, u: float, half_len: float) -> Points:
  """Segment across the tail at fraction `u` of its length (image fractions)."""
  c = geo.tail_center
  i = min(len(c) - 2, int(u * (len(c) - 1)))
  d = c[i + 1] - c[i]
  d = d / (np.linalg.norm(d) + 1e-12)
  n = np.array([-d[1], d[0]])
  return np.stack([c[i] - n * half_len, c[i] + n * half_len])


def _add_white_patches(coat: _Coat, geo: _Geometry,
                       rng: np.random.Generator) -> None:
  """Bicolour (tuxedo / van-ish) white muzzle, chest, paws and extras."""
  white = _jitter(rng, _WHITE_FUR, 0.03, 4.0)
  for m in geo.muzzle:
    coat.poly("head", m, white)
  h = geo.head_local
  hp = lambda p: _apply(geo.head_to_image, p)  # noqa: E731
  if rng.random() < 0.5:  # blaze up the forehead
    w = rng.uniform(0.05, 0.14)
    coat.poly("head", hp(np.array(
        [[-w - 0.1, h.nose_y], [w + 0.1, h.nose_y],
         [w, -h.ry * 1.1], [-w, -h.ry * 1.1]])), white)
  if geo.body is None:
    return
  b = geo.body_local
  bp = lambda p: _apply(geo.body_to_image, p)  # noqa: E731
  grow = rng.uniform(0.9, 1.5)
  coat.poly("body", bp(_ellipse(0.0, -0.1 * b.ry, 0.5 * b.rx * grow,
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
    coat.poly("tail", _ellipse(tip[0], tip[1], 3 * geo.tail_half_width,
                               3 * geo.tail_half_width, 16), white)


def _add_tabby(coat: _Coat, geo: _Geometry, rng: np.random.Generator,
               stripe: RGB) -> None:
  """Classic tabby marks: forehead 'M', cheek lines, body bars, tail rings."""
  s = geo.scale
  h = geo.head_local
  hp = lambda p: _apply(geo.head_to_image, p)  # noqa: E731
  w = rng.uniform(0.06, 0.09)
  for x in (-0.34, -0.17, 0.0, 0.17, 0.34):
    top = -h.ry * 1.05
    bottom = h.eye_y - h.eye_r * (1.6 if x == 0 else 1.3) + abs(x) * 0.3
    x0 = x * h.rx + rng.uniform(-0.03, 0.03)
    coat.line("head", hp(_bezier(np.array(
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
  bp = lambda p: _apply(geo.body_to_image, p)  # noqa: E731
  bw = rng.uniform(0.09, 0.13)
  # Necklace arcs across the chest.
  for k in range(2):
    y = -0.45 * b.ry + 0.22 * k + rng.uniform(-0.04, 0.04)
    coat.line("body", bp(_bezier(np.array(
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


def _add_siamese_points(coat: _Coat, geo: _Geometry, rng: np.random.Generator,
                        point: RGB) -> None:
  """Dark ears, face mask, lower legs and tail over a cream coat."""
  cream = coat.base["head"]
  mid = _mix(cream, point, 0.5)
  h = geo.head_local
  hp = lambda p: _apply(geo.head_to_image, p)  # noqa: E731
  coat.base["ears"] = point
  grow = rng.uniform(0.9, 1.15)
  cy = h.nose_y - 0.08
  # Two rings approximate the soft edge of the mask around muzzle and eyes.
  coat.poly("head", hp(_ellipse(0.0, cy, 0.62 * h.rx * grow, 0.52 * h.ry * grow,
                                40)), mid)
  coat.poly("head", hp(_ellipse(0.0, cy + 0.05, 0.46 * h.rx * grow,
                                0.4 * h.ry * grow, 40)), point)
  if geo.body is None:
    return
  b = geo.body_local
  bp = lambda p: _apply(geo.body_to_image, p)  # noqa: E731
  coat.base["tail"] = point
  ring = _tail_ring(geo, 0.0, 3 * geo.tail_half_width)
  coat.poly("tail", _ellipse(ring.mean(0)[0], ring.mean(0)[1],
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


def _add_blobs(coat: _Coat, geo: _Geometry, rng: np.random.Generator,
               colours: list[RGB], n_head: int, n_body: int,
               radius: float) -> None:
  """Random irregular patches (calico, tortoiseshell, spots)."""
  h = geo.head_local
  for _ in range(n_head):
    cx, cy = rng.uniform(-h.rx, h.rx), rng.uniform(-h.ry, h.ry * 0.8)
    pts = _blob(rng, cx, cy, radius * rng.uniform(0.6, 1.3))
    coat.poly("head", _apply(geo.head_to_image, pts),
              colours[int(rng.integers(len(colours)))])
  if geo.body is None:
    return
  b = geo.body_local
  for _ in range(n_body):
    cx, cy = rng.uniform(-1.1 * b.rx, 1.1 * b.rx), rng.uniform(-b.ry, b.ry)
    pts = _blob(rng, cx, cy, radius * rng.uniform(0.8, 1.6))
    coat.poly("body", _apply(geo.body_to_image, pts),
              colours[int(rng.integers(len(colours)))])
  for u in rng.uniform(0.1, 1.0, size=max(1, n_body // 3)):
    c = _tail_ring(geo, float(u), 0.0)[0]
    r = 2.0 * geo.tail_half_width * rng.uniform(0.7, 1.2)
    coat.poly("tail", _ellipse(c[0], c[1], r, r, 12),
              colours[int(rng.integers(len(colours)))])


def _make_coat(style: int, geo: _Geometry, rng: np.random.Generator) -> _Coat:
  """Colours and markings for class `style`, drawn from the coat stream."""
  name = STYLE_NAMES[style]
  dark_nose: RGB = (48, 38, 40)
  if name == "black":
    coat = _new_coat(_jitter(rng, _BLACK_FUR, 0.2, 4.0), (112, 82, 88),
                     dark_nose)
  elif name == "black-white":
    coat = _new_coat(_jitter(rng, _BLACK_FUR, 0.2, 4.0), (120, 88, 94),
                     dark_nose if rng.random() < 0.5 else _PINK)
    _add_white_patches(coat, geo, rng)
  elif name == "gray":
    coat = _new_coat(_jitter(rng, (124, 128, 138), 0.12, 5.0), (196, 150, 160),
                     (118, 100, 108))
  elif name == "siberian":
    fur = _jitter(rng, (132, 114, 90), 0.1, 6.0)
    coat = _new_coat(fur, (200, 146, 140), (156, 92, 84))
    _add_tabby(coat, geo, rng, _mix(fur, (28, 22, 16), 0.65))
  elif name == "siamese":
    cream = _jitter(rng, (232, 218, 188), 0.04, 5.0)
    coat = _new_coat(cream, (96, 68, 60), (70, 50, 44))
    _add_siamese_points(coat, geo, rng, _jitter(rng, (74, 52, 40), 0.15, 5.0))
  elif name == "ginger":
    fur = _jitter(rng, _GINGER_FUR, 0.08, 8.0)
    coat = _new_coat(fur, _PINK, (204, 118, 108))
    if rng.random() < 0.7:  # most ginger cats are faint tabbies
      _add_tabby(coat, geo, rng, _mix(fur, (130, 50, 10), 0.35))
  elif name == "ginger-white":
    fur = _jitter(rng, _GINGER_FUR, 0.08, 8.0)
    coat = _new_coat(fur, _PINK, (214, 128, 120))
    _add_white_patches(coat, geo, rng)
  elif name == "white":
    coat = _new_coat(_jitter(rng, _WHITE_FUR, 0.03, 4.0), _PINK,
                     (232, 148, 158))
    coat.whisker = (172, 168, 164)
  else:  # "other": brown-spotted
    # One coat, not a mixture: at inference a class is drawn from its
    # average embedding, and the average of unrelated coats (calico,
    # tortoiseshell, spotted) is a blend that belongs to none of them.
    fur = _jitter(rng, (192, 152, 104), 0.06, 6.0)
    coat = _new_coat(fur, _PINK, (150, 90, 80))
    colours = [_jitter(rng, (84, 56, 34), 0.1, 4.0)]
    _add_blobs(coat, geo, rng, colours, 5, 18, 0.1)
  return coat


# --------------------------------------------------------------------------
# Background.


def _random_colour(rng: np.random.Generator) -> RGB:
  h, s, v = rng.random(), rng.uniform(0.05, 0.55), rng.uniform(0.3, 0.95)
  return _clip_rgb(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0)


def _gradient(c1: RGB, c2: RGB, angle: float, canvas: int) -> Image.Image:
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


BACKGROUNDS: tuple[str, ...] = ("varied", "studio")


def _studio_colour(rng: np.random.Generator) -> RGB:
  h, s, v = rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.82, 0.97)
  return _clip_rgb(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0)


def _render_studio_background(rng: np.random.Generator, canvas: int) -> Image.Image:
  """A pale, nearly neutral backdrop, plain or a soft gradient: the look of
  a cut-out (segmented) cat photo."""
  c1 = _studio_colour(rng)
  if rng.random() < 0.5:
    return Image.new("RGB", (canvas, canvas), c1)
  c2 = _mix(c1, _studio_colour(rng), rng.uniform(0.25, 0.6))
  return _gradient(c1, c2, rng.uniform(0, 2 * math.pi), canvas)


def _render_background(rng: np.random.Generator, canvas: int,
                       background: str = "varied") -> Image.Image:
  """A background from the background stream only: "varied" is one of six
  kinds (plain, gradient, stripes, dots, wall and floor, two-tone) in random
  colours; "studio" a pale plain or gradient backdrop."""
  if background == "studio":
    return _render_studio_background(rng, canvas)
  kind = int(rng.integers(6))
  c1 = _random_colour(rng)
  c2 = _mix(c1, _random_colour(rng), rng.uniform(0.25, 0.6))
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
    ImageDraw.Draw(img).polygon(_flat(pts, canvas), fill=c2)
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
      draw.polygon(_flat(pts, canvas), fill=c2)
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
    floor = _mix(c2, (60, 45, 30), rng.uniform(0.0, 0.5))
    pts = np.array([[-0.1, y0 - tilt], [1.1, y0 + tilt], [1.1, 1.1],
                    [-0.1, 1.1]])
    draw.polygon(_flat(pts, canvas), fill=floor)
    draw.line(_flat(pts[:2], canvas), fill=_mix(floor, (0, 0, 0), 0.35),
              width=max(1, round(0.012 * canvas)))
  return img


# --------------------------------------------------------------------------
# Photo.


_EYE_COLOURS: tuple[RGB, ...] = (
    (118, 170, 60),   # green
    (214, 190, 60),   # yellow
    (212, 142, 40),   # amber
    (90, 150, 212),   # blue
    (188, 110, 42),   # copper
    (160, 200, 96),   # light green
)


def _render_photo(geo: _Geometry, coat: _Coat, iris: RGB,
                  background: Image.Image, image_size: int) -> np.ndarray:
  """Composites the coat-painted cat over `background`; uint8 (H, W, 3)."""
  ss = _supersampling(image_size)
  canvas = image_size * ss
  photo = background
  draw = ImageDraw.Draw(photo)
  # Union of the fur, used for shading; the head alone casts a soft shadow
  # on the body so same-coloured head and body do not merge into one blob.
  fur = Image.new("L", (canvas, canvas), 0)
  fur_draw = ImageDraw.Draw(fur)

  def paint(part: str, polys: list[Points]) -> None:
    flat = [_flat(p, canvas) for p in polys]
    for f in flat:
      fur_draw.polygon(f, fill=255)
    marks = coat.marks[part]
    if not marks:
      for f in flat:
        draw.polygon(f, fill=coat.base[part])
      return
    # Marks must not spill outside the part, so draw them on a layer that is
    # pasted through the part's mask.
    layer = Image.new("RGB", (canvas, canvas), coat.base[part])
    layer_draw = ImageDraw.Draw(layer)
    for m in marks:
      if m.kind == "poly":
        layer_draw.polygon(_flat(m.pts, canvas), fill=m.colour)
      else:
        layer_draw.line(_flat(m.pts, canvas), fill=m.colour,
                        width=max(1, round(m.width * canvas)), joint="curve")
    mask = Image.new("L", (canvas, canvas), 0)
    mask_draw = ImageDraw.Draw(mask)
    for f in flat:
      mask_draw.polygon(f, fill=255)
    photo.paste(layer, (0, 0), mask)

  has_body = geo.body is not None
  if has_body:
    paint("tail", [geo.tail])
    paint("body", [geo.body])
    paint("legs", list(geo.legs) + list(geo.paws))
  paint("ears", list(geo.ears))
  for inner in geo.inner_ears:
    draw.polygon(_flat(inner, canvas), fill=coat.inner_ear)
  paint("head", [geo.head])

  px = geo.scale * canvas  # head radius in canvas pixels
  rim = max(1, round(0.025 * px))
  for eye, pupil, hl in zip(geo.eyes, geo.pupils, geo.highlights):
    draw.polygon(_flat(eye, canvas), fill=iris, outline=(28, 22, 18),
                 width=rim)
    draw.polygon(_flat(pupil, canvas), fill=(12, 10, 10))
    draw.polygon(_flat(hl, canvas), fill=(250, 250, 250))
  draw.polygon(_flat(geo.nose, canvas), fill=coat.nose)
  mouth_w = max(1, round(0.03 * px))
  for m in geo.mouth:
    draw.line(_flat(m, canvas), fill=coat.mouth, width=mouth_w, joint="curve")
  whisker_w = max(1, round(0.012 * px))
  for w in geo.whiskers:
    draw.line(_flat(w, canvas), fill=coat.whisker, width=whisker_w)

  photo_small = photo.reduce(ss)
  fur_small = fur.reduce(ss)
  size = image_size
  alpha = np.asarray(fur_small, np.float32) / 255.0
  blur = np.asarray(
      fur_small.filter(ImageFilter.GaussianBlur(max(1.0, 0.4 * geo.scale
                                                    * size))),
      np.float32) / 255.0
  # Soft rim darkening from the blurred silhouette plus a light falling off
  # from the upper left of the head: cheap stand-ins for real shading.
  centre = _apply(geo.head_to_image, np.array([[-0.35, -0.45]]))[0] * size
  yy, xx = np.ogrid[0:size, 0:size]
  dist = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1]) / (
      3.2 * geo.scale * size)
  shade = (0.68 + 0.32 * blur) * (1.12 - 0.3 * np.minimum(dist, 1.0) ** 2)
  if has_body:
    head_mask = Image.new("L", (size, size), 0)
    drop = np.array([0.0, 0.12 * geo.scale])
    ImageDraw.Draw(head_mask).polygon(_flat(geo.head + drop, size), fill=255)
    shadow = np.asarray(head_mask.filter(ImageFilter.GaussianBlur(
        max(1.0, 0.12 * geo.scale * size))), np.float32) / 255.0
    own = Image.new("L", (size, size), 0)
    ImageDraw.Draw(own).polygon(_flat(geo.head, size), fill=255)
    shadow *= 1.0 - np.asarray(own, np.float32) / 255.0
    shade *= 1.0 - 0.3 * shadow
  factor = 1.0 + alpha * (shade - 1.0)
  out = np.asarray(photo_small, np.float32) * factor[:, :, None]
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Public API.


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

  geo = _sample_geometry(_stream(seed, index, _GEOMETRY_STREAM),
                         body_probability)
  coat = _make_coat(label, geo, _stream(seed, index, _COAT_STREAM))
  eye_rng = _stream(seed, index, _EYE_STREAM)
  iris = _jitter(eye_rng,
                 _EYE_COLOURS[int(eye_rng.integers(len(_EYE_COLOURS)))],
                 0.08, 8.0)
  canvas = image_size * _supersampling(image_size)
  background = _render_background(
      _stream(seed, index, _BACKGROUND_STREAM), canvas, background)
  return {
      "sketch": _render_sketch(geo, image_size),
      "photo": _render_photo(geo, coat, iris, background, image_size),
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
