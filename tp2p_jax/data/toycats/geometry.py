"""A cat's shapes, sampled from its geometry stream alone.

`sample_geometry` draws head (ears, eyes, nose, mouth, whiskers) and
optionally a sitting body (legs, paws, tail) in part-local units, then places
the cat in the image. Sizes are fractions of the image side, so one geometry
draws the same cat at every resolution. Nothing here knows the coat: the
sketch, drawn from the geometry only, cannot reveal it.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from tp2p_jax.data.toycats.points import (Points, affine, apply_affine, bezier, chaikin,
                                          compose_affine, ellipse, mirror, polyline_outline)


@dataclasses.dataclass(frozen=True)
class HeadLocal:
  """Head parameters in head-local units (head radius 1, origin head centre,
  y down, before tilt)."""
  rx: float
  ry: float
  eye_x: float
  eye_y: float
  eye_r: float
  nose_y: float


@dataclasses.dataclass(frozen=True)
class BodyLocal:
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
class Geometry:
  """A cat's shapes. Points are image fractions unless noted.

  `head_to_image` / `body_to_image` map part-local coordinates (see
  `HeadLocal` / `BodyLocal`) to image fractions; `scale` is the head radius
  as a fraction of the image side.
  """
  scale: float
  head_to_image: np.ndarray
  head_local: HeadLocal
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
  body_local: BodyLocal | None
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
        [bezier(np.stack([b1, c1, tip]), 10),
         bezier(np.stack([tip, c2, b2]), 10)[1:]], axis=0)
  else:
    up = tip - mid
    c1 = tip + 0.3 * (b1 - b2) + 0.25 * up
    c2 = tip + 0.3 * (b2 - b1) + 0.25 * up
    outer = bezier(np.stack([b1, c1, c2, b2]), 22)
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
  pupil = ellipse(gaze[0], gaze[1], pupil_w, pupil_h, 28)
  highlight = ellipse(gaze[0] - 0.22 * r, gaze[1] - 0.3 * b, 0.13 * r,
                      0.13 * r, 12)
  return outline, pupil, highlight, slant


def sample_geometry(g: np.random.Generator,
                    body_probability: float) -> Geometry:
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
  ear_l = mirror(ear_r * g.uniform(0.95, 1.05))
  inner_l = mirror(inner_r * g.uniform(0.95, 1.05))

  eye_x, eye_y = g.uniform(0.34, 0.46), g.uniform(-0.12, 0.06)
  eye_r = g.uniform(0.14, 0.21)
  outline, pupil, highlight, slant = _eye(g, eye_r)
  eye_to_head_r = affine(-slant, 1.0, eye_x, eye_y)
  # Pupils stay vertical: only translate them with the eye.
  pupil_to_head_r = affine(0.0, 1.0, eye_x, eye_y)
  eye_r_pts = apply_affine(eye_to_head_r, outline)
  pupil_r_pts = apply_affine(pupil_to_head_r, pupil)
  highlight_r_pts = apply_affine(pupil_to_head_r, highlight)
  eyes = (eye_r_pts, mirror(eye_r_pts))
  # Both pupils look the same way and both highlights face the same light, so
  # only the eye position is mirrored, not the pupil offset.
  pupil_l_pts = pupil + np.array([-eye_x, eye_y])
  highlight_l_pts = highlight + np.array([-eye_x, eye_y])
  pupils = (pupil_r_pts, pupil_l_pts)
  highlights = (highlight_r_pts, highlight_l_pts)

  nose_y = g.uniform(0.28, 0.4)
  nose_w = g.uniform(0.09, 0.16)
  nose_h = nose_w * g.uniform(0.75, 1.0)
  nose = chaikin(
      np.array([[-nose_w, nose_y - nose_h / 2], [nose_w, nose_y - nose_h / 2],
                [0.0, nose_y + nose_h / 2]]), 3)
  nose_bottom = float(nose[:, 1].max())
  drop = g.uniform(0.05, 0.11)
  mouth_w = g.uniform(0.13, 0.23)
  joint = np.array([0.0, nose_bottom + drop])
  arc_r = bezier(
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
    w = bezier(np.stack([start, ctrl, end]), 10)
    whiskers += [w, w * np.array([-1.0, 1.0])]

  muzzle = (ellipse(0.19, nose_y + 0.12, 0.3, 0.24, 32),
            ellipse(-0.19, nose_y + 0.12, 0.3, 0.24, 32),
            ellipse(0.0, nose_y + 0.33, 0.24, 0.16, 24))
  head_local = HeadLocal(rx=rx, ry=ry, eye_x=eye_x, eye_y=eye_y, eye_r=eye_r,
                         nose_y=nose_y)
  tilt = g.uniform(-0.22, 0.22)
  head_to_cat = affine(tilt)

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
    body_to_cat = affine(0.0, 1.0, g.uniform(-0.12, 0.12),
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
    body_local = BodyLocal(rx=brx, ry=bry, leg_x=leg_x, leg_half_width=leg_hw,
                           leg_top=leg_top, paw_y=paw_y, paw_rx=paw_rx,
                           paw_ry=paw_ry)
    for side in (-1.0, 1.0):
      x = side * leg_x
      legs.append(np.array([[x - leg_hw, leg_top], [x + leg_hw, leg_top],
                            [x + leg_hw, paw_y], [x - leg_hw, paw_y]]))
      leg_sides += [np.array([[x - leg_hw, leg_top], [x - leg_hw, paw_y]]),
                    np.array([[x + leg_hw, leg_top], [x + leg_hw, paw_y]])]
      paws.append(ellipse(x, paw_y, paw_rx, paw_ry, 28))
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
    tail_center = bezier(ctrl, 24)
    tail_half_width = g.uniform(0.12, 0.18)
    widths = tail_half_width * np.linspace(1.0, 0.75, len(tail_center))
    tail = polyline_outline(tail_center, widths)
    chest = ellipse(0.0, -0.3 * bry, 0.5 * brx, 0.55 * bry, 32)

  # ---- Place the cat in the image: global tilt, scale and position.
  cat_angle = g.uniform(-0.08, 0.08)
  rot = affine(cat_angle)
  extent = [apply_affine(compose_affine(rot, head_to_cat), p) for p in (head, ear_r, ear_l)]
  if body_to_cat is not None:
    extent += [apply_affine(compose_affine(rot, body_to_cat), p)
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
  cat_to_image = affine(cat_angle, scale, offset[0], offset[1])

  h2i = compose_affine(cat_to_image, head_to_cat)
  hp = lambda p: apply_affine(h2i, p)  # noqa: E731
  b2i = None
  if body_to_cat is not None:
    b2i = compose_affine(cat_to_image, body_to_cat)
    bp = lambda p: apply_affine(b2i, p)  # noqa: E731
  return Geometry(
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
