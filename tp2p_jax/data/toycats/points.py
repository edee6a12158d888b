"""Point arrays and the primitives the toy cats are built from: curves,
outlines and 2-D affine maps.

`Points` are (N, 2) float64 x/y coordinates, either part-local (units of the
head radius) or image fractions in [0, 1] (x to the right, y down); the
functions that make or read them say which.
"""
from __future__ import annotations

import math

import numpy as np

Points = np.ndarray


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> Points:
  """`n` points around the axis-aligned ellipse with centre (cx, cy) and
  radii (rx, ry), starting at angle 0."""
  t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
  return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def bezier(ctrl: Points, n: int) -> Points:
  """Samples a Bezier curve of any degree at `n` evenly spaced parameters."""
  ctrl = np.asarray(ctrl, np.float64)
  deg = len(ctrl) - 1
  t = np.linspace(0.0, 1.0, n)[:, None]
  out = np.zeros((n, 2))
  for k in range(deg + 1):
    out += math.comb(deg, k) * t**k * (1.0 - t) ** (deg - k) * ctrl[k]
  return out


def chaikin(pts: Points, iterations: int) -> Points:
  """Rounds the corners of a closed polygon by Chaikin corner cutting."""
  for _ in range(iterations):
    nxt = np.roll(pts, -1, axis=0)
    pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt],
                   axis=1).reshape(-1, 2)
  return pts


def _rotation(angle: float) -> np.ndarray:
  """(2, 2) rotation by `angle` radians (clockwise on screen: y is down)."""
  c, s = math.cos(angle), math.sin(angle)
  return np.array([[c, -s], [s, c]])


def affine(angle: float = 0.0, scale: float = 1.0, tx: float = 0.0,
           ty: float = 0.0) -> np.ndarray:
  """(2, 3) matrix: rotate by `angle`, scale, then translate."""
  m = np.zeros((2, 3))
  m[:, :2] = _rotation(angle) * scale
  m[:, 2] = (tx, ty)
  return m


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
  """(2, 3) affine equal to applying `inner` first, then `outer`."""
  m = np.zeros((2, 3))
  m[:, :2] = outer[:, :2] @ inner[:, :2]
  m[:, 2] = outer[:, :2] @ inner[:, 2] + outer[:, 2]
  return m


def apply_affine(m: np.ndarray, pts: Points) -> Points:
  """`pts` mapped by the (2, 3) affine `m`."""
  return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def mirror(pts: Points) -> Points:
  """Mirrors part-local points across the vertical axis, keeping winding."""
  return (pts * np.array([-1.0, 1.0]))[::-1]


def polyline_outline(center: Points, widths: np.ndarray) -> Points:
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
