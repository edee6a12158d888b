"""Classical sketcher: photos and hand drawings -> thin dark lines on white.

The released TransPix2Pix pairs were made by a learned photo-to-sketch model
followed by thinning; neither ships anywhere installable. This module is the
classical substitute (spec section 7):

* `sketch_from_photo`: extended difference of Gaussians (XDoG, Winnemoeller et
  al. 2012) on luminance, binarisation, removal of specks, skeleton thinning
  (Zhang-Suen) to lines one to two pixels wide, an optional subject mask, and
  re-drawing of the skeleton at a standard width.
* `prepare_hand_drawn`: a scanned or photographed drawing (any size, ink
  colour, line width, paper tone, uneven lighting) -> the same line style,
  padded to a square and resized, so user sketches look like training ones.

Both paths end in `render_lines`, so every sketch has the same line width:
about 1.5 px at 256 px like the toy cats' (`SketchParams.line_width`), drawn
at `supersample` times the output size and box-downsampled, which
anti-aliases the lines.

Images are single (H, W, C) arrays in HWC layout (no batch axis): uint8 in
[0, 255] at the boundaries; inside, (H, W) float32 in [0, 1] or bool line
maps. Everything is deterministic (no randomness at all).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image
from scipy import ndimage

# Luminance weights of ITU-R BT.601, the ones PIL's "L" conversion uses.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class SketchParams:
  """Every parameter of the sketcher.

  Lengths marked "ref px" are in output pixels at `reference_size` (256) and
  scale with the output side, so a sketch looks the same at every
  resolution; they are converted to working pixels (output pixels times
  `supersample`).

  Attributes:
    sigma: XDoG inner Gaussian standard deviation, ref px. Larger values
      ignore finer texture (fur) and keep only stronger outlines.
    k: ratio of the outer to the inner Gaussian's sigma.
    p: XDoG sharpening strength: D = (1 + p) G_sigma - p G_{k sigma}.
    epsilon: XDoG threshold on D (luminance units). Flat regions have D equal
      to their luminance, so a negative value keeps flat dark areas (a black
      cat's fur) from turning into filled blobs; only edges can fall below.
    phi: steepness of XDoG's soft threshold 1 + tanh(phi (D - epsilon)).
    line_threshold: a pixel is a line where the soft XDoG value is below this.
    supersample: working resolution factor; lines are thinned and redrawn at
      `supersample` x the output size, then box-downsampled.
    line_width: width of the redrawn lines, ref px (never below 1 output px).
    min_line_length: skeleton pieces with fewer pixels than this (ref px) are
      dropped, which removes specks and texture fragments.
    mask_dilation: the subject mask is grown by this many ref px before lines
      outside it are removed, so the outline on the mask's edge survives.
    background_window: hand-drawn path: size of the window, as a fraction of
      the longer side, of the grey closing that estimates the paper (must be
      wider than the thickest stroke).
    max_ink_level: hand-drawn path: the ink threshold (on the flattened
      image, paper = 1) is Otsu's, but never above this.
    min_ink_contrast: hand-drawn path: if the darker Otsu class is not at
      least this much darker than the paper, the page is taken as blank.
    reference_size: the output side at which "ref px" lengths hold.
  """
  sigma: float = 1.0
  k: float = 1.6
  p: float = 60.0
  epsilon: float = -0.02
  phi: float = 25.0
  line_threshold: float = 0.5
  supersample: int = 2
  line_width: float = 1.5
  min_line_length: float = 10.0
  mask_dilation: float = 4.0
  background_window: float = 1.0 / 12.0
  max_ink_level: float = 0.8
  min_ink_contrast: float = 0.12
  reference_size: int = 256

  def __post_init__(self):
    if self.sigma <= 0 or self.k <= 1:
      raise ValueError(f"need sigma > 0 and k > 1, got {self.sigma}, {self.k}")
    if self.p < 0 or self.phi <= 0:
      raise ValueError(f"need p >= 0 and phi > 0, got {self.p}, {self.phi}")
    if not 0.0 < self.line_threshold < 2.0:
      raise ValueError(
          f"line_threshold must be in (0, 2), got {self.line_threshold}")
    if self.supersample < 1:
      raise ValueError(f"supersample must be >= 1, got {self.supersample}")
    if self.line_width <= 0 or self.reference_size <= 0:
      raise ValueError("line_width and reference_size must be > 0")
    if self.min_line_length < 0 or self.mask_dilation < 0:
      raise ValueError("min_line_length and mask_dilation must be >= 0")
    if not 0.0 < self.background_window <= 1.0:
      raise ValueError(
          f"background_window must be in (0, 1], got {self.background_window}")
    if not 0.0 < self.max_ink_level <= 1.0 or self.min_ink_contrast < 0:
      raise ValueError("need 0 < max_ink_level <= 1 and min_ink_contrast >= 0")


# --------------------------------------------------------------------------
# Small image helpers.


def _as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8/uint16/bool (H, W[, 1|3|4]) -> float32 (H, W, 3) RGB in [0, 1].

  Alpha is composited over white: transparent parts of a drawing are paper.
  """
  x = np.asarray(image)
  if x.dtype == np.bool_:
    x = x.astype(np.float32)
  elif x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif x.dtype == np.uint16:
    x = x.astype(np.float32) / 65535.0
  elif np.issubdtype(x.dtype, np.floating):
    x = np.clip(x.astype(np.float32), 0.0, 1.0)
  else:
    raise TypeError(f"unsupported image dtype {x.dtype}")
  if x.ndim == 2:
    x = x[:, :, None]
  if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
    raise ValueError(f"expected an (H, W[, C]) image, got shape {x.shape}")
  if x.shape[2] in (2, 4):
    alpha = x[:, :, -1:]
    x = x[:, :, :-1] * alpha + (1.0 - alpha)
  if x.shape[2] == 1:
    x = np.repeat(x, 3, axis=2)
  return x


def luminance(image: np.ndarray) -> np.ndarray:
  """BT.601 luminance: image (H, W[, C]) (see `_as_rgb`) -> float32 (H, W)
  in [0, 1]."""
  return _as_rgb(image) @ _LUMA


def _resize_float(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes float32 (H, W) to (height, width) with PIL's bilinear filter,
  which widens its support when shrinking and so averages like an area
  filter instead of aliasing."""
  if x.shape == (height, width):
    return x
  img = Image.fromarray(np.ascontiguousarray(x, np.float32), "F")
  return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of bool (H, W) to (height, width)."""
  mask = np.asarray(mask, bool)
  if mask.shape == (height, width):
    return mask
  img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
  return np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127


def _disk(radius: float) -> np.ndarray:
  """Bool (2r+1, 2r+1) disk footprint of the given (fractional) radius."""
  r = max(0, int(math.floor(radius)))
  yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
  return (xx * xx + yy * yy) <= radius * radius + 1e-6


def _box_reduce(x: np.ndarray, factor: int) -> np.ndarray:
  """Averages float (H*f, W*f) over f x f blocks -> (H, W)."""
  if factor == 1:
    return x
  h, w = x.shape[0] // factor, x.shape[1] // factor
  return x[:h * factor, :w * factor].reshape(h, factor, w, factor).mean((1, 3))


# --------------------------------------------------------------------------
# Thinning.


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
  """Deletion look-up tables of Zhang and Suen's two sub-iterations.

  Index: the 8-neighbourhood as bits P2=1, P3=2, ..., P9=128 (P2 above, then
  clockwise). Entry: whether a foreground pixel with that neighbourhood is
  deleted.
  """
  codes = np.arange(256)
  p = [(codes >> i) & 1 for i in range(8)]  # p[0] = P2, ..., p[7] = P9
  b = sum(p)
  a = sum(((p[i] == 0) & (p[(i + 1) % 8] == 1)).astype(int) for i in range(8))
  p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
  common = (b >= 2) & (b <= 6) & (a == 1)
  first = common & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
  second = common & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
  return first, second


_ZS_FIRST, _ZS_SECOND = _zhang_suen_tables()
# (dy, dx) of P2, P3, ..., P9: above, then clockwise.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1),
               (-1, -1))


def thin(lines: np.ndarray) -> np.ndarray:
  """Zhang-Suen skeleton of a binary image.

  Args:
    lines: bool (H, W), True on lines.

  Returns:
    bool (H, W): the 8-connected skeleton, one pixel wide except at a few
    corners and junctions (never a full 3 x 3 block, i.e. at most 2 px wide).
    Pixels on the image border are treated as having background outside.
  """
  x = np.pad(np.asarray(lines, bool), 1)
  # Lines cover a few percent of the image, so working on the coordinates of
  # the remaining foreground pixels is much cheaper than whole-image passes.
  rows, cols = np.nonzero(x)
  while True:
    changed = False
    for table in (_ZS_FIRST, _ZS_SECOND):
      code = np.zeros(rows.shape, np.uint8)
      for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= x[rows + dy, cols + dx].astype(np.uint8) << bit
      # Every pixel's code is computed before any is deleted, which is what
      # makes each sub-iteration parallel, as the algorithm requires.
      delete = table[code]
      if delete.any():
        x[rows[delete], cols[delete]] = False
        rows, cols = rows[~delete], cols[~delete]
        changed = True
    if not changed:
      return x[1:-1, 1:-1]


def remove_short_lines(lines: np.ndarray, min_pixels: float) -> np.ndarray:
  """Drops 8-connected components of bool (H, W) with < `min_pixels` pixels."""
  if min_pixels <= 1:
    return np.asarray(lines, bool)
  labels, n = ndimage.label(lines, structure=np.ones((3, 3), bool))
  if n == 0:
    return np.asarray(lines, bool)
  sizes = np.bincount(labels.ravel())
  keep = sizes >= min_pixels
  keep[0] = False
  return keep[labels]


def render_lines(skeleton: np.ndarray, width: float, supersample: int,
                 keep: np.ndarray | None = None) -> np.ndarray:
  """Redraws a working-resolution skeleton at a standard width.

  Args:
    skeleton: bool (H*f, W*f) at the working resolution, f = `supersample`.
    width: line width in working pixels.
    supersample: f; the result is box-downsampled by it (anti-aliasing).
    keep: optional bool (H, W) at the output resolution; pixels outside it
      are forced to white.

  Returns:
    uint8 (H, W, 3): dark lines (down to 0) on white (255).
  """
  ink = skeleton
  if width > 1.0:
    ink = ndimage.binary_dilation(skeleton, structure=_disk(width / 2.0))
  coverage = _box_reduce(ink.astype(np.float32), supersample)
  if keep is not None:
    coverage = np.where(keep, coverage, 0.0)
  grey = np.round(255.0 * (1.0 - coverage)).astype(np.uint8)
  return np.repeat(grey[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------
# Photos.


def xdog(lum: np.ndarray, *, sigma: float, k: float, p: float, epsilon: float,
         phi: float) -> np.ndarray:
  """Extended difference of Gaussians (Winnemoeller et al. 2012).

  Args:
    lum: float32 (H, W) luminance in [0, 1].
    sigma: inner Gaussian sigma in pixels; the outer one is `k * sigma`.
    k, p, epsilon, phi: see `SketchParams`.

  Returns:
    float32 (H, W) in [0, 1]: 1 (white) where D = (1 + p) G_sigma - p G_ksigma
    is >= epsilon, else 1 + tanh(phi (D - epsilon)), which darkens towards 0
    on the dark side of edges.
  """
  lum = np.asarray(lum, np.float32)
  g1 = ndimage.gaussian_filter(lum, sigma, mode="nearest")
  g2 = ndimage.gaussian_filter(lum, k * sigma, mode="nearest")
  d = (1.0 + p) * g1 - p * g2
  return np.where(d >= epsilon, 1.0,
                  1.0 + np.tanh(phi * (d - epsilon))).astype(np.float32)


def _scale(params: SketchParams, out_side: int) -> float:
  """Working pixels per ref px."""
  return params.supersample * out_side / params.reference_size


def _line_width(params: SketchParams, out_side: int) -> float:
  """Redrawn line width in working pixels (at least one output pixel)."""
  return params.supersample * max(1.0, params.line_width * out_side /
                                  params.reference_size)


def photo_lines(photo: np.ndarray, params: SketchParams = SketchParams(), *,
                mask: np.ndarray | None = None,
                image_size: int | None = None) -> np.ndarray:
  """The thinned line skeleton of a photo, at the working resolution.

  Args:
    photo: (H, W[, C]) uint8 (or uint16/float, see `_as_rgb`) photo.
    params: sketcher parameters.
    mask: optional bool (H', W') subject mask (any size; resized to the
      photo); lines farther than `mask_dilation` from it are removed.
    image_size: output side S; None keeps the photo's (H, W).

  Returns:
    bool (h*f, w*f), f = `params.supersample`, (h, w) = (S, S) or (H, W):
    skeleton lines, at most 2 px wide (see `thin`).
  """
  out_h, out_w = _out_shape(photo, image_size)
  f = params.supersample
  scale = _scale(params, min(out_h, out_w))
  lum = _resize_float(luminance(photo), out_h * f, out_w * f)
  soft = xdog(lum, sigma=max(0.5, params.sigma * scale), k=params.k,
              p=params.p, epsilon=params.epsilon, phi=params.phi)
  lines = soft < params.line_threshold
  if mask is not None:
    lines &= _dilated_mask(mask, out_h * f, out_w * f,
                           params.mask_dilation * scale)
  skeleton = thin(lines)
  return remove_short_lines(skeleton, params.min_line_length * scale)


def _out_shape(image: np.ndarray, image_size: int | None) -> tuple[int, int]:
  if image_size is None:
    return int(image.shape[0]), int(image.shape[1])
  if image_size <= 0:
    raise ValueError(f"image_size must be > 0, got {image_size}")
  return int(image_size), int(image_size)


def _dilated_mask(mask: np.ndarray, height: int, width: int,
                  radius: float) -> np.ndarray:
  m = _resize_mask(mask, height, width)
  if radius >= 1.0 and m.any():
    # A distance transform grows by a Euclidean radius in one pass, whatever
    # the radius.
    m = ndimage.distance_transform_edt(~m) <= radius
  return m


def dilated_mask(mask: np.ndarray, image_size: int | tuple[int, int],
                 params: SketchParams = SketchParams()) -> np.ndarray:
  """The region of an output sketch where lines may appear.

  Args:
    mask: bool (H', W') subject mask (any size).
    image_size: output side S, or (height, width).
    params: sketcher parameters (`mask_dilation`, `supersample`).

  Returns:
    bool (height, width): an output pixel is True if its supersampled block
    meets the mask grown by `mask_dilation`. `sketch_from_photo` leaves every
    pixel outside it pure white.
  """
  h, w = ((image_size, image_size) if isinstance(image_size, int)
          else image_size)
  f = params.supersample
  grown = _dilated_mask(mask, h * f, w * f,
                        params.mask_dilation * _scale(params, min(h, w)))
  return grown.reshape(h, f, w, f).any(axis=(1, 3))


def sketch_from_photo(photo: np.ndarray,
                      params: SketchParams = SketchParams(), *,
                      mask: np.ndarray | None = None,
                      image_size: int | None = None) -> np.ndarray:
  """Photo -> sketch: thin dark lines on white.

  Args:
    photo: (H, W[, C]) uint8 photo (uint16 and float in [0, 1] work too);
      RGB, grey or with alpha. Non-square photos are stretched to `image_size`
      (crop them first to avoid that).
    params: sketcher parameters.
    mask: optional bool (H', W') subject mask (e.g. a segmentation of the
      cat, any size): only lines within `mask_dilation` of it are kept.
    image_size: output side S; None keeps (H, W).

  Returns:
    uint8 (S, S, 3) (or (H, W, 3)) with lines down to 0 on a 255 background;
    identical for identical inputs.
  """
  out_h, out_w = _out_shape(photo, image_size)
  skeleton = photo_lines(photo, params, mask=mask, image_size=image_size)
  keep = None
  if mask is not None:
    keep = dilated_mask(mask, (out_h, out_w), params)
  return render_lines(skeleton, _line_width(params, min(out_h, out_w)),
                      params.supersample, keep)


# --------------------------------------------------------------------------
# Hand-drawn sketches.


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
  """Otsu's threshold of float values in [0, 1] (maximises the between-class
  variance of a `bins`-bin histogram); values below it are the dark class."""
  hist, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=bins,
                             range=(0.0, 1.0))
  hist = hist.astype(np.float64)
  centres = 0.5 * (edges[:-1] + edges[1:])
  w0 = np.cumsum(hist)
  w1 = w0[-1] - w0
  m0 = np.cumsum(hist * centres)
  mean0 = m0 / np.maximum(w0, 1e-12)
  mean1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
  between = w0 * w1 * (mean0 - mean1) ** 2
  # Every cut inside an empty gap between the modes scores the same; the
  # middle of that plateau is the fairest cut.
  best = np.flatnonzero(between >= between.max() * (1.0 - 1e-9))
  return float(edges[int(best[len(best) // 2]) + 1])


def _fit_long_side(long_side: int, height: int,
                   width: int) -> tuple[int, int]:
  """(height, width) scaled so that the longer side is `long_side`."""
  scale = long_side / max(height, width)
  return (max(1, round(height * scale)), max(1, round(width * scale)))


def content_box(height: int, width: int, image_size: int) -> tuple[int, int, int, int]:
  """Where `prepare_hand_drawn` puts an (height, width) drawing in its square.

  Returns:
    (top, left, h, w) in pixels of the (image_size, image_size) output: the
    drawing is scaled so that its longer side fills the square and centred.
  """
  h, w = _fit_long_side(image_size, height, width)
  return (image_size - h) // 2, (image_size - w) // 2, h, w


def flatten_background(value: np.ndarray, window: int) -> np.ndarray:
  """Divides out the paper's brightness (uneven lighting, tinted paper).

  Args:
    value: float32 (H, W) in [0, 1], ink dark.
    window: side in pixels of the grey closing that erases strokes (must be
      wider than the widest stroke).

  Returns:
    float32 (H, W) in [0, 1]: paper ~1, ink = its darkness relative to the
    paper around it.
  """
  window = max(3, int(window) | 1)
  # A grey closing (max filter, then min filter) erases strokes narrower
  # than the window but, unlike a plain max filter, does not spread bright
  # paper over darker margins; the blur smooths its blocky result.
  paper = ndimage.grey_closing(value, size=(window, window), mode="nearest")
  paper = ndimage.gaussian_filter(paper, window / 4.0, mode="nearest")
  return np.clip(value / np.maximum(paper, 1e-3), 0.0, 1.0).astype(np.float32)


def hand_drawn_lines(image: np.ndarray, image_size: int,
                     params: SketchParams = SketchParams()) -> np.ndarray:
  """Skeleton of a scanned/photographed drawing, square, at working size.

  Args:
    image: (H, W[, C]) uint8 drawing (see `_as_rgb`; alpha = paper), any size.
    image_size: output side S.
    params: sketcher parameters.

  Returns:
    bool (S*f, S*f), f = `params.supersample`: the drawing's thinned lines,
    centred and padded to a square with background.
  """
  if image_size <= 0:
    raise ValueError(f"image_size must be > 0, got {image_size}")
  rgb = _as_rgb(image)
  f = params.supersample
  side = image_size * f
  h, w = _fit_long_side(side, rgb.shape[0], rgb.shape[1])
  # The darkest channel rather than luminance: coloured ink (red, blue, even
  # yellow) has a dark channel, while white or grey paper has none.
  value = _resize_float(rgb.min(axis=2), h, w)
  flat = flatten_background(value, round(params.background_window * side))
  threshold = min(otsu_threshold(flat), params.max_ink_level)
  ink = flat < threshold
  if not ink.any() or 1.0 - float(flat[ink].mean()) < params.min_ink_contrast:
    # A blank page: Otsu would split paper grain into "ink".
    ink = np.zeros_like(ink)
  square = np.zeros((side, side), bool)
  top, left = (side - h) // 2, (side - w) // 2
  square[top:top + h, left:left + w] = ink
  scale = _scale(params, image_size)
  # Specks (dust, paper grain) go before thinning, which would otherwise
  # shrink blobs to dots and leave them to the length filter alone.
  square = remove_short_lines(square, (params.min_line_length * scale) / 2.0)
  skeleton = thin(square)
  return remove_short_lines(skeleton, params.min_line_length * scale)


def prepare_hand_drawn(image: np.ndarray, image_size: int,
                       params: SketchParams = SketchParams()) -> np.ndarray:
  """A user's drawing -> a model-ready sketch in the training line style.

  Luminance-like ink value (darkest channel), background flattening
  (division by a closed-and-blurred paper estimate), Otsu threshold, speck
  removal, Zhang-Suen thinning, re-drawing at the standard width, centring
  on a white square and resizing to `image_size`.

  Args:
    image: (H, W[, C]) uint8 (or uint16) drawing of any size: grey, RGB, or
      RGBA (transparent = paper); any ink colour and line width; paper need
      not be white or evenly lit.
    image_size: output side S.
    params: sketcher parameters.

  Returns:
    uint8 (S, S, 3): dark lines (down to 0) on white (255); deterministic.
  """
  skeleton = hand_drawn_lines(image, image_size, params)
  return render_lines(skeleton, _line_width(params, image_size),
                      params.supersample)
